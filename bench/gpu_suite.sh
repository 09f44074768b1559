#!/usr/bin/env bash
# On the GPU machine, one call: set up as a user would (install.py: build + self-test), the
# shape sweep that backs dispatch.RULES and the Hopper family's table, then the README's test
# command. Usage: COMFY_SAGE_GIT_SHA=<sha> bash bench/gpu_suite.sh OUT_DIR [pytest seconds]
set -uo pipefail
out=${1:?usage: bench/gpu_suite.sh OUT_DIR [pytest seconds]}
test_s=${2:-300}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,temperature.gpu --format=csv | tee "$out/gpu.txt"
( time python3 install.py --arch 90 --jobs 16 ) > "$out/install.log" 2>&1; echo "install.py rc=$?" | tee -a "$out/install.log"
tail -25 "$out/install.log"
sdpa='sdpa.cudnn,sdpa.flash,sdpa.efficient,sdpa.default'
args=()
for d in 64 128; do for n in 1024 2048 4096 8192 16384 32768; do
    args+=(--shape "4,32,$n,$d" --shape "4,32,$n,$d,causal"); done; done
python3 -m comfy_sage bench --only-shapes "${args[@]}" --rep-ms 200 \
    --variants "$sdpa,cuda.int8qk-fp8pv,cuda.int8qk-fp8-acc16pv,triton.int8qk-fp8pv" --json "$out/sweep-4x32.json" 2>/dev/null \
    | tee "$out/sweep-4x32.txt" | tail -60
python3 -m comfy_sage bench --rep-ms 300 --slow-max-tokens 0 \
    --variants "$sdpa,cuda.int8qk-fp8pv,cuda.int8qk-fp8-acc16pv,cuda.int8qk-fp16pv,triton.int8qk-fp8pv" --json "$out/sweep-models.json" \
    2>/dev/null | tee "$out/sweep-models.txt" | tail -60
timeout "$test_s" python3 -m pytest -q -p no:cacheprovider -rs tests > "$out/gpu-tests.log" 2>&1
echo "pytest rc=$?" >> "$out/gpu-tests.log"; tail -30 "$out/gpu-tests.log"
