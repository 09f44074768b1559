#!/usr/bin/env bash
# On the GPU machine, one call: what falling back costs (bench/fallback_overhead.py, first: it
# times Python and wants idle cores), the public SageAttention built from source (.dev/sage: a
# copy of thu-ml/SageAttention, git-ignored, never committed), timed beside ours and SDPA
# (bench/public_sage.py), then bench/e2e.py with ComfyUI's own sage path as a mode. Carry .dev and
# .whl-e2e (see bench/e2e_gpu.sh). Usage: COMFY_SAGE_GIT_SHA=<sha> bash bench/public_sage_gpu.sh OUT_DIR
# env: PHASES (default "fallback kernel e2e"), MODELS (e2e), DEADLINE_S (the call's seconds, default 585).
# Without the kernel phase only the public package's sm_90 extensions are built (its sm80/sm89
# ones are optional imports there; the build takes half the time).
set -uo pipefail
out=${1:?usage: bench/public_sage_gpu.sh OUT_DIR}
phases=${PHASES:-fallback kernel e2e}
export SAGEATTENTION_SOURCE="$(cat .dev/sage/SOURCE)"
t0=$SECONDS
export PYTHONUNBUFFERED=1
source bench/comfy_device_env.sh
[[ $phases == *fallback* ]] && PYTHONPATH=$PWD timeout 120 python3 bench/fallback_overhead.py --json "$out/fallback-overhead.json" \
    > "$out/fallback-overhead.log" 2>&1 && tail -10 "$out/fallback-overhead.log"
rm -rf /tmp/sage && cp -r .dev/sage /tmp/sage
[[ $phases == *kernel* ]] || python3 - <<'PY'
import re
p = "/tmp/sage/setup.py"
s, n = re.subn(r"(?m)^    if HAS_SM(80|89) or .*:$", "    if False:", open(p).read())
assert n == 2, n
open(p, "w").write(s)
PY
(cd /tmp/sage && TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 EXT_PARALLEL=4 NVCC_APPEND_FLAGS="--threads 4" \
    timeout 330 python3 setup.py build_ext --inplace > /tmp/sage-build.log 2>&1); echo "sage build rc=$? after $((SECONDS - t0)) s"
grep -iE "error|Error" /tmp/sage-build.log | head -5; tail -3 /tmp/sage-build.log > "$out/sage-build-tail.log"
export PYTHONPATH=$PWD:/tmp/site:/tmp/sage
[[ $phases == *kernel* ]] && timeout 150 python3 bench/public_sage.py --sweep --json "$out/public-sage.json" 2>&1 | grep -v -i warn | tee "$out/public-sage.log"
[[ $phases == *e2e* ]] || exit 0
left=$((${DEADLINE_S:-585} - (SECONDS - t0)))
echo "e2e gets ${left} s"
timeout "$left" python3 bench/e2e.py --comfyui "$comfy" --models ${MODELS:-wan14b-480p,wan1.3b-480p,flux-1024,sdxl-1024} \
    --modes host,auto,sageattention --steps 4 --out "$out/e2e-sage.json" 2>&1 | grep -v -i warn | tail -25 | tee "$out/e2e.log"
