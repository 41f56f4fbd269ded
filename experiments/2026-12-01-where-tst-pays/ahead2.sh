#!/usr/bin/env bash
# Cells trained ahead of the queue after s = 6, r = 0.2 at d512/L1, lr 5e-4 (seed 0: 4.542) beat the d128/L2 baseline by 0.05:
# the same cell at init seeds 1-2 (the names run.sh's SEEDS=3 pass will reuse: the sweep checks the numbers),
# then under the two other document orders. Rerun continues (--resume when the directory exists).
set -u
T=/work/exp2/.venv/bin/tst
R=/work/study/study/runs
C=$R/d512-L1-lr0.0005-s6-r0.2-uniform-seed0/config.toml
# a finished run is skipped (as the sweep skips it); an interrupted one resumes from its checkpoint
go() {
  local out=$1; shift; local r=()
  grep -qs '"completed": true' "$out/summary.json" && { echo "$out: already complete"; return; }
  [ -d "$out" ] && r=(--resume)
  "$T" train --config "$C" "$@" --out "$out" "${r[@]}"
}
echo "=== $(date -u +%FT%TZ) s6 seeds 1-2"
go $R/d512-L1-lr0.0005-s6-r0.2-uniform-seed1 --seed 1 > /work/study/ahead2-seed1.log 2>&1 &
go $R/d512-L1-lr0.0005-s6-r0.2-uniform-seed2 --seed 2 > /work/study/ahead2-seed2.log 2>&1 &
wait
echo "=== $(date -u +%FT%TZ) s6 under data orders 1-2"
for D in 1 2; do
  go /work/study/data-order-seed$D/runs/d512-L1-lr0.0005-s6-r0.2-uniform-seed0 --data /work/study/data-seed$D \
    > /work/study/ahead2-order$D.log 2>&1 &
done
wait
echo "=== $(date -u +%FT%TZ) ahead done"
