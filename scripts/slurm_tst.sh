#!/usr/bin/env bash
# Multi-node TST training on SLURM with torchrun + FSDP2.
#   sbatch scripts/slurm_tst.sh DATA_DIR RUN_DIR configs/smollm2_135m_tst.toml
# Requeue-safe: on preemption SLURM sends SIGTERM; `tst train` checkpoints at the next step boundary and
# exits with status 75, and the requeued job continues the same run directory with --resume.
#SBATCH --job-name=tst
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --signal=TERM@120
#SBATCH --requeue
set -euo pipefail
DATA=${1:?data dir}; RUN=${2:?run dir}; CONFIG=${3:?config file}
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
RESUME=()
[ -f "$RUN/config.toml" ] && RESUME=(--resume)
srun torchrun --nnodes="$SLURM_NNODES" --nproc_per_node=8 --rdzv_id="$SLURM_JOB_ID" \
    --rdzv_backend=c10d --rdzv_endpoint="$HEAD:29500" \
    -m tst train --data "$DATA" --out "$RUN" --config "$CONFIG" "${RESUME[@]}"
