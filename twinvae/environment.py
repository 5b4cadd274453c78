"""What a run records about where it ran: the CPU, the git commit of the source, the frameworks' versions.
Shared by the trainer's run record and results, and by the benchmark report."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

FRAMEWORKS = ("numpy", "torch", "jax", "jaxlib", "flax", "optax")


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                        platform.processor())
    except OSError:
        return platform.processor()


def git_commit(short: bool = False) -> str:
    """The commit of the source tree this module runs from, with "+uncommitted changes" where the tracked
    files differ from it; "" outside a git checkout (an installed wheel)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", *(["--short"] if short else []), "HEAD"], capture_output=True,
                                text=True, cwd=here, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=here, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return commit + ("+uncommitted changes" if commit and dirty else "")


def versions() -> dict[str, str]:
    """The versions of the frameworks this process has imported."""
    return {name: getattr(sys.modules[name], "__version__", "") for name in FRAMEWORKS if name in sys.modules}
