"""Compute curves, the equal-loss speed-up on them and the frontier with steps, against hand-computed values."""
from __future__ import annotations

import math

import pytest

from tst_train.experiments import compute, stats
from tst_train.experiments.compute import Point

# A baseline curve: 1e12 -> 5.5, 2e12 -> 5.3, 4e12 -> 5.2 (loss falls 0.2 per doubling, then 0.1)
CURVE = [(1e12, 5.5), (2e12, 5.3), (4e12, 5.2)]


def test_interpolation_is_linear_in_log_flops():
    # 5.4 is halfway from 5.5 to 5.3 in loss, so halfway in log FLOPs: sqrt(2) x 1e12
    assert compute.flops_to_reach(CURVE, 5.4) == (pytest.approx(math.sqrt(2) * 1e12), None)
    assert compute.flops_to_reach(CURVE, 5.25) == (pytest.approx(math.sqrt(8) * 1e12), None)
    assert compute.flops_to_reach(CURVE, 5.3) == (pytest.approx(2e12), None)


def test_beyond_the_curve_is_a_bound_never_an_extrapolation():
    assert compute.flops_to_reach(CURVE, 5.1) == (4e12, ">")  # lower than the longest run reaches
    assert compute.flops_to_reach(CURVE, 5.6) == (1e12, "<")  # worse than the cheapest point
    sp = compute.speedup(CURVE, 2e12, 5.1)
    assert sp["bound"] == ">" and sp["value"] == pytest.approx(2.0)
    assert compute.format_speedup(sp) == "> 2.00×"


def test_a_non_monotone_curve_keeps_only_improving_points():
    # the 3e12 point is worse than the 2e12 one (noise): it cannot make the curve rise
    assert compute.monotone([(1e12, 5.5), (3e12, 5.35), (2e12, 5.3), (4e12, 5.2)]) == CURVE
    assert compute.flops_to_reach([(1e12, 5.5), (3e12, 5.35), (2e12, 5.3), (4e12, 5.2)], 5.4)[0] == \
        pytest.approx(math.sqrt(2) * 1e12)


def test_speedup_over_seeds_pairs_by_seed_and_gives_an_interval():
    curves_by_seed = {0: CURVE, 1: [(c, y + 0.02) for c, y in CURVE], 2: [(c, y - 0.02) for c, y in CURVE]}
    runs = {0: (1e12, 5.4), 1: (1e12, 5.42), 2: (1e12, 5.36)}
    sp = compute.speedup_over_seeds(curves_by_seed, runs)
    per = [math.sqrt(2), math.sqrt(2), 2 ** 0.6]  # seed 2: (5.48 - 5.36) / 0.2 of a doubling
    assert [sp["per_seed"][str(s)]["value"] for s in range(3)] == pytest.approx(per)
    assert sp["ci95"] == pytest.approx(stats.mean_ci(per)["ci95"])
    assert sp["value"] == pytest.approx(2 ** ((5.5 - 5.3933333) / 0.2))  # the mean TST loss on the mean curve
    # a seed beyond its curve: no interval, and the summary says so
    runs[2] = (1e12, 5.1)
    sp = compute.speedup_over_seeds(curves_by_seed, runs)
    assert sp["ci95"] is None and sp["seeds_beyond_curve"] == [2]
    assert "1 of 3 seeds beyond the curve" in compute.format_speedup(sp)


def test_the_frontier_counts_a_smaller_model_trained_longer():
    # TST at d512 for 1000 steps beats its own equal-FLOPs baseline, but a d64 baseline trained 1500 steps
    # reaches a lower loss at a tenth of the FLOPs: TST is behind the frontier
    own = Point("d512/L1 1000 steps", 7.7e12, (5.461, 5.460, 5.457))
    small_long = Point("d64/L2 1500 steps", 0.84e12, (5.330, 5.335, 5.325))
    small_short = Point("d64/L2 1000 steps", 0.55e12, (5.481, 5.49, 5.47))
    bigger = Point("d1024/L1 1000 steps", 30e12, (5.0, 5.01, 4.99))  # costs more: not a candidate
    tst = Point("TST d512/L1 1000 steps", 7.6e12, (5.374, 5.378, 5.370))
    baselines = [own, small_long, small_short, bigger]
    assert compute.best_at(baselines, tst.flops) == small_long
    r = compute.against_frontier(tst, baselines)
    assert r["best"] == small_long and r["verdict"] == "behind the frontier"
    assert r["delta"] == stats.welch(tst.losses, small_long.losses)
    # without the longer-trained small model, the same TST point is on the frontier
    assert compute.against_frontier(tst, [own, small_short, bigger])["verdict"] == "on the frontier"
    assert compute.frontier(baselines) == [small_short, small_long, bigger]


def test_frontier_verdicts_without_an_interval_or_a_baseline():
    tst = Point("tst", 1e12, (5.0,))
    assert "not shown" in compute.against_frontier(tst, [Point("b", 1e12, (5.1, 5.2))])["verdict"]
    assert compute.against_frontier(tst, [Point("b", 2e12, (5.1, 5.2))])["best"] is None
    level = compute.against_frontier(Point("t", 1e12, (5.0, 5.2)), [Point("b", 1e12, (5.05, 5.15))])
    assert level["verdict"].startswith("level")
