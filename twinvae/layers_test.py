"""The import-linter contract in pyproject.toml places every module of the application, so a new module
cannot slip past the layers by being left out of them."""

import pkgutil
import re
import tomllib
from pathlib import Path

import twinvae

ROOT = Path(__file__).resolve().parent.parent


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = config["contracts"]
    return contract["layers"]


def test_every_application_module_has_a_layer():
    placed = {name for layer in _layers() for name in re.split(r"\s*[|:]\s*", layer)}
    modules = {f"twinvae.{m.name}" for m in pkgutil.iter_modules(twinvae.__path__)
               if not m.name.endswith("_test")}
    assert modules - placed == set(), "add these modules to a layer in pyproject.toml"
    assert {"twinvae.cli", "twinvae.parity", "benchmarks", "vae_core"} <= placed


def test_the_twins_sit_between_the_application_and_the_spec():
    layers = _layers()
    assert layers[-2:] == ["vae_torch | vae_jax", "vae_core"]
