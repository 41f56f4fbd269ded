"""``tst compare`` / ``tst sweep`` / ``tst demo``: equal-FLOPs experiments with a self-contained report.

    tst compare --data DATA_DIR --out reports/cmp --preset tiny --steps 3000 --seeds 3 --arms baseline,tst
    tst sweep   --data DATA_DIR --out reports/sweep --bag-sizes 2,4,8 --fracs 0.2,0.4 --weightings uniform,power
    tst demo    --out runs/demo

Every arm trains on the same data stream with the same seed, steps and positions (FLOPs) per step; each
arm's run directory is kept under ``OUT/runs`` so everything is reproducible and finished runs are
skipped when a command is rerun (an interrupted run is resumed from its checkpoint).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

from . import analysis
from .cli import (SUMMARY_FILE, ArgumentParser, add_run_flags, resolve_config, run_training, write_atomic)
from .config import Config, help_epilog
from .errors import UserError
from .metrics import read_metrics

ARMS = ("baseline", "tst", "input-only", "output-only", "tst-reinit", "baseline-equal-data")
BASELINES = ("baseline", "baseline-equal-data")


def arm_config(base: Config, arm: str, seed: int, tst_data_tokens: int | None = None) -> Config:
    """The config of one arm: the shared settings with the arm's mode (and length, for equal data)."""
    cfg = copy.deepcopy(base)
    cfg.train.seed = seed
    cfg.tst.reinit_embeddings = arm == "tst-reinit"
    cfg.tst.mode = {"tst-reinit": "tst", "baseline-equal-data": "baseline"}.get(arm, arm)
    if arm == "baseline-equal-data":
        per_step = cfg.train.batch_size * cfg.train.seq_len
        cfg.train.steps = math.ceil(tst_data_tokens / per_step)
    return cfg.validate()


def tst_data_tokens(base: Config) -> int:
    from .train import make_schedule
    cfg = copy.deepcopy(base)
    cfg.tst.mode = "tst"
    return make_schedule(cfg).data_tokens(cfg.train.batch_size, cfg.train.seq_len)


def run_arm(cfg: Config, run_dir: Path, log) -> dict:
    """Train one arm unless its run directory already holds a completed run (then reuse it)."""
    summary_path = run_dir / SUMMARY_FILE
    if summary_path.is_file() and json.loads(summary_path.read_text()).get("completed"):
        log(f"  {run_dir.name}: already complete, reusing")
        return json.loads(summary_path.read_text())
    resume = (run_dir / "config.toml").is_file()
    log(f"  {run_dir.name}: {'resuming' if resume else 'training'} ({cfg.tst.mode}, {cfg.train.steps} steps)")
    summary = run_training(cfg, run_dir, resume=resume)
    if not summary["completed"]:
        raise KeyboardInterrupt
    return summary


def run_arms(jobs: list[tuple[Config, Path]], n_parallel: int, log=print) -> None:
    """Train the runs, ``n_parallel`` at a time in separate processes (one CPU thread each when > 1).

    Side by side, arms share the machine's load equally, so their step times are comparable — on a
    shared machine timings of runs done one after another are not.
    """
    if n_parallel <= 1:
        for cfg, run_dir in jobs:
            run_arm(cfg, run_dir, log)
        return
    import concurrent.futures as cf
    import multiprocessing as mp
    with cf.ProcessPoolExecutor(n_parallel, mp_context=mp.get_context("spawn")) as pool:
        futures = []
        for cfg, run_dir in jobs:
            cfg = copy.deepcopy(cfg)
            cfg.train.threads = cfg.train.threads or 1
            futures.append(pool.submit(run_arm, cfg, run_dir, print))
        for f in futures:
            f.result()


