#!/usr/bin/env bash
# Creates .venv and installs bertsent into it with the extras BERTSENT_EXTRAS names, once (again when
# pyproject.toml or the torch settings change). Each script sources it, so each does its own set-up:
#   BERTSENT_EXTRAS=core        train, evaluate, predict: scripts/train.sh (unless BERTSENT_EXTRAS is set)
#   BERTSENT_EXTRAS=dev         tests, linters, docs and every extra: the default (scripts/test.sh, lint.sh, docs.sh)
#   BERTSENT_EXTRAS=serve,onnx  any extras of pyproject.toml, comma-separated
# (A variable, not an argument: a sourced script without arguments sees its caller's.)
# PyTorch: BERTSENT_TORCH picks it (default torch==2.13.0). Without an NVIDIA GPU (no nvidia-smi) the CPU build
# comes from PyTorch's own index, BERTSENT_TORCH_INDEX (https://download.pytorch.org/whl/cpu; set it empty for
# pip's own sources, which on PyPI is the CUDA build). An unreachable index is skipped: pip's own sources then.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"
extras="${BERTSENT_EXTRAS:-dev}"
torch_spec="${BERTSENT_TORCH:-torch==2.13.0}"
if command -v nvidia-smi > /dev/null 2>&1; then
  torch_index="${BERTSENT_TORCH_INDEX-}"
else
  torch_index="${BERTSENT_TORCH_INDEX-https://download.pytorch.org/whl/cpu}"
fi
# One stamp per extras installed: what they were installed from. dev holds every extra, and any holds core.
stamped="$(sha256sum < "$root/pyproject.toml" | cut -c1-16) $torch_spec ${torch_index:-pip-sources}"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)

installed() {
  grep -qxF "$stamped" "$venv/.bertsent-installed-$extras" "$venv/.bertsent-installed-dev" 2> /dev/null \
    || { [ "$extras" = core ] && grep -qxF "$stamped" "$venv"/.bertsent-installed-* 2> /dev/null; }
}

install_torch() {
  local has_torch='import sys; from importlib.metadata import version; from packaging.requirements import Requirement
sys.exit(not Requirement(sys.argv[1]).specifier.contains(version("torch"), prereleases=True))'
  local reachable='import sys, urllib.request
try:
    urllib.request.urlopen(urllib.request.Request(sys.argv[1].rstrip("/") + "/torch/", method="HEAD"), timeout=5)
except Exception as exc:
    sys.exit(f"PyTorch index {sys.argv[1]} unreachable ({exc}): torch comes from pip'"'"'s own sources.")'
  if "$venv/bin/python" -c "$has_torch" "$torch_spec" 2> /dev/null; then
    return  # a rerun after pyproject.toml changed: keep the build that is there
  fi
  # A quick look first: an unreachable index costs seconds here, where pip would retry for minutes.
  if [ -n "$torch_index" ] && "$venv/bin/python" -c "$reachable" "$torch_index"; then
    "${pip[@]}" --timeout 30 --index-url "$torch_index" "$torch_spec"
  else
    "${pip[@]}" "$torch_spec"
  fi
}

if [ ! -x "$venv/bin/python" ]; then
  echo "Creating a virtual environment in $venv ..." >&2
  "$python" -m venv "$venv"
fi
if ! installed; then
  echo "Installing bertsent ($extras) and its dependencies into $venv (first run: a few minutes) ..." >&2
  "${pip[@]}" --upgrade pip packaging
  install_torch  # first, so that the torch range in pyproject.toml is already met by the build chosen here
  if [ "$extras" = core ]; then
    "${pip[@]}" -e "$root"
  else
    "${pip[@]}" -e "$root[$extras]"
  fi
  # which build came: the CPU one, or CUDA's (several GB)
  "$venv/bin/python" -c "import torch; print('PyTorch', torch.__version__, 'with CUDA', torch.version.cuda or 'no: CPU only')" >&2
  echo "$stamped" > "$venv/.bertsent-installed-$extras"
fi
export PATH="$venv/bin:$PATH"
