"""Test-session settings, read before any test imports a framework."""

import os
import shutil
import tempfile

# JAX on the CPU unless a GPU run names its device: where libtpu is installed (the tpu-aot extra) JAX
# would otherwise probe for a TPU chip that is not there. The TPU AOT tests ask for their compile-only
# devices themselves.
if os.environ.get("TWINVAE_DEVICE", "cpu") == "cpu":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Under pytest-xdist (`pytest -n 2`, one test process per core) each process computes on one thread: two
# processes of two threads each (torch's intra-op pool, XLA's Eigen pool, BLAS) contend for the two cores,
# and four parity cases took 152 s that way against 101 s on one thread each (docs/perf-log.md). Set before
# any framework is imported; the tests' subprocesses inherit it. The serial tests run without xdist.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_threads, "1")
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"),
                                                     "--xla_cpu_multi_thread_eigen=false",
                                                     "intra_op_parallelism_threads=1"]))

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


# The slowest files first: xdist hands the tests out in this order, so a long test never starts last on
# one process while the other has nothing left (measured: docs/perf-log.md). The rest keep their order.
SLOW_FIRST = ("parity_tests/test_properties.py", "benchmarks/bench_test.py", "parity_tests/test_installed.py",
              "parity_tests/test_parity.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        path = item.nodeid.split("::")[0]
        return SLOW_FIRST.index(path) if path in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)
