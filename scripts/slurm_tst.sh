#!/usr/bin/env bash
# Multi-node TST training on SLURM with torchrun + FSDP2.
#   sbatch scripts/slurm_tst.sh DATA_DIR RUN_DIR configs/smollm2_135m_tst.toml
# Requeue-safe: on preemption SLURM sends SIGTERM; `tst train` checkpoints at the next step boundary and
# every rank exits with status 75 — which torchrun reports as a failure (exit 1). So this script reads
# RUN_DIR/summary.json to tell "stopped, checkpoint saved" (exit 75: requeue and continue with --resume)
# from a real failure (its own exit status).
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
status=0
srun torchrun --nnodes="$SLURM_NNODES" --nproc_per_node=8 --rdzv_id="$SLURM_JOB_ID" \
    --rdzv_backend=c10d --rdzv_endpoint="$HEAD:29500" \
    -m tst train --data "$DATA" --out "$RUN" --config "$CONFIG" "${RESUME[@]}" || status=$?
if [ "$status" -ne 0 ] && python3 -c "import json,sys; s=json.load(open(sys.argv[1])); sys.exit(0 if s.get('interrupted_by') and not s.get('completed') else 1)" "$RUN/summary.json" 2>/dev/null; then
    exit 75  # stopped by a signal after checkpointing: requeue and resume
fi
exit "$status"
