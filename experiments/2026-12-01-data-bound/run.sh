#!/usr/bin/env bash
# The data-bound regime (issue "Beyond the paper", item 6): a small corpus read for several epochs at
# equal FLOPs — baseline vs TST vs output-only (which the paper recommends when data, not compute, is
# the limit, and never measured there). d = 512 / 1 layer, 3000 steps x 8 x 64, s = 4, r = 0.25, 3 seeds.
# Usage: bash experiments/2026-12-01-data-bound/run.sh OUT_ROOT [TST_BIN]
set -euo pipefail
OUT=${1:?usage: run.sh OUT_ROOT [TST_BIN]}
TST=${2:-tst}
DATA=$OUT/data-small
# 300 of the bundled corpus's documents (~0.45M training tokens): the baseline reads it ~3.4 times,
# TST ~6 times. The tokenizer is trained on these documents only.
[ -f "$DATA/meta.json" ] || "$TST" prepare --input bundled --out "$DATA" --vocab-size 4096 --max-docs 300
"$TST" compare --data "$DATA" --out "$OUT/compare" --preset tiny --model.dim=512 --model.n_layers=1 \
  --model.n_heads=8 --model.n_kv_heads=4 --model.ffn_dim=1368 --steps 3000 --batch-size 8 --seq-len 64 \
  --bag-size 4 --superposition-frac 0.25 --lr 1e-3 --arms baseline,tst,output-only --seeds 3 --jobs 2 \
  --eval-every 250 --train.warmup_steps=20 --train.decay_frac=0.2 --eval.tokens=32768 --log.tensorboard=false \
  --checkpoint.every=500 --checkpoint.keep=1
