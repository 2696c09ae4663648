"""Imports point one way: helpers at the bottom, the command line on top (read from the source, lazy imports
inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "bertsent"

# Lower layers never import higher ones.
LAYERS = {
    "errors": 0,
    "files": 0,
    "progress": 0,
    "environment": 0,
    "defaults": 0,
    "extras": 0,
    "lazy": 0,
    "data": 1,
    "labels": 1,
    "model": 1,
    "batching": 1,
    "runtime": 1,
    "packing": 1,
    "streaming": 1,
    "inference": 2,
    "metrics": 2,
    "baselines": 2,
    "backends": 2,
    "explain": 2,
    "training": 3,
    "prediction": 3,
    "report": 3,
    "export": 3,
    "api": 4,
    "experiments": 4,
    "estimator": 4,
    "bulk": 4,
    "ray": 4,
    "serve": 4,
    "tune": 4,
    "audit": 4,
    "cli": 5,
    "__main__": 6,
    "__init__": 6,
}
# Within a layer, only these.
SAME_LAYER = {
    ("packing", "batching"),
    ("streaming", "data"),
    ("labels", "data"),
    ("backends", "inference"),
    ("backends", "metrics"),
    ("baselines", "metrics"),
    ("explain", "inference"),
    ("files", "errors"),
    ("extras", "errors"),
    ("training", "report"),
    ("experiments", "api"),
    ("estimator", "api"),
    ("tune", "api"),
    ("audit", "api"),
}


def _imports(path: Path) -> set[str]:
    """The bertsent modules a source file imports, as their top-level part (`training`, `cli`, `__init__`)."""
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
    for path in (SOURCE / "training").glob("*.py"):
        assert not _imports(path) & {"prediction", "__init__", "api", "cli"}, path.name
