"""The process's memory allocator told to keep what it frees, for the next step's same-sized tensors.

Each call of a compiled step or decoder allocates its intermediates afresh (XLA's temporary buffer, torch's
tensors: tens to hundreds of MB) and frees them at its end. glibc's malloc serves allocations that large
with mmap, and a thread's arena cannot hold them at all, so every call maps new pages, faults each one
in and unmaps them again: measured on the seed model, 12,800 page faults per JAX training step and
61,000 per K = 1000 decoder call, a fifth of the evaluation's CPU time in the kernel
(docs/perf-log.md). With one arena, no mmap and a high trim threshold, freed memory stays in the heap
and the next call reuses it: no faults after the first call. What the process holds at its peak then
stays held until it exits; `TWINVAE_KEEP_FREED_MEMORY=0` leaves the allocator as it was.

Set before the frameworks start their threads (the CLI does it first), so that those threads share the
one arena; elsewhere than glibc (macOS, musl) it does nothing."""

from __future__ import annotations

import ctypes
import os
import platform
import sys

# mallopt's parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
TRIM_THRESHOLD = 1 << 30  # bytes of free heap top kept before giving memory back to the system
SETTINGS = {M_ARENA_MAX: 1, M_MMAP_MAX: 0, M_TRIM_THRESHOLD: TRIM_THRESHOLD}
SWITCH = "TWINVAE_KEEP_FREED_MEMORY"
_kept = False  # whether this process set SETTINGS


def keep_freed_memory() -> bool:
    """Set SETTINGS with glibc's mallopt, unless the environment's SWITCH is 0; whether they are set."""
    global _kept
    if os.environ.get(SWITCH, "1") == "0" or sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _kept = all(mallopt(parameter, value) == 1 for parameter, value in SETTINGS.items())
    return _kept


def setting() -> str:
    """What a results file records of this process's allocator."""
    return "freed memory kept (glibc: one arena, no mmap)" if _kept else "the system's default"
