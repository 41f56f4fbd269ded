"""The demo's verdict: the speed-up on its own curve, Δ at equal steps, and the frontier over shape × steps."""
from __future__ import annotations

import json

from tst_train.experiments import compute, demo, stats
from tst_train.experiments.compute import Point


def _result(tst_losses, base_1000, base_1500, shipped=()):
    """A demo result as ``summarize_demo`` builds it, from per-seed losses (seeds 3, 4, 5)."""
    seeds = [3, 4, 5][:len(tst_losses)]
    curve = {"shape": "d512-L1", "lr": 5e-4, "budgets": [1000, 1500], "points": [
        {"steps": 1000, "flops": 7.7e12, "per_seed": {str(s): {"flops": 7.7e12, "loss": v, "run": f"b{s}"}
                                                      for s, v in zip(seeds, base_1000)}},
        {"steps": 1500, "flops": 11.6e12, "per_seed": {str(s): {"flops": 11.6e12, "loss": v, "run": f"t{s}"}
                                                       for s, v in zip(seeds, base_1500)}}]}
    for p in curve["points"]:
        p["loss"] = stats.mean_ci([v["loss"] for v in p["per_seed"].values()])
    tst_runs = {s: (7.6e12, v) for s, v in zip(seeds, tst_losses)}
    tst = Point("TST", 7.6e12, tuple(tst_losses), tuple(seeds))
    measured = [Point(f"d512-L1 {p['steps']}", p["flops"], tuple(v["loss"] for v in p["per_seed"].values()))
                for p in curve["points"]]
    return {"tst": {"name": "TST", "flops": 7.6e12, "loss": stats.mean_ci(tst_losses), "arm": "tst-arm",
                    "per_seed": {str(s): {"loss": v, "run": f"r{s}"} for s, v in zip(seeds, tst_losses)}},
            "curve": curve, "speedup": compute.speedup_over_seeds(
                {s: [(7.7e12, a), (11.6e12, b)] for s, a, b in zip(seeds, base_1000, base_1500)}, tst_runs),
            "delta_own": stats.paired(tst_losses, base_1000),
            "frontier": demo._frontier_record(compute.against_frontier(tst, measured + list(shipped))), "seeds": seeds}


def test_a_win_at_its_own_shape_is_refuted_by_a_smaller_model_trained_longer():
    # the committed records' pattern: TST beats its own d512/L1 baseline, but d64/L2 trained 1,500 steps
    # reaches a lower loss at a tenth of the FLOPs
    small = Point("d64-L2 lr 0.001, 1,500 steps", 0.84e12, (5.330, 5.335, 5.325), (0, 1, 2), "shipped record: x")
    r = _result([5.374, 5.378, 5.370], [5.461, 5.460, 5.457], [5.293, 5.300, 5.309], [small])
    lines = demo.verdict(r)
    assert lines[0].startswith("TST saves compute at its own shape")
    assert "and it is behind the frontier: d64-L2 lr 0.001, 1,500 steps reaches 5.330 at 0.11× its FLOPs" in lines[0]
    assert "(shipped record: x)" in lines[0]
    assert r["frontier"]["best"]["name"] == small.name
    assert r["frontier"]["delta"] == stats.welch((5.374, 5.378, 5.370), small.losses)
    assert "Δ -0.085" in lines[3] or "Δ -0.085" in " ".join(lines)
    # the speed-up is read on the curve: between 1x and 1.5x, with an interval over the seeds
    sp = r["speedup"]
    assert sp["bound"] is None and 1.0 < sp["value"] < 1.5 and sp["ci95"][0] > 1.0


def test_without_a_cheaper_baseline_the_frontier_is_said_untested_and_a_bound_is_a_bound():
    r = _result([5.25, 5.26], [5.46, 5.47], [5.30, 5.31])
    assert r["speedup"]["bound"] == ">" and r["speedup"]["ci95"] is None
    head = demo.verdict(r)[0]
    assert head.startswith("TST saves compute at its own shape: > 1.53×") and "untested" in head  # 11.6e12 / 7.6e12, and no baseline at <= 7.6e12 FLOPs


def test_a_real_frontier_win_needs_the_interval_below_zero():
    level = Point("d256-L2 1000", 3.9e12, (5.40, 5.45), (0, 1), "measured here")
    r = _result([5.374, 5.378], [5.461, 5.460], [5.293, 5.300], [level])
    assert r["frontier"]["verdict"].startswith("level with the frontier")
    beaten = Point("d256-L2 1000", 3.9e12, (5.45, 5.46, 5.44), (0, 1, 2), "measured here")
    r = _result([5.374, 5.378, 5.370], [5.461, 5.460, 5.457], [5.293, 5.300, 5.309], [beaten])
    assert "it is on the frontier" in demo.verdict(r)[0]


def test_shipped_baselines_count_only_under_their_protocol(tmp_path):
    from tst_train.config import Config
    cfg = Config()
    cfg.train.batch_size, cfg.train.seq_len, cfg.eval.tokens = 8, 32, 16384
    meta = {"vocab_size": 4096, "splits": {"train": {"tokens": 4046422}}}
    points, note = demo.shipped_baselines(cfg, meta)
    assert points and all(p.source.startswith("shipped record: experiments/") for p in points)
    meta["splits"]["train"]["tokens"] = 123  # a user's own data
    assert demo.shipped_baselines(cfg, meta)[0] == [] and "do not apply" in demo.shipped_baselines(cfg, meta)[1]
    assert demo.shipped_baselines(cfg, meta, tmp_path / "none.json")[0] == []


def test_the_shipped_data_names_its_records_and_holds_longer_trained_small_models():
    data = json.loads(demo.SHIPPED.read_text())
    assert data["protocol"] == demo.PROTOCOL
    assert all(len(c) == 40 for c in data["records"].values())  # each record's commit
    by = {(p["shape"], p["steps"]): p for p in data["points"]}
    assert by[("d512-L1", 1000)]["seeds"] == [0, 1, 2]
    assert by[("d64-L2", 1500)]["flops"] < 0.15 * by[("d512-L1", 1000)]["flops"]
    assert all(len(p["losses"]) == len(p["seeds"]) and p["records"] for p in data["points"])
