#!/bin/bash
# One device call: default build + A/B builds (SM90_DEFINES each), timings, ncu of the default.
# usage: bash bench/sm90_ab.sh "DEF1 DEF2" "DEF3" ...   (each argument one A/B build: -D defines that
# csrc/sm90 reads; the shipped sources have none, so an A/B adds its #ifdef on a scratch copy first)
# env: SHAPES (timed with SDPA, default 0,3), AB_SHAPES (the A/B builds, default 0), ROUNDS (A/B timing
# rounds, default 1: builds alternate within a round, so clock drift hits all alike), NCU=0 skips ncu,
# PVS (the P·V modes each round times, default "$SM90_PV" or fp8), TEST=1 runs the harness test of every
# build in every mode first (max rel-L1 against the reference and against float32, one line each).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p /tmp/o0; SM90_BUILD=/tmp/b0 python bench/sm90_bench.py build --out /tmp/o0 > /tmp/build0.log 2>&1 &
i=1
for defs in "$@"; do
  mkdir -p /tmp/o$i
  SM90_BUILD=/tmp/b$i SM90_DEFINES="$defs" python bench/sm90_bench.py build --out /tmp/o$i > /tmp/build$i.log 2>&1 &
  i=$((i+1))
done
wait
grep -h '"rc"' /tmp/build*.log
PVS=${PVS:-${SM90_PV:-fp8}}
if [ "${TEST:-0}" = 1 ]; then
  for pv in $PVS; do for b in $(seq 0 $#); do
    SM90_PV=$pv SM90_BUILD=/tmp/b$b timeout 120 python bench/sm90_bench.py test --tag=-b$b-$pv --out $OUT > /tmp/test-b$b-$pv.log 2>&1
    python3 - /tmp/test-b$b-$pv.log "$pv build $b" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
ref = [float(x) for x in re.findall(r"'vs_ref': \{'cos': [0-9.e-]+, 'rel_l1': ([0-9.e-]+)", t)]
f32 = [float(x) for x in re.findall(r"'vs_f32': \{'cos': [0-9.e-]+, 'rel_l1': ([0-9.e-]+)", t)]
print(sys.argv[2], len(ref), "cases, max vs_ref", max(ref, default=None), "max vs_f32", max(f32, default=None),
      "" if ref else t[-800:])
PY
  done; done
fi
for pv in $PVS; do
  SM90_PV=$pv SM90_BUILD=/tmp/b0 timeout 200 python bench/sm90_bench.py time --shapes ${SHAPES:-0,3} --tag=-$pv --out $OUT 2>&1 | grep x
done
for r in $(seq 1 ${ROUNDS:-1}); do
  for pv in $PVS; do
    i=1
    for defs in "$@"; do
      echo "== round $r $pv: $defs"; grep -h -A3 attn_sm90_kernelILi128 /tmp/o$i/sm90-ptxas.txt | grep -E "spill|Used" | sort -u
      SM90_PV=$pv SM90_BUILD=/tmp/b$i SM90_DEFINES="$defs" timeout 90 python bench/sm90_bench.py time --shapes ${AB_SHAPES:-0} --no-sdpa \
        --tag=-ab$i-r$r-$pv --out $OUT 2>&1 | grep x
      i=$((i+1))
    done
    echo "== round $r $pv: default"
    [ "$r" -gt 1 ] && SM90_PV=$pv SM90_BUILD=/tmp/b0 timeout 90 python bench/sm90_bench.py time --shapes ${AB_SHAPES:-0} --no-sdpa \
      --tag=-ab0-r$r-$pv --out $OUT 2>&1 | grep x
  done
done
if [ "${NCU:-1}" = 1 ]; then
  SM90_BUILD=/tmp/b0 timeout 150 ncu --clock-control none --kernel-name regex:attn_sm90 --launch-skip 1 --launch-count 1 \
    --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
    --section MemoryWorkloadAnalysis --section InstructionStats --section LaunchStats --section Occupancy \
    -o $OUT/sm90-ncu python bench/sm90_bench.py profile > /tmp/ncu.log 2>&1; tail -3 /tmp/ncu.log
  ncu --import $OUT/sm90-ncu.ncu-rep --page details > /tmp/ncu-details.txt 2>&1
  ncu --import $OUT/sm90-ncu.ncu-rep --page raw > /tmp/ncu-raw.txt 2>&1
  grep -E "Duration|Throughput|Issue Slots|Eligible|Executed Ipc" /tmp/ncu-details.txt | head -12
  grep -E "issue_stalled.*per_issue_active|pipe_.*pct_of_peak_sustained_active" /tmp/ncu-raw.txt | awk '$NF+0 > 0.05' | head -45
  cp /tmp/ncu-raw.txt $OUT/sm90-ncu-raw.txt
fi
