"""What a run records about where it ran: the CPU, the git commit of the source, the frameworks' versions.
Shared by the trainer's run record and results, and by the benchmark report."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys

from vae_core.checkpoint import atomic_write_bytes

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


def results_origin(command: str, measured_versions: dict | None = None) -> str:
    """A results file's first line: the command that wrote it, when, from which commit, on which machine and
    with which versions (this process's, or those the processes that measured reported)."""
    where = ", ".join([datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                       f"commit {git_commit(short=True) or 'unknown'}", cpu_name(),
                       f"usable cores: {len(os.sched_getaffinity(0))}",
                       *(f"{name} {version}" for name, version in {**versions(), **(measured_versions or {})}
                         .items())])
    return f"Command: `{command}`; {where}"


def make_results_folder(out: str | None) -> None:
    """The folder of a results file `out` (None: none), made before the minutes of work: a bad path fails
    first."""
    if out:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)


def publish_results(text: str, out: str | None) -> None:
    """A results file's text, printed, and written atomically to `out` where one is named."""
    print(text)
    if out:
        atomic_write_bytes(out, text.encode())
