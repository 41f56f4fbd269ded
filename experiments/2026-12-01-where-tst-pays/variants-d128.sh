#!/usr/bin/env bash
# The paper's open variants at d = 128 / 2 layers (the best baseline shape at this budget), same settings
# and seeds as the width study; the plain baseline/TST runs are copies of the study's (reused, not retrained).
set -euo pipefail
OUT=${1:?usage: variants-d128.sh OUT_ROOT [TST_BIN]}
TST=${2:-tst}
DATA=$OUT/data
"$TST" sweep --data "$DATA" --out "$OUT/variants128" --preset tiny --steps 3000 --batch-size 8 --seq-len 64 \
  --weightings uniform --seeds 3 --jobs 1 --train.threads=1 --eval-every 250 --train.warmup_steps=20 --train.decay_frac=0.2 \
  --eval.tokens=32768 --log.tensorboard=false --checkpoint.every=500 --checkpoint.keep=1 \
  --dims 128 --layers 2 --lrs 1e-3 --bag-sizes 4 --fracs 0.25 \
  --variants bagging=document,transition_steps=300,fold=batch,loss=sum-to-one