def run_comparison(base: Config, out: Path, arms: list[str], seeds: list[int], log=print,
                   n_parallel: int = 1) -> dict:
    """Train every (arm, seed) and write ``summary.json`` + ``report.md``/``report.html`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "base_config.json", json.dumps(base.to_dict(), indent=2))
    equal_data_tokens = tst_data_tokens(base)
    t0 = time.perf_counter()
    run_arms([(arm_config(base, arm, seed, equal_data_tokens), out / "runs" / f"{arm}-seed{seed}")
              for seed in seeds for arm in arms], n_parallel, log)
    summary = summarize(out, base, arms, seeds)
    summary["total_time_s"] = time.perf_counter() - t0
    write_atomic(out / "summary.json", json.dumps(summary, indent=2))
    from .report import write_report
    write_report(out, summary)
    return summary


def summarize(out: Path, base: Config, arms: list[str], seeds: list[int]) -> dict:
    """Per-arm/seed results and, for each non-baseline arm, the comparison with the baseline."""
    records = {(a, s): read_metrics(out / "runs" / f"{a}-seed{s}") for a in arms for s in seeds}
    per_arm = {}
    for arm in arms:
        seeds_out = {}
        for s in seeds:
            run_dir = out / "runs" / f"{arm}-seed{s}"
            rs = json.loads((run_dir / SUMMARY_FILE).read_text())
            curve = analysis.eval_curve(records[(arm, s)])
            seeds_out[str(s)] = {
                "final_val_loss": curve[-1][1] if curve else None, "best_val_loss": rs.get("best_val_loss"),
                "data_tokens": rs["data_tokens"], "positions": rs["positions"], "flops": rs["flops"],
                "wall_time": rs["wall_time"], "train_time": rs["train_time"],
                "step_time_median": rs["step_time_median"], "steps": rs["steps"],
                "transition_step": rs["transition_step"], "epochs": rs["epochs"], "run_dir": str(run_dir.relative_to(out)),
            }
        per_arm[arm] = {"seeds": seeds_out, **{k: analysis.mean_ci([v[k] for v in seeds_out.values()])
                                             for k in ("final_val_loss", "best_val_loss", "step_time_median", "wall_time", "train_time")}}
    comparisons = {}
    if "baseline" in arms:
        for arm in arms:
            if arm in BASELINES:
                continue
            per_seed = {str(s): analysis.compare_to_baseline(
                records[(arm, s)], records[("baseline", s)],
                records.get(("baseline-equal-data", s))) for s in seeds}
            comparisons[arm] = {
                "per_seed": per_seed,
                "delta_val_loss": analysis.mean_ci([c["delta_val_loss"] for c in per_seed.values()]),
                "equal_loss_speedup": analysis.mean_ci([c["equal_loss_speedup"] for c in per_seed.values()]),
                "equal_data_delta_val_loss": analysis.mean_ci(
                    [(c["equal_data"] or {}).get("delta_val_loss") for c in per_seed.values()]),
                "speedup_reached": sum(c["equal_loss_speedup"] is not None for c in per_seed.values()),
            }
    return {"config": base.to_dict(), "arms": per_arm, "comparisons": comparisons, "seeds": seeds,
            "arm_names": arms, "data": base.data.path}


def format_table(summary: dict) -> str:
    """The headline table, as markdown (printed at the end and put in the report)."""
    lines = ["| arm | final val loss (mean ± 95% CI) | Δ vs baseline (equal FLOPs) | equal-loss speed-up | "
             "Δ vs baseline at equal data | data tokens | median step time |",
             "|---|---|---|---|---|---|---|"]
    for arm, a in summary["arms"].items():
        c = summary["comparisons"].get(arm)
        first = next(iter(a["seeds"].values()))
        lines.append(f"| {arm} | {_fmt_ci(a['final_val_loss'])} | {_fmt_ci(c['delta_val_loss'], signed=True) if c else '—'} | "
                     f"{_fmt_speedup(c, len(a['seeds'])) if c else '—'} | "
                     f"{_fmt_ci(c['equal_data_delta_val_loss'], signed=True) if c else '—'} | "
                     f"{first['data_tokens']:,} | {_fmt_ci(a['step_time_median'], digits=4)} s |")
    return "\n".join(lines)


def _fmt_ci(stat: dict, signed: bool = False, digits: int = 4) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    text = f.format(stat["mean"])
    if stat.get("ci95"):
        lo, hi = stat["ci95"]
        text += f" [{f.format(lo)}, {f.format(hi)}]"
    return text


def _fmt_speedup(c: dict, n: int) -> str:
    s = c["equal_loss_speedup"]
    if s["mean"] is None:
        return f"never reached (0/{n} seeds)"
    text = f"{s['mean']:.2f}×"
    if s.get("ci95"):
        text += f" [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]"
    return text + f" ({c['speedup_reached']}/{n} seeds reached)"


# ---------------------------------------------------------------------------------- commands
def _parse_list(text: str, typ, flag: str) -> list:
    try:
        return [typ(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag}: cannot read {text!r} as a comma-separated list of {typ.__name__}") from None


def _positive_int(text: str, flag: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise UserError(f"{flag} must be a whole number >= 1, got {text!r}")
    return n


def _seeds(args, base: Config) -> list[int]:
    """``--seeds N`` consecutive seeds starting at the resolved ``train.seed``."""
    n = _positive_int(args.seeds, "--seeds")
    return list(range(base.train.seed, base.train.seed + n))


def _check_out(out: Path, marker: str, what: str) -> None:
    """Refuse to write into a non-empty directory that is not an earlier run of the same command."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / marker).is_file())):
        raise UserError(f"--out {out} exists and is not a {what} directory; choose a new --out")


