"""The one statistics module against hand computations and scipy's own tests."""
from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats as scipy_stats

from tst_train.experiments import stats


def test_mean_ci_is_the_student_t_interval():
    r = stats.mean_ci([1.0, 2.0, 3.0])
    assert r["mean"] == 2.0 and r["sd"] == 1.0
    half = 4.302653 / math.sqrt(3)  # t_{0.975, 2} from a printed table
    assert r["ci95"] == pytest.approx([2 - half, 2 + half], abs=1e-6)
    assert stats.mean_ci([5.0])["ci95"] is None
    assert stats.mean_ci([None, 1.0, float("nan")])["n"] == 1


@pytest.mark.parametrize("n", [31, 45, 59])  # the old hand table rounded these down to t_30
def test_mean_ci_uses_the_exact_quantile_at_any_sample_size(n):
    xs = [float(i % 7) for i in range(n)]
    r = stats.mean_ci(xs)
    half = scipy_stats.t.ppf(0.975, n - 1) * statistics.stdev(xs) / math.sqrt(n)
    assert r["ci95"][1] - r["mean"] == pytest.approx(half)


def test_paired_differences_skip_missing_pairs():
    r = stats.paired([4.0, 5.0, None, 7.0], [3.0, 4.5, 1.0, 6.0])
    assert r["n"] == 3 and r["mean"] == pytest.approx((1.0 + 0.5 + 1.0) / 3)


def test_welch_keeps_fractional_degrees_of_freedom_and_matches_scipy():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 2.5, 3.5]
    w = stats.welch(a, b)
    va, vb = statistics.variance(a) / 4, statistics.variance(b) / 3
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2)
    assert df != int(df) and w["df"] == pytest.approx(df)
    assert w["mean"] == pytest.approx(2.5 - 8 / 3)
    assert w["ci95"][1] - w["mean"] == pytest.approx(scipy_stats.t.ppf(0.975, df) * math.sqrt(va + vb))
    ref = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert w["ci95"] == pytest.approx([ref.low, ref.high])
    assert stats.welch([1.0], [2.0, 3.0])["ci95"] is None


def test_bootstrap_interval_and_undefined_resamples():
    ci, share = stats.bootstrap_ci(([1.0, 2.0, 3.0, 4.0, 5.0],), statistics.fmean)
    assert share == 1.0 and 1.0 <= ci[0] < 3.0 < ci[1] <= 5.0
    assert stats.bootstrap_ci(([1.0],), statistics.fmean) == (None, None)
    # a statistic defined on about half the resamples has no interval, and says how often it was defined
    ci, share = stats.bootstrap_ci(([-1.0, 1.0],), lambda x: 1.0 if statistics.fmean(x) >= 0 else None)
    assert ci is None and 0.5 < share < 0.95


def test_spread_never_goes_below_zero():
    s = stats.spread([0.16, 0.17, 1.9])
    assert s == {"n": 3, "median": 0.17, "min": 0.16, "max": 1.9}
    assert stats.fmt(stats.mean_ci([1.0, 2.0, 3.0])) == "+2.000 [-0.484, +4.484]"
    assert stats.fmt({"mean": None}) == "n/a"
