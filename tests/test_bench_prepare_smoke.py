"""The data-preparation benchmark still runs (a fraction of the bundled corpus), so the script cannot rot."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_prepare.py"


def test_bench_prepare_quick(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--small-mb", "0.3", "--big-mb", "0.6",
                          "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    for row in ("| raw `encode_batch`, small", "| raw `encode_batch_fast`, small", "| `tst prepare --tokenizer`, small",
                "| `tst prepare --tokenizer`, big"):
        assert row in out.stdout
    assert "byte-identical to the uninterrupted run's" in out.stdout
    assert "load average" in out.stdout and "logical cores" in out.stdout  # the machine header
