#!/usr/bin/env bash
# Set up, then lint: ruff's checks (complexity at most 15 per function, see pyproject.toml), its format check, and
# mypy on src/bertsent (the typed public API; settings in pyproject.toml's [tool.mypy]).
set -euo pipefail
BERTSENT_EXTRAS=dev
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$root"
ruff check .
ruff format --check .
mypy
