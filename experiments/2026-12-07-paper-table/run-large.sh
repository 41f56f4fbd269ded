#!/usr/bin/env bash
# The pre-registered table's last part (README.md, "The large-corpus part"): arms 1 and 3 again on the large offline
# corpus, three document orders, init seed k on order k, with the baseline's curve. Same shape, steps and schedule as
# run.sh; two runs side by side, one thread each; a rerun continues (finished runs reused, interrupted ones resumed).
# Usage: bash experiments/2026-12-07-paper-table/run-large.sh OUT_ROOT PROSE_DIR [TST_BIN]
#   PROSE_DIR: the output of `python scripts/build_corpus.py --large PROSE_DIR --no-bundled`; its SOURCES.json must
#   equal ../2026-12-02-step-budget-s6/corpus-SOURCES.json (the same package files and output sha256).
set -euo pipefail
OUT=${1:?usage: run-large.sh OUT_ROOT PROSE_DIR [TST_BIN]}
PROSE=${2:?usage: run-large.sh OUT_ROOT PROSE_DIR [TST_BIN]}
TST=${3:-tst}
HERE=$(cd "$(dirname "$0")" && pwd)
cmp -s <(python3 -m json.tool --sort-keys "$PROSE/SOURCES.json") \
       <(python3 -m json.tool --sort-keys "$HERE/../2026-12-02-step-budget-s6/corpus-SOURCES.json") \
  || { echo "run-large.sh: $PROSE/SOURCES.json differs from the registered corpus" >&2; exit 2; }
SHAPE=(--preset tiny --model.dim=256 --model.n_heads=4 --model.n_kv_heads=2 --model.ffn_dim=688 --model.n_layers=4)
COMMON=("${SHAPE[@]}" --steps 2000 --batch-size 8 --seq-len 64 --eval-every 0 --eval.tokens=65536
        --train.warmup_steps=20 --train.decay_frac=0.2 --log.tensorboard=false --train.threads=1 --seeds 1)
for k in 3 4 5; do
  [ -f "$OUT/data-order$k/meta.json" ] || "$TST" prepare --input "$PROSE"/*.jsonl.xz --out "$OUT/data-order$k" \
    --vocab-size 4096 --seed "$k"
done
curve() {  # ORDER: the baseline's curve at lr 1e-3 (arm 1 is its 2,000-step point)
  "$TST" curve "${COMMON[@]}" --data "$OUT/data-order$1" --seed "$1" --lr 1e-3 --step-budgets 2000,3000,4000 \
    --jobs 1 --out "$OUT/order$1/curve-lr1e-3"
}
arm3() {  # ORDER: TST s = 4, r = 0.25, batch fold + fitted weights at lr 1e-3
  "$TST" compare "${COMMON[@]}" --data "$OUT/data-order$1" --seed "$1" --lr 1e-3 --bag-size 4 \
    --superposition-frac 0.25 --arms "tst+fold=batch+weights=fitted" --tasks none --jobs 1 --out "$OUT/order$1/arms-lr1e-3"
}
curve 3 & curve 4; wait
curve 5 & arm3 3; wait
arm3 4 & arm3 5; wait
