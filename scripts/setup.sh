#!/usr/bin/env bash
# Creates .venv and installs bertsent into it (once; again when pyproject.toml changes).
# Sourced by scripts/train.sh and scripts/test.sh, so each does all of its own set-up.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"
# The CPU build of PyTorch; set BERTSENT_TORCH (e.g. "torch>=2.2") to keep or pick another build.
torch_spec="${BERTSENT_TORCH:-torch==2.13.0}"
stamp="$venv/.bertsent-installed"
want="$(cat "$root/pyproject.toml" | sha256sum | cut -c1-16) $torch_spec"

if [ ! -x "$venv/bin/python" ]; then
  echo "Creating a virtual environment in $venv ..." >&2
  "$python" -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "Installing bertsent and its dependencies into $venv (first run: a few minutes) ..." >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  # torch first, pinned, so the looser range in pyproject.toml is already satisfied and no CUDA build is pulled.
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$torch_spec"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root[dev]"
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
