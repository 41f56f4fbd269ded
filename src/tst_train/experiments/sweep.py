"""``tst sweep``: final validation loss over a grid — model shape (width × depth) × learning rate × FLOP
budget, and within each of those bag size × superposition fraction × weighting (× seeds) — relative to
the equal-FLOPs baseline of the same shape, learning rate and budget: the paper's Fig. 4 / Tables 4–7 at
our scale, plus the width study and the compute frontier (best baseline shape vs best TST shape at
each FLOP budget).

Each run is an ordinary run directory under ``OUT/runs``; a rerun skips finished runs and resumes
interrupted ones. Runs are ordered group by group (smallest shape first) and seed by seed, so the
first groups finish — and can be looked at — while later ones train.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from .. import rundir
from ..config import Config
from ..errors import UserError
from ..metrics import read_metrics
from ..model import scaled_shape
from . import analysis, stats
from .arms import check_jobs, run_arms
from .names import run_name


@dataclass(frozen=True)
class Group:
    """One (shape, learning rate, budget) point: a baseline and the TST cells share it."""
    dim: int = 0  # 0: the preset's shape
    n_layers: int = 0  # 0: the preset's depth
    lr: float = 0.0  # 0: the base config's
    budget: float = 0.0  # total training FLOPs; 0: the base config's steps

    def prefix(self) -> str:
        parts = []
        if self.dim:
            parts.append(f"d{self.dim}")
        if self.n_layers:
            parts.append(f"L{self.n_layers}")
        if self.lr:
            parts.append(f"lr{self.lr:g}")
        if self.budget:
            parts.append(f"C{self.budget:.3g}")
        return "-".join(parts)

    def config(self, base: Config, flops_per_step=None) -> Config:
        cfg = copy.deepcopy(base)
        if self.dim:
            shape = scaled_shape(self.dim)
            cfg.model.dim, cfg.model.n_heads = shape["dim"], shape["n_heads"]
            cfg.model.n_kv_heads, cfg.model.ffn_dim = shape["n_kv_heads"], shape["ffn_dim"]
        if self.n_layers:
            cfg.model.n_layers = self.n_layers
        if self.lr:
            cfg.train.lr = self.lr
        if self.budget:
            cfg.train.steps = max(1, round(self.budget / flops_per_step(cfg)))
        return cfg


def parse_variant(variant: str) -> list[tuple[str, str]]:
    """``bagging=document+loss=sum-to-one`` → [("tst.bagging", "document"), ("tst.loss", "sum-to-one")]."""
    if not variant:
        return []
    from .arms import parse_arm
    return parse_arm("tst+" + variant)[1]


def _cell_config(cfg: Config, mode: str, bag: int, frac: float, weights: str, seed: int, variant: str = "") -> Config:
    from ..config import set_value
    cfg = copy.deepcopy(cfg)
    cfg.tst.mode, cfg.tst.bag_size, cfg.tst.superposition_frac = mode, bag, frac
    cfg.tst.weights, cfg.train.seed = weights, seed
    for key, value in parse_variant(variant):
        set_value(cfg, key, value)
    return cfg.validate()


def flops_per_step(cfg: Config) -> float:
    """Training FLOPs of one optimizer step of ``cfg`` (positions × FLOPs per position)."""
    from ..data.loader import check_data_dir
    from ..train import plan
    p = plan(cfg, check_data_dir(cfg.data.path))
    return p["flops_per_position"] * cfg.train.batch_size * cfg.train.seq_len


def final_val_loss(run_dir: Path) -> float | None:
    curve = analysis.eval_curve(read_metrics(run_dir))
    return curve[-1][1] if curve else None


def make_groups(dims, layers, lrs, budgets, shapes=None) -> list[Group]:
    """Every (shape, lr, budget): shapes are ``dims × layers``, or the explicit ``(dim, layers)`` pairs, each
    crossed with ``lrs`` — or ``(dim, layers, lr)`` triples, a shape at its own rate (wide shapes want a lower
    one: a grid over rates would train every shape at every rate)."""
    pairs = shapes or [(d, n) for d in (dims or [0]) for n in (layers or [0])]
    points = [(d, n, lr) for d, n, *own in pairs for lr in (own or lrs or [0.0])]
    return [Group(d, n, lr, c) for c in (budgets or [0.0]) for d, n, lr in points]


def sweep_jobs(base: Config, out: Path, bags: list[int], fracs: list[float], weightings: list[str],
               seeds: list[int], dims=None, layers=None, lrs=None, budgets=None, variants=None, shapes=None):
    """The sweep's groups, their configs, the TST grid and every run (config, run directory), in training
    order; a group whose config is invalid is refused here, before anything is written."""
    groups = make_groups(dims, layers, lrs, budgets, shapes)
    grid = [(w, b, f, v) for w in weightings for b in bags for f in fracs for v in (variants or [""])]
    group_cfgs = {}
    for g in groups:
        try:
            group_cfgs[g] = g.config(base, flops_per_step).validate()
        except ValueError as e:
            raise UserError(f"sweep group {g.prefix()}: {e}") from None
    jobs = []
    for g in groups:
        for seed in seeds:
            cells = [_cell_config(group_cfgs[g], "baseline", 1, 0.0, "uniform", seed)]
            cells += [_cell_config(group_cfgs[g], "tst", b, f, w, seed, v) for w, b, f, v in grid]
            jobs += [(cfg, out / "runs" / run_name(cfg)) for cfg in cells]
    return groups, group_cfgs, grid, jobs


def run_sweep(base: Config, out: Path, bags: list[int], fracs: list[float], weightings: list[str],
              seeds: list[int], log=print, n_parallel: int = 1, dims=None, layers=None, lrs=None,
              budgets=None, variants=None, shapes=None) -> dict:
    groups, group_cfgs, grid, jobs = sweep_jobs(base, out, bags, fracs, weightings, seeds, dims, layers, lrs,
                                                budgets, variants, shapes)
    check_jobs(jobs)
    out.mkdir(parents=True, exist_ok=True)
    rundir.write_json(out / "sweep_config.json", {
        "base": base.to_dict(), "bag_sizes": bags, "fracs": fracs, "weightings": weightings, "seeds": seeds,
        "dims": dims, "layers": layers, "shapes": shapes, "lrs": lrs, "budgets": budgets, "variants": variants})
    run_arms(jobs, n_parallel, log)
    result = write_sweep_report(out, groups, group_cfgs, grid, seeds)
    if len({(g.dim, g.n_layers) for g in groups}) > 1 or len({g.lr for g in groups}) > 1 or variants:
        from .study import study_report
        # over the whole pool of runs, including earlier invocations'; returned (not in sweep.json)
        result["study"] = study_report(out, log)
    return result


def write_sweep_report(out: Path, groups, group_cfgs, grid, seeds) -> dict:
    """sweep.json and sweep.md (with the bag × fraction heat maps of a one-group grid) over the runs as they are."""
    result = summarize_sweep(out, groups, group_cfgs, grid, seeds)
    rundir.write_json(out / "sweep.json", result)
    plots = []
    if len(groups) == 1 and not any(v for *_, v in grid):
        # the grid's own orders (it is weightings × bags × fracs, nested in the order given)
        from .report import plot_heatmaps
        plots = plot_heatmaps(out, result, list(dict.fromkeys(b for _, b, _, _ in grid)),
                              list(dict.fromkeys(f for _, _, f, _ in grid)), list(dict.fromkeys(w for w, *_ in grid)))
    from .report import format_best, format_overrides, machine_description
    base = group_cfgs[groups[0]]
    setup = (f"Groups (shape, learning rate, budget): {', '.join(g.prefix() or 'the base config' for g in groups)}; "
             f"{base.train.batch_size} rows × {base.train.seq_len} positions a step; data `{base.data.path}`; "
             f"seeds {seeds}; machine: {machine_description()}. Settings that differ from the defaults:")
    md = ["# TST sweep: final validation loss relative to the equal-FLOPs baseline", "",
          "Δ < 0: the cell beats the baseline of its own shape, learning rate and budget (equal steps, so equal FLOPs). "
          "Whether any cell beats a smaller model trained longer is the study's question (study.md).", "",
          "## Setup", "", setup, "", format_overrides(base.to_dict()), "", "## Cells", "",
          result["table"], "", format_best(result["best"]), ""] + [f"![{w}]({f})" for w, f in plots]
    rundir.write_atomic(out / "sweep.md", "\n".join(md) + "\n")
    return result


def rebuild_sweep_report(out: Path) -> dict:
    """Rewrite ``out``'s sweep.json / sweep.md — the report of the last ``tst sweep`` into it — from its recorded
    grid (sweep_config.json) and the runs as they are now. A pool continued from collected records (whose
    runs keep ``evals.jsonl`` only) by an older trainer that could not read them holds a sweep.md with "n/a"
    baselines; this makes it agree with study.md again. Raises ``UserError`` (the files left as they are) when
    the recorded grid cannot be rebuilt here, e.g. FLOP-budget groups whose data folder is gone."""
    import json
    from ..config import from_mapping
    config = out / "sweep_config.json"
    try:
        rec = json.loads(config.read_text())
        base = from_mapping(rec["base"], str(config))
        shapes = [tuple(x) for x in rec["shapes"]] if rec.get("shapes") else None
        groups, group_cfgs, grid, _ = sweep_jobs(base, out, rec["bag_sizes"], rec["fracs"], rec["weightings"],
                                                 rec["seeds"], rec.get("dims"), rec.get("layers"), rec.get("lrs"),
                                                 rec.get("budgets"), rec.get("variants"), shapes)
    except UserError as e:
        raise UserError(f"{out / 'sweep.md'} left as it was: {e}") from None
    except (KeyError, TypeError, ValueError, OSError) as e:
        raise UserError(f"{out / 'sweep.md'} left as it was: {config} does not hold a readable grid "
                        f"({type(e).__name__}: {e})") from None
    return write_sweep_report(out, groups, group_cfgs, grid, rec["seeds"])


def summarize_sweep(out: Path, groups, group_cfgs, grid, seeds) -> dict:
    cells = []
    for g in groups:
        gc = group_cfgs[g]
        base_runs = {seed: out / "runs" / run_name(_cell_config(gc, "baseline", 1, 0.0, "uniform", seed)) for seed in seeds}
        base_records = {seed: read_metrics(d) for seed, d in base_runs.items()}
        baseline = stats.mean_ci([final_val_loss(d) for d in base_runs.values()])
        for w, b, f, v in grid:
            runs = [out / "runs" / run_name(_cell_config(gc, "tst", b, f, w, seed, v)) for seed in seeds]
            cmp = [analysis.compare_to_baseline(read_metrics(r), base_records[seed]) for r, seed in zip(runs, seeds)]
            cells.append({"dim": gc.model.dim or None, "n_layers": gc.model.n_layers or None, "lr": gc.train.lr,
                          "budget": g.budget or None, "steps": gc.train.steps, "group": g.prefix(),
                          "bag_size": b, "superposition_frac": f, "weights": w, "variant": v,
                          "baseline_final_val_loss": baseline,
                          "final_val_loss": stats.mean_ci([final_val_loss(r) for r in runs]),
                          "delta_val_loss": stats.mean_ci([c["delta_val_loss"] for c in cmp]),
                          "steps_ratio": stats.mean_ci([c["steps_ratio"] for c in cmp]),
                          "ratio_reached": sum(c["steps_ratio"] is not None for c in cmp)})
    valid = [c for c in cells if c["final_val_loss"]["mean"] is not None]
    best = min(valid, key=lambda c: c["final_val_loss"]["mean"]) if valid else None
    result = {"baseline_final_val_loss": cells[0]["baseline_final_val_loss"] if cells else None, "cells": cells,
              "best": None if best is None else {k: best[k] for k in ("group", "bag_size", "superposition_frac", "weights")}
              | {"final_val_loss": best["final_val_loss"]["mean"], "delta_val_loss": best["delta_val_loss"]["mean"]}}
    from .report import format_sweep_table
    result["table"] = format_sweep_table(result)
    return result


