#!/usr/bin/env bash
# A longer budget: 9000 steps on the larger offline corpus (~84 MB: the bundled prose plus the GCIDE
# dictionary, WordNet glosses, Linux and Python documentation and fortunes; single epoch), tiny preset,
# 8 rows x 64 positions per step, s = 4, r = 0.25, 3 seeds, baseline vs TST at equal FLOPs.
# Usage: bash experiments/2026-11-22-cpu-9k-steps-large-corpus/run.sh OUT_ROOT
set -euo pipefail
OUT=${1:-runs/exp-cpu-9k}
CORPUS=$OUT/corpus
DATA=$OUT/data
[ -d "$CORPUS" ] || python scripts/build_corpus.py --no-bundled --large "$CORPUS"
[ -f "$DATA/meta.json" ] || tst prepare --input "$CORPUS" --out "$DATA" --vocab-size 4096
tst compare --data "$DATA" --out "$OUT/report" --preset tiny --steps 9000 --batch-size 8 --seq-len 64 \
  --bag-size 4 --superposition-frac 0.25 --seeds 3 --jobs 2 --arms baseline,tst \
  --eval-every 500 --train.lr=3e-3 --train.warmup_steps=20 --train.decay_frac=0.2 \
  --eval.tokens=65536 --log.tensorboard=false
