"""Where a training process's time goes: the trainer's own measure against its step, so that its overhead
is a number in every run record, not a guess.

The parts: `input` (a batch's indexing, binarisation, noise, eps and its transfer to the twin), `step` (the
call of the step function), `readback` (the step's losses read back to the host), `evaluation` (the
end-of-epoch test figures), `saving` (log records, units, the model) and `pictures` (the end-of-run files);
`other` is what the wall clock saw beyond them. Under JAX's asynchronous dispatch the step call returns
before the step has run, and the read-back waits for it: there the step's compute is `step + readback`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

PARTS = ("input", "step", "readback", "evaluation", "saving", "pictures")


@dataclasses.dataclass
class Timings:
    """Seconds spent in each of PARTS (time.perf_counter), and the steps they cover."""
    seconds: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(PARTS, 0.0))
    steps: int = 0
    started: float = dataclasses.field(default_factory=time.perf_counter)

    @contextlib.contextmanager
    def measure(self, part: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] += time.perf_counter() - start

    def record(self) -> dict:
        """What a run record keeps: each part's seconds, `other`, the total and the steps, rounded to ms."""
        total = time.perf_counter() - self.started
        parts = {**self.seconds, "other": max(0.0, total - sum(self.seconds.values()))}
        return {**{k: round(v, 3) for k, v in parts.items()}, "total": round(total, 3), "steps": self.steps}


def timings_text(timings: dict) -> str:
    """A run record's timings as results.md's line."""
    parts = ", ".join(f"{part} {timings[part]:.1f} s" for part in (*PARTS, "other"))
    return f"Time of this process ({timings['steps']} steps, {timings['total']:.1f} s): {parts}."
