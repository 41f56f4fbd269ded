#!/usr/bin/env bash
# Does the result hold under another document order and held-out split? The study's seeds change only the
# model initialisation: every run reads the bundled corpus in the one order `tst prepare --seed 0` fixed,
# and TST, which reads 1.75x the tokens, ends its run on other documents than the baseline — so the
# study's intervals do not cover data-order variance. Here the corpus is prepared again with --seed 1
# and --seed 2 (another shuffle of the documents: another training order and another held-out set), and
# the two shapes that decide the verdict train as in the study (init seed 0): d128/L2 (the best baseline
# at its FLOPs) and d512/L1 (TST's best shape).
# Usage: bash experiments/2026-12-01-where-tst-pays/data-order.sh OUT_ROOT [TST_BIN]
set -euo pipefail
OUT=${1:?usage: data-order.sh OUT_ROOT [TST_BIN]}
TST=${2:-tst}
source "$(dirname "$0")/settings.sh"
for DSEED in 1 2; do
  DATA=$OUT/data-seed$DSEED
  [ -f "$DATA/meta.json" ] || "$TST" prepare --input bundled --out "$DATA" --vocab-size 4096 --seed $DSEED
  for SHAPE in "128 2" "512 1"; do
    read -r DIM LAYERS <<< "$SHAPE"
    "$TST" sweep --data "$DATA" --out "$OUT/data-order-seed$DSEED" "${STUDY_FLAGS[@]}" --seeds 1 \
      --dims $DIM --layers $LAYERS --lrs 1e-3 --bag-sizes 4 --fracs 0.25
  done
  # The frontier candidates found later (run.sh stages bagsize, bag8): d512/L1 at lr 5e-4 with s = 6, r = 0.2 and
  # 0.25, and their baseline.
  "$TST" sweep --data "$DATA" --out "$OUT/data-order-seed$DSEED" "${STUDY_FLAGS[@]}" --seeds 1 \
    --dims 512 --layers 1 --lrs 5e-4 --bag-sizes 6 --fracs 0.2,0.25
done
# fold=batch at s = 4 (run.sh stage fold), the one variant that passed the d128/L2 baseline under the study's order:
# under both other orders, side by side (one run each; the baselines above are reused).
for DSEED in 1 2; do
  "$TST" sweep --data "$OUT/data-seed$DSEED" --out "$OUT/data-order-seed$DSEED" "${STUDY_FLAGS[@]}" --seeds 1 \
    --dims 512 --layers 1 --lrs 5e-4 --bag-sizes 4 --fracs 0.25 --variants fold=batch &
done
wait
# ... and the fold with fitted weights (run.sh stage fold-fitted), each order's weights fitted to its own training split.
for DSEED in 1 2; do
  "$TST" sweep --data "$OUT/data-seed$DSEED" --out "$OUT/data-order-seed$DSEED" "${STUDY_FLAGS[@]}" --seeds 1 \
    --dims 512 --layers 1 --lrs 5e-4 --bag-sizes 4 --fracs 0.25 --weightings fitted --variants fold=batch &
done
wait
