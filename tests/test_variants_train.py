"""The paper's open variants as arms of `tst compare`, trained end to end on tiny settings."""
from __future__ import annotations

import json

from tst_train.cli import main
from tst_train.metrics import read_metrics

TINY = ["--preset", "tiny", "--steps", "12", "--batch-size", "2", "--seq-len", "16", "--bag-size", "2",
        "--superposition-frac", "0.5", "--eval-every", "6", "--train.warmup_steps=2", "--eval.tokens=512",
        "--log.tensorboard=false", "--train.threads=1"]
ARMS = ["baseline", "tst", "tst+bagging=document", "tst+fold=batch", "tst+loss=sum-to-one",
        "tst+transition_steps=3", "tst+weights=fitted"]


def test_every_variant_trains_as_an_arm(tiny_data, tmp_path, capsys):
    out = tmp_path / "variants"
    code = main(["compare", "--data", str(tiny_data), "--out", str(out), "--arms", ",".join(ARMS), *TINY])
    assert code == 0, capsys.readouterr().err
    s = json.loads((out / "summary.json").read_text())
    from tst_train.config import from_mapping
    from tst_train.experiments.compare import run_dirs
    base = from_mapping(json.loads((out / "base_config.json").read_text()), "base_config.json")
    runs = {arm: d for (arm, _), d in run_dirs(base, out, list(ARMS), [0]).items()}
    per = {arm: s["arms"][arm]["seeds"]["0"] for arm in ARMS}
    for arm in ARMS:
        assert per[arm]["final_val_loss"] is not None and per[arm]["positions"] == 12 * 2 * 16, arm
        assert set(s["comparisons"]) >= set(ARMS) - {"baseline"}
    # the batch fold reads the same data as TST (s× rows of L tokens) and never more FLOPs
    assert per["tst+fold=batch"]["data_tokens"] == per["tst"]["data_tokens"]
    assert per["tst+fold=batch"]["flops"] <= per["tst"]["flops"] == per["baseline"]["flops"]
    # the smooth transition: bag size 2 for 6 steps, then the geometric ladder (round(2^(1-a)): 2, 1, 1), then 1
    bags = [r["bag_size"] for r in read_metrics(runs["tst+transition_steps=3"]) if "loss" in r]
    assert bags == [2] * 6 + [2, 1, 1] + [1] * 3
    # the fitted weights are recorded in the plan and differ from uniform
    plan = json.loads((runs["tst+weights=fitted"] / "plan.json").read_text())
    w = plan["phases"][0]["weights"]
    assert isinstance(w, list) and len(w) == 2 and abs(sum(w) - 1) < 1e-5 and w[0] > w[1]
    # the objectives differ in phase 1 and agree in phase 2 (plain next-token CE for both)
    a = [r["loss"] for r in read_metrics(runs["tst"]) if "loss" in r]
    b = [r["loss"] for r in read_metrics(runs["tst+loss=sum-to-one"]) if "loss" in r]
    assert a[0] != b[0]


def test_bad_arm_options_are_one_line_errors(tiny_data, tmp_path, capsys):
    for spec, expected in [("tst+bagging=blind", "bagging must be one of"), ("tst+loss", "key=value"),
                           ("magic+x=1", "unknown arm"), ("tst+nosuch=1", "unknown config key")]:
        code = main(["compare", "--data", str(tiny_data), "--out", str(tmp_path / "c"), "--arms", f"baseline,{spec}", *TINY])
        err = capsys.readouterr().err
        assert code == 2 and expected in err and err.count("\n") == 1, (spec, err)
    assert not (tmp_path / "c").exists()


def test_sweep_crosses_cells_with_variants(tiny_data, tmp_path, capsys):
    out = tmp_path / "sw"
    code = main(["sweep", "--data", str(tiny_data), "--out", str(out), "--bag-sizes", "2", "--fracs", "0.5",
                 "--variants", "plain,loss=sum-to-one", *TINY])
    assert code == 0, capsys.readouterr().err
    res = json.loads((out / "sweep.json").read_text())
    assert [c["variant"] for c in res["cells"]] == ["", "loss=sum-to-one"]
    assert (out / "runs" / "d64-L2-lr0.001-12steps-s2-r0.5-uniform+loss-sum-to-one-seed0" / "summary.json").is_file()
    study = json.loads((out / "study.json").read_text())
    assert {g["arm"] for g in study["groups"]} == {"s2-r0.5-uniform", "s2-r0.5-uniform+loss-sum-to-one"}
