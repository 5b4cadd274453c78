"""`twinvae parity --quick` (on one small case) from a wheel installed into a fresh virtual environment
and run outside the source tree: what a downstream project's CI runs. The new environment borrows this
one's frameworks (a .pth file naming its site-packages) but none of its twinvae, which is an editable
install here."""

import site
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(args, **kwargs):
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, (args, done.stdout[-3000:], done.stderr[-3000:])
    return done


def test_parity_quick_from_an_installed_wheel(tmp_path, session_environment):
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist",
          ROOT])
    (wheel,) = (tmp_path / "dist").glob("twinvae-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel])
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = Path(_run([python, "-c", where]).stdout.strip())
    borrowed = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    (purelib / "borrowed-frameworks.pth").write_text("\n".join(sorted(borrowed)) + "\n")
    # a clean environment but for the session's JAX cache and thread settings (conftest.py)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), **session_environment}
    where = _run([python, "-c", "import twinvae, vae_core, vae_torch, vae_jax, benchmarks\n"
                  "print(*(m.__file__ for m in (twinvae, vae_core, vae_torch, vae_jax, benchmarks)))"],
                 cwd=tmp_path, env=env).stdout.split()
    assert all(path.startswith(str(purelib)) for path in where), where  # the wheel's, not the source tree's
    # the smallest conv case (the seed's is the default, and a third of a minute dearer on 2 cores)
    done = _run([venv / "bin" / "twinvae", "parity", "--quick", "--case", "conv 1x8x8 (digits)"], cwd=tmp_path,
                env=env)
    assert " 0 failed" in done.stdout and "| checkpoint |" in done.stdout, done.stdout[-2000:]
