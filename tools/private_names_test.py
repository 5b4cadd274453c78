"""No private member crosses a module boundary: a name with one leading underscore that the project
defines is used only in the module that defines it. What another module needs gets a public name, so the
API that the twins, the application and the tests depend on is the one that their docs describe."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("vae_core", "vae_torch", "vae_jax", "twinvae", "benchmarks", "parity_tests", "tools", "docs")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _defined(tree: ast.AST) -> set[str]:
    """The private names a module defines: functions, classes, assignments, attributes of self/cls (an
    assignment to another module's attribute, as a test's patch, defines nothing)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
              and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return {name for name in names if _private(name)}


def crossings(sources: dict[str, str]) -> list[str]:
    """Each use of a project-defined private name outside the module that defines it, as "module:line: name"
    (sources: module name -> source text)."""
    trees = {module: ast.parse(text) for module, text in sources.items()}
    defined = {module: _defined(tree) for module, tree in trees.items()}
    found = []
    for module, tree in trees.items():
        elsewhere = set().union(*(names for other, names in defined.items() if other != module))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PACKAGES:
                found += [f"{module}:{node.lineno}: from {node.module} import {alias.name}"
                          for alias in node.names if _private(alias.name) and node.module != module]
            elif (isinstance(node, ast.Attribute) and _private(node.attr) and node.attr in elsewhere
                  and node.attr not in defined[module]):
                found.append(f"{module}:{node.lineno}: .{node.attr}")
    return found


def _project_sources() -> dict[str, str]:
    return {_module_name(path): path.read_text()
            for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def test_no_private_name_is_used_across_modules():
    assert crossings(_project_sources()) == []


def test_a_crossing_is_found():
    # The check itself: an import of another module's private name, and a call of another module's private
    # method, are each reported; a module's use of its own private names is not.
    sources = {"twinvae.a": "def _helper():\n    pass\n\nclass A:\n    def _step(self):\n        _helper()\n",
               "twinvae.b": "from twinvae.a import _helper\n\ndef run(a):\n    return a._step()\n"}
    assert crossings(sources) == ["twinvae.b:1: from twinvae.a import _helper", "twinvae.b:4: ._step"]
    assert crossings({"twinvae.a": sources["twinvae.a"]}) == []
    patched = {**sources, "twinvae.b": "import twinvae.a\n\ntwinvae.a._helper = print\n"}
    assert crossings(patched) == ["twinvae.b:3: ._helper"]
