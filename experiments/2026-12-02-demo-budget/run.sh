#!/usr/bin/env bash
# Does the study's frontier win (d = 512 / 1 layer, lr 5e-4, s = 6, r = 0.2; 3000 steps x 8 x 64) survive at the
# demo's budget (1500 steps x 8 x 32, configs/demo_cpu.toml), where a TST pair of that shape would fit in
# `make demo`'s 10 minutes? Against the shapes that are cheapest at that budget: d64/L2 and d128/L2 baselines
# (and their TST runs, s = 4, r = 0.25, as in the demo). d512/L1 at lr 5e-4 (the study's best rate) and 1e-3
# (a short run may want a higher one). One pool; a rerun skips finished runs and resumes interrupted ones.
# Usage: bash experiments/2026-12-02-demo-budget/run.sh OUT_ROOT [TST_BIN] [SEEDS]   (SEEDS default 1)
set -euo pipefail
OUT=${1:?usage: run.sh OUT_ROOT [TST_BIN] [SEEDS]}
TST=${2:-tst}
SEEDS=${3:-1}
DATA=$OUT/data
[ -f "$DATA/meta.json" ] || "$TST" prepare --input bundled --out "$DATA" --vocab-size 4096
FLAGS=(--data "$DATA" --out "$OUT/demo-budget" --preset tiny --steps 1500 --batch-size 8 --seq-len 32
       --weightings uniform --jobs 2 --seeds "$SEEDS" --eval-every 250 --train.warmup_steps=20
       --train.decay_frac=0.2 --eval.tokens=16384 --log.tensorboard=false --checkpoint.every=500
       --checkpoint.keep=1)
"$TST" sweep "${FLAGS[@]}" --dims 64,128 --layers 2 --lrs 1e-3 --bag-sizes 4 --fracs 0.25
"$TST" sweep "${FLAGS[@]}" --dims 512 --layers 1 --lrs 5e-4,1e-3 --bag-sizes 6 --fracs 0.2
# Added 2026-12-03: the batch fold at s = 4, r = 0.25 — the variant that passed the d128/L2 baseline at the study's
# budget and was level with it under the two other document orders — with plain s = 4 at the same shape and rate.
"$TST" sweep "${FLAGS[@]}" --dims 512 --layers 1 --lrs 5e-4 --bag-sizes 4 --fracs 0.25 --variants plain,fold=batch
# ... and both with fitted weights (on the study's budget the fold with fitted weights led the d128/L2 baseline by 0.12).
"$TST" sweep "${FLAGS[@]}" --dims 512 --layers 1 --lrs 5e-4 --bag-sizes 4 --fracs 0.25 --weightings fitted \
  --variants plain,fold=batch
# Added 2026-12-03 (second session): seeds 1 and 2 of the fold with fitted weights (and its baseline), and
# d256/L2 at lr 5e-4 — a shape between the two, at the wide shapes' rate — with the same TST setting.
"$TST" sweep "${FLAGS[@]}" --seeds 3 --dims 512 --layers 1 --lrs 5e-4 --bag-sizes 4 --fracs 0.25 --weightings fitted \
  --variants fold=batch
"$TST" sweep "${FLAGS[@]}" --dims 256 --layers 2 --lrs 5e-4 --bag-sizes 4 --fracs 0.25 --weightings fitted \
  --variants fold=batch
