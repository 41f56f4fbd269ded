#!/usr/bin/env bash
# Does the study's frontier win grow with the step budget? The one setting that passed the d128/L2 baseline at
# 3000 steps (d = 512 / 1 layer, lr 5e-4, s = 6, r = 0.2; experiments/2026-12-01-where-tst-pays) at 3000 and
# 9000 steps (8 x 64 positions per step), against d128/L2 (lr 1e-3, TST s = 4, r = 0.25 as in the study), on
# the ~84 MB offline prose+reference corpus so that 9000 TST steps (9.2M tokens at s = 6, r = 0.2) stay
# inside one epoch. Each step budget is one pool of runs; a rerun skips finished runs and resumes the rest.
# Usage: bash experiments/2026-12-02-step-budget-s6/run.sh OUT_ROOT PROSE_DIR [TST_BIN] [SEEDS]
#   PROSE_DIR: the output of `python scripts/build_corpus.py --large PROSE_DIR --no-bundled` (Debian packages:
#   their versions change, so a rebuild on another day may differ — README records the files' sha256).
#   SEEDS (default 1): seed 0 of every cell first; a later run with 3 adds seeds 1 and 2.
set -euo pipefail
OUT=${1:?usage: run.sh OUT_ROOT PROSE_DIR [TST_BIN] [SEEDS]}
PROSE=${2:?usage: run.sh OUT_ROOT PROSE_DIR [TST_BIN] [SEEDS]}
TST=${3:-tst}
SEEDS=${4:-1}
DATA=$OUT/data-large
[ -f "$DATA/meta.json" ] || "$TST" prepare --input "$PROSE"/*.jsonl.xz --out "$DATA" --vocab-size 4096
# The fifth cell (added 2026-12-03): s = 4, r = 0.25 with the batch fold, uniform and fitted weights — on the
# bundled corpus the variant that passed the d128/L2 baseline at d512/L1, and the combination that stacked both
# gains (experiments/2026-12-01-where-tst-pays, stages fold, fold-fitted); its baselines are the second cell's.
for CELL in "3000 128 2 1e-3 4 0.25" "3000 512 1 5e-4 6 0.2" "3000 512 1 5e-4 4 0.25 uniform,fitted fold=batch" \
            "9000 128 2 1e-3 4 0.25" "9000 512 1 5e-4 6 0.2"; do
  read -r STEPS DIM LAYERS LR S R WEIGHTINGS VARIANT <<< "$CELL"
  "$TST" sweep --data "$DATA" --out "$OUT/sweep-$STEPS" --preset tiny --steps $STEPS --batch-size 8 --seq-len 64 \
    --dims $DIM --layers $LAYERS --lrs $LR --bag-sizes $S --fracs $R --weightings "${WEIGHTINGS:-uniform}" --seeds "$SEEDS" --jobs 2 ${VARIANT:+--variants $VARIANT} \
    --eval-every $((STEPS / 12)) --train.warmup_steps=20 --train.decay_frac=0.2 --eval.tokens=65536 \
    --log.tensorboard=false --checkpoint.every=500 --checkpoint.keep=1
done
