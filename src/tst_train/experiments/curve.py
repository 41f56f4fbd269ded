"""``tst curve``: one shape's baseline loss against compute, from one warmup–stable run and cooldown branches.

The longest step budget trains as an ordinary run (the **trunk**) and keeps its checkpoints at the decay
start of every shorter budget; each shorter budget is a **branch** that continues the trunk's whole state
from there and decays its learning rate over its own last ``decay_frac`` of steps. Up to the branch point
the two schedules are the same step for step (warmup, then the constant rate), so a branch trains the
same numbers as a separate run of its budget — at the cost of its decay steps only. ``--separate`` also
trains each shorter budget alone, to show that in the record.

Every run is an ordinary run directory under ``OUT/runs`` (names from ``names.run_name``); a rerun
reuses finished runs and resumes interrupted ones. ``curve.json`` holds each budget's FLOPs and final
validation loss per seed; the definitions that read it (monotone curve, equal-loss speed-up, frontier)
are in ``compute``.
"""
from __future__ import annotations

import copy
from pathlib import Path

from .. import rundir
from ..config import Config
from ..errors import UserError
from ..metrics import read_metrics
from . import analysis, stats
from .arms import Job, check_jobs, run_arms
from .names import VARIANT_DEFAULTS, run_name, shape_name


def baseline_of(cfg: Config) -> Config:
    """The baseline a TST config is compared with: the same settings in baseline mode, with none of TST's
    options (fold, bagging, loss, transition, weighting) — the paper's baseline."""
    base = copy.deepcopy(cfg)
    base.tst.mode, base.tst.weights = "baseline", "uniform"
    for k, default in VARIANT_DEFAULTS.items():
        setattr(base.tst, k, default)
    return base.validate()


def decay_start(cfg: Config, steps: int) -> int:
    """The first step of the learning-rate decay of a ``steps``-step run (``optim.lr_at``'s rule)."""
    return steps - round(cfg.train.decay_frac * steps)


def _at(base: Config, steps: int, seed: int) -> Config:
    cfg = copy.deepcopy(base)
    cfg.train.steps, cfg.train.seed = steps, seed
    return cfg


def curve_chain(base: Config, budgets: list[int], seed: int, runs: Path) -> list[Job]:
    """One seed's curve: the trunk (the longest budget, keeping a checkpoint at each branch point), then a
    branch per shorter budget — in the order they must train."""
    *short, top = sorted(set(budgets))
    trunk = _at(base, top, seed)
    trunk.checkpoint.keep_steps = ",".join(str(decay_start(base, b)) for b in short)
    trunk_dir = runs / run_name(trunk)
    chain = [(trunk.validate(), trunk_dir)]
    for b in short:
        branch = _at(base, b, seed)
        # absolute, as the run directory records it, so that a rerun from another directory reuses the branch
        branch.train.branch_from = f"{trunk_dir.resolve()}:{decay_start(base, b)}"
        chain.append((branch.validate(), runs / run_name(branch)))
    return chain


def separate_jobs(base: Config, budgets: list[int], seed: int, runs: Path) -> list[Job]:
    """Each shorter budget trained alone (the check that a branch equals it)."""
    return [(_at(base, b, seed).validate(), runs / run_name(_at(base, b, seed))) for b in sorted(set(budgets))[:-1]]


def curve_jobs(base: Config, out: Path, budgets: list[int], seeds: list[int], separate: bool = False) -> list:
    """Every seed's chain (and, with ``separate``, the separate runs), as jobs for ``arms.run_arms``."""
    if len(set(budgets)) < 2:
        raise UserError("--step-budgets: a curve needs at least two step budgets")
    if base.tst.mode != "baseline":
        raise UserError("`tst curve` measures the baseline's curve: pass --tst.mode=baseline (TST's phase boundary "
                        "moves with the step count, so its runs cannot share a trunk)")
    for b in budgets:
        if decay_start(base, b) <= 0:
            raise UserError(f"--step-budgets: {b} steps has no stable phase to branch from")
    jobs: list = [curve_chain(base, budgets, s, out / "runs") for s in seeds]
    if separate:
        jobs += [job for s in seeds for job in separate_jobs(base, budgets, s, out / "runs")]
    return jobs


def final_point(run_dir: Path) -> tuple[float, float] | None:
    """(total training FLOPs, final validation loss) of a finished run; None while it is not finished."""
    summary = rundir.read_summary(run_dir)
    curve = analysis.eval_curve(read_metrics(run_dir))
    if not (summary and summary.get("completed") and curve):
        return None
    return summary["flops"], curve[-1][1]


def summarize_curve(base: Config, out: Path, budgets: list[int], seeds: list[int], separate: bool = False) -> dict:
    """Each budget's FLOPs and final loss per seed (from the branches and the trunk), and the branch-vs-separate
    differences where separate runs exist."""
    runs = out / "runs"
    chains = {s: curve_chain(base, budgets, s, runs) for s in seeds}
    points = []
    for steps in sorted(set(budgets)):
        per_seed = {}
        for s, chain in chains.items():
            (run_dir,) = [d for cfg, d in chain if cfg.train.steps == steps]
            p = final_point(run_dir)
            if p:
                per_seed[str(s)] = {"flops": p[0], "loss": p[1], "run": run_dir.name}
        point = {"steps": steps, "per_seed": per_seed, "loss": stats.mean_ci([v["loss"] for v in per_seed.values()]),
                 "flops": max((v["flops"] for v in per_seed.values()), default=None)}
        if separate and steps != max(budgets):
            sep = {str(s): final_point(d) for s in seeds for cfg, d in separate_jobs(base, [steps, max(budgets)], s, runs)}
            pairs = [(per_seed[k]["loss"], v[1]) for k, v in sep.items() if v and k in per_seed]
            point["separate"] = {k: (v[1] if v else None) for k, v in sep.items()}
            point["branch_minus_separate"] = stats.paired([a for a, _ in pairs], [b for _, b in pairs])
        points.append(point)
    return {"shape": shape_name(base), "lr": base.train.lr, "seeds": seeds, "budgets": sorted(set(budgets)),
            "positions_per_step": base.train.batch_size * base.train.seq_len, "decay_frac": base.train.decay_frac,
            "data": base.data.path, "points": points}


def seed_curves(curve: dict) -> dict[int, list[tuple[float, float]]]:
    """``{seed: [(FLOPs, loss)]}`` of a ``summarize_curve`` record, for ``compute.speedup_over_seeds``."""
    out: dict[int, list] = {}
    for p in curve["points"]:
        for s, v in p["per_seed"].items():
            out.setdefault(int(s), []).append((v["flops"], v["loss"]))
    return out


def run_curve(base: Config, out: Path, budgets: list[int], seeds: list[int], n_parallel: int = 1,
              separate: bool = False, log=print) -> dict:
    """Train the curve (resuming and reusing what is there), then write ``curve.json`` and ``curve.md``."""
    jobs = curve_jobs(base, out, budgets, seeds, separate)
    check_jobs(jobs)
    out.mkdir(parents=True, exist_ok=True)
    rundir.write_json(out / "curve_config.json", {"base": base.to_dict(), "step_budgets": sorted(set(budgets)),
                                                  "seeds": seeds, "separate": separate})
    run_arms(jobs, n_parallel, log)
    result = summarize_curve(base, out, budgets, seeds, separate)
    rundir.write_json(out / "curve.json", result)
    from .report import write_curve_report
    write_curve_report(out, result)
    return result
