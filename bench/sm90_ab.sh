#!/bin/bash
# One device call: default build + A/B builds (SM90_DEFINES each), timings, ncu of the default.
# usage: bash bench/sm90_ab.sh "DEF1 DEF2" "DEF3" ...   (each argument one A/B build)
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
SM90_BUILD=/tmp/b0 python bench/sm90_bench.py build --out $OUT > $OUT/build0.log 2>&1 &
i=1
for defs in "$@"; do
  mkdir -p /tmp/o$i
  SM90_BUILD=/tmp/b$i SM90_DEFINES="$defs" python bench/sm90_bench.py build --out /tmp/o$i > $OUT/build$i.log 2>&1 &
  i=$((i+1))
done
wait
grep -h '"rc"' $OUT/build*.log
SM90_BUILD=/tmp/b0 timeout 200 python bench/sm90_bench.py time --shapes ${SHAPES:-0,3} --out $OUT 2>&1 | grep x
i=1
for defs in "$@"; do
  echo "== $defs"
  SM90_BUILD=/tmp/b$i SM90_DEFINES="$defs" timeout 60 python bench/sm90_bench.py time --shapes 0 --no-sdpa --tag "-ab$i" --out $OUT 2>&1 | grep x
  i=$((i+1))
done
if [ "${NCU:-1}" = 1 ]; then
  SM90_BUILD=/tmp/b0 timeout 150 ncu --clock-control none --kernel-name regex:attn_sm90 --launch-skip 1 --launch-count 1 \
    --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
    --section MemoryWorkloadAnalysis --section InstructionStats --section LaunchStats --section Occupancy \
    -o $OUT/sm90-ncu python bench/sm90_bench.py profile > $OUT/ncu.log 2>&1
  ncu --import $OUT/sm90-ncu.ncu-rep --page details > $OUT/sm90-ncu.txt 2>&1
  grep -E "Duration|Throughput|Issue Slots|Warp Cycles|Eligible|Stall|Pipe|Executed Ipc|No Eligible|L2 Cache Through|Registers" $OUT/sm90-ncu.txt | head -40
fi
