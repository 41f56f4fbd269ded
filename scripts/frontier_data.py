"""Build the baselines the demo's frontier counts, as package data, from committed records.

    python scripts/frontier_data.py            # writes src/tst_train/experiments/data/frontier_bundled.json

Every finished baseline run in the listed records (each record's ``runs/`` folders, at any depth) that was
trained under the demo's protocol — the bundled corpus at a 4,096-token BPE in its default order, 8 rows × 32
positions a step, warmup 20, decay over the last 20 %, validation on 16,384 held-out tokens — becomes one
seed of a point (shape, learning rate, steps); a cooldown branch counts as the run of its steps (it trains the
same numbers). Each point names the record it came from and that record's last commit, so the package never
reads ``experiments/`` at run time and a user can trace every number.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tst_train import rundir  # noqa: E402
from tst_train.experiments import analysis, names  # noqa: E402
from tst_train.experiments.demo import PROTOCOL, SHIPPED  # noqa: E402
from tst_train.metrics import read_metrics  # noqa: E402

RECORDS = ["experiments/2026-12-02-demo-budget", "experiments/2026-12-03-demo-shapes",
           "experiments/2026-12-07-compute-curves"]


def protocol_of(run_dir: Path) -> dict:
    cfg = rundir.read_config(run_dir)
    plan = json.loads((run_dir / rundir.PLAN_FILE).read_text())
    return {"vocab_size": plan["model"]["vocab_size"], "train_tokens": plan["train_tokens_available"],
            "batch_size": cfg.train.batch_size, "seq_len": cfg.train.seq_len,
            "warmup_steps": cfg.train.warmup_steps, "decay_frac": cfg.train.decay_frac,
            "eval_tokens": cfg.eval.tokens}


def commit_of(record: str) -> str:
    out = subprocess.run(["git", "log", "-1", "--format=%H", "--", record], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "uncommitted"


def collect() -> list[dict]:
    points: dict[tuple, dict] = {}
    for record in RECORDS:
        for run_dir in sorted((ROOT / record).glob("**/runs/*")):
            summary = rundir.read_summary(run_dir)
            if not (summary and summary.get("completed")) or not rundir.is_run_dir(run_dir):
                continue
            cfg = rundir.read_config(run_dir)
            curve = analysis.eval_curve(read_metrics(run_dir))
            if not names.is_baseline(cfg) or not curve or protocol_of(run_dir) != PROTOCOL:
                continue
            key = (names.shape_name(cfg), cfg.train.lr, cfg.train.steps)
            p = points.setdefault(key, {"shape": key[0], "lr": key[1], "steps": key[2], "flops": summary["flops"],
                                        "seeds": [], "losses": [], "records": []})
            if cfg.train.seed in p["seeds"]:  # the same run twice (a branch and its separate check): once
                continue
            p["seeds"].append(cfg.train.seed)
            p["losses"].append(curve[-1][1])
            if record not in p["records"]:
                p["records"].append(record)
    return sorted(points.values(), key=lambda p: (p["flops"], p["shape"], p["lr"]))


def main() -> None:
    points = collect()
    data = {"protocol": PROTOCOL, "records": {r: commit_of(r) for r in RECORDS if (ROOT / r).is_dir()},
            "points": points}
    SHIPPED.parent.mkdir(parents=True, exist_ok=True)
    SHIPPED.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{len(points)} baseline points ({sum(len(p['seeds']) for p in points)} runs) → {SHIPPED.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
