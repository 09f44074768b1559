#!/usr/bin/env bash
# On the GPU machine: the triton backend's GPU tests, then the benchmark on the model shapes.
# Usage (repository root): bash bench/triton_gpu.sh OUT_DIR
set -uo pipefail
out=${1:?usage: bench/triton_gpu.sh OUT_DIR}
export PYTHONUNBUFFERED=1
python3 -m pytest -q -x tests/test_triton_backend.py 2>&1 | tee "$out/triton-tests.log" | tail -25
python3 -m comfy_sage bench --variants 'sdpa.default,sdpa.cudnn,triton.*,reference.int8qk-fp8pv,reference.int8qk-fp16pv' \
    --json "$out/triton-bench.json" 2>&1 | tee "$out/triton-bench.log" | tail -40
