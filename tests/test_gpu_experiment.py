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
    """One --smoke run: data from the bundled corpus + stdlib code, preflight, the baseline's curve and 2 TST arms x
    2 seeds, report."""
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


FIRST, SECOND = "s4-r0.3-fitted+fold-batch", "s6-r0.3-uniform"  # the default TST arms, named from their configs


def test_job_order_puts_the_baseline_curve_and_first_arm_first(g, tmp_path):
    base = g.load_config(g.SMOKE, [])
    jobs = g.job_order(base, [FIRST, SECOND], 2, 3, tmp_path)
    assert [(label, seed) for label, seed, _ in jobs] == [
        ("baseline", 0), (FIRST, 0), ("baseline", 1), (FIRST, 1), (SECOND, 0), (SECOND, 1),
        ("baseline", 2), (FIRST, 2), (SECOND, 2)]
    # the baseline's chain: the 2x run, then its branches at 1x and 1.5x
    assert [cfg.train.steps for cfg, _ in jobs[0][2]] == [2 * SMOKE_STEPS, SMOKE_STEPS, round(1.5 * SMOKE_STEPS)]
    assert jobs[0][2][1][0].train.branch_from.endswith(f":{SMOKE_STEPS - round(0.2 * SMOKE_STEPS)}")


def test_smoke_runs_every_run_and_reads_the_speedup_on_the_curve(smoke, g):
    code, report, work = smoke
    assert code == 0
    rec = json.loads((report / "report.json").read_text())
    assert {o["status"] for o in rec["outcomes"]} == {"completed"} and len(rec["outcomes"]) == 2 * (3 + 2)
    md = (report / "report.md").read_text()
    curves = {}
    for o in rec["outcomes"]:
        if o["arm"] == "baseline":
            summary = json.loads((work / "runs" / o["run"] / "summary.json").read_text())
            curves.setdefault(o["seed"], []).append((summary["flops"], _final_val(work / "runs" / o["run"])))
    from tst_train.experiments import compute
    for arm in (FIRST, SECOND):
        runs = {o["seed"]: work / "runs" / o["run"] for o in rec["outcomes"] if o["arm"] == arm}
        tst = {s: (json.loads((d / "summary.json").read_text())["flops"], _final_val(d)) for s, d in runs.items()}
        # the speed-up, recomputed from the runs themselves, and Δ against the 1x baseline of the same seed
        assert rec["arms"][arm]["speedup"]["value"] == pytest.approx(compute.speedup_over_seeds(curves, tst)["value"])
        one_x = {s: min(c)[1] for s, c in curves.items()}
        deltas = [tst[s][1] - one_x[s] for s in (0, 1)]
        assert rec["arms"][arm]["delta_val_loss"]["mean"] == pytest.approx(sum(deltas) / 2, abs=1e-9)
        assert f"- {arm}: the baseline needs" in md
    assert (report / "loss_vs_flops.png").is_file() and "Measured bf16 matmul peak" in md
    # the record is compact: evaluation curves and configs, no checkpoints or full metrics
    assert not list(report.rglob("checkpoints")) and not list(report.rglob("metrics.jsonl"))
    assert len(list(report.glob("runs/*/evals.jsonl"))) == 10


def test_smoke_data_tokens_and_epochs_match_hand_computation(smoke):
    _, report, work = smoke
    rec = json.loads((report / "report.json").read_text())
    train_tokens = json.loads((work / "data" / "meta.json").read_text())["splits"]["train"]["tokens"]
    positions = SMOKE_STEPS * SMOKE_ROWS * SMOKE_LEN
    superposition_steps = round(0.3 * SMOKE_STEPS)  # r = 0.3 → steps 0..6
    for arm, s in (("baseline", 1), (SECOND, 6), (FIRST, 4)):
        tokens = positions if s == 1 else (superposition_steps * s + SMOKE_STEPS - superposition_steps) * SMOKE_ROWS * SMOKE_LEN
        assert rec["arms"][arm]["throughput"]["data_tokens"] == tokens
        assert rec["arms"][arm]["throughput"]["epochs"] == pytest.approx(tokens / train_tokens)
    assert not rec["data_repeats"]
    # the first arm trains with the batch fold and bag weights fitted to the smoke corpus, the baseline with neither
    from tst_train.rundir import read_config
    (fitted,) = [o["run"] for o in rec["outcomes"] if o["arm"] == FIRST and o["seed"] == 0]
    assert (read_config(work / "runs" / fitted).tst.fold, read_config(work / "runs" / fitted).tst.weights) == ("batch", "fitted")
    (base,) = [o["run"] for o in rec["outcomes"] if o["arm"] == "baseline" and o["seed"] == 0 and o["steps"] == SMOKE_STEPS]
    assert read_config(work / "runs" / base).tst.weights == "uniform"


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
    code = g.run_experiment(settings, base, [SECOND], tmp_path / "report", work2, [], lambda *a: None,
                            command="test")
    assert code == 0
    rec = json.loads((tmp_path / "report" / "report.json").read_text())
    trunk, *branches, tst = rec["outcomes"]
    assert trunk["status"] == "stopped" and trunk["seconds"] < 60
    assert [b["reason"] for b in branches] == ["trunk", "trunk"] and tst["reason"] == "budget"
    md = (tmp_path / "report" / "report.md").read_text()
    assert "stopped by the budget after step" in md and "did not finish" in md and f"{SECOND}: no run completed" in md


