#!/usr/bin/env bash
# `tst prepare` of a large corpus on SLURM: one plan job, an array of tokenize tasks, one merge job.
#
#   scripts/slurm_prepare.sh N_TASKS OUT_DIR  tst-prepare-arguments...
#   scripts/slurm_prepare.sh 64 /shared/data/fw --input /shared/raw/fineweb/ --tokenizer tok.json
#
# OUT_DIR (and OUT_DIR.partial, where the work happens) must be on a file system every node sees.
#  1. plan   (1 task):  counts the documents, draws the validation split, trains/loads the tokenizer
#  2. tokenize (array of N_TASKS): task I tokenizes the I-th of N_TASKS contiguous ranges of chunks
#  3. merge  (1 task):  shuffles the documents into the shards, tokenizing any chunk a failed task left
# Every step can be resubmitted: finished chunks and shards are kept (requeue-safe), and the result is
# byte-identical to one `tst prepare` on one machine. Set CPUS, MEM and TIME in the environment (or edit
# COMMON below: partition, account, ...) for your cluster.
set -euo pipefail
N=${1:?number of tokenize tasks}; OUT=${2:?output data folder}; shift 2
ARGS=(--out "$OUT" "$@")
COMMON=(--parsable --requeue --cpus-per-task="${CPUS:-32}" --mem="${MEM:-32G}" --time="${TIME:-04:00:00}")

plan=$(sbatch "${COMMON[@]}" --job-name=tst-plan --wrap "tst prepare ${ARGS[*]@Q} --plan-only")
tasks=$(sbatch "${COMMON[@]}" --job-name=tst-tokenize --dependency=afterok:"$plan" --array=0-$((N - 1)) \
        --wrap "tst prepare ${ARGS[*]@Q} --task \$SLURM_ARRAY_TASK_ID/\$SLURM_ARRAY_TASK_COUNT")
merge=$(sbatch "${COMMON[@]}" --job-name=tst-merge --dependency=afterany:"$tasks" \
        --wrap "tst prepare ${ARGS[*]@Q}")
echo "plan $plan -> tokenize $tasks (array of $N) -> merge $merge"
