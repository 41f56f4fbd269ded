"""The statistics every comparison uses, in one place, on ``scipy.stats``.

Each function returns a plain dict ``{"n", "mean", "ci95", …}`` (``ci95`` is None where there is no interval:
fewer than two values), so reports and JSON records read them alike. What an interval covers is the
caller's to say: over init seeds only, or over data orders too.

    mean_ci      mean and 95 % Student-t interval of one sample
    paired       mean difference a − b of paired values (same seed) with its t-interval
    welch        mean(a) − mean(b) of two independent samples, Welch interval (fractional df)
    bootstrap_ci percentile bootstrap interval of any statistic of one sample
    spread       median and range: for timings, which cannot go below zero
"""
from __future__ import annotations

import math
import statistics
import warnings

LEVEL = 0.95


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _t(df: float) -> float:
    """The two-sided 95 % Student-t quantile for ``df`` degrees of freedom (fractional allowed)."""
    from scipy import stats
    return float(stats.t.ppf(0.5 + LEVEL / 2, df))


def mean_ci(values) -> dict:
    """Mean, sample sd and the 95 % t-interval of the finite, non-null values (interval None below 2)."""
    xs = _finite(values)
    out = {"n": len(xs), "mean": statistics.fmean(xs) if xs else None, "sd": None, "ci95": None}
    if len(xs) >= 2:
        sd = statistics.stdev(xs)
        half = _t(len(xs) - 1) * sd / math.sqrt(len(xs))
        out.update(sd=sd, ci95=[out["mean"] - half, out["mean"] + half])
    return out


def paired(a, b) -> dict:
    """a − b over pairs (same seed or order), where both sides are present: mean with its t-interval."""
    return mean_ci([x - y for x, y in zip(a, b) if x is not None and y is not None])


def welch(a, b) -> dict:
    """mean(a) − mean(b) for two independent samples (e.g. two shapes): 95 % Welch interval, df not rounded."""
    a, b = _finite(a), _finite(b)
    if not a or not b:
        return {"n": (len(a), len(b)), "mean": None, "ci95": None, "df": None}
    diff = statistics.fmean(a) - statistics.fmean(b)
    out = {"n": (len(a), len(b)), "mean": diff, "ci95": None, "df": None}
    if len(a) < 2 or len(b) < 2:
        return out
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return out | {"ci95": [diff, diff]}
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = _t(df) * se
    return out | {"ci95": [diff - half, diff + half], "df": df}


def bootstrap_ci(samples: tuple, statistic, n_resamples: int = 2000, seed: int = 0) -> tuple[list | None, float | None]:
    """Percentile bootstrap 95 % interval of ``statistic(*samples)``, each sample resampled on its own (e.g. the
    seeds at each width). Returns (interval or None, share of resamples where the statistic is defined — it
    returns None or NaN where it is not). The interval is None when a sample has one value (resampling it
    returns it: a point, not an uncertainty) or when fewer than 95 % of the resamples define the statistic."""
    import numpy as np
    from scipy import stats
    if min(len(s) for s in samples) < 2:
        return None, None

    def defined(*xs):
        v = statistic(*xs)
        return math.nan if v is None else float(v)

    with warnings.catch_warnings():  # scipy warns of undefined resamples: they are counted below instead
        warnings.simplefilter("ignore")
        res = stats.bootstrap(tuple(np.asarray(s, dtype=float) for s in samples), defined, vectorized=False,
                              n_resamples=n_resamples, method="percentile", confidence_level=LEVEL,
                              rng=np.random.default_rng(seed))
    dist = np.asarray(res.bootstrap_distribution)
    share = float(np.isfinite(dist).mean())
    if share < LEVEL:
        return None, share
    lo, hi = np.percentile(dist[np.isfinite(dist)], [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return [float(lo), float(hi)], share


def spread(values) -> dict:
    """Median, minimum and maximum — for quantities that cannot be negative (timings), where a t-interval can."""
    xs = _finite(values)
    if not xs:
        return {"n": 0, "median": None, "min": None, "max": None}
    return {"n": len(xs), "median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def fmt(stat: dict | None, digits: int = 3, signed: bool = True) -> str:
    """``+0.123 [+0.100, +0.146]`` (or the mean alone, ``(1 seed)`` when there is no interval); n/a when empty."""
    if not stat or stat.get("mean") is None:
        return "n/a"
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    text = f.format(stat["mean"])
    return text + (" [" + ", ".join(f.format(v) for v in stat["ci95"]) + "]" if stat.get("ci95") else "")
