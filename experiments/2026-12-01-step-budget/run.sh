#!/usr/bin/env bash
# Does TST's standing change with the step budget? d = 512 / 1 layer at 3000 and 9000 steps (8 x 64
# positions per step), s = 4, r = 0.25, lr 1e-3, 3 seeds, on the ~80 MB offline prose+reference corpus
# (so that 9000 TST steps, 8.1M tokens, stay inside one epoch).
# Usage: bash experiments/2026-12-01-step-budget/run.sh OUT_ROOT PROSE_DIR [TST_BIN]
#   PROSE_DIR: the output of `python scripts/build_corpus.py --large PROSE_DIR --no-bundled` (Debian packages)
set -euo pipefail
OUT=${1:?usage: run.sh OUT_ROOT PROSE_DIR [TST_BIN]}
PROSE=${2:?usage: run.sh OUT_ROOT PROSE_DIR [TST_BIN]}
TST=${3:-tst}
DATA=$OUT/data-large
[ -f "$DATA/meta.json" ] || "$TST" prepare --input "$PROSE"/*.jsonl.xz --out "$DATA" --vocab-size 4096
for STEPS in 3000 9000; do
  "$TST" sweep --data "$DATA" --out "$OUT/sweep" --preset tiny --steps $STEPS --batch-size 8 --seq-len 64 \
    --dims 512 --layers 1 --lrs 1e-3 --bag-sizes 4 --fracs 0.25 --weightings uniform --seeds 3 --jobs 2 \
    --eval-every $((STEPS / 12)) --train.warmup_steps=20 --train.decay_frac=0.2 --eval.tokens=65536 \
    --log.tensorboard=false --checkpoint.every=500 --checkpoint.keep=1
done
