"""Copy the record of a `tst compare` / `tst sweep` output into experiments/ without the bulky parts.

    python scripts/collect_experiment.py SRC_DIR DST_DIR

Keeps reports (md/html/png), summary/sweep/study JSON, and for each *completed* run its config.toml,
run.json, plan.json, summary.json and `evals.jsonl` (the evaluation records plus every 10th step record);
checkpoints, TensorBoard logs, full per-step metrics and unfinished runs stay behind. The collected runs
are a valid pool: `tst sweep`/`tst compare` into a copy of DST_DIR reuse them (the trainer reads
`evals.jsonl` where `metrics.jsonl` is absent), and `tst sweep --report-only` rebuilds the reports.
Rerun it as runs finish: it adds the new ones.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

KEEP_TOP = {".md", ".html", ".png", ".json"}
KEEP_RUN = ("config.toml", "run.json", "plan.json", "summary.json")


def collect(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix in KEEP_TOP:
            shutil.copy2(f, dst / f.name)
    for run in sorted((src / "runs").glob("*")):
        summary = run / "summary.json"
        if summary.is_file() and json.loads(summary.read_text()).get("completed"):
            collect_run(run, dst / "runs" / run.name)


def collect_run(run: Path, out: Path) -> None:
    """One run's compact record: its config, provenance, plan, summary and ``evals.jsonl``."""
    out.mkdir(parents=True, exist_ok=True)
    for name in KEEP_RUN:
        if (run / name).is_file():
            shutil.copy2(run / name, out / name)
    if not (run / "metrics.jsonl").is_file():  # a run collected before (a pool rebuilt from experiments/)
        shutil.copy2(run / "evals.jsonl", out / "evals.jsonl")
        return
    lines = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "val_loss" in rec or rec.get("step", 0) % 10 == 0:
            lines.append(line)
    (out / "evals.jsonl").write_text("\n".join(lines) + "\n")

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    collect(Path(sys.argv[1]), Path(sys.argv[2]))
