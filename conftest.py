"""Test-session settings, read before any test imports a framework."""

import os
import shutil
import tempfile

# JAX on the CPU unless a GPU run names its device: where libtpu is installed (the tpu-aot extra) JAX
# would otherwise probe for a TPU chip that is not there. The TPU AOT tests ask for their compile-only
# devices themselves.
if os.environ.get("TWINVAE_DEVICE", "cpu") == "cpu":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One JAX compilation cache for this session, in a fresh folder (never reused between runs): the suite
# builds the same functions again and again (a parity twin per form and dtype, a trainer per test), and a
# function compiled once is then loaded. Every compile is cached: JAX's default skips those under 1 s,
# which is most of the tests'. Subprocesses inherit it; the benchmark's workers set their own, cold one.
_CACHE = None if "JAX_COMPILATION_CACHE_DIR" in os.environ else tempfile.mkdtemp(prefix="twinvae-test-jax-cache-")
if _CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_unconfigure(config):
    if _CACHE:
        shutil.rmtree(_CACHE, ignore_errors=True)
