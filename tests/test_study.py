"""The width study and frontier analysis against hand computations on synthetic run pools."""
from __future__ import annotations

import math

import pytest


from tst_train.experiments import report, stats, study
from tst_train.experiments.study import RunInfo


def run(dim, layers, arm, seed, loss, steps=100, lr=1e-3, fpp=None, positions=1):
    fpp = fpp if fpp is not None else dim * layers * 1e3
    return RunInfo(f"d{dim}-{arm}-{seed}", dim, layers, lr, steps, arm, seed, fpp * steps * positions, loss, fpp, 0,
                   positions)


def pool(delta_of_dim, dims=(64, 128, 256, 512), layers=2, noise=(0.0, 0.01, -0.01)):
    out = []
    for d in dims:
        for seed, e in enumerate(noise):
            base = 5.0 - 0.1 * math.log2(d) + e
            out += [run(d, layers, "baseline", seed, base), run(d, layers, "s4-r0.25-uniform", seed, base + delta_of_dim(d))]
    return out


def test_paired_deltas_per_group():
    rows = study.group_deltas(pool(lambda d: 0.2))
    assert len(rows) == 4
    for r in rows:
        assert r["delta"]["mean"] == pytest.approx(0.2) and r["delta"]["sd"] == pytest.approx(0.0, abs=1e-12)
        assert r["seeds"] == [0, 1, 2] and r["tst_per_seed"][1] - r["baseline_per_seed"][1] == pytest.approx(0.2)


def test_width_trend_finds_the_crossover_of_an_exact_line():
    # Δ = 0.5 − 0.1·log2(d): zero at log2(d) = 5 → d = 32 (per-seed Δ identical: no spread)
    rows = study.group_deltas(pool(lambda d: 0.5 - 0.1 * math.log2(d)))
    (t,) = study.width_trends(rows)
    assert t["slope_per_doubling"] == pytest.approx(-0.1) and t["intercept"] == pytest.approx(0.5)
    assert t["crossover_width"] == pytest.approx(32.0)
    assert t["crossover_ci95"] == pytest.approx([32.0, 32.0])
    assert t["widths"] == [64, 128, 256, 512]


def test_one_seed_gives_a_crossover_without_an_interval_and_flags_extrapolation():
    # Δ = 0.5 − 0.1·log2(d) at d64 and d128, one seed: the line crosses zero at d32, outside the widths run.
    # Resampling one seed returns it, so a bootstrap "interval" would be [32, 32]: no uncertainty, wrongly.
    rows = study.group_deltas(pool(lambda d: 0.5 - 0.1 * math.log2(d), dims=(64, 128), noise=(0.0,)))
    (t,) = study.width_trends(rows)
    assert t["crossover_width"] == pytest.approx(32.0) and t["crossover_ci95"] is None
    assert t["crossover_extrapolated"] is True
    md = report.format_study({"groups": rows, "width_trends": [t], "frontier": [], "against_frontier": []}, [])
    assert "| 32 (no interval: one seed at some width), extrapolated beyond the measured d64–d128 |" in md
    (inside,) = study.width_trends(study.group_deltas(pool(lambda d: 0.7 - 0.1 * math.log2(d))))
    assert inside["crossover_width"] == pytest.approx(128.0) and inside["crossover_extrapolated"] is False
    assert inside["crossover_ci95"] == pytest.approx([128.0, 128.0])  # 3 seeds with identical Δ: a true point


def test_a_trend_interval_does_not_move_when_another_series_lands():
    noisy = []  # per-seed Δ spread, so the bootstrap interval depends on the draws
    for d in (64, 128, 256, 512):
        for seed, e in enumerate((0.0, 0.03, -0.02)):
            noisy += [run(d, 2, "baseline", seed, 4.6), run(d, 2, "s4-r0.25-uniform", seed, 5.1 - 0.1 * math.log2(d) + e)]
    (alone,) = study.width_trends(study.group_deltas(noisy))
    deeper = pool(lambda d: 0.3, dims=(256, 512), layers=1)  # sorts before the depth-2 series
    trends = study.width_trends(study.group_deltas(deeper + noisy))
    assert [t["n_layers"] for t in trends] == [1, 2]
    assert trends[1]["crossover_ci95"] == alone["crossover_ci95"] and alone["crossover_ci95"][0] < alone["crossover_ci95"][1]


def test_no_crossover_when_delta_grows_with_width():
    rows = study.group_deltas(pool(lambda d: 0.01 * math.log2(d)))
    (t,) = study.width_trends(rows)
    assert t["slope_per_doubling"] > 0 and t["crossover_width"] is None


def test_the_frontier_comparisons_use_every_finished_seed_paired_or_not():
    # TST seeds 1-2 landed before their own baselines: the cross-shape comparison still counts them
    runs = [run(128, 2, "baseline", s, loss, fpp=5.5e6) for s, loss in enumerate((4.60, 4.58, 4.59))]
    runs += [run(128, 2, "s4-r0.25-uniform", 0, 4.85, fpp=5.5e6), run(512, 1, "baseline", 0, 4.67, fpp=30.3e6)]
    runs += [run(512, 1, "s6-r0.25-uniform", s, loss, fpp=30.3e6) for s, loss in enumerate((4.57, 4.58, 4.61))]
    rows = study.group_deltas(runs)
    by = {a["dim"]: a for a in study.against_frontier(rows)}
    assert by[512]["loss"]["n"] == 3 and by[512]["loss"]["mean"] == pytest.approx((4.57 + 4.58 + 4.61) / 3)
    assert by[512]["best_baseline"]["loss"]["n"] == 3
    assert by[512]["delta"] == stats.welch([4.57, 4.58, 4.61], [4.60, 4.58, 4.59])
    (row,) = [r for r in rows if r["dim"] == 512]
    assert row["seeds"] == [0] and row["delta"]["n"] == 1  # the paired Δ against its own baseline stays paired


def test_tst_is_held_against_the_best_baseline_at_no_more_flops():
    # TST at d512 beats its own (over-wide) baseline, but a cheaper d128 baseline is better still
    runs = []
    for seed, e in enumerate((0.0, 0.02, -0.02)):
        runs += [run(128, 2, "baseline", seed, 4.59 + e, fpp=5.5e6), run(128, 2, "s4-r0.25-uniform", seed, 4.85 + e, fpp=5.5e6),
                 run(512, 2, "baseline", seed, 4.86 + e, fpp=48e6), run(512, 2, "s4-r0.25-uniform", seed, 4.75 + e, fpp=48e6),
                 run(1024, 2, "baseline", seed, 4.70 + e, fpp=150e6)]  # no TST here: a baseline only
    rows = study.group_deltas(runs)
    by = {(a["dim"]): a for a in study.against_frontier(rows)}
    assert set(by) == {128, 512}  # the d1024 group has no TST arm
    assert (by[512]["best_baseline"]["dim"], by[512]["delta"]["mean"]) == (128, pytest.approx(4.75 - 4.59))
    assert by[128]["best_baseline"]["dim"] == 128  # nothing cheaper: its own baseline
    assert by[128]["delta"]["mean"] == pytest.approx(4.85 - 4.59)
    assert "TST against the baseline frontier" in report.format_study(
        {"groups": rows, "width_trends": [], "frontier": [], "against_frontier": study.against_frontier(rows)}, [])
