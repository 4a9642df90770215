#!/bin/sh
# The GPU check on a machine without network: zvperf from this checkout, installed without its dependencies over
# the machine's own packages, plus the wheels of scripts/gpu-check-wheels.txt carried in WHEEL_DIR (default .whl).
# Run from the repository root:  sh scripts/gpu-check-offline.sh OUTPUT_DIR [WHEEL_DIR] [GPU-CHECK OPTIONS]
# (for instance --backends torch,cudagraph --budget 200 for a shorter run of some backends).
set -eu
out=${1:?usage: sh scripts/gpu-check-offline.sh OUTPUT_DIR [WHEEL_DIR] [GPU-CHECK OPTIONS]}
shift
wheels=.whl
case ${1-} in -* | "") ;; *) wheels=$1; shift ;; esac
site=${TMPDIR:-/tmp}/zvperf-gpu-check-site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
# Installed (editable, no dependencies) so that pytest finds the plugin's entry point; where the machine's setuptools
# cannot build it, the check runs the checkout from PYTHONPATH and loads the plugin itself.
if ! python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>/dev/null; then
    echo "gpu-check-offline: zvperf not installed (no usable setuptools here); running the checkout from PYTHONPATH"
    export PYTHONPATH="$PWD:$PYTHONPATH"
fi
exec python3 -m zvperf gpu-check "$out" "$@"