def compare_main(argv: list[str]) -> int:
    p = ArgumentParser(prog="tst compare", description="Equal-FLOPs comparison of TST arms against the baseline.",
                       epilog=help_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_flags(p)
    p.add_argument("--out", required=True, help="report directory (rerun the same command to resume)")
    p.add_argument("--seeds", default="1", help="number of seeds (model initialisations) per arm")
    p.add_argument("--arms", default="baseline,tst", help=f"comma-separated, from: {', '.join(ARMS)}")
    p.add_argument("--jobs", default="1", help="runs trained at the same time, in separate processes")
    args, extra = p.parse_known_args(argv)
    base, _ = resolve_config(args, extra)
    arms = _parse_list(args.arms, str, "--arms")
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        raise UserError(f"unknown arm(s) {', '.join(bad) or '(none)'}; choose from: {', '.join(ARMS)}")
    if not base.data.path:
        raise UserError("no data: pass --data DATA_DIR (prepare one with `tst prepare --input bundled --out DATA_DIR`)")
    out = Path(args.out)
    _check_out(out, "base_config.json", "`tst compare`")
    if args.dry_run:
        from .cli import dry_run
        return dry_run(base)
    base.log.progress = False  # one line per run; per-run progress bars would interleave
    summary = run_comparison(base, out, arms, _seeds(args, base), n_parallel=_positive_int(args.jobs, "--jobs"))
    print(format_table(summary))
    print(f"\nreport: {out / 'report.md'} (and report.html)")
    return 0


def sweep_main(argv: list[str]) -> int:
    p = ArgumentParser(prog="tst sweep", description="Grid over bag size × superposition fraction × weighting.",
                       epilog=help_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_flags(p)
    p.add_argument("--out", required=True, help="sweep directory (rerun to resume: finished cells are skipped)")
    p.add_argument("--bag-sizes", default="2,4,8")
    p.add_argument("--fracs", default="0.2,0.4")
    p.add_argument("--weightings", default="uniform")
    p.add_argument("--dims", default="", help="model widths (each with the Llama rule for heads and SwiGLU width; "
                                              "default: the preset's shape)")
    p.add_argument("--layers", default="", help="model depths (default: the preset's)")
    p.add_argument("--lrs", default="", help="peak learning rates (default: --lr); each has its own baseline")
    p.add_argument("--budgets", default="", help="total training FLOPs per run, e.g. 1e13,3e13: each shape trains "
                                                 "for the steps its budget buys (default: --steps for every shape)")
    p.add_argument("--seeds", default="1")
    p.add_argument("--jobs", default="1", help="runs trained at the same time, in separate processes")
    args, extra = p.parse_known_args(argv)
    base, _ = resolve_config(args, extra)
    if not base.data.path:
        raise UserError("no data: pass --data DATA_DIR")
    bags = _parse_list(args.bag_sizes, int, "--bag-sizes")
    fracs = _parse_list(args.fracs, float, "--fracs")
    weightings = _parse_list(args.weightings, str, "--weightings")
    for w in weightings:
        if w not in ("uniform", "power", "exp", "first"):
            raise UserError(f"--weightings: unknown weighting {w!r}; choose from uniform, power, exp, first")
    if any(b < 2 for b in bags) or any(not 0 < f <= 1 for f in fracs):
        raise UserError("--bag-sizes must be >= 2 and --fracs in (0, 1]")
    dims = _parse_list(args.dims, int, "--dims")
    layers = _parse_list(args.layers, int, "--layers")
    lrs = _parse_list(args.lrs, float, "--lrs")
    budgets = _parse_list(args.budgets, float, "--budgets")
    if any(d < 8 or d % 8 for d in dims) or any(n < 1 for n in layers):
        raise UserError("--dims must be positive multiples of 8 and --layers >= 1")
    if any(not (0 < x < float("inf")) for x in lrs + budgets):
        raise UserError("--lrs and --budgets must be positive, finite numbers")
    out = Path(args.out)
    _check_out(out, "sweep_config.json", "`tst sweep`")
    base.log.progress = False
    from .sweep import run_sweep
    result = run_sweep(base, out, bags, fracs, weightings, _seeds(args, base), n_parallel=_positive_int(args.jobs, "--jobs"),
                       dims=dims, layers=layers, lrs=lrs, budgets=budgets)
    print(result["table"])
    print(f"\nbest cell: {result['best']}\nreport: {out / 'sweep.md'}")
    return 0


# The demo: sized on the 2-core CPU machine so that data preparation + both arms fit in 10 minutes,
# the recovery phase is long enough to absorb the transition spike, and no data repeats. lr 1e-3 is the
# better of the baseline's {1e-3, 3e-3} here: at 3e-3 the baseline's final loss moved 0.3 nats between
# seeds (experiments/2026-11-22-cpu-budget-sweep), which would flatter TST.
DEMO_FLAGS = ["--preset", "tiny", "--steps", "3000", "--batch-size", "8", "--seq-len", "64", "--bag-size", "4",
              "--superposition-frac", "0.25", "--eval-every", "250", "--train.lr=1e-3", "--eval.tokens=32768"]


def demo_main(argv: list[str]) -> int:
    p = ArgumentParser(prog="tst demo", description="TST vs baseline on the bundled corpus, on the CPU (<= 10 min).")
    p.add_argument("--out", default="runs/demo", help="output directory (data, runs and report)")
    p.add_argument("--seeds", default="1")
    args, extra = p.parse_known_args(argv)
    out = Path(args.out)
    data_dir = out / "data"
    t0 = time.perf_counter()
    if not (data_dir / "meta.json").is_file():
        from .data.prepare import prepare
        print(f"preparing the bundled corpus → {data_dir}")
        prepare(["bundled"], data_dir, vocab_size=4096, overwrite=True)
    print(f"data ready in {time.perf_counter() - t0:.0f}s")
    # Both arms side by side, one core each: the fastest use of 2 cores for a model this small, and
    # the arms' step times are measured under the same load.
    return compare_main(DEMO_FLAGS + ["--data", str(data_dir), "--out", str(out / "report"),
                                      "--seeds", args.seeds, "--jobs", "2"] + extra)
