"""``scripts/gpu_check.sh --dry-run`` runs every step of the GPU check on tiny CPU shapes, so the script
cannot rot between GPU sessions; its numbers are checked against what they must be, not just printed."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def run_script(*args, timeout=300):
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHON": sys.executable})


def test_usage_error_exits_2():
    out = run_script()
    assert out.returncode == 2 and "usage: scripts/gpu_check.sh [--dry-run] OUTDIR" in out.stderr


def test_dry_run_runs_every_step_and_reports(tmp_path):
    pytest.importorskip("triton")  # the fused-triton rows run in Triton's interpreter
    out = run_script("--dry-run", tmp_path / "out")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    report = (tmp_path / "out" / "gpu_check.md").read_text()
    assert report.strip() in out.stdout  # printed at the end
    assert "dry run on the CPU" in report and "- host: " in report and "load average" in report
    assert "All steps finished." in report
    assert "| 512 | liger | _needs CUDA_ |" in report  # CUDA-only anchors are skipped, and say so

    loss = json.loads((tmp_path / "out" / "loss.json").read_text())
    assert set(loss["s_loop"]) == {"512/1", "512/4", "1000/1", "1000/4"}
    for case, r in loss["s_loop"].items():
        ref = r["mce"]["loss"]
        for impl in ("fused-torch", "fused-triton"):  # the same loss, materialised or not, either backend
            assert abs(r[impl]["loss"] - ref) <= 1e-5 * abs(ref), (case, impl)
        if case.endswith("/1"):  # s = 1: Listing 3 is plain CE, identical to the MCE
            assert abs(r["loop"]["loss"] - ref) <= 1e-5 * abs(ref), case

    train = json.loads((tmp_path / "out" / "train.json").read_text())
    phases = train["stats"]
    assert list(phases) == ["superposition", "recovery"]
    positions_per_step = 4 * 32  # batch_size × seq_len of the dry run
    for p in phases.values():
        assert p["steps"] >= 1 and p["step_time"] > 0
        assert p["positions_per_s"] * p["step_time"] == pytest.approx(positions_per_step)
        # s× more data tokens than positions: 2 in the superposition phase, 1 in recovery
        assert p["data_tokens_per_s"] == pytest.approx(p["bag_size"] * p["positions_per_s"])
    assert (tmp_path / "out" / "train_metrics.jsonl").is_file()
