"""Committed records: their numbers are re-derived from their committed runs by their own analysis scripts.

A record's ``results.md`` is the output of its ``analyze.py`` over the collected runs beside it; if a change to the
package's definitions (FLOPs, the curve's interpolation, the statistics) moves a committed number, this says so.
The MoE record reads the full per-step records (not committed) and is left out.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.parametrize("record", ["2026-12-07-compute-curves", "2026-12-07-paper-table"])
def test_a_records_analysis_reproduces_its_committed_results(record):
    out = subprocess.run([sys.executable, str(EXPERIMENTS / record / "analyze.py")], capture_output=True, text=True,
                         check=True).stdout
    assert out == (EXPERIMENTS / record / "results.md").read_text()


def test_the_paper_tables_verdicts_follow_its_pre_registered_rule():
    spec = importlib.util.spec_from_file_location("paper_table", EXPERIMENTS / "2026-12-07-paper-table" / "analyze.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    below, above, across = {"ci95": [-0.3, -0.1]}, {"ci95": [0.1, 0.3]}, {"ci95": [-0.1, 0.1]}
    every = list(mod.ORDERS)
    assert mod.verdict(below, every, -1) == mod.verdict(above, every, +1) == "reproduced"
    assert mod.verdict(above, every, -1) == mod.verdict(below, every, +1) == "not reproduced"
    assert mod.verdict(across, every, -1) == "inconclusive at this scale"
    assert mod.verdict(below, every[:2], -1).startswith("pending") and mod.verdict(below, every, 0) == "(reference)"
