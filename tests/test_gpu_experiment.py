"""scripts/gpu_experiment.py: its --smoke path end to end (so the GPU command cannot rot), checked against
hand computations from the run records; the budget's hard stop; a failing run and a failing torch.compile."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_experiment.py"
SMOKE_STEPS, SMOKE_ROWS, SMOKE_LEN = 24, 2, 32  # configs/gpu_smoke.toml


def _load():
    spec = importlib.util.spec_from_file_location("gpu_experiment", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the script loads
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def g():
    return _load()


@pytest.fixture(scope="module")
def smoke(g, tmp_path_factory):
    """One --smoke run: data from the bundled corpus + stdlib code, preflight, 3 arms x 2 seeds, report."""
    root = tmp_path_factory.mktemp("gpu")
    code = g.main(["--smoke", "--out", str(root / "report"), "--work", str(root / "work")], log=lambda *a: None)
    return code, root / "report", root / "work"


def _final_val(run_dir: Path) -> float:
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["val_loss"] for r in recs if "val_loss" in r][-1]


def _copy_data(work: Path, dst: Path) -> Path:
    shutil.copytree(work / "data", dst / "data")
    shutil.copy2(work / "data_stats.json", dst / "data_stats.json")
    return dst


def test_job_order_puts_the_baseline_and_first_arm_first(g):
    assert g.job_order(["baseline", "a", "b"], 2, 3) == [
        ("baseline", 0), ("a", 0), ("baseline", 1), ("a", 1), ("b", 0), ("b", 1),
        ("baseline", 2), ("a", 2), ("b", 2)]


def test_smoke_runs_every_pair_and_reports_them(smoke, g):
    code, report, work = smoke
    assert code == 0
    rec = json.loads((report / "report.json").read_text())
    assert [(o["arm"], o["seed"]) for o in rec["outcomes"]] == g.job_order(list(g.ARMS), 2, 2)
    assert {o["status"] for o in rec["outcomes"]} == {"completed"}
    md = (report / "report.md").read_text()
    for arm in g.ARMS:
        assert f"| {arm} | 2 |" in md
    for arm in ("tst-s6", "tst-s4-batchfold-fitted"):
        # Δ: the mean over seeds of (arm − baseline) final validation loss, read from the runs themselves
        deltas = [_final_val(work / "runs" / f"{arm}-seed{s}") - _final_val(work / "runs" / f"baseline-seed{s}")
                  for s in (0, 1)]
        assert rec["arms"][arm]["delta_val_loss"]["mean"] == pytest.approx(sum(deltas) / 2, abs=1e-9)
        assert rec["arms"][arm]["delta_val_loss"]["ci95"] is not None
        assert (report / arm / "report.md").is_file() and (report / arm / "val_loss_vs_steps.png").is_file()
        assert f"{arm}/report.md" in md
    # the record is compact: evaluation curves and configs, no checkpoints or full metrics
    assert not list(report.rglob("checkpoints")) and not list(report.rglob("metrics.jsonl"))
    assert len(list((report / "tst-s6" / "runs").glob("*-s6-r0.3-uniform-seed1/evals.jsonl"))) == 1


def test_smoke_data_tokens_and_epochs_match_hand_computation(smoke):
    _, report, work = smoke
    rec = json.loads((report / "report.json").read_text())
    train_tokens = json.loads((work / "data" / "meta.json").read_text())["splits"]["train"]["tokens"]
    positions = SMOKE_STEPS * SMOKE_ROWS * SMOKE_LEN
    superposition_steps = round(0.3 * SMOKE_STEPS)  # r = 0.3 → steps 0..6
    for arm, s in (("baseline", 1), ("tst-s6", 6), ("tst-s4-batchfold-fitted", 4)):
        tokens = positions if s == 1 else (superposition_steps * s + SMOKE_STEPS - superposition_steps) * SMOKE_ROWS * SMOKE_LEN
        assert rec["arms"][arm]["data_tokens"] == tokens
        assert rec["arms"][arm]["epochs"] == pytest.approx(tokens / train_tokens)
    assert not rec["data_repeats"]
    # the third arm trains with the batch fold and bag weights fitted to the smoke corpus, its baseline with neither
    from tst_train.rundir import read_config
    fitted = read_config(work / "runs" / "tst-s4-batchfold-fitted-seed0")
    assert (fitted.tst.fold, fitted.tst.weights) == ("batch", "fitted")
    assert read_config(work / "runs" / "baseline-seed0").tst.weights == "uniform"


def test_code_corpus_is_deduplicated_whole_files(smoke, g):
    _, report, work = smoke
    docs = [json.loads(line) for line in (work / "corpus" / "code.jsonl").read_text().splitlines()]
    stats = json.loads((report / "report.json").read_text())["data"]["code"]
    assert len(docs) == stats["files"] >= 2
    assert len({hashlib.sha256(d["text"].encode()).hexdigest() for d in docs}) == len(docs)
    for d in docs:
        assert d["title"].endswith(".py")
        assert Path(d["title"]).read_bytes().decode("utf-8") == d["text"]  # a whole file, unchanged
        assert g.MIN_CODE_BYTES <= len(d["text"].encode()) <= g.MAX_CODE_BYTES
    # taken in content-hash order, until the smoke's minimum of 0.3 MB
    digests = [hashlib.sha256(d["text"].encode()).hexdigest() for d in docs]
    assert digests == sorted(digests)
    assert stats["bytes"] - len(docs[-1]["text"].encode()) < 0.3e6 <= stats["bytes"]


def test_budget_stops_the_run_in_flight_and_skips_the_rest(smoke, g, tmp_path, monkeypatch):
    _, _, work = smoke
    work2 = _copy_data(work, tmp_path / "work")
    monkeypatch.setattr(g, "preflight", lambda base, arm, settings, work, log: {"compile": False, "ok": True, "attempts": {}})
    settings = g.replace(g.SMOKE, budget_s=6.0, report_reserve_s=0.0, min_seeds=1, max_seeds=1)
    base = g.load_config(settings, [("train.steps", "1000000")])
    code = g.run_experiment(settings, base, ["baseline", "tst-s6"], tmp_path / "report", work2, [], lambda *a: None,
                            command="test")
    assert code == 0
    rec = json.loads((tmp_path / "report" / "report.json").read_text())
    first, second = rec["outcomes"]
    assert first["status"] == "stopped" and first["seconds"] < 60
    assert second == {"arm": "tst-s6", "seed": 0, "status": "skipped", "reason": "budget"}
    md = (tmp_path / "report" / "report.md").read_text()
    assert "stopped by the budget after step" in md and "not started" in md and "No comparison completed." in md


def test_a_failing_compile_falls_back_to_eager_and_a_failing_run_is_reported(smoke, g, tmp_path, monkeypatch):
    _, _, work = smoke
    work2 = _copy_data(work, tmp_path / "work")
    real = g.run_arm

    def flaky(cfg, run_dir, log):
        if cfg.train.compile:
            raise RuntimeError("simulated inductor failure")
        if run_dir.name.startswith("tst-s4"):
            raise RuntimeError("simulated crash")
        return real(cfg, run_dir, log)

    monkeypatch.setattr(g, "run_arm", flaky)
    code = g.main(["--smoke", "--seeds", "1", "--train.compile=true", "--out", str(tmp_path / "report"),
                   "--work", str(work2)], log=lambda *a: None)
    assert code == 1
    rec = json.loads((tmp_path / "report" / "report.json").read_text())
    assert rec["preflight"]["compile"] is False and rec["preflight"]["ok"]
    assert rec["preflight"]["attempts"]["compile=True"]["status"] == "failed"
    status = {o["arm"]: o["status"] for o in rec["outcomes"]}
    assert status == {"baseline": "completed", "tst-s6": "completed", "tst-s4-batchfold-fitted": "failed"}
    assert "compile = false" in (work2 / "runs" / "tst-s6-seed0" / "config.toml").read_text()
    assert (work2 / "runs" / "tst-s4-batchfold-fitted-seed0.error.txt").read_text().strip().endswith("simulated crash")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "simulated crash" in md and "torch.compile False (asked: True)" in md
    assert rec["arms"]["tst-s6"]["delta_val_loss"]["n"] == 1


def test_a_failing_preflight_trains_nothing_and_says_why(smoke, g, tmp_path, monkeypatch):
    _, _, work = smoke
    work2 = _copy_data(work, tmp_path / "work")

    def broken(cfg, run_dir, log):
        raise RuntimeError("simulated CUDA error")

    monkeypatch.setattr(g, "run_arm", broken)
    code = g.main(["--smoke", "--out", str(tmp_path / "report"), "--work", str(work2)], log=lambda *a: None)
    assert code == 1
    rec = json.loads((tmp_path / "report" / "report.json").read_text())
    assert not rec["preflight"]["ok"]
    assert {(o["status"], o["reason"]) for o in rec["outcomes"]} == {("skipped", "preflight failed")}
    assert not (work2 / "runs").exists()
    md = (tmp_path / "report" / "report.md").read_text()
    assert "FAILED" in md and "simulated CUDA error" in md and "not started: the preflight failed" in md


def test_bad_arguments_are_one_line_errors(g, tmp_path, capsys):
    assert g.main(["--smoke", "--arms", "tst-s6,baseline", "--out", str(tmp_path / "r")]) == 2
    assert g.main(["--smoke", "--train.stepz=3", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert not (tmp_path / "r").exists()


def test_the_optional_variant_arms_are_valid_configs(g, tmp_path):
    """Every optional arm (the variants of "Beyond the paper") builds a valid config on the H200 settings."""
    base = g.load_config(g.FULL, [])
    for arm, overrides in g.OPTIONAL_ARMS.items():
        cfg = g.arm_config(base, arm, 0, tmp_path)
        for key, value in overrides.items():
            section, name = key.split(".")
            assert getattr(getattr(cfg, section), name) == value, (arm, key)
        if cfg.tst.fold == "batch":
            assert cfg.train.seq_len % cfg.tst.bag_size == 0  # the batch fold needs s | L
