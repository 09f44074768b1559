#!/bin/bash
# One device call: the package built for sm_90 (the sm90 family through cs_attention), its GPU
# tests, compute-sanitizer on the family, and the timings beside SDPA. Logs and JSON under $OUT.
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
(mkdir -p /tmp/o0; SM90_BUILD=/tmp/b0 python bench/sm90_bench.py build --out /tmp/o0 > /tmp/hb.log 2>&1) &
# AB="-D defines": a second harness build, tested and timed beside the default (none by default)
[ -n "${AB:-}" ] && (mkdir -p /tmp/o1; SM90_BUILD=/tmp/b1 SM90_DEFINES="$AB" python bench/sm90_bench.py build --out /tmp/o1 > /tmp/hb1.log 2>&1) &
python -m comfy_sage.build --arch 90 -q > $OUT/sm90-package-build.log 2>&1; echo "package build rc=$?"; tail -3 $OUT/sm90-package-build.log
wait
for b in 0 ${AB:+1}; do echo "== harness tests, build $b"; SM90_BUILD=/tmp/b$b timeout 90 python bench/sm90_bench.py test --tag=-b$b --out $OUT 2>&1 | python3 -c "
import sys,re
for l in sys.stdin:
    m=re.search(r\"'vs_f32': \{'cos': ([0-9.]+), 'rel_l1': ([0-9.]+).*'vs_ref': \{'cos': ([0-9.]+), 'rel_l1': ([0-9.]+)\", l)
    print(l[:60].strip(), m.groups() if m else l[:200].strip())"; done
set -o pipefail
timeout 240 python -m pytest tests/test_sm90.py "tests/test_cuda_backend.py" -k "sm90 or fp8 or kernel_choice" -q -p no:cacheprovider 2>&1 | tee $OUT/sm90-gpu-tests.log | tail -6
(SM90_BUILD=/tmp/b0 timeout 120 compute-sanitizer --tool memcheck python bench/sm90_bench.py sanitize 2>&1 | tail -2
 SM90_BUILD=/tmp/b0 timeout 120 compute-sanitizer --tool racecheck python bench/sm90_bench.py sanitize 2>&1 | tail -2) | tee $OUT/sm90-sanitizer.log
SM90_BUILD=/tmp/b0 timeout 200 python bench/sm90_bench.py time --out $OUT 2>&1 | grep x
[ -n "${AB:-}" ] && SM90_BUILD=/tmp/b1 timeout 60 python bench/sm90_bench.py time --shapes 0 --no-sdpa --tag=-ab --out $OUT 2>&1 | grep x
SM90_BUILD=/tmp/b0 timeout 100 python bench/sm90_bench.py time --shapes 2,3,4 --causal --tag=-causal --out $OUT 2>&1 | grep "causal=True"
