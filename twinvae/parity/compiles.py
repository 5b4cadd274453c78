"""What the comparisons compile: XLA programs and their seconds, counted by a listener on JAX's compile
events while a comparison runs. The parity suite records each test's share (parity_tests/conftest.py): one
compile per structure and shape is what keeps it fast."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import jax


@dataclass
class Compiles:
    """XLA compiles (programs, and the seconds they took, persistent-cache loads included)."""
    programs: int = 0
    seconds: float = 0.0
    comparing: int = 0  # comparisons under way: only their compiles count


# What the comparisons of this process compiled, in all: the suite records each test's share.
COMPILED = Compiles()


@contextlib.contextmanager
def counted():
    """Count the compiles of the comparison run inside (nested comparisons count once)."""
    COMPILED.comparing += 1
    try:
        yield
    finally:
        COMPILED.comparing -= 1


def _count_compile(event: str, seconds: float, **_) -> None:
    if COMPILED.comparing and event == "/jax/core/compile/backend_compile_duration":
        COMPILED.programs += 1
        COMPILED.seconds += seconds


jax.monitoring.register_event_duration_secs_listener(_count_compile)
