"""Test-session settings, read before any test imports a framework."""

import fcntl
import os
import shutil
import tempfile

import pytest

# JAX on the CPU unless a GPU run names its device: where libtpu is installed (the tpu-aot extra) JAX
# would otherwise probe for a TPU chip that is not there. The TPU AOT tests ask for their compile-only
# devices themselves.
if os.environ.get("TWINVAE_DEVICE", "cpu") == "cpu":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Under pytest-xdist (`pytest -n 2`, one test process per core) each process computes on one thread: two
# processes of two threads each (torch's intra-op pool, XLA's Eigen pool, BLAS) contend for the two cores,
# and four parity cases took 152 s that way against 101 s on one thread each (docs/perf-log.md). Set before
# any framework is imported; the tests' subprocesses inherit it. The serial tests run without xdist.
# torch's intra-op pool takes MKL_NUM_THREADS, else OMP_NUM_THREADS. XLA's CPU client sizes its pools (the
# Eigen pool its runtime computes dots and convolutions on, and the client's own) from PJRT_NPROC
# (xla/pjrt/utils.cc: DefaultThreadPoolSize); no XLA_FLAGS flag does that in jax 0.10: with
# --xla_cpu_multi_thread_eigen=false two threads still compute a jitted matmul. twinvae/threads_test.py
# checks that one thread of each framework does the work.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "PJRT_NPROC")
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _threads in THREAD_VARIABLES:
        os.environ.setdefault(_threads, "1")

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


@pytest.fixture(scope="session")
def session_environment() -> dict[str, str]:
    """The variables above as this session set them (the JAX cache, the platform, the threads): for a test
    that runs a command in an otherwise clean environment, so it loads what the session compiled already
    and, under xdist, keeps to its one core."""
    return {k: v for k, v in os.environ.items() if k.startswith("JAX_PERSISTENT_CACHE_")
            or k in ("JAX_COMPILATION_CACHE_DIR", "JAX_PLATFORMS", "XLA_FLAGS", *THREAD_VARIABLES)}


@pytest.fixture(scope="session")
def made_once(tmp_path_factory):
    """made_once(name, make) -> a folder that make(folder) filled, made once in the whole run: under xdist
    every worker is a process of its own, and a fixture that trains a model would train it again in each.
    The first worker to ask makes it, holding a lock in the temp folder all workers share (this run's, so
    nothing is reused from another run); the others wait on the lock and reuse the files. A make that
    fails leaves no mark, so the next worker tries again (and fails as the test should)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base

    def once(name, make):
        folder, done = shared / name, shared / f"{name}.done"
        with open(shared / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if not done.exists():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                make(folder)
                done.touch()
        return folder

    return once


# The slowest files first: xdist hands the tests out in this order, so a long test never starts last on
# one process while the other has nothing left (measured: docs/perf-log.md). The rest keep their order.
SLOW_FIRST = ("parity_tests/test_properties.py", "benchmarks/bench_test.py", "parity_tests/test_installed.py",
              "parity_tests/test_parity.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        path = item.nodeid.split("::")[0]
        return SLOW_FIRST.index(path) if path in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)


def costliest_compiles(stats: dict, n: int = 10) -> list[tuple[float, int, str]]:
    """(seconds, programs, test) of the n tests whose parity comparisons compiled the longest, from a
    terminal reporter's stats (each report's xla_compiles property, recorded by parity_tests/conftest.py)."""
    costs = [(*props["xla_compiles"][::-1], report.nodeid) for outcome in ("", "passed", "failed", "error")
             for report in stats.get(outcome, [])  # "": setup and teardown (it records there)
             for props in [dict(report.user_properties)] if "xla_compiles" in props]
    return sorted(costs, key=lambda cost: -cost[0])[:n]


def pytest_terminal_summary(terminalreporter):
    """The ten tests whose parity comparisons compiled the most."""
    costs = costliest_compiles(terminalreporter.stats)
    if costs:
        terminalreporter.section("the costliest compiles (XLA programs, seconds)")
    for seconds, programs, nodeid in costs:
        terminalreporter.write_line(f"{seconds:7.1f} s  {programs:4d} programs  {nodeid}")