def test_a_failing_compile_falls_back_to_eager_and_a_failing_run_is_reported(smoke, g, tmp_path, monkeypatch):
    _, _, work = smoke
    work2 = _copy_data(work, tmp_path / "work")
    real = g.run_arm

    def flaky(cfg, run_dir, log):
        if cfg.train.compile:
            raise RuntimeError("simulated inductor failure")
        if "fold-batch" in run_dir.name:
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
    assert status == {"baseline": "completed", SECOND: "completed", FIRST: "failed"}
    (s6,) = [o["run"] for o in rec["outcomes"] if o["arm"] == SECOND]
    (s4,) = [o["run"] for o in rec["outcomes"] if o["arm"] == FIRST]
    assert "compile = false" in (work2 / "runs" / s6 / "config.toml").read_text()
    assert (work2 / "runs" / f"{s4}.error.txt").read_text().strip().endswith("simulated crash")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "simulated crash" in md and "torch.compile False (asked: True)" in md
    assert rec["arms"][SECOND]["delta_val_loss"]["n"] == 1


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
    assert g.main(["--smoke", "--arms", "tst-s6,baseline", "--out", str(tmp_path / "r")]) == 2  # not arm names
    assert g.main(["--smoke", "--train.stepz=3", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert not (tmp_path / "r").exists()


def test_the_optional_variant_arms_are_valid_configs(g, tmp_path):
    """Every optional arm (the variants of "Beyond the paper") builds a valid config on the H200 settings."""
    base = g.load_config(g.FULL, [])
    assert len(g.arm_table(base)) == len(g.TST_ARMS) + len(g.OPTIONAL_ARMS)  # every arm has its own name
    for arm, overrides in g.arm_table(base).items():
        cfg = g.arm_config(base, overrides, 0, tmp_path)
        for key, value in overrides.items():
            section, name = key.split(".")
            assert getattr(getattr(cfg, section), name) == value, (arm, key)
        if cfg.tst.fold == "batch":
            assert cfg.train.seq_len % cfg.tst.bag_size == 0  # the batch fold needs s | L


def test_moe_runs_the_curve_and_an_arm_on_a_mixture_of_experts(smoke, g, tmp_path):
    """--moe: the baseline's curve and the arms on the MoE preset with the dense model's active FLOPs."""
    _, _, work = smoke
    work2 = _copy_data(work, tmp_path / "work")
    code = g.main(["--smoke", "--moe", "--seeds", "1", "--arms", SECOND, "--out", str(tmp_path / "report"),
                   "--work", str(work2)], log=lambda *a: None)
    assert code == 0
    rec = json.loads((tmp_path / "report" / "report.json").read_text())
    assert {o["status"] for o in rec["outcomes"]} == {"completed"} and len(rec["outcomes"]) == 3 + 1
    assert all(o["run"].startswith("d64-L2-E8k2-") for o in rec["outcomes"])
    recs = [json.loads(x) for x in (work2 / "runs" / rec["outcomes"][-1]["run"] / "metrics.jsonl").read_text().splitlines()]
    assert all("load_cv" in r for r in recs if "loss" in r)
    # the GPU pair: the MoE preset's active FLOPs per position equal the dense preset's, up to the router
    from tst_train.model import Transformer, model_config
    import torch
    with torch.device("meta"):
        dense, moe = Transformer(model_config("gpu-25m", 8192)), Transformer(model_config("gpu-25m-moe", 8192))
    assert moe.flops_per_position(1024) - dense.flops_per_position(1024) == 6 * 8 * 512 * 32  # the routers
