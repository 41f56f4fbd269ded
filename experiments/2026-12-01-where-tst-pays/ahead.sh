#!/usr/bin/env bash
# As run on the study machine (paths are that machine's): the cells it trains are the ones run.sh (SEEDS=3) and
# data-order.sh name, trained early; those scripts reuse them after checking that every number matches.
# When a TST cell at d512/L1, lr 5e-4 beat the d128/L2 baseline at seed 0, the same cell was trained ahead of
# the queue at init seeds 1-2, then under the two other document orders. Ran twice:
#   bash ahead.sh s6-r0.25-uniform   (after stage bagsize; as run, its logs were ahead-*.log)
#   bash ahead.sh s6-r0.2-uniform    (after stage bag8; as run, ahead2-*.log)
# Rerun continues: a finished run is skipped (as the sweep skips it), an interrupted one resumes.
set -u
CELL=${1:?usage: ahead.sh TST_CELL (e.g. s6-r0.2-uniform)}
T=/work/exp2/.venv/bin/tst
R=/work/study/study/runs
NAME=d512-L1-lr0.0005-$CELL
C=$R/$NAME-seed0/config.toml
go() {
  local out=$1; shift; local r=()
  grep -qs '"completed": true' "$out/summary.json" && { echo "$out: already complete"; return; }
  [ -d "$out" ] && r=(--resume)
  "$T" train --config "$C" "$@" --out "$out" "${r[@]}"
}
echo "=== $(date -u +%FT%TZ) $CELL seeds 1-2"
for S in 1 2; do go $R/$NAME-seed$S --seed $S > /work/study/ahead-$CELL-seed$S.log 2>&1 & done
wait
echo "=== $(date -u +%FT%TZ) $CELL under data orders 1-2"
for D in 1 2; do
  go /work/study/data-order-seed$D/runs/$NAME-seed0 --data /work/study/data-seed$D \
    > /work/study/ahead-$CELL-order$D.log 2>&1 &
done
wait
echo "=== $(date -u +%FT%TZ) ahead done"
