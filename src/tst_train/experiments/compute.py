"""Compute curves, the equal-loss speed-up read on them, and the frontier with steps as an axis.

The definitions every verdict about "how much compute TST saves" uses, fixed here before any run:

* A **point** is one measured configuration (shape, learning rate, step budget, arm) with its final
  validation loss per seed and its total training FLOPs (positions × FLOPs per position).
* A **compute curve** is one shape's baseline at several step budgets, each a fully decayed run (a
  separate run, or a cooldown branch of one warmup–stable run: ``tst curve``). Loss against compute is
  taken monotone — only points that improve on every cheaper one count — and is interpolated linearly
  in log FLOPs between them. It is never extrapolated.
* The **equal-loss speed-up** of a TST point is the baseline compute its curve needs to reach TST's final
  loss, divided by TST's compute. Where TST's loss lies beyond the curve (lower than its cheapest or its
  longest point reaches) the speed-up is a **bound** ("> 1.5×", "< 0.5×"), never a number.
* The **frontier** is the best baseline over every shape, learning rate *and step budget* measured on the
  same data and evaluation. A TST point is "on the frontier" only when it beats the best baseline at no
  more FLOPs with a 95 % Welch interval below zero; a smaller model trained longer is such a baseline.

Pure functions on plain values; no I/O, no plotting.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from . import stats

TOLERANCE = 1e-9  # relative: FLOPs equal up to rounding count as "no more FLOPs"


@dataclass(frozen=True)
class Point:
    """One measured configuration: its name, total training FLOPs and final validation loss per seed."""
    name: str
    flops: float
    losses: tuple[float, ...]
    seeds: tuple[int, ...] = ()
    source: str = "measured here"
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def loss(self) -> float:
        return statistics.fmean(self.losses)


# ---------------------------------------------------------------------------------- one shape's curve
def monotone(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (FLOPs, loss) points that improve on every cheaper one, by FLOPs: loss against compute, monotone."""
    out: list[tuple[float, float]] = []
    for c, y in sorted(points):
        if not out or y < out[-1][1]:
            out.append((c, y))
    return out


def flops_to_reach(curve: list[tuple[float, float]], loss: float) -> tuple[float, str | None]:
    """The compute at which ``curve`` first reaches ``loss`` (linear in log FLOPs between its monotone points).

    Returns (FLOPs, bound): bound is None for an interpolated value, ``">"`` when the curve never gets that
    low (the FLOPs returned is its largest: the true value is above it) and ``"<"`` when its cheapest point
    is already at or below ``loss`` (the true value is at most its smallest FLOPs)."""
    pts = monotone(curve)
    if not pts:
        raise ValueError("an empty curve")
    if loss >= pts[0][1]:
        return pts[0][0], "<" if loss > pts[0][1] else None
    for (c0, y0), (c1, y1) in zip(pts, pts[1:]):
        if y1 <= loss:
            frac = (y0 - loss) / (y0 - y1)
            return math.exp(math.log(c0) + frac * (math.log(c1) - math.log(c0))), None
    return pts[-1][0], ">"


def speedup(curve: list[tuple[float, float]], flops: float, loss: float) -> dict:
    """Equal-loss speed-up of a run (``flops``, final ``loss``) on a baseline ``curve``: {"value", "bound"}."""
    needed, bound = flops_to_reach(curve, loss)
    return {"value": needed / flops, "bound": bound, "baseline_flops": needed}


def speedup_over_seeds(curves: dict[int, list[tuple[float, float]]], runs: dict[int, tuple[float, float]]) -> dict:
    """The speed-up of TST runs ``{seed: (flops, loss)}`` on baseline curves ``{seed: [(flops, loss)]}``.

    The point value reads the mean TST loss on the curve of mean baseline losses (budgets all seeds have);
    the interval is the t-interval of the per-seed speed-ups (TST seed k on baseline seed k), given only when
    every seed's value is interpolated — a seed beyond its curve has a bound, not a number, and the summary
    then says how many seeds lie beyond."""
    seeds = sorted(set(curves) & set(runs))
    if not seeds:
        return {"value": None, "bound": None, "ci95": None, "seeds": [], "per_seed": {}}
    per_seed = {s: speedup(curves[s], *runs[s]) for s in seeds}
    budgets = set.intersection(*({c for c, _ in curves[s]} for s in seeds))
    mean_curve = [(c, statistics.fmean(dict(curves[s])[c] for s in seeds)) for c in sorted(budgets)]
    flops = statistics.fmean(runs[s][0] for s in seeds)
    point = speedup(mean_curve, flops, statistics.fmean(runs[s][1] for s in seeds)) if mean_curve else \
        {"value": None, "bound": None}
    bounded = [s for s in seeds if per_seed[s]["bound"]]
    ci = None if bounded else stats.mean_ci([per_seed[s]["value"] for s in seeds])["ci95"]
    return {"value": point["value"], "bound": point["bound"], "ci95": ci, "seeds": seeds,
            "seeds_beyond_curve": bounded, "per_seed": {str(s): v for s, v in per_seed.items()}}


def format_speedup(sp: dict) -> str:
    """``1.23× [1.10, 1.36]``, ``> 1.50×`` (beyond the curve), or n/a."""
    if sp.get("value") is None:
        return "n/a"
    if sp.get("bound"):
        return f"{sp['bound']} {sp['value']:.2f}×"
    text = f"{sp['value']:.2f}×"
    if sp.get("ci95"):
        text += f" [{sp['ci95'][0]:.2f}, {sp['ci95'][1]:.2f}]"
    elif sp.get("seeds_beyond_curve"):
        text += f" ({len(sp['seeds_beyond_curve'])} of {len(sp['seeds'])} seeds beyond the curve: no interval)"
    return text


# ---------------------------------------------------------------------------------- the frontier
def frontier(baselines: list[Point]) -> list[Point]:
    """The baselines on the frontier: each has a lower mean loss than every baseline at no more FLOPs."""
    out: list[Point] = []
    for p in sorted(baselines, key=lambda p: (p.flops, p.loss)):
        if not out or p.loss < out[-1].loss:
            out.append(p)
    return out


def best_at(baselines: list[Point], flops: float) -> Point | None:
    """The baseline with the lowest mean loss among those at no more than ``flops`` (any shape, lr, steps)."""
    cheaper = [b for b in baselines if b.flops <= flops * (1 + TOLERANCE)]
    return min(cheaper, key=lambda b: b.loss, default=None)


def against_frontier(tst: Point, baselines: list[Point]) -> dict:
    """TST against the best baseline at no more FLOPs: Welch Δ (TST − baseline) and a verdict that says
    "on the frontier" only when the whole 95 % interval lies below zero."""
    best = best_at(baselines, tst.flops)
    if best is None:
        return {"best": None, "delta": None, "verdict": "no baseline at no more FLOPs was measured"}
    delta = stats.welch(tst.losses, best.losses)
    ci = delta["ci95"]
    if ci is None:
        verdict = f"{'ahead of' if delta['mean'] < 0 else 'behind'} the frontier by {abs(delta['mean']):.3f}, " \
                  "without an interval (one seed on a side): not shown"
    elif ci[1] < 0:
        verdict = "on the frontier"
    elif ci[0] > 0:
        verdict = "behind the frontier"
    else:
        verdict = "level with the frontier (the interval includes zero)"
    return {"best": best, "delta": delta, "verdict": verdict, "flops_ratio": best.flops / tst.flops}
