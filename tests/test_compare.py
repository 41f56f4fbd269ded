"""`tst compare` / `tst sweep` on tiny settings, and the analysis functions against hand computations."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tst_train.experiments import analysis
from tst_train.cli import main

TINY = ["--preset", "tiny", "--steps", "12", "--batch-size", "2", "--seq-len", "16", "--bag-size", "2",
        "--superposition-frac", "0.5", "--eval-every", "4", "--train.warmup_steps=2", "--eval.tokens=512",
        "--log.tensorboard=false", "--train.threads=1"]


def test_first_crossing_and_value_at():
    curve = [(100, 5.0), (200, 4.0), (300, 3.0)]
    assert analysis.first_crossing(curve, 3.5) == pytest.approx(250.0)
    assert analysis.first_crossing(curve, 5.0) == 100.0
    assert analysis.first_crossing(curve, 2.0) is None
    # a spike: the crossing is the first time the target is reached
    assert analysis.first_crossing([(1, 4.0), (2, 2.0), (3, 6.0), (4, 1.0)], 3.0) == pytest.approx(1.5)
    assert analysis.value_at(curve, 150) == pytest.approx(4.5)
    assert analysis.value_at(curve, 301) is None


def test_compare_to_baseline_speedup():
    base = [{"step": s, "val_loss": v, "data_tokens": s * 10} for s, v in [(10, 5.0), (20, 4.0), (40, 3.0)]]
    arm = [{"step": s, "val_loss": v, "data_tokens": s * 20} for s, v in [(10, 6.0), (20, 3.5), (40, 2.5)]]
    c = analysis.compare_to_baseline(arm, base)
    # the arm reaches 3.0 between steps 20 (3.5) and 40 (2.5): at step 30 → 40/30
    assert c["delta_val_loss"] == pytest.approx(-0.5)
    assert c["steps_ratio"] == pytest.approx(40 / 30)
    # the arm consumed 800 data tokens; the baseline only reached 400 → no equal-data value
    assert c["equal_data"]["baseline_val_loss"] is None


def test_compare_all_arms_tiny(tiny_data, tmp_path, capsys):
    out = tmp_path / "cmp"
    arms = "baseline,tst,input-only,output-only,tst-reinit,baseline-equal-data"
    code = main(["compare", "--data", str(tiny_data), "--out", str(out), "--arms", arms, "--seeds", "2", *TINY,
                 "--task-limit", "4", "--model.n_layers=1"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    s = json.loads((out / "summary.json").read_text())
    assert set(s["arms"]) == set(arms.split(","))
    for arm, a in s["arms"].items():
        for seed in ("0", "1"):
            r = a["seeds"][seed]
            for key in ("final_val_loss", "best_val_loss", "data_tokens", "positions", "flops", "wall_time",
                        "step_time_median"):
                assert r[key] is not None, (arm, key)
    tst = s["comparisons"]["tst"]
    assert tst["delta_val_loss"]["n"] == 2 and len(tst["delta_val_loss"]["ci95"]) == 2
    assert "steps_ratio" in tst and "equal_data_delta_val_loss" in tst
    # the equal-data baseline saw as many tokens as TST (s=2, r=0.5 → 1.5× the baseline's)
    eq = s["arms"]["baseline-equal-data"]["seeds"]["0"]
    assert eq["data_tokens"] >= s["arms"]["tst"]["seeds"]["0"]["data_tokens"]
    assert s["arms"]["tst"]["seeds"]["0"]["flops"] == s["arms"]["baseline"]["seeds"]["0"]["flops"]
    for f in ("report.md", "report.html", "val_loss_vs_steps.png", "val_loss_vs_data_tokens.png",
              "train_loss.png"):
        assert (out / f).is_file(), f
    html = (out / "report.html").read_text()
    assert "data:image/png;base64" in html
    assert "| tst |" in printed and "report.md" in printed
    # downstream task scores per arm, next to the loss
    assert s["tasks"]["names"] == ["cloze", "wordnet"] and s["tasks"]["limit"] == 4
    for a in s["arms"].values():
        assert a["tasks"]["wordnet_acc_norm"]["n"] == 2 and 0 <= a["tasks"]["cloze_acc"]["mean"] <= 1
    assert "wordnet acc_norm" in printed and "cloze acc" in printed
    run0 = json.loads((out / "tasks" / "d64-L1-lr0.001-12steps-s2-r0.5-uniform-seed0.json").read_text())
    assert run0["step"] == 12 and run0["tasks"]["wordnet"]["items"] == 4
    # the HTML comes from the markdown library: real tables, with a cell per value
    from html.parser import HTMLParser

    class Cells(HTMLParser):
        tags: list = []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)

    parser = Cells()
    parser.feed(html)
    assert parser.tags.count("table") == 2 and parser.tags.count("td") > 6 * 10  # results + overrides
    assert "|---|" not in html and "<th>arm</th>" in html
    report = (out / "report.md").read_text()
    assert "| `--model.n_layers` | `1` | `0` |" in report and "Model as trained:" in report and "1 layers" in report
    # rerunning reuses the finished runs
    code = main(["compare", "--data", str(tiny_data), "--out", str(out), "--arms", "baseline,tst", "--seeds", "1", *TINY,
                 "--task-limit", "4", "--model.n_layers=1"])
    again = capsys.readouterr().out
    assert code == 0 and "already complete" in again and "scored" not in again  # task scores are cached too


def test_compare_bad_arm(tiny_data, tmp_path, capsys):
    code = main(["compare", "--data", str(tiny_data), "--out", str(tmp_path / "c"), "--arms", "baseline,magic"])
    assert code == 2 and "unknown arm" in capsys.readouterr().err


def test_sweep_tiny_and_resumable(tiny_data, tmp_path, capfd):
    out = tmp_path / "sweep"
    args = ["sweep", "--data", str(tiny_data), "--out", str(out), "--bag-sizes", "2,3", "--fracs", "0.25",
            "--weightings", "uniform,power", "--jobs", "2", *TINY]
    assert main(args) == 0
    first = capfd.readouterr().out
    res = json.loads((out / "sweep.json").read_text())
    assert len(res["cells"]) == 4 and res["best"]["bag_size"] in (2, 3)
    assert (out / "heatmap_uniform.png").is_file() and (out / "heatmap_power.png").is_file()
    assert "Lowest final validation loss: s = " in first
    assert main(args) == 0
    again = capfd.readouterr().out
    assert again.count("already complete") == 5  # 4 cells + the baseline


@pytest.mark.parametrize("flag,value", [("--seeds", "abc"), ("--seeds", "0"), ("--jobs", "two")])
def test_bad_counts_are_user_errors(tiny_data, tmp_path, capsys, flag, value):
    code = main(["compare", "--data", str(tiny_data), "--out", str(tmp_path / "c"), flag, value, *TINY])
    err = capsys.readouterr().err
    assert code == 2 and f"{flag} must be a whole number >= 1" in err and "Traceback" not in err
    assert not (tmp_path / "c" / "runs").exists()


def test_scaled_shape_reproduces_the_presets():
    from tst_train.model import PRESETS, scaled_shape
    for preset in ("tiny", "cpu-small", "cpu-medium"):
        p = PRESETS[preset]
        assert scaled_shape(p["dim"]) == {k: p[k] for k in ("dim", "n_heads", "n_kv_heads", "ffn_dim")}
    s = scaled_shape(512)
    assert s["dim"] // s["n_heads"] == 64 and s["ffn_dim"] % 8 == 0 and s["ffn_dim"] >= 8 * 512 / 3


def test_sweep_over_shapes_and_budgets(tiny_data, tmp_path, capfd):
    """Widths × depths × FLOP budgets: each shape trains for the steps its budget buys, against its own baseline."""
    from tst_train.experiments.sweep import flops_per_step
    from tst_train.config import Config
    out = tmp_path / "shapes"
    fixed = [a for a in TINY if a not in ("--steps", "12")]
    budget = 3e9
    args = ["sweep", "--data", str(tiny_data), "--out", str(out), "--bag-sizes", "2", "--fracs", "0.5",
            "--dims", "16,32", "--layers", "1", "--budgets", f"{budget:g}", "--jobs", "2", *fixed]
    assert main(args) == 0
    res = json.loads((out / "sweep.json").read_text())
    assert [c["dim"] for c in res["cells"]] == [16, 32]
    for c in res["cells"]:
        run = out / "runs" / f"d{c['dim']}-L1-lr0.001-{c['steps']}steps-s2-r0.5-uniform-seed0"
        summary = json.loads((run / "summary.json").read_text())
        cfg = Config()
        cfg.data.path, cfg.model.preset = str(tiny_data), "tiny"
        cfg.model.dim, cfg.model.n_layers, cfg.train.batch_size, cfg.train.seq_len = c["dim"], 1, 2, 16
        cfg.model.n_heads, cfg.model.n_kv_heads, cfg.model.ffn_dim = 4, 2, 8 * math.ceil(c["dim"] / 3)
        assert summary["steps"] == c["steps"] == round(budget / flops_per_step(cfg))
        assert abs(summary["flops"] - budget) <= flops_per_step(cfg) / 2  # the budget, to within half a step
        assert (out / "runs" / f"d{c['dim']}-L1-lr0.001-{c['steps']}steps-baseline-seed0" / "summary.json").is_file()
    assert res["cells"][0]["steps"] > res["cells"][1]["steps"]  # the narrower model buys more steps
    study = json.loads((out / "study.json").read_text())  # the width/frontier report over the pool
    assert [(g["dim"], g["n_layers"]) for g in study["groups"]] == [(16, 1), (32, 1)]
    # each TST group against the best baseline of any shape at no more FLOPs, with a verdict
    assert len(study["against_frontier"]) == 2 and all("frontier" in a["verdict"] for a in study["against_frontier"])
    assert (out / "study.md").is_file() and (out / "frontier.png").is_file()
    # links planted where the reports go (text and figures) are replaced, never written through
    victims = {name: tmp_path / f"victim-{name}" for name in ("study.md", "sweep.md", "frontier.png")}
    for name, victim in victims.items():
        victim.write_text("precious")
        (out / name).unlink()
        (out / name).symlink_to(victim)
    capfd.readouterr()
    assert main(["sweep", "--out", str(out), "--report-only"]) == 0
    assert "compute frontier" in capfd.readouterr().out
    assert all(v.read_text() == "precious" and not (out / n).is_symlink() for n, v in victims.items())
    assert (out / "frontier.png").read_bytes().startswith(b"\x89PNG")
    # the committed record (scripts/collect_experiment.py) rebuilds the same report
    import importlib.util
    spec = importlib.util.spec_from_file_location("collect", Path(__file__).parents[1] / "scripts" / "collect_experiment.py")
    collect = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(collect)
    record = tmp_path / "record"
    collect.collect(out, record)
    assert not list(record.glob("runs/*/metrics.jsonl")) and not list(record.glob("runs/*/checkpoints"))
    assert main(["sweep", "--out", str(record), "--report-only"]) == 0
    again = json.loads((record / "study.json").read_text())
    assert [g["delta"] for g in again["groups"]] == [g["delta"] for g in study["groups"]]
    # it rebuilds the last sweep's own report (sweep.md / sweep.json) from the record's runs too: a pool continued
    # by an older trainer that cannot read collected runs leaves one with "n/a" baselines
    (record / "sweep.md").write_text("stale\n")
    (record / "sweep.json").unlink()
    assert main(["sweep", "--out", str(record), "--report-only"]) == 0
    rebuilt = json.loads((record / "sweep.json").read_text())
    assert [c["final_val_loss"] for c in rebuilt["cells"]] == [c["final_val_loss"] for c in res["cells"]]
    assert [c["baseline_final_val_loss"] for c in rebuilt["cells"]] == [c["baseline_final_val_loss"] for c in res["cells"]]
    assert res["table"] in (record / "sweep.md").read_text() and "n/a" not in res["table"]
    # a FLOP-budget grid whose data folder is gone cannot be rebuilt: said, and the files are left as they are
    rec = json.loads((record / "sweep_config.json").read_text())
    rec["base"]["data"]["path"] = str(tmp_path / "gone")
    (record / "sweep_config.json").write_text(json.dumps(rec))
    (record / "sweep.md").write_text("kept\n")
    capfd.readouterr()
    assert main(["sweep", "--out", str(record), "--report-only"]) == 0
    assert "left as it was" in capfd.readouterr().err and (record / "sweep.md").read_text() == "kept\n"
    # a pool rebuilt from the record (a fresh machine continuing a study) collects again, unchanged
    second = tmp_path / "record2"
    collect.collect(record, second)
    assert sorted(p.parent.name for p in second.glob("runs/*/evals.jsonl")) == sorted(p.parent.name for p in record.glob("runs/*/evals.jsonl")) != []
    assert all((second / p.relative_to(record)).read_text() == p.read_text() for p in record.glob("runs/*/evals.jsonl"))


def test_reuse_refuses_a_run_trained_with_other_numbers(tiny_data, tmp_path, capsys):
    """A rerun into the same --out with another config must not label the old runs with the new config."""
    out = tmp_path / "cmp"
    args = ["compare", "--data", str(tiny_data), "--out", str(out), "--arms", "baseline,tst", *TINY, "--tasks", "none"]
    assert main(args) == 0
    before = (out / "runs" / "d64-L2-lr0.001-12steps-s2-r0.5-uniform-seed0" / "metrics.jsonl").read_text()
    config_before = (out / "base_config.json").read_text()
    capsys.readouterr()
    # a run's name carries its shape, rate, steps and arm; any other number that differs must be refused
    changed = [a if a != "--train.warmup_steps=2" else "--train.warmup_steps=3" for a in args]
    assert main(changed) == 2
    err = capsys.readouterr().err
    assert "train.warmup_steps: 2 → 3" in err and "cannot stand for this run" in err and err.count("\n") == 1
    assert (out / "runs" / "d64-L2-lr0.001-12steps-s2-r0.5-uniform-seed0" / "metrics.jsonl").read_text() == before  # nothing retrained
    assert (out / "base_config.json").read_text() == config_before  # the refused config is not recorded either
    # a setting that does not change the numbers may differ
    assert main(args + ["--eval.batch_size=3"]) == 0 and "already complete" in capsys.readouterr().out


def test_explicit_shapes_and_their_errors(tiny_data, tmp_path, capsys):
    from tst_train.experiments.sweep import make_groups
    groups = make_groups(None, None, [1e-3], None, shapes=[(128, 1), (256, 4)])
    assert [(g.dim, g.n_layers, g.lr) for g in groups] == [(128, 1, 1e-3), (256, 4, 1e-3)]
    # a shape at its own rate is one group, not crossed with the other shapes' rates
    groups = make_groups(None, None, None, None, shapes=[(128, 2, 1e-3), (512, 1, 5e-4)])
    assert [(g.dim, g.n_layers, g.lr) for g in groups] == [(128, 2, 1e-3), (512, 1, 5e-4)]
    code = main(["sweep", "--data", str(tiny_data), "--out", str(tmp_path / "own"), "--shapes", "16x1@1e-3,32x1@5e-4",
                 "--bag-sizes", "2", "--fracs", "0.5", "--dry-run", *TINY])
    plan = capsys.readouterr().out
    assert code == 0 and "d16-L1-lr0.001-12steps-baseline-seed0" in plan and "d32-L1-lr0.0005-12steps-baseline-seed0" in plan
    assert "d16-L1-lr0.0005" not in plan and "d32-L1-lr0.001" not in plan and "4 runs" in plan
    for flags, expected in [(["--shapes", "128x1", "--dims", "64"], "instead of --dims"),
                            (["--shapes", "128by1"], "WIDTHxDEPTH"), (["--shapes", "100x1"], "multiples of 8"),
                            (["--shapes", "128x1@fast"], "WIDTHxDEPTH@LR"), (["--shapes", "128x1@-1"], "positive"),
                            (["--shapes", "128x1@1e-3", "--lrs", "1e-3"], "instead of --lrs")]:
        code = main(["sweep", "--data", str(tiny_data), "--out", str(tmp_path / "s"), *flags, *TINY])
        err = capsys.readouterr().err
        assert code == 2 and expected in err and err.count("\n") == 1, err


def test_demo_trains_its_curve_and_tst_and_states_what_it_measured(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out, as `make demo` gives
    out = tmp_path / "demo"
    args = ["demo", "--out", "demo", "--data", str(tiny_data), "--steps", "10", "--batch-size", "2",
            "--seq-len", "16", "--eval.tokens=512", "--train.warmup_steps=2", "--log.tensorboard=false", "--lr", "4e-4"]
    code = main(args)
    printed = capsys.readouterr().out
    assert code == 0, printed
    summaries = {p: p.stat().st_mtime_ns for p in out.glob("report/runs/*/summary.json")}
    assert main(args) == 0 and len(summaries) == 6  # a rerun reuses every run, the cooldown branches included
    assert {p: p.stat().st_mtime_ns for p in out.glob("report/runs/*/summary.json")} == summaries
    capsys.readouterr()
    runs = sorted(p.name for p in (out / "report" / "runs").iterdir())
    # per seed (3 and 4): the baseline's 15-step run, its 10-step cooldown branch, and TST at 10 steps
    assert runs == ["d512-L1-lr0.0004-10steps-baseline-branch8-seed3", "d512-L1-lr0.0004-10steps-baseline-branch8-seed4",
                    "d512-L1-lr0.0004-10steps-s4-r0.25-fitted+fold-batch-seed3",
                    "d512-L1-lr0.0004-10steps-s4-r0.25-fitted+fold-batch-seed4",
                    "d512-L1-lr0.0004-15steps-baseline-seed3", "d512-L1-lr0.0004-15steps-baseline-seed4"]
    from tst_train.rundir import read_config
    base_cfg = read_config(out / "report" / "runs" / runs[0])
    tst_cfg = read_config(out / "report" / "runs" / runs[2])
    assert (base_cfg.tst.fold, base_cfg.tst.weights, base_cfg.tst.mode) == ("sequence", "uniform", "baseline")
    assert (tst_cfg.tst.fold, tst_cfg.tst.weights, tst_cfg.train.lr) == ("batch", "fitted", 4e-4)
    result = json.loads((out / "report" / "demo.json").read_text())
    assert result["seeds"] == [3, 4] and set(result["tst"]["per_seed"]) == {"3", "4"}
    md = (out / "report" / "demo.md").read_text()
    assert "Equal-loss speed-up on its own baseline's compute curve" in md and "demo.png" in md
    # on the user's own --data the shipped baselines (measured on the bundled corpus) are left out, and said so
    assert "do not apply" in md and "shipped record" not in md
    assert (out / "report" / "demo.png").stat().st_size > 10_000 and (out / "report" / "loss_vs_step.png").is_file()
    assert "verdict:" in printed and "demo.md" in printed and "10 steps × 2 rows" in md


def test_a_bad_out_or_data_is_one_line_and_writes_or_replaces_nothing(tiny_data, tmp_path, capsys):
    """compare/sweep check --data before writing --out; the demo never replaces a folder it did not prepare."""
    missing = str(tmp_path / "no-such-data")
    for cmd in (["compare"], ["sweep", "--dims", "16"]):
        out = tmp_path / cmd[0]
        assert main([*cmd, "--data", missing, "--out", str(out), *TINY]) == 2
        err = capsys.readouterr().err
        assert "does not exist" in err and err.count("\n") == 1 and not out.exists()
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    assert main(["demo", "--out", str(a_file)]) == 2
    assert "is not a directory" in capsys.readouterr().err and a_file.read_text() == "mine"
    precious = tmp_path / "project" / "data" / "notes.txt"  # a user's folder that happens to be called data
    precious.parent.mkdir(parents=True)
    precious.write_text("mine")
    assert main(["demo", "--out", str(tmp_path / "project")]) == 2
    err = capsys.readouterr().err
    assert "would replace it" in err and err.count("\n") == 1 and precious.read_text() == "mine"
    assert main(["demo", "--out", str(tmp_path / "d"), "--data", str(precious.parent)]) == 2
    assert "has no meta.json" in capsys.readouterr().err and precious.read_text() == "mine"
    assert not (tmp_path / "d").exists() and sorted(p.name for p in precious.parent.iterdir()) == ["notes.txt"]


def test_dry_runs_list_the_runs_and_write_nothing(tiny_data, tmp_path, capsys):
    """`--dry-run` of compare/sweep/demo plans every run (FLOPs, data, what a rerun would do) and trains nothing."""
    out = tmp_path / "sweep"
    args = ["sweep", "--data", str(tiny_data), "--out", str(out), "--bag-sizes", "2", "--fracs", "0.25",
            "--dims", "16,32", "--layers", "1", "--seeds", "2", *TINY]
    assert main(args + ["--dry-run"]) == 0
    table = capsys.readouterr().out
    assert not out.exists()
    assert table.count("| to train |") == 8 and "8 runs, 8 to train or resume" in table
    assert "| d32-L1-lr0.001-12steps-s2-r0.25-uniform-seed1 | tst | 12 |" in table
    code = main(["compare", "--data", str(tiny_data), "--out", str(tmp_path / "c"), "--arms", "baseline,tst",
                 "--seeds", "2", "--dry-run", *TINY])
    printed = capsys.readouterr().out
    assert code == 0 and not (tmp_path / "c").exists()
    assert "| d64-L2-lr0.001-12steps-s2-r0.5-uniform-seed1 | tst | 12 |" in printed and "4 runs, 4 to train or resume" in printed
    assert main(["demo", "--out", str(tmp_path / "d"), "--data", str(tiny_data), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "| d512-L1-lr0.0005-1500steps-baseline-seed4 | baseline | 1,500 |" in plan and "6 runs, 6 to train" in plan
    assert "| d512-L1-lr0.0005-1000steps-baseline-branch800-seed3 | baseline | 1,000 |" in plan
    assert "| d512-L1-lr0.0005-1000steps-s4-r0.25-fitted+fold-batch-seed3 | tst | 1,000 |" in plan
    assert not (tmp_path / "d").exists()
    # after training, the same dry run says which runs are reused and which resume
    assert main(args) == 0
    run = out / "runs" / "d16-L1-lr0.001-12steps-baseline-seed0"
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps(summary | {"completed": False}))  # as if killed after its last checkpoint
    capsys.readouterr()
    assert main(args + ["--dry-run"]) == 0
    table = capsys.readouterr().out
    assert table.count("finished (reused)") == 7 and "8 runs, 1 to train or resume" in table
    assert "| d16-L1-lr0.001-12steps-baseline-seed0 | baseline | 12 |" in table and ("resumes from step_" in table or "restarts" in table)
    # a run trained with other numbers is refused by the dry run too, in one line
    assert main([a if a != "--train.warmup_steps=2" else "--train.warmup_steps=3" for a in args] + ["--dry-run"]) == 2
    assert "cannot stand for this run" in capsys.readouterr().err


@pytest.mark.parametrize("target,signame", [("parent", "SIGTERM"), ("group", "SIGINT")])
def test_a_stop_signal_to_a_parallel_sweep_checkpoints_the_runs_in_flight_and_starts_no_other(tiny_data, tmp_path,
                                                                                             target, signame):
    """SIGTERM to the `tst compare --jobs 2` process alone (as a scheduler or `kill PID` sends it), or Ctrl-C (SIGINT
    to the whole process group): the two runs in flight checkpoint and stop, the queued ones never start (the
    pool had already handed each worker its next run: they once trained on, orphaned), and the command says so
    on one line and exits 75."""
    import os
    import signal
    import subprocess
    import sys
    import time
    out = tmp_path / "cmp"
    args = ["compare", "--data", str(tiny_data), "--out", str(out), "--arms", "baseline,tst", "--seeds", "3",
            "--jobs", "2", *[a if a != "12" else "4000" for a in TINY], "--eval-every", "0", "--tasks", "none"]
    code = f"import sys; from tst_train.cli import main; sys.exit(main({args!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len([p for p in out.glob("runs/*/metrics.jsonl") if p.stat().st_size]) < 2:
        time.sleep(0.2)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    sig = getattr(signal, signame)
    os.kill(proc.pid, sig) if target == "parent" else os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    lines = [line for line in err.splitlines() if line.startswith("stopped:")]
    assert len(lines) == 1 and f"by {signame}: 2 runs checkpointed" in lines[0] and "4 not started" in lines[0], err
    assert "Traceback" not in err, err
    started = sorted(p.parent.name for p in out.glob("runs/*/metrics.jsonl"))
    assert started == ["d64-L2-lr0.001-4000steps-baseline-seed0", "d64-L2-lr0.001-4000steps-s2-r0.5-uniform-seed0"]
    for name in started:
        summary = json.loads((out / "runs" / name / "summary.json").read_text())
        assert summary["interrupted_by"] == signame and not summary["completed"]
        assert list((out / "runs" / name / "checkpoints").glob("step_*"))
    time.sleep(1)
    alive = [pid for pid in workers if os.path.exists(f"/proc/{pid}") and "zombie" not in
             open(f"/proc/{pid}/status").read()]
    assert workers and not alive  # no orphaned worker trains on
