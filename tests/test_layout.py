"""Imports point one way: helpers at the bottom, the command line on top (read from the source, lazy imports
inside functions included). A package is one concern; its modules may import each other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "bertsent"

# Lower layers never import higher ones. Packages first, then the single modules beside them.
LAYERS = {
    "errors": 0,
    "checks": 0,
    "files": 0,
    "progress": 0,
    "environment": 0,
    "defaults": 0,
    "extras": 0,
    "lazy": 0,
    "runtime": 1,
    "data": 1,
    "modeling": 2,
    "evaluation": 3,
    "training": 4,
    "prediction": 4,
    "serving": 5,
    "workflows": 5,
    "ray": 5,  # the documented path bertsent.ray: re-exports prediction.ray
    "cli": 6,
    "__main__": 7,
    "__init__": 7,
}
# Across groups of one layer, only these.
SAME_LAYER = {
    ("checks", "errors"),
    ("files", "errors"),
    ("progress", "errors"),
    ("extras", "errors"),
}


def _imports(path: Path) -> set[str]:
    """The bertsent groups a source file imports, as their top-level part (`training`, `cli`, `__init__`)."""
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts  # ("bertsent", "training", "fit")
    package = parts[:-1]  # the package a relative import starts from (an __init__ is in its own package)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = list(package[: len(package) - node.level + 1])
            names = [[*base, *(node.module.split(".") if node.module else [alias.name])] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module.split(".")]
        else:
            continue
        for name in names:
            if name[0] == "bertsent":
                found.add(name[1] if len(name) > 1 else "__init__")
    return found


def _group(path: Path) -> str:
    return path.relative_to(SOURCE).parts[0].removesuffix(".py")


def test_every_module_has_a_layer():
    assert {_group(p) for p in SOURCE.rglob("*.py")} == set(LAYERS)


@pytest.mark.parametrize("path", sorted(SOURCE.rglob("*.py")), ids=lambda p: str(p.relative_to(SOURCE)))
def test_imports_point_down(path):
    group = _group(path)
    for target in _imports(path) - {group}:
        assert target != "__init__", f"{group} imports the package itself"
        below = LAYERS[target] < LAYERS[group]
        assert below or (group, target) in SAME_LAYER, f"{group} (layer {LAYERS[group]}) imports {target}"


def test_training_never_imports_prediction_or_the_package():
    for path in (SOURCE / "training").rglob("*.py"):
        assert not _imports(path) & {"prediction", "__init__", "workflows", "cli"}, path.name


@pytest.mark.parametrize("package", sorted(p.parent.name for p in SOURCE.glob("*/__init__.py")))
def test_each_package_names_its_modules(package):
    """A newcomer reads a package's docstring to find where a thing lives: every module is listed there."""
    folder = SOURCE / package
    doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
    for module in folder.glob("*.py"):
        if module.stem != "__init__":
            named = re.search(rf"(^|`){module.stem}\b", doc, re.M)
            assert named, f"{package}/__init__.py does not name {module.stem}"
