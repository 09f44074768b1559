#!/usr/bin/env bash
# On the GPU machine: build the CUDA library, run every GPU test, then the main benchmark on
# the model shapes plus two intermediate sizes. Usage: bash bench/gpu_suite.sh OUT_DIR
set -uo pipefail
out=${1:?usage: bench/gpu_suite.sh OUT_DIR}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv | tee "$out/gpu.txt"
python3 -m comfy_sage.build --arch 90 --jobs 16 2>&1 | tail -3
python3 -m comfy_sage info | tee -a "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_cuda_backend.py tests/test_triton_backend.py 2>&1 \
    | tee "$out/gpu-tests.log" | tail -8
python3 -m comfy_sage bench --variants 'sdpa.default,sdpa.cudnn,triton.*,cuda.*,reference.int8qk-fp8pv,reference.int8qk-fp16pv,reference.int8qk-int8pv' \
    --shape 1,40,8192,128 --shape 1,24,16384,128 --json "$out/bench.json" 2>&1 | tee "$out/bench.log" | tail -60
