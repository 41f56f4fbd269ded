"""``tst compare``: an equal-FLOPs comparison of TST arms against the baseline, with a report.

Every arm trains on the same data stream with the same seed, steps and positions (FLOPs) per step;
each arm's run directory is kept under ``OUT/runs`` so everything is reproducible, and a rerun reuses
finished runs and resumes interrupted ones (see ``arms``).
"""
from __future__ import annotations

import time
from pathlib import Path

from .. import rundir
from ..config import Config
from ..metrics import read_metrics
from . import analysis, stats
from ..errors import UserError
from .arms import BASELINES, arm_config, check_jobs, run_arms, tst_data_tokens
from .names import run_name
from .downstream import headline, score_runs


def comparison_jobs(base: Config, out: Path, arms: list[str], seeds: list[int]) -> list[tuple[Config, Path]]:
    """Every (arm, seed) run of the comparison: its config and run directory (named from the config, so two
    arms that train the same numbers are refused rather than trained twice)."""
    equal_data_tokens = tst_data_tokens(base)
    jobs, seen = [], {}
    for seed in seeds:
        for arm in arms:
            cfg = arm_config(base, arm, seed, equal_data_tokens)
            name = run_name(cfg)
            if seen.setdefault(name, arm) != arm:
                raise UserError(f"--arms: {seen[name]} and {arm} train the same run ({name}); list it once")
            jobs.append((cfg, out / "runs" / name))
    return jobs


def run_dirs(base: Config, out: Path, arms: list[str], seeds: list[int]) -> dict[tuple[str, int], Path]:
    """{(arm, seed): run directory} of the comparison."""
    jobs = iter(comparison_jobs(base, out, arms, seeds))
    return {(arm, seed): next(jobs)[1] for seed in seeds for arm in arms}


def run_comparison(base: Config, out: Path, arms: list[str], seeds: list[int], log=print,
                   n_parallel: int = 1, tasks: list[str] = (), task_limit: int | None = None) -> dict:
    """Train every (arm, seed), score the final models on ``tasks`` (the first ``task_limit`` items of each),
    and write ``summary.json`` + ``report.md``/``report.html`` into ``out``."""
    jobs = comparison_jobs(base, out, arms, seeds)
    check_jobs(jobs)
    out.mkdir(parents=True, exist_ok=True)
    rundir.write_json(out / "base_config.json", base.to_dict())
    t0 = time.perf_counter()
    run_arms(jobs, n_parallel, log)
    t_tasks = time.perf_counter()
    # Scored with the threads the runs trained with: side by side that is one each, and more threads
    # than free cores slow small forward passes down tenfold on a shared machine (measured).
    threads = base.train.threads or (1 if n_parallel > 1 else 0)
    scores = score_runs(out, [d for _, d in jobs],
                        list(tasks), task_limit, log, threads)
    summary = summarize(out, base, arms, seeds, scores)
    summary["tasks"] = {"names": list(tasks), "limit": task_limit, "seconds": time.perf_counter() - t_tasks}
    summary["total_time_s"] = time.perf_counter() - t0
    rundir.write_json(out / "summary.json", summary)
    from .report import write_report
    write_report(out, summary)
    return summary


def summarize(out: Path, base: Config, arms: list[str], seeds: list[int], task_scores: dict | None = None) -> dict:
    """Per-arm/seed results (with the task scores' headline metrics) and, for each non-baseline arm, the
    comparison with the baseline."""
    dirs = run_dirs(base, out, arms, seeds)
    records = {key: read_metrics(d) for key, d in dirs.items()}
    per_arm = {}
    for arm in arms:
        seeds_out = {}
        for seed in seeds:
            run_dir = dirs[(arm, seed)]
            rs = rundir.read_summary(run_dir)
            curve = analysis.eval_curve(records[(arm, seed)])
            seeds_out[str(seed)] = {
                "final_val_loss": curve[-1][1] if curve else None, "best_val_loss": rs.get("best_val_loss"),
                "data_tokens": rs["data_tokens"], "positions": rs["positions"], "flops": rs["flops"],
                "wall_time": rs["wall_time"], "train_time": rs["train_time"],
                "step_time_median": rs["step_time_median"], "steps": rs["steps"],
                "transition_step": rs["transition_step"], "epochs": rs["epochs"], "run_dir": str(run_dir.relative_to(out)),
                "tasks": headline((task_scores or {}).get(run_dir.name, {})),
            }
        task_keys = sorted({k for v in seeds_out.values() for k in v["tasks"]})
        per_arm[arm] = {"seeds": seeds_out, **{k: stats.mean_ci([v[k] for v in seeds_out.values()])
                                             for k in ("final_val_loss", "best_val_loss")},
                        # timings cannot go below zero: their median and range, not a t-interval
                        **{k: stats.spread([v[k] for v in seeds_out.values()])
                           for k in ("step_time_median", "wall_time", "train_time")},
                        "tasks": {k: stats.mean_ci([v["tasks"].get(k) for v in seeds_out.values()]) for k in task_keys}}
    comparisons = {}
    if "baseline" in arms:
        for arm in arms:
            if arm in BASELINES:
                continue
            per_seed = {str(seed): analysis.compare_to_baseline(
                records[(arm, seed)], records[("baseline", seed)],
                records.get(("baseline-equal-data", seed))) for seed in seeds}
            comparisons[arm] = {
                "per_seed": per_seed,
                "delta_val_loss": stats.mean_ci([c["delta_val_loss"] for c in per_seed.values()]),
                "steps_ratio": stats.mean_ci([c["steps_ratio"] for c in per_seed.values()]),
                "equal_data_delta_val_loss": stats.mean_ci(
                    [(c["equal_data"] or {}).get("delta_val_loss") for c in per_seed.values()]),
                "ratio_reached": sum(c["steps_ratio"] is not None for c in per_seed.values()),
            }
    return {"config": base.to_dict(), "arms": per_arm, "comparisons": comparisons, "seeds": seeds,
            "arm_names": arms, "data": base.data.path}
