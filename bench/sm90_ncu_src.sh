#!/bin/bash
# ncu source-level (SASS) stall sampling of the sm90 attention kernel, 1x40x8192x128.
export PYTHONUNBUFFERED=1
mkdir -p /tmp/o0; SM90_BUILD=/tmp/b0 python bench/sm90_bench.py build --out /tmp/o0 > /tmp/build0.log 2>&1
SM90_BUILD=/tmp/b0 timeout 200 ncu --clock-control none --kernel-name regex:attn_sm90 --launch-skip 1 --launch-count 1 \
  --section SourceCounters --section WarpStateStats --section SpeedOfLight -o /tmp/src python bench/sm90_bench.py profile > /tmp/ncu.log 2>&1
tail -2 /tmp/ncu.log
ncu --import /tmp/src.ncu-rep --page source --csv --print-source sass > $OUT/sm90-ncu-source.csv 2>/tmp/ncu-err.txt
head -c 600 $OUT/sm90-ncu-source.csv; wc -l $OUT/sm90-ncu-source.csv; head -3 /tmp/ncu-err.txt
ncu --import /tmp/src.ncu-rep --page details | grep -E "Duration|Issue Slots|Eligible" 
