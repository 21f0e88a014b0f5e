#!/usr/bin/env bash
# The GPU path check (benchmarks/gpu_check.py), as it runs on a bare GPU machine: at most 5 minutes
# on one H200; without CUDA its CPU fallback runs in a few minutes.
#
#     bash benchmarks/gpu_check.sh [gpu_check.py options]
#
# The GPU machine has torch, numpy, pyyaml and opencv but not pydantic, which nasplat's config and
# space files need. When `import pydantic` fails, the wheels in $NASPLAT_WHEELS (default
# benchmarks/wheels/, git-ignored) are unpacked into a temporary directory on PYTHONPATH. Fetch
# them on a machine with a registry for the GPU machine's Python (3.12 there):
#
#     pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#         --implementation cp -d benchmarks/wheels pydantic
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PYTHON" -c "import pydantic" 2>/dev/null; then
    WHEELS="${NASPLAT_WHEELS:-$ROOT/benchmarks/wheels}"
    shopt -s nullglob
    wheels=("$WHEELS"/*.whl)
    if [ ${#wheels[@]} -eq 0 ]; then
        echo "gpu_check: pydantic is not installed and $WHEELS holds no wheels (see the header of $0)" >&2
        exit 2
    fi
    SITE="$(mktemp -d)"
    trap 'rm -rf "$SITE"' EXIT
    for whl in "${wheels[@]}"; do
        "$PYTHON" -m zipfile -e "$whl" "$SITE"
    done
    export PYTHONPATH="$SITE:$PYTHONPATH"
    echo "gpu_check: pydantic from ${#wheels[@]} wheels in $WHEELS"
fi
exec timeout 300 "$PYTHON" benchmarks/gpu_check.py "$@"
