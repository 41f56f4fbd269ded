#!/usr/bin/env bash
# Does the vocabulary size move Δ at the frontier shape? The study's 4,096-token BPE is far from the paper's
# 128k: with a larger vocabulary a bag of s tokens carries more text (bytes per token rise) and the LM head
# takes a larger share of the FLOPs; with a smaller one, less. Here the bundled corpus is prepared with a
# 1,024-, a 16,384- and a 32,768-token BPE (same documents, same split: --seed 0) and the d128/L2 pair (the best baseline
# at its FLOPs in the study) trains as in the study, init seed 0. Losses are per token of each tokenizer, so
# compare Δ within a vocabulary, and bits per byte (val_bpb) across them.
# Usage: bash experiments/2026-12-01-where-tst-pays/vocab.sh OUT_ROOT [TST_BIN] [SEEDS]  (SEEDS default 1)
set -euo pipefail
OUT=${1:?usage: vocab.sh OUT_ROOT [TST_BIN] [SEEDS]}
TST=${2:-tst}
SEEDS=${3:-1}
source "$(dirname "$0")/settings.sh"
for V in 1024 16384 32768; do
  DATA=$OUT/data-vocab$V
  [ -f "$DATA/meta.json" ] || "$TST" prepare --input bundled --out "$DATA" --vocab-size $V
  "$TST" sweep --data "$DATA" --out "$OUT/vocab-$V" "${STUDY_FLAGS[@]}" --seeds "$SEEDS" \
    --dims 128 --layers 2 --lrs 1e-3 --bag-sizes 4 --fracs 0.25
done
