import os
import platform
import subprocess
import sys

import pytest

from twinvae import allocator

REUSE = """
import resource, numpy as np
from twinvae import allocator
kept = allocator.keep_freed_memory()
def churn(n):  # what a compiled call does: allocate its intermediates, fill them, free them
    for _ in range(n):
        np.ones(1 << 23).sum()  # 64 MB
churn(2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn(10)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, allocator.setting())
"""


def _faults(switch: str) -> tuple[str, int, str]:
    done = subprocess.run([sys.executable, "-c", REUSE], capture_output=True, text=True, check=True,
                          env={**os.environ, allocator.SWITCH: switch})
    kept, faults, setting = done.stdout.split(maxsplit=2)
    return kept, int(faults), setting.strip()


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_freed_memory_is_reused_without_page_faults_and_the_switch_turns_it_off():
    kept, kept_faults, kept_setting = _faults("1")
    default, default_faults, default_setting = _faults("0")
    assert (kept, kept_setting) == ("True", "freed memory kept (glibc: one arena, no mmap)")
    assert (default, default_setting) == ("False", "the system's default")
    assert default_faults > 100 and kept_faults < default_faults / 10
