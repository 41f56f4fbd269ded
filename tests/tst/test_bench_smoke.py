"""The loss benchmark still runs (tiny sizes), so the script cannot rot."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_loss.py"


def test_bench_loss_quick():
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "### MCE (one log-sum-exp) vs the paper's s-loop" in out.stdout
    assert "### Fused linear-MCE vs materialised logits" in out.stdout
    assert "| 512 | 4 |" in out.stdout and "| 1024 | 256 | 4 |" in out.stdout
    assert "torch " in out.stdout  # the machine header
