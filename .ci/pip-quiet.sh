#!/usr/bin/env bash
# pip install, minus the "Location ... is ignored" noise of this workplace's unreachable extra indexes.
# Usage: .ci/pip-quiet.sh PYTHON ARGS...   (pipefail keeps pip's exit status)
set -euo pipefail
py=$1
shift
"$py" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }
