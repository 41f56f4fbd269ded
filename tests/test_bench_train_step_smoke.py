"""benchmarks/bench_train_step.py --smoke: the benchmark's whole path in seconds, so it cannot rot."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_train_step_benchmark_runs_and_reports_every_stack(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_train_step.py"), "--smoke", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((tmp_path / "train_step.json").read_text())
    rows = r["shapes"]
    assert set(rows) == {"d64/L1, recovery", "d64/L1, superposition"}
    assert {"ours", "hf", "hf+adapter"} <= set(rows["d64/L1, recovery"])
    assert "hf" not in rows["d64/L1, superposition"]  # HF's own loss has no TST phase
    for row in rows.values():
        assert row["ours"]["vs_ours"] == 1.0 and 0 < row["ours"]["mfu"] < 1.5
    assert "| d64/L1, recovery | hf |" in (tmp_path / "train_step.md").read_text()
