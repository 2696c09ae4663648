"""bertsent's optional parts (pyproject.toml's extras) and the one check that names the extra to install.

The core package trains, evaluates and predicts with PyTorch; each other feature needs its extra. A command
checks its extra before any work, so a missing package is one line (exit 2), not a traceback after minutes.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from bertsent.errors import BertsentError

# extra -> the modules it installs (import names), as [project.optional-dependencies] lists their packages
EXTRAS = {
    "onnx": ("onnx", "onnxscript", "onnxruntime"),
    "serve": ("fastapi", "uvicorn", "prometheus_client"),
    "explain": ("captum",),
    "tune": ("optuna",),
    "audit": ("cleanlab",),
    "ray": ("ray",),
    "tensorboard": ("tensorboard",),
}


def require_extra(extra: str, what: str, *modules: str) -> ModuleType:
    """Import `modules` (default: every module of `extra`) and return the first; when one is missing, a
    BertsentError saying so: "{what} needs the {extra} extra (... is missing): pip install 'bertsent[...]'".
    `what` names the feature as the user asked for it: a command ("serve"), a flag ("--backend onnx"), a class."""
    found = []
    for name in modules or EXTRAS[extra]:
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            raise BertsentError(
                f"{what} needs the {extra} extra ({name} is missing): pip install 'bertsent[{extra}]'"
            ) from None
    return found[0]
