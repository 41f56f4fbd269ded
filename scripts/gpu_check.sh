#!/usr/bin/env bash
# The GPU check (issue 13), one command, at most 9 minutes on one H100 or H200. Steps, each with its own time limit:
#   1. tests    the GPU-only tests: the Triton kernel's tests compiled for the GPU, the CUDA tests of the loss
#   2. loss     bf16 loss tables: MCE vs the paper's s-loop, fused vs materialised logits (s = 1, 4, 8, 16;
#               V = 32k, 128k; N = 16k; d = 2048), ours vs Liger's fused linear CE and Cut Cross-Entropy at s = 1
#   3. train    training throughput of the smollm2-135m preset, bf16 + torch.compile, both TST phases
# Writes OUTDIR/gpu_check.md (every table, the machine, the verdicts), loss.md, loss.json, train.md, train.json,
# train_metrics.jsonl and log.txt (everything the steps printed), and prints gpu_check.md at the end.
#
# Usage:
#   scripts/gpu_check.sh OUTDIR              on a CUDA machine, with its python3 (torch and triton installed)
#   scripts/gpu_check.sh --dry-run OUTDIR    every step on tiny shapes on the CPU, CUDA-only parts skipped
#                                            (tests/tst/test_gpu_check.py runs this in make test)
# Environment: PYTHON (default python3).
#
# Liger and Cut Cross-Entropy travel as wheels in .whl/ (in .gitignore; 0.9 MB together). From the repository
# root, once, on a machine with a package registry:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform any -d .whl liger-kernel==0.8.5 cut-cross-entropy==25.1.1
# They are installed here with no index and no dependencies into a temporary directory put on PYTHONPATH.
# Everything else comes from the machine's python3 (torch 2.11 and triton 3.6 on the device machines).
set -uo pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
if [[ $# -ne 1 ]]; then
    echo "usage: scripts/gpu_check.sh [--dry-run] OUTDIR" >&2
    exit 2
fi
OUT=$1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/log.txt
: >"$LOG"
cd "$ROOT" || exit 2
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
FLAG=""
MODE="GPU run"
if ((DRY)); then
    FLAG="--dry-run"
    MODE="dry run on the CPU (tiny shapes; nothing here is a GPU measurement)"
    export TRITON_INTERPRET=1  # before triton's first import: the kernel runs in Triton's CPU interpreter
fi
FAILED=()

# Carried wheels (Liger, CCE): installed without an index into a scratch site directory.
if ((!DRY)) && compgen -G ".whl/*.whl" >/dev/null; then
    SITE=$(mktemp -d)
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl >>"$LOG" 2>&1; then
        export PYTHONPATH="$PYTHONPATH:$SITE"
    else
        echo "could not install the wheels in .whl/ (see log.txt): Liger and CCE rows will be skipped" | tee -a "$LOG"
    fi
fi

machine() {
    echo "## GPU check: $MODE"
    echo
    echo "- date: $(date -Is); git revision: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- host: $(hostname), $(nproc) CPU cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu \
            --format=csv,noheader 2>/dev/null | sed 's/^/- GPU (nvidia-smi: name, memory, driver, SM clock, max SM clock, temperature, utilisation): /'
    fi
    "$PY" - "$DRY" <<'EOF'
import importlib.metadata as md, platform, sys
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "not installed"
print(f"- python {platform.python_version()}, torch {version('torch')}, triton {version('triton')}, "
      f"liger-kernel {version('liger-kernel')}, cut-cross-entropy {version('cut-cross-entropy')}")
if sys.argv[1] == "0":  # importing torch takes seconds; the dry run has no GPU to ask about
    import torch
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"- torch sees: {gpu} (CUDA {torch.version.cuda})")
EOF
}

# step NAME SECONDS COMMAND...: run with a time limit, log everything, remember failures.
step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - start))s" | tee -a "$LOG"
    if ((rc == 124 || rc == 137)); then
        FAILED+=("$name (stopped at its ${limit}s limit)")
    elif ((rc != 0)); then
        FAILED+=("$name (exit $rc)")
    fi
}

machine >"$OUT/machine.tmp" 2>>"$LOG"
cat "$OUT/machine.tmp"

if ((DRY)); then
    step tests 75 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/tst/test_loss.py
else
    step tests 75 "$PY" -m pytest -q -p no:cacheprovider tests/tst/test_fused_triton.py tests/tst/test_loss.py
fi
step loss 225 "$PY" benchmarks/gpu_loss.py --out "$OUT" --budget-s 200 $FLAG
step train 200 "$PY" benchmarks/gpu_train.py --out "$OUT" $FLAG

{
    cat "$OUT/machine.tmp"
    echo
    echo "### GPU-only tests"
    echo
    echo "\`$(grep -E '^[0-9]+ (passed|failed|skipped|error)|^=+ .*(passed|failed|skipped|error)' "$LOG" | tail -1 | tr -d '=' | sed 's/^ *//;s/ *$//')\`"
    echo
    for part in loss train; do
        if [[ -s "$OUT/$part.md" ]]; then cat "$OUT/$part.md"; else echo "_$part: no table (see log.txt)_"; fi
        echo
    done
    if ((${#FAILED[@]})); then
        echo "**Steps that did not finish:** ${FAILED[*]}"
    else
        echo "All steps finished."
    fi
} >"$OUT/gpu_check.md"
rm -f "$OUT/machine.tmp"
echo
cat "$OUT/gpu_check.md"
((${#FAILED[@]} == 0))
