"""``tst sweep``: final validation loss over bag size × superposition fraction × weighting (× seeds),
relative to the equal-FLOPs baseline — the paper's Fig. 4 / Tables 4–7, at our scale.

Each cell is an ordinary run directory under ``OUT/runs``; a rerun skips finished cells.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from . import analysis
from .cli import write_atomic
from .compare import run_arms
from .config import Config
from .metrics import read_metrics


def cell_name(bag: int, frac: float, weights: str, seed: int) -> str:
    return f"s{bag}-r{frac:g}-{weights}-seed{seed}"


def _cell_config(base: Config, mode: str, bag: int, frac: float, weights: str, seed: int) -> Config:
    cfg = copy.deepcopy(base)
    cfg.tst.mode, cfg.tst.bag_size, cfg.tst.superposition_frac = mode, bag, frac
    cfg.tst.weights, cfg.train.seed = weights, seed
    return cfg.validate()


def final_val_loss(run_dir: Path) -> float | None:
    curve = analysis.eval_curve(read_metrics(run_dir))
    return curve[-1][1] if curve else None


def run_sweep(base: Config, out: Path, bags: list[int], fracs: list[float], weightings: list[str],
              seeds: list[int], log=print, n_parallel: int = 1) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "sweep_config.json", json.dumps({"base": base.to_dict(), "bag_sizes": bags, "fracs": fracs,
                                                        "weightings": weightings, "seeds": seeds}, indent=2))
    grid = [(w, b, f) for w in weightings for b in bags for f in fracs]
    jobs = [(_cell_config(base, "baseline", 1, 0.0, "uniform", seed), out / "runs" / f"baseline-seed{seed}")
            for seed in seeds]
    jobs += [(_cell_config(base, "tst", b, f, w, seed), out / "runs" / cell_name(b, f, w, seed))
             for w, b, f in grid for seed in seeds]
    run_arms(jobs, n_parallel, log)
    base_records = {seed: read_metrics(out / "runs" / f"baseline-seed{seed}") for seed in seeds}
    baseline = {seed: final_val_loss(out / "runs" / f"baseline-seed{seed}") for seed in seeds}
    cells = []
    for w, b, f in grid:
        cmp = [analysis.compare_to_baseline(read_metrics(out / "runs" / cell_name(b, f, w, seed)), base_records[seed])
               for seed in seeds]
        losses = [final_val_loss(out / "runs" / cell_name(b, f, w, seed)) for seed in seeds]
        cells.append({"bag_size": b, "superposition_frac": f, "weights": w,
                      "final_val_loss": analysis.mean_ci(losses),
                      "delta_val_loss": analysis.mean_ci([c["delta_val_loss"] for c in cmp]),
                      "equal_loss_speedup": analysis.mean_ci([c["equal_loss_speedup"] for c in cmp]),
                      "speedup_reached": sum(c["equal_loss_speedup"] is not None for c in cmp)})
    valid = [c for c in cells if c["final_val_loss"]["mean"] is not None]
    best = min(valid, key=lambda c: c["final_val_loss"]["mean"]) if valid else None
    result = {"baseline_final_val_loss": analysis.mean_ci(list(baseline.values())), "cells": cells,
              "best": None if best is None else {k: best[k] for k in ("bag_size", "superposition_frac", "weights")}
              | {"final_val_loss": best["final_val_loss"]["mean"], "delta_val_loss": best["delta_val_loss"]["mean"]}}
    result["table"] = format_sweep_table(result)
    write_atomic(out / "sweep.json", json.dumps(result, indent=2))
    heatmaps = plot_heatmaps(out, result, bags, fracs, weightings)
    md = ["# TST sweep: final validation loss relative to the equal-FLOPs baseline", "",
          f"Baseline final validation loss: {result['baseline_final_val_loss']['mean']:.4f} "
          f"(seeds {seeds}). Δ < 0: the cell beats the baseline.", "", result["table"], "",
          f"Best cell: {result['best']}", ""] + [f"![{w}]({f})" for w, f in heatmaps]
    (out / "sweep.md").write_text("\n".join(md) + "\n")
    return result


def format_sweep_table(result: dict) -> str:
    lines = ["| weighting | bag size | superposition frac | final val loss | Δ vs baseline (95% CI) | "
             "equal-loss speed-up |", "|---|---|---|---|---|---|"]
    for c in result["cells"]:
        f, d, sp = c["final_val_loss"], c["delta_val_loss"], c["equal_loss_speedup"]
        fv = "n/a" if f["mean"] is None else f"{f['mean']:.4f}"
        dv = "n/a" if d["mean"] is None else f"{d['mean']:+.4f}" + (
            f" [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]" if d.get("ci95") else "")
        n = f["n"]
        sv = "never reached" if sp["mean"] is None else f"{sp['mean']:.2f}×"
        lines.append(f"| {c['weights']} | {c['bag_size']} | {c['superposition_frac']:g} | {fv} | {dv} | "
                     f"{sv} ({c['speedup_reached']}/{n} seeds) |")
    return "\n".join(lines)


def plot_heatmaps(out: Path, result: dict, bags, fracs, weightings) -> list[tuple[str, str]]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    files = []
    for w in weightings:
        grid = np.full((len(fracs), len(bags)), np.nan)
        for c in result["cells"]:
            if c["weights"] == w and c["delta_val_loss"]["mean"] is not None:
                grid[fracs.index(c["superposition_frac"]), bags.index(c["bag_size"])] = c["delta_val_loss"]["mean"]
        fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(bags), 1.2 + 0.8 * len(fracs)))
        lim = np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 1.0
        im = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        for i in range(len(fracs)):
            for j in range(len(bags)):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:+.3f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(bags)), [str(b) for b in bags])
        ax.set_yticks(range(len(fracs)), [f"{f:g}" for f in fracs])
        ax.set_xlabel("bag size s")
        ax.set_ylabel("superposition fraction r")
        ax.set_title(f"Δ final val loss vs baseline ({w})", fontsize=9)
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        fname = f"heatmap_{w}.png"
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        files.append((w, fname))
    return files
