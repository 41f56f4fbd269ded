#!/usr/bin/env bash
# Does TST's standing change with the step budget, and does the compute frontier turn with it? At 3000 and
# 9000 steps (8 x 64 positions per step): d = 512 / 1 layer, where TST beats its own baseline, and
# d = 128 / 2 layers, the best baseline shape at 3000 steps on the bundled corpus; s = 4, r = 0.25,
# lr 1e-3, 3 seeds, on the ~80 MB offline prose+reference corpus (so that 9000 TST steps, 8.1M tokens,
# stay inside one epoch). Each step budget is one pool of runs; a rerun continues unfinished ones.
# Usage: bash experiments/2026-12-01-step-budget/run.sh OUT_ROOT PROSE_DIR [TST_BIN] [SEEDS]
#   PROSE_DIR: the output of `python scripts/build_corpus.py --large PROSE_DIR --no-bundled` (Debian packages)
#   SEEDS (default 3): 1 trains seed 0 of every cell first; a later run with 3 adds seeds 1 and 2.
set -euo pipefail
OUT=${1:?usage: run.sh OUT_ROOT PROSE_DIR [TST_BIN] [SEEDS]}
PROSE=${2:?usage: run.sh OUT_ROOT PROSE_DIR [TST_BIN] [SEEDS]}
TST=${3:-tst}
SEEDS=${4:-3}
DATA=$OUT/data-large
[ -f "$DATA/meta.json" ] || "$TST" prepare --input "$PROSE"/*.jsonl.xz --out "$DATA" --vocab-size 4096
for CELL in "3000 512 1" "3000 128 2" "9000 512 1" "9000 128 2"; do
  read -r STEPS DIM LAYERS <<< "$CELL"
  "$TST" sweep --data "$DATA" --out "$OUT/sweep-$STEPS" --preset tiny --steps $STEPS --batch-size 8 --seq-len 64 \
    --dims $DIM --layers $LAYERS --lrs 1e-3 --bag-sizes 4 --fracs 0.25 --weightings uniform --seeds "$SEEDS" --jobs 2 \
    --eval-every $((STEPS / 12)) --train.warmup_steps=20 --train.decay_frac=0.2 --eval.tokens=65536 \
    --log.tensorboard=false --checkpoint.every=500 --checkpoint.keep=1
done
