#!/usr/bin/env bash
# The pre-registered table of README.md. Two runs side by side, one thread each; a rerun continues (finished runs
# are reused, interrupted ones resume from their checkpoints).
# Usage: bash experiments/2026-12-07-paper-table/run.sh OUT_ROOT [TST_BIN]
set -euo pipefail
OUT=${1:?usage: run.sh OUT_ROOT [TST_BIN]}
TST=${2:-tst}
SHAPE=(--preset tiny --model.dim=256 --model.n_heads=4 --model.n_kv_heads=2 --model.ffn_dim=688 --model.n_layers=4)
COMMON=("${SHAPE[@]}" --steps 2000 --batch-size 8 --seq-len 64 --eval-every 0 --eval.tokens=16384
        --train.warmup_steps=20 --train.decay_frac=0.2 --log.tensorboard=false --train.threads=1 --seeds 1)
for k in 3 4 5; do
  [ -f "$OUT/data-order$k/meta.json" ] || "$TST" prepare --input bundled --out "$OUT/data-order$k" --vocab-size 4096 --seed "$k"
done
curve() {  # ORDER LR: the baseline's curve (arm 1 is its 2,000-step point)
  "$TST" curve "${COMMON[@]}" --data "$OUT/data-order$1" --seed "$1" --lr "$2" --step-budgets 2000,3000,4000 \
    --jobs 1 --out "$OUT/order$1/curve-lr$2"
}
# Arms 2-10 against the base setting of arm 4 (s = 6, r = 0.3), so that baseline-equal-data matches arm 4.
ARMS="tst,tst+bag_size=4+superposition_frac=0.25,tst+bag_size=4+superposition_frac=0.25+fold=batch+weights=fitted"
ARMS+=",input-only+bag_size=4+superposition_frac=0.5,output-only+bag_size=4+superposition_frac=0.5"
ARMS+=",tst+bag_size=4+superposition_frac=0.5,tst-reinit,baseline-equal-data"
ARMS+=",tst+bag_size=8+superposition_frac=0.3+weights=power,tst+bag_size=8+superposition_frac=0.3"
arms() {  # ORDER
  "$TST" compare "${COMMON[@]}" --data "$OUT/data-order$1" --seed "$1" --lr 1e-3 --bag-size 6 --superposition-frac 0.3 \
    --arms "$ARMS" --tasks none --jobs 2 --out "$OUT/order$1/arms-lr1e-3"
  "$TST" compare "${COMMON[@]}" --data "$OUT/data-order$1" --seed "$1" --lr 5e-4 --bag-size 4 --superposition-frac 0.25 \
    --arms "tst+fold=batch+weights=fitted" --tasks none --jobs 1 --out "$OUT/order$1/arms-lr5e-4"
}
curve 3 1e-3 & curve 4 1e-3; wait
curve 5 1e-3 & curve 3 5e-4; wait
curve 4 5e-4 & curve 5 5e-4; wait
for k in 3 4 5; do arms "$k"; done
