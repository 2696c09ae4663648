"""The package ships its annotations (PEP 561): a user's type checker reads them only with py.typed in the
wheel. That the annotations hold is mypy's job in scripts/lint.sh."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_py_typed_is_shipped():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    assert (ROOT / "src" / "bertsent" / "py.typed").is_file()
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "py.typed" in settings["tool"]["setuptools"]["package-data"]["bertsent"]
    mypy = settings["tool"]["mypy"]
    assert mypy["files"] == ["src/bertsent"] and "ignore_errors" not in mypy
