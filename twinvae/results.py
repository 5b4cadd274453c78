"""What every results file writes: its provenance line (the command, when, the commit, the machine, the
versions), its markdown tables, the machine record it keeps, and the atomic write. One module, so that every
file says where its figures come from in the same words: the trainer's run record and results, the
evaluation, the parity report and every benchmark."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys

from twinvae import __version__
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


def machine_record(measured_versions: dict | None = None) -> dict:
    """Where a result was measured, as its results file records it: when (UTC), twinvae's version, the
    commit, the CPU, its cores (all, and those this process may use), Python, the platform, and the
    frameworks' versions (this process's, updated with `measured_versions`: those the processes that
    measured reported)."""
    return {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), "twinvae": __version__,
            "git_commit": git_commit(short=True), "cpu": cpu_name(), "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "platform": platform.platform(), "versions": {**versions(), **(measured_versions or {})}}


def results_origin(command: str, machine: dict | None = None) -> str:
    """A results file's first line: the command that wrote it, when, from which commit, on which machine and
    with which versions (`machine`: a machine_record; None: this process's, now)."""
    machine = machine_record() if machine is None else machine
    where = ", ".join([machine["date"], f"twinvae {machine['twinvae']}",
                       f"commit {machine['git_commit'] or 'unknown'}", machine["cpu"],
                       f"usable cores: {machine['usable_cores']}",
                       *(f"{name} {version}" for name, version in machine["versions"].items())])
    return f"Command: `{command}`; {where}"


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A markdown table: the header's cells, the separator, then a line per row (each cell as str())."""
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)])


def make_results_folder(out: str | None) -> None:
    """The folder of a results file `out` (None: none), made before the minutes of work: a bad path fails
    first."""
    if out:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)


def write_results(path: str | os.PathLike, text: str) -> None:
    """A results file, written atomically: a crash leaves the old file or the new one, never half of it."""
    atomic_write_bytes(path, text.encode())


def publish_results(text: str, out: str | None) -> None:
    """A results file's text, printed, and written atomically to `out` where one is named."""
    print(text)
    if out:
        write_results(out, text)
