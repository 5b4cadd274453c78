"""The import-linter contracts in pyproject.toml place every module of the application, and every module of
its packages (the trainer, the parity harness) in their own layers, so a new module cannot slip past the
layers by being left out of them."""

import pkgutil
import re
import tomllib
from pathlib import Path

import pytest

import twinvae
import twinvae.parity
import twinvae.trainer

ROOT = Path(__file__).resolve().parent.parent


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _layers() -> list[str]:
    """The application's contract: the one over the whole project's packages (no container)."""
    (contract,) = [c for c in _contracts() if "containers" not in c]
    return contract["layers"]


def _placed(layers: list[str]) -> set[str]:
    return {name for layer in layers for name in re.split(r"\s*[|:]\s*", layer)}


def test_every_application_module_has_a_layer():
    placed = _placed(_layers())
    modules = {f"twinvae.{m.name}" for m in pkgutil.iter_modules(twinvae.__path__)
               if not m.name.endswith("_test")}
    assert modules - placed == set(), "add these modules to a layer in pyproject.toml"
    assert {"twinvae.cli", "twinvae.parity", "benchmarks", "vae_core"} <= placed


def test_the_twins_sit_between_the_application_and_the_spec():
    layers = _layers()
    assert layers[-2:] == ["vae_torch | vae_jax", "vae_core"]


@pytest.mark.parametrize("package", [twinvae.parity, twinvae.trainer], ids=lambda p: p.__name__)
def test_every_module_of_a_package_has_a_layer_inside_it(package):
    (contract,) = [c for c in _contracts() if c.get("containers") == [package.__name__]]
    modules = {m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.endswith("_test")}
    assert modules - _placed(contract["layers"]) == set(), f"add these modules to {contract['name']!r}"
