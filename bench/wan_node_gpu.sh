#!/usr/bin/env bash
# On the GPU machine: the Sage Attention node on full-size random-weight Wan 2.1 1.3B inside a
# real ComfyUI, once per backend. Needs a ComfyUI copy and the wheels it lacks there, carried as
# .dev/ComfyUI and .whl (both git-ignored). Usage: bash bench/wan_node_gpu.sh OUT_DIR [backend...]
set -uo pipefail
out=${1:?usage: bench/wan_node_gpu.sh OUT_DIR [backend...]}; shift
backends=${*:-cuda triton}
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD:/tmp/site
python3 -m comfy_sage.build --arch 90 --jobs 16 2>&1 | tail -3
for b in $backends; do
    python3 bench/wan_node_gpu.py --comfyui .dev/ComfyUI --backend "$b" --out "$out/wan-node-$b.json" 2>&1 \
        | grep -v Warning | tee "$out/wan-node-$b.log" | tail -25
done
