#!/usr/bin/env bash
# The pre-registered MoE record of README.md: the baseline's curve and the equal-FLOPs comparison, side by side
# (one thread each); a rerun continues (finished runs are reused, interrupted ones resume).
# Usage: bash experiments/2026-12-07-moe/run.sh OUT_ROOT [TST_BIN]
set -euo pipefail
OUT=${1:?usage: run.sh OUT_ROOT [TST_BIN]}
TST=${2:-tst}
DATA=$OUT/data
[ -f "$DATA/meta.json" ] || "$TST" prepare --input bundled --out "$DATA" --vocab-size 4096
FLAGS=(--data "$DATA" --preset qwen3-moe-tiny --lr 1e-3 --batch-size 8 --seq-len 32 --seeds 3 --jobs 1
       --eval-every 0 --train.warmup_steps=20 --train.decay_frac=0.2 --eval.tokens=16384 --log.tensorboard=false
       --train.threads=1)
"$TST" curve "${FLAGS[@]}" --step-budgets 1000,1500,2000 --out "$OUT/curve" &
"$TST" compare "${FLAGS[@]}" --steps 1000 --arms baseline,tst --bag-size 4 --superposition-frac 0.25 --tasks none \
  --out "$OUT/compare" &
wait
