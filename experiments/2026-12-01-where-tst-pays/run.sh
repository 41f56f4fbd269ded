#!/usr/bin/env bash
# Where TST pays: width, depth, learning rate, bag size / fraction and step budget at equal FLOPs,
# 3 seeds per cell, on the bundled corpus (CPU). Every stage is a `tst sweep` into ONE pool of run
# directories ($OUT/runs), so a run shared by two stages (same name = same shape, lr, arm, seed) trains
# once; rerunning this script skips finished runs and resumes interrupted ones from their checkpoints.
#
# Usage: bash experiments/2026-12-01-where-tst-pays/run.sh OUT_ROOT [TST_BIN]
#   TST_BIN: the `tst` of a frozen install (a clone at a fixed commit with its own venv; see README).
set -euo pipefail
OUT=${1:?usage: run.sh OUT_ROOT [TST_BIN]}
TST=${2:-tst}
DATA=$OUT/data
[ -f "$DATA/meta.json" ] || "$TST" prepare --input bundled --out "$DATA" --vocab-size 4096
# The demo's budget: 3000 steps x 8 rows x 64 positions, s = 4, r = 0.25, uniform weights, lr 1e-3,
# warmup 20, decay over the last 20 %; one thread per run, two runs side by side.
COMMON=(--data "$DATA" --out "$OUT/study" --preset tiny --steps 3000 --batch-size 8 --seq-len 64
        --weightings uniform --seeds 3 --jobs 2 --eval-every 250 --train.warmup_steps=20 --train.decay_frac=0.2
        --eval.tokens=32768 --log.tensorboard=false --checkpoint.every=500 --checkpoint.keep=1)
stage() { echo "=== $(date -u +%FT%TZ) stage $1"; shift; "$TST" sweep "${COMMON[@]}" "$@"; }
stage width    --dims 64,128,256,512 --layers 2 --lrs 1e-3 --bag-sizes 4 --fracs 0.25
stage depth    --dims 256 --layers 1,4,8 --lrs 1e-3 --bag-sizes 4 --fracs 0.25
stage wide1    --dims 512 --layers 1 --lrs 1e-3 --bag-sizes 4 --fracs 0.25
stage lr       --dims 512 --layers 2 --lrs 5e-4,2e-3 --bag-sizes 4 --fracs 0.25
stage bagsize  --dims 512 --layers 2 --lrs 1e-3 --bag-sizes 2,6 --fracs 0.25
stage fraction --dims 512 --layers 2 --lrs 1e-3 --bag-sizes 4 --fracs 0.1,0.4
echo "=== $(date -u +%FT%TZ) done"
