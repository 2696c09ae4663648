#!/usr/bin/env bash
# Set up, then run the test suite. Extra arguments go to pytest, e.g. scripts/test.sh -m "not slow"
set -euo pipefail
BERTSENT_EXTRAS=dev
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$root"
# Two workers, one thread each: the fastest split of two cores for many small tests.
python -m pytest -p no:cacheprovider -n 2 "$@"
