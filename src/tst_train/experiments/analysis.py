"""Pure functions that turn run records into comparisons: equal-FLOPs deltas, equal-loss speed-ups,
equal-data losses, and means with 95% confidence intervals over seeds. No I/O, no plotting.
"""
from __future__ import annotations

import math
import statistics

# Two-sided 95% Student-t quantiles t_{0.975, df} (df = n_seeds − 1); beyond 30, 1.96 is within 2%.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 25: 2.060, 30: 2.042}


def t_quantile(df: int) -> float:
    if df in T_975:
        return T_975[df]
    below = max(k for k in T_975 if k <= df) if df < 30 else None
    return T_975[below] if below else 1.96


def mean_ci(values: list[float | None]) -> dict:
    """Mean, sample sd and the 95% t-interval of the non-null values (interval null below 2 values)."""
    xs = [v for v in values if v is not None and math.isfinite(v)]
    out = {"n": len(xs), "mean": statistics.fmean(xs) if xs else None, "sd": None, "ci95": None}
    if len(xs) >= 2:
        sd = statistics.stdev(xs)
        half = t_quantile(len(xs) - 1) * sd / math.sqrt(len(xs))
        out.update(sd=sd, ci95=[out["mean"] - half, out["mean"] + half])
    return out


def eval_curve(records: list[dict], x: str = "step") -> list[tuple[float, float]]:
    """(x, val_loss) points of a run's evaluation records, in order."""
    return [(r[x], r["val_loss"]) for r in records if "val_loss" in r and r.get("val_loss") is not None]


def first_crossing(curve: list[tuple[float, float]], target: float) -> float | None:
    """The first x where the curve reaches ``target`` or below, linearly interpolated between evaluations.

    Returns None if it never does. The first point counts as reached only if it is already ≤ target.
    """
    prev = None
    for x, y in curve:
        if y <= target:
            if prev is None or prev[1] == y:
                return float(x)
            x0, y0 = prev
            return x0 + (y0 - target) / (y0 - y) * (x - x0)
        prev = (x, y)
    return None


def value_at(curve: list[tuple[float, float]], x: float) -> float | None:
    """The curve's value at ``x`` by linear interpolation; None outside the evaluated range."""
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    if curve and curve[-1][0] == x:
        return curve[-1][1]
    return None


def compare_to_baseline(arm: list[dict], baseline: list[dict], long_baseline: list[dict] | None = None) -> dict:
    """Compare one arm's records with the baseline's (same seed, same steps and FLOPs per step).

    - ``delta_val_loss``: arm − baseline final validation loss (negative = the arm is better) at equal FLOPs.
    - ``equal_loss_speedup``: baseline steps ÷ the steps the arm needs to reach the baseline's final
      validation loss (interpolated between evaluations; None if it never does).
    - ``equal_data``: the baseline's validation loss after as many data tokens as the arm consumed, from
      the longest baseline curve available (``long_baseline``, e.g. the baseline-equal-data arm); None
      where no baseline saw that many tokens.
    """
    arm_curve, base_curve = eval_curve(arm), eval_curve(baseline)
    if not arm_curve or not base_curve:
        return {"delta_val_loss": None, "equal_loss_speedup": None, "equal_data": None}
    base_steps, base_final = base_curve[-1]
    arm_final = arm_curve[-1][1]
    reach = first_crossing(arm_curve, base_final)
    speedup = base_steps / reach if reach else None
    arm_tokens = eval_curve(arm, "data_tokens")[-1][0]
    ref = long_baseline if long_baseline else baseline
    base_at_tokens = value_at(eval_curve(ref, "data_tokens"), arm_tokens)
    return {
        "delta_val_loss": arm_final - base_final,
        "equal_loss_speedup": speedup,
        "steps_to_baseline_loss": reach,
        "equal_data": {"data_tokens": arm_tokens, "baseline_val_loss": base_at_tokens, "arm_val_loss": arm_final,
                       "delta_val_loss": None if base_at_tokens is None else arm_final - base_at_tokens},
    }
