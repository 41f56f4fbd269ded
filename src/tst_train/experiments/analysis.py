"""Pure functions that turn run records into comparisons: equal-FLOPs deltas, the steps-to-loss ratio on one
run's curve, equal-data losses (the equal-loss speed-up on a compute curve is ``compute``'s). No I/O, no plotting; the statistics are in ``stats``.
"""
from __future__ import annotations


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
    - ``steps_ratio``: baseline steps ÷ the steps the arm needs to reach the baseline's final
      validation loss on its own curve. Not the equal-loss speed-up: read on one run whose learning rate
      decays over its last ``decay_frac``, it cannot exceed about 1 / (1 − decay_frac) — that needs a
      compute curve (``compute.speedup``, ``tst curve``) (interpolated between evaluations; None if it never does).
    - ``equal_data``: the baseline's validation loss after as many data tokens as the arm consumed, from
      the longest baseline curve available (``long_baseline``, e.g. the baseline-equal-data arm); None
      where no baseline saw that many tokens.
    """
    arm_curve, base_curve = eval_curve(arm), eval_curve(baseline)
    if not arm_curve or not base_curve:
        return {"delta_val_loss": None, "steps_ratio": None, "equal_data": None}
    base_steps, base_final = base_curve[-1]
    arm_final = arm_curve[-1][1]
    reach = first_crossing(arm_curve, base_final)
    speedup = base_steps / reach if reach else None
    arm_tokens = eval_curve(arm, "data_tokens")[-1][0]
    ref = long_baseline if long_baseline else baseline
    base_at_tokens = value_at(eval_curve(ref, "data_tokens"), arm_tokens)
    return {
        "delta_val_loss": arm_final - base_final,
        "steps_ratio": speedup,
        "steps_to_baseline_loss": reach,
        "equal_data": {"data_tokens": arm_tokens, "baseline_val_loss": base_at_tokens, "arm_val_loss": arm_final,
                       "delta_val_loss": None if base_at_tokens is None else arm_final - base_at_tokens},
    }
