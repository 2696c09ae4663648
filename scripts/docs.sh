#!/usr/bin/env bash
# Set up, then build the documentation site into site/ as CI does: --strict, so any warning (a broken link or
# anchor, a missing page, an API name the reference cannot find) fails the build. Extra arguments go to mkdocs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$root"
export NO_MKDOCS_2_WARNING=1  # Material's notice about its successor, printed on every build
mkdocs build --strict "$@"
