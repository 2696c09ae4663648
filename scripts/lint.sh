#!/usr/bin/env bash
# Set up, then lint: ruff's checks (complexity at most 15 per function, see pyproject.toml) and its format check.
set -euo pipefail
BERTSENT_EXTRAS=dev
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$root"
ruff check .
ruff format --check .
