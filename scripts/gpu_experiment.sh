#!/usr/bin/env bash
# The GPU experiment as one command, for the device machine (docs/gpu_experiment.md):
#   bash scripts/gpu_experiment.sh             # ~8 min on one H100 or H200; report → $OUT/gpu_report.tar.gz + the log
#   bash scripts/gpu_experiment.sh --smoke     # the same path on the CPU in seconds
# Arguments go to scripts/gpu_experiment.py. Runs from this tree (PYTHONPATH=src): nothing is installed.
# Without $OUT (any other machine) the report and the log land in runs/gpu-experiment/.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
dest="${OUT:-runs/gpu-experiment}"
mkdir -p "$dest"
root="$(mktemp -d "${TMPDIR:-/tmp}/tst-gpu.XXXXXX")"
"${PYTHON:-python3}" scripts/gpu_experiment.py --out "$root/report" --work "$root/work" "$@" 2>&1 | tee "$dest/gpu_experiment.log"
rc=${PIPESTATUS[0]}
# The device returns at most 8 files from $OUT: the report folder travels as one archive.
[ -d "$root/report" ] && tar czf "$dest/gpu_report.tar.gz" -C "$root" report
echo "exit $rc; report: $dest/gpu_report.tar.gz (work files: $root/work)"
exit "$rc"
