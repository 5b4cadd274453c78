import dataclasses
import os

import jax
import pytest

import vae_jax
from twinvae.parity import compiles, twins

# The parity tests run on the CPU unless TWINVAE_DEVICE names another device (cuda on a GPU machine).
# TF32 is set explicitly in both frameworks (off unless TWINVAE_TF32=1): torch's cuDNN default is on.
os.environ.setdefault("TWINVAE_DEVICE", "cpu")
twins.set_tf32(os.environ.get("TWINVAE_TF32") == "1")


@pytest.fixture(autouse=True)
def record_compiles(record_property):
    """What the harness compiled during the test, on its report (the root conftest.py lists the costliest
    at the end of the run)."""
    before = dataclasses.replace(compiles.COMPILED)
    yield
    programs = compiles.COMPILED.programs - before.programs
    seconds = compiles.COMPILED.seconds - before.seconds
    if programs:
        record_property("xla_compiles", [programs, round(seconds, 2)])


@pytest.fixture
def fresh_traces():
    """For tests that patch a twin's code: every comparison traces the code as patched now, with no trace of
    an earlier test reused (JAX's caches, and the jits the harness and the twin share between models of the
    same structure). Cleared again after the test, once monkeypatch (set up after this fixture) has undone
    its patches, so no patched trace outlives its test. JAX's persistent compilation cache is keyed on the
    compiled program, so a patched program never hits an unpatched entry."""
    _forget_traces()
    yield
    _forget_traces()


def _forget_traces() -> None:
    jax.clear_caches()  # every jitted function's traces, those the twin and the harness keep included
    vae_jax.forms.jitted.cache_clear()  # the twin's jits, its train step's included
    vae_jax.train.adam_transform.cache_clear()  # a transform built before optax was patched
