"""Under pytest-xdist each test process computes on one thread (conftest.py): checked in a fresh process
given a worker's settings, by how many of its threads did the work of a jitted matmul and of a torch one."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# conftest.py's settings as an xdist worker gets them, then each thread's CPU time (utime + stime in
# /proc/self/task/*/stat, in clock ticks) over half a second of the process's CPU time spent in matmuls of
# each framework, after one to compile.
CHILD = r"""
import json, os, runpy, time
os.environ["PYTEST_XDIST_WORKER"] = "gw0"
runpy.run_path("conftest.py")
import jax, jax.numpy as jnp, torch

def ticks():
    spent = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a thread that has ended
            continue
        spent[tid] = int(fields[11]) + int(fields[12])
    return spent

def per_thread(work):
    work()
    before, start = ticks(), time.process_time()
    while time.process_time() - start < 0.5:
        work()
    after = ticks()
    return sorted((after[t] - before.get(t, 0) for t in after), reverse=True)

a = jnp.ones((1024, 1024), jnp.float32)
matmul = jax.jit(lambda a: a @ a)
b = torch.ones(1024, 1024)
print(json.dumps({"jax": per_thread(lambda: matmul(a).block_until_ready()), "torch": per_thread(lambda: b @ b),
                  "torch_threads": torch.get_num_threads()}))
"""


def test_an_xdist_worker_computes_on_one_thread():
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["torch_threads"] == 1, result
    for framework in ("jax", "torch"):
        spent = result[framework]
        assert sum(spent) >= 40, result  # the half second's ticks, on the threads still there at its end
        # one thread does the work; the others (the caller waiting on the result, JAX's own) next to nothing
        assert sum(ticks > 0.1 * sum(spent) for ticks in spent) == 1, (framework, result)
