#!/usr/bin/env bash
# The compute curves of README.md: two processes side by side (one thread each); a rerun continues.
# Usage: bash experiments/2026-12-07-compute-curves/run.sh OUT_ROOT [TST_BIN]
set -euo pipefail
OUT=${1:?usage: run.sh OUT_ROOT [TST_BIN]}
TST=${2:-tst}
DATA=$OUT/data
[ -f "$DATA/meta.json" ] || "$TST" prepare --input bundled --out "$DATA" --vocab-size 4096
FLAGS=(--data "$DATA" --preset tiny --batch-size 8 --seq-len 32 --seeds 3 --jobs 1 --eval-every 0
       --train.warmup_steps=20 --train.decay_frac=0.2 --eval.tokens=16384 --log.tensorboard=false
       --train.threads=1)
shape() {  # WIDTH LAYERS: the Llama-rule heads and SwiGLU width of `tst sweep --dims`
  python3 -c "import math,sys; d=int(sys.argv[1]); h=max(4,d//64); print(f'--model.dim={d} --model.n_heads={h} --model.n_kv_heads={max(1,h//2)} --model.ffn_dim={8*math.ceil(d/3)} --model.n_layers={sys.argv[2]}')" "$1" "$2"
}
"$TST" curve "${FLAGS[@]}" $(shape 512 1) --lr 5e-4 --step-budgets 750,900,1000,1500,2000 --out "$OUT/d512-L1" &
( "$TST" curve "${FLAGS[@]}" $(shape 64 2) --lr 1e-3 --step-budgets 1000,2000,4000,8000 --out "$OUT/d64-L2"
  "$TST" curve "${FLAGS[@]}" $(shape 128 2) --lr 1e-3 --step-budgets 1000,2000,4000 --out "$OUT/d128-L2"
  "$TST" curve "${FLAGS[@]}" $(shape 256 2) --lr 5e-4 --step-budgets 1000,1500,2000 --out "$OUT/d256-L2" ) &
wait
