#!/usr/bin/env bash
# On the GPU machine: bench/e2e.py in a real ComfyUI. Needs the ComfyUI tarball (.dev/) and the
# wheels the device image lacks (.whl-e2e/: av, pydantic(-core, -settings), python-dotenv,
# annotated-types, typing-inspection, torchsde, trampoline), both git-ignored and carried.
# Usage: COMFY_SAGE_GIT_SHA=<sha> bash bench/e2e_gpu.sh OUT_DIR
set -uo pipefail
out=${1:?usage: bench/e2e_gpu.sh OUT_DIR}
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD:/tmp/site
source bench/comfy_device_env.sh
timeout 300 python3 bench/e2e.py --comfyui "$comfy" --models wan14b-480p,wan1.3b-480p,flux-1024,sdxl-1024 \
    --modes host,auto,fp8-acc16,accurate,fp32 --steps 4 --out "$out/e2e-480p-image.json" 2>&1 | grep -v -i warn | tail -20
timeout 240 python3 bench/e2e.py --comfyui "$comfy" --models wan14b-720p --modes host,auto,fp8-acc16,fp32 --steps 3 \
    --out "$out/e2e-720p.json" 2>&1 | grep -v -i warn | tail -8
