#!/usr/bin/env bash
# Where does TST start to beat the equal-FLOPs baseline on the bundled corpus?
# tiny preset (0.62M params), 8 rows x 64 positions per step, s in {2, 4}, r = 0.25, 3 seeds,
# step budgets 1000 and 3000 (each budget is a full run with its own warmup-stable-decay schedule).
# Usage: bash experiments/2026-11-22-cpu-budget-sweep/run.sh OUT_ROOT   (data prepared below if missing)
set -euo pipefail
OUT=${1:-runs/exp-cpu-budget}
DATA=$OUT/data
[ -f "$DATA/meta.json" ] || tst prepare --input bundled --out "$DATA" --vocab-size 4096
for STEPS in 1000 3000; do
  tst sweep --data "$DATA" --out "$OUT/steps$STEPS" --preset tiny --steps $STEPS --batch-size 8 --seq-len 64 \
    --bag-sizes 2,4 --fracs 0.25 --weightings uniform --seeds 3 --jobs 2 \
    --eval-every $((STEPS / 10)) --train.lr=3e-3 --train.warmup_steps=20 --train.decay_frac=0.2 \
    --eval.tokens=32768 --log.tensorboard=false
done
# The same 3000-step comparison at a lower learning rate (is the baseline's seed spread an lr artefact?)
tst compare --data "$DATA" --out "$OUT/steps3000-lr1e-3" --preset tiny --steps 3000 --batch-size 8 --seq-len 64 \
  --bag-size 4 --superposition-frac 0.25 --seeds 3 --jobs 2 --arms baseline,tst \
  --eval-every 300 --train.lr=1e-3 --train.warmup_steps=20 --train.decay_frac=0.2 \
  --eval.tokens=32768 --log.tensorboard=false
# At lr 1e-3: does a shorter superposition phase (r = 0.1) or a smaller bag (s = 2) lose less?
tst sweep --data "$DATA" --out "$OUT/steps3000-lr1e-3-r0.1" --preset tiny --steps 3000 --batch-size 8 --seq-len 64 \
  --bag-sizes 2,4 --fracs 0.1 --weightings uniform --seeds 3 --jobs 2 \
  --eval-every 300 --train.lr=1e-3 --train.warmup_steps=20 --train.decay_frac=0.2 \
  --eval.tokens=32768 --log.tensorboard=false
