#!/usr/bin/env bash
# Which budget lets `make demo` show TST ahead of every baseline at no more FLOPs, with 3 seeds, inside 10 minutes
# on 2 cores? The study's best TST setting (d512/L1, lr 5e-4, s = 4, r = 0.25, the batch fold, fitted weights)
# against cheaper shapes, at 1000, 750 and 900 steps x 8 rows x 32 positions (in the order they were run); at 1000
# steps also d256/L2 at lr 5e-4 (3 seeds) and one seed of the other shapes the study tried (d256/L1; d64/L2;
# d256/L2 at lr 1e-3; d128/L8), so the demo's frontier covers them. One pool per budget; a rerun skips finished
# runs. The evaluation interval differs between pools; the final loss does not depend on it.
# Usage: bash experiments/2026-12-03-demo-shapes/run.sh OUT_ROOT [TST_BIN]
set -euo pipefail
OUT=${1:?usage: run.sh OUT_ROOT [TST_BIN]}
TST=${2:-tst}
DATA=$OUT/data
[ -f "$DATA/meta.json" ] || "$TST" prepare --input bundled --out "$DATA" --vocab-size 4096
COMMON=(--data "$DATA" --preset tiny --batch-size 8 --seq-len 32 --jobs 2 --train.warmup_steps=20
        --train.decay_frac=0.2 --eval.tokens=16384 --log.tensorboard=false --checkpoint.every=500
        --checkpoint.keep=1 --bag-sizes 4 --fracs 0.25 --weightings fitted --variants fold=batch)
# 1000 steps
W=(--eval-every 250 --out "$OUT/demo-1000" --steps 1000)
"$TST" sweep "${COMMON[@]}" "${W[@]}" --seeds 3 --dims 512 --layers 1 --lrs 5e-4
"$TST" sweep "${COMMON[@]}" "${W[@]}" --seeds 3 --dims 128 --layers 2 --lrs 1e-3
"$TST" sweep "${COMMON[@]}" "${W[@]}" --seeds 3 --dims 256 --layers 2 --lrs 5e-4
"$TST" sweep "${COMMON[@]}" "${W[@]}" --seeds 1 --dims 256 --layers 1 --lrs 5e-4
"$TST" sweep "${COMMON[@]}" "${W[@]}" --seeds 1 --dims 64 --layers 2 --lrs 1e-3
"$TST" sweep "${COMMON[@]}" "${W[@]}" --seeds 1 --dims 256 --layers 2 --lrs 1e-3
"$TST" sweep "${COMMON[@]}" "${W[@]}" --seeds 1 --dims 128 --layers 8 --lrs 1e-3
# 750 steps (d512/L1 seed 2 was stopped for time: --seeds 2 there)
V=(--eval-every 500 --out "$OUT/demo-750" --steps 750)
"$TST" sweep "${COMMON[@]}" "${V[@]}" --seeds 3 --dims 128 --layers 2 --lrs 1e-3
"$TST" sweep "${COMMON[@]}" "${V[@]}" --seeds 2 --dims 512 --layers 1 --lrs 5e-4
# 900 steps (would a 10 % shorter demo still win?)
N=(--eval-every 0 --out "$OUT/demo-900" --steps 900)
"$TST" sweep "${COMMON[@]}" "${N[@]}" --seeds 3 --dims 512 --layers 1 --lrs 5e-4
"$TST" sweep "${COMMON[@]}" "${N[@]}" --seeds 3 --dims 256 --layers 2 --lrs 5e-4
"$TST" sweep "${COMMON[@]}" "${N[@]}" --seeds 3 --dims 128 --layers 2 --lrs 1e-3
# 1000 steps, added last: d384/L2 (about d512/L1's FLOPs) and d256/L3
"$TST" sweep "${COMMON[@]}" "${W[@]}" --seeds 3 --dims 384 --layers 2 --lrs 5e-4
"$TST" sweep "${COMMON[@]}" "${W[@]}" --seeds 1 --dims 256 --layers 3 --lrs 5e-4
