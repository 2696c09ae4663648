#!/usr/bin/env bash
# Quick start: set up, then fine-tune the packaged MiniLM on Rotten Tomatoes (the built-in defaults).
# Extra arguments go to `bertsent train`, e.g. scripts/train.sh --epochs 1
set -euo pipefail
BERTSENT_EXTRAS="${BERTSENT_EXTRAS:-core}"  # what training needs, no extra
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$root"
bertsent train "$@"
