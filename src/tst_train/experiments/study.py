"""The width study and the compute frontier, over every finished run in a sweep directory.

A sweep directory's ``runs/`` is a pool: several ``tst sweep`` invocations (widths, depths, learning
rates, bag sizes, budgets) may add to it. This module reads the whole pool back, groups runs by model
shape, learning rate and step count, and reports

* **Δ vs width**: for each depth (and TST cell), Δ = TST − baseline final validation loss, paired by seed,
  with 95 % t-intervals; a least-squares trend ``Δ = a + b·log2(width)`` over the per-seed values and the
  width where it crosses zero, with a bootstrap interval (seeds resampled within each width);
* **against the baseline frontier**: each TST group against the best baseline group that cost the same
  or fewer total FLOPs — the stricter form of the same question (a TST win over an over-wide baseline
  that a cheaper baseline shape beats is no win).

Pure reading and arithmetic; no training. ``tst sweep --report-only --out DIR`` calls it alone.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from .. import rundir
from ..metrics import read_metrics
from . import analysis, compute, names, stats

BOOTSTRAP = 2000


@dataclass(frozen=True)
class RunInfo:
    name: str
    dim: int
    n_layers: int
    lr: float
    steps: int
    arm: str  # "baseline" or the TST cell "s4-r0.25-uniform"
    seed: int
    flops: float
    final_val_loss: float
    flops_per_position: float
    params: int
    positions_per_step: int = 0  # 0: not recorded


def _arm(cfg) -> str | None:
    t = cfg.tst
    if not names.is_baseline(cfg) and (t.mode != "tst" or t.reinit_embeddings or t.reset_optimizer):
        return None  # ablations are compared by `tst compare`, not here
    return names.arm_name(cfg)


def scan(runs_dir: Path) -> list[RunInfo]:
    """Every completed run of the pool (incomplete ones are skipped: a study may still be training)."""
    out = []
    for d in sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []:
        summary = rundir.read_summary(d)
        if not (summary and summary.get("completed")) or not (d / rundir.PLAN_FILE).is_file():
            continue
        cfg = rundir.read_config(d)
        arm = _arm(cfg)
        curve = analysis.eval_curve(read_metrics(d))
        if arm is None or not curve:
            continue
        plan = json.loads((d / rundir.PLAN_FILE).read_text())
        out.append(RunInfo(d.name, plan["model"]["dim"], plan["model"]["n_layers"], cfg.train.lr, cfg.train.steps,
                           arm, cfg.train.seed, summary["flops"], curve[-1][1], plan["flops_per_position"],
                           plan["params"], summary["positions"] // max(1, summary["steps"])))
    return out


def _key(r: RunInfo) -> tuple:
    return (r.dim, r.n_layers, r.lr, r.steps)


def group_deltas(runs: list[RunInfo]) -> list[dict]:
    """One row per (shape, lr, steps, TST cell): baseline and TST losses and the paired Δ over seeds."""
    by_key: dict[tuple, dict[str, dict[int, RunInfo]]] = {}
    for r in runs:
        by_key.setdefault(_key(r), {}).setdefault(r.arm, {})[r.seed] = r
    rows = []
    for key, arms in sorted(by_key.items()):
        base = arms.get("baseline", {})
        for arm, seeds in sorted(arms.items()):
            if arm == "baseline":
                continue
            common = sorted(set(seeds) & set(base))
            deltas = [seeds[s].final_val_loss - base[s].final_val_loss for s in common]
            any_run = next(iter(seeds.values()))
            rows.append({"dim": key[0], "n_layers": key[1], "lr": key[2], "steps": key[3], "arm": arm,
                         "seeds": common, "flops": any_run.flops, "flops_per_position": any_run.flops_per_position,
                         "params": any_run.params, "positions_per_step": any_run.positions_per_step,
                         "baseline": stats.mean_ci([base[s].final_val_loss for s in common]),
                         "tst": stats.mean_ci([seeds[s].final_val_loss for s in common]),
                         "delta": stats.mean_ci(deltas), "delta_per_seed": deltas,
                         "baseline_per_seed": [base[s].final_val_loss for s in common],
                         "tst_per_seed": [seeds[s].final_val_loss for s in common],
                         # every finished seed, paired or not: the cross-shape (Welch) comparisons need no pairing
                         "baseline_all": [base[s].final_val_loss for s in sorted(base)],
                         "tst_all": [seeds[s].final_val_loss for s in sorted(seeds)]})
    return rows


# ---------------------------------------------------------------------------------- Δ vs width
def _fit(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least squares ``y = a + b·x``; None when x does not vary."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    if len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def width_trends(rows: list[dict], seed: int = 0) -> list[dict]:
    """For each (depth, lr, steps, cell) seen at two or more widths: Δ per width and the fitted crossover."""
    series: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["delta"]["n"]:
            series.setdefault((r["n_layers"], r["lr"], r["steps"], r["arm"]), []).append(r)
    out = []
    for (layers, lr, steps, arm), rs in sorted(series.items()):
        rs = sorted(rs, key=lambda r: r["dim"])
        if len({r["dim"] for r in rs}) < 2:
            continue
        per_width = [(math.log2(r["dim"]), r["delta_per_seed"]) for r in rs]
        fit = _fit([(x, d) for x, ds in per_width for d in ds])
        trend = {"n_layers": layers, "lr": lr, "steps": steps, "arm": arm,
                 "widths": [r["dim"] for r in rs], "delta": [r["delta"] for r in rs]}
        if fit is not None:
            a, b = fit
            cross = _crossover(a, b)
            trend.update(intercept=a, slope_per_doubling=b, crossover_width=cross,
                         # a zero outside the measured widths is the line's extrapolation, not a measurement
                         crossover_extrapolated=cross is not None and not min(trend["widths"]) <= cross <= max(trend["widths"]))
            # the same resampling seed per series: a trend's interval must not move when another series lands
            ci, found_in = _crossover_interval(per_width, seed)
            trend.update(crossover_ci95=ci, crossover_found_in=found_in)
        out.append(trend)
    return out


def _crossover_interval(per_width: list[tuple[float, list[float]]], seed: int) -> tuple[list | None, float | None]:
    """Bootstrap over the seeds at each width (each width resampled on its own): (95 % interval of the crossover
    or None, share of resamples that find one)."""
    xs = [x for x, _ in per_width]

    def crossover(*deltas):
        f = _fit([(x, d) for x, ds in zip(xs, deltas) for d in ds])
        return _crossover(*f) if f else None

    return stats.bootstrap_ci(tuple(ds for _, ds in per_width), crossover, BOOTSTRAP, seed)


def _crossover(a: float, b: float) -> float | None:
    """The width where ``a + b·log2(width) = 0``, when Δ falls with width (b < 0)."""
    if b >= 0:
        return None
    x = -a / b
    return 2.0 ** x if x < 60 else None


# ---------------------------------------------------------------------------------- the frontier
def baseline_points(rows: list[dict]) -> list[compute.Point]:
    """Every baseline group of the pool (shape, lr, steps) as a frontier candidate, once each."""
    seen = {}
    for r in rows:
        if r["baseline_all"]:
            seen.setdefault((r["dim"], r["n_layers"], r["lr"], r["steps"]), compute.Point(
                f"d{r['dim']}/L{r['n_layers']} lr {r['lr']:g}, {r['steps']} steps", r["flops"], tuple(r["baseline_all"]),
                meta=_shape(r)))
    return list(seen.values())


def against_frontier(rows: list[dict]) -> list[dict]:
    """Each TST group against the best baseline among every shape, lr and step count of the pool at no more FLOPs
    (``compute.against_frontier``: the verdict says "on the frontier" only with the Welch interval below zero)."""
    candidates = baseline_points(rows)
    out = []
    for r in sorted(rows, key=lambda r: (r["flops"], r["dim"], r["n_layers"], r["lr"], r["arm"])):
        f = compute.against_frontier(compute.Point("tst", r["flops"], tuple(r["tst_all"])), candidates)
        if f["best"] is None or not r["tst_all"]:
            continue
        out.append({**_shape(r), "arm": r["arm"], "flops": r["flops"], "loss": stats.mean_ci(r["tst_all"]),
                    "best_baseline": f["best"].meta | {"flops": f["best"].flops, "loss": stats.mean_ci(f["best"].losses)},
                    "delta": f["delta"], "verdict": f["verdict"]})
    return out


def _shape(row: dict) -> dict:
    return {"dim": row["dim"], "n_layers": row["n_layers"], "lr": row["lr"], "steps": row["steps"]}


# ---------------------------------------------------------------------------------- the report
def study_report(out: Path, log=print) -> dict | None:
    """Write ``study.json``, ``study.md`` and the plots for every finished run under ``out/runs``."""
    rows = group_deltas(scan(out / "runs"))
    if not rows:
        return None
    result = {"groups": rows, "width_trends": width_trends(rows), "against_frontier": against_frontier(rows)}
    rundir.write_json(out / "study.json", result)
    from .report import format_study, plot_frontier, plot_width
    plots = [p for p in (plot_width(out, result), plot_frontier(out, rows)) if p]
    rundir.write_atomic(out / "study.md", format_study(result, plots))
    log(f"study report: {out / 'study.md'}")
    return result


