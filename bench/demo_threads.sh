#!/bin/bash
# A/B: the demo (SmolLM2) and the smoke demo with 1 vs 2 OpenBLAS threads, back to back.
# Usage: bench/demo_threads.sh [output folder]; results in its `summary` (wall, user, sys s).
cd "$(dirname "$0")/.."
out=${1:-/tmp/demo-threads}; rm -rf $out; mkdir -p $out
for round in 1 2; do
  for t in 1 2; do
    s=$(date +%s.%N); l1=$(cut -d' ' -f1 /proc/loadavg)
    OPENBLAS_NUM_THREADS=$t /usr/bin/time -f "%e %U %S" -o $out/smoke-$t-$round.time uv run ai-lsp demo --smoke --workdir $out/smoke-$t-$round > $out/smoke-$t-$round.log 2>&1
    echo "smoke threads=$t round=$round load=$l1 $(cat $out/smoke-$t-$round.time)" >> $out/summary
  done
done
for t in 2 1; do
  l1=$(cut -d' ' -f1 /proc/loadavg)
  OPENBLAS_NUM_THREADS=$t /usr/bin/time -f "%e %U %S" -o $out/real-$t.time uv run ai-lsp demo --workdir $out/real-$t > $out/real-$t.log 2>&1
  echo "real threads=$t load=$l1 $(cat $out/real-$t.time)" >> $out/summary
done
echo done >> $out/summary
