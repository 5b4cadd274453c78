"""Data-parallel training on the frameworks' own engines (JAX mesh, torch DDP) against single-device
training on the same global batches and eps, in float64; and the errors a distributed run must give."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from parity_tests import distributed as runs
from parity_tests.harness import worst
from vae_core import checks
from vae_core.weights import init_weights

ROUNDOFF = 1e-10  # float64: N workers split each sum in N parts, so only rounding may differ


def _data_parallel(backend: str, tmp_path) -> dict:
    out = tmp_path / f"{backend}.npz"
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={runs.WORKERS}",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "parity_tests.distributed", backend, str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(np.load(out))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dp")
    return {("jax", "mesh"): _data_parallel("jax", tmp), ("torch", "ddp"): _data_parallel("torch", tmp),
            ("jax", "single"): runs.single_device("jax"), ("torch", "single"): runs.single_device("torch")}


@pytest.mark.parametrize("a, b", [(("jax", "mesh"), ("jax", "single")), (("torch", "ddp"), ("torch", "single")),
                                  (("jax", "mesh"), ("torch", "ddp"))], ids=["jax", "torch", "jax-vs-torch"])
def test_data_parallel_equals_single_device(results, a, b):
    """2 workers, each on its slice of the global batch and eps, with a changing learning rate: the same
    parameters (every tensor, after 4 Adam steps) and losses as one device, to float64 rounding."""
    error, where = worst(results[a], results[b])
    assert error <= ROUNDOFF, (a, b, error, where)
    assert len(results[a]["losses"]) == runs.STEPS
    # and training moved the weights, so the comparison is not of two initialisations
    init = init_weights(runs.CONFIG, 0)
    assert worst({k: results[a][k] for k in init}, init)[0] > 1e-4


def test_a_batch_that_does_not_divide_is_an_error():
    from vae_torch import distributed

    with pytest.raises(ValueError, match="a global batch of 7 does not divide by 2 processes"):
        distributed.local_slice(np.zeros((7, 4)), 0, 2)
    assert checks.check_divisible_batch(8, 2, "devices") == 4
    with pytest.raises(ValueError, match="a global batch of 9 does not divide by 4 devices"):
        checks.check_divisible_batch(9, 4, "devices")


def test_a_taken_port_is_a_clear_error():
    from vae_torch import distributed

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=rf"could not start the gloo process group at "
                                               rf"tcp://127.0.0.1:{port}.*port in use"):
            distributed.initialize("gloo", 0, 2, f"tcp://127.0.0.1:{port}")
