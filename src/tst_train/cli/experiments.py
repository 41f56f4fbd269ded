"""``tst compare``, ``tst sweep`` and ``tst demo``: argument parsing; the work is in ``tst_train.experiments``.

    tst compare --data DATA_DIR --out reports/cmp --preset tiny --steps 3000 --seeds 3 --arms baseline,tst
    tst sweep   --data DATA_DIR --out reports/sweep --bag-sizes 2,4,8 --fracs 0.2,0.4 --weightings uniform,power
    tst sweep   --data DATA_DIR --out reports/width --dims 64,128,256,512 --layers 2 --bag-sizes 4 --fracs 0.25 --seeds 3
    tst sweep   --out reports/width --report-only
    tst curve   --data DATA_DIR --out reports/curve --step-budgets 500,1000,2000 --seeds 3 --jobs 2
    tst demo    --out runs/demo
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tst.weights import WEIGHTINGS

from ..config import Config, help_epilog
from ..data.layout import check_data_dir
from ..errors import UserError
from ..experiments.arms import ARMS, arm_config
from ..tasks import parse_tasks
from .args import ArgumentParser, add_run_flags, parse_list, positive_int, resolve_config


def _count(text: str, flag: str) -> int:
    """A whole number >= 0."""
    return 0 if text.strip() == "0" else positive_int(text, flag)


def _seeds(args, base: Config) -> list[int]:
    """``--seeds N`` consecutive seeds starting at the resolved ``train.seed``."""
    n = positive_int(args.seeds, "--seeds")
    return list(range(base.train.seed, base.train.seed + n))


def _check_out(out: Path, marker: str, what: str) -> None:
    """Refuse to write into a non-empty directory that is not an earlier run of the same command."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / marker).is_file())):
        raise UserError(f"--out {out} exists and is not a {what} directory; choose a new --out")


def compare_parser() -> ArgumentParser:
    from ..tasks import TASKS
    p = ArgumentParser(prog="tst compare", description="Equal-FLOPs comparison of TST arms against the baseline.",
                       epilog=help_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_flags(p)
    p.add_argument("--out", required=True, help="report directory (rerun the same command to resume)")
    p.add_argument("--seeds", default="1", help="number of seeds (model initialisations) per arm")
    p.add_argument("--arms", default="baseline,tst",
                   help=f"comma-separated, from: {', '.join(ARMS)}; options as ARM+key=value, e.g. "
                        "tst+bagging=document, tst+loss=sum-to-one, tst+fold=batch, tst+transition_steps=200, "
                        "tst+weights=fitted")
    p.add_argument("--jobs", default="1", help="runs trained at the same time, in separate processes")
    p.add_argument("--tasks", default="all", help=f"downstream tasks scored on each final model, from "
                   f"{', '.join(TASKS)}; all or none (default all)")
    p.add_argument("--task-limit", default="0", metavar="N",
                   help="score only the first N items of each task (a fixed subset); 0 = all (default; "
                        "all 2,227 items take ~6 s per run for the tiny preset on one CPU core)")
    return p


def compare_command(argv: list[str]) -> int:
    p = compare_parser()
    args, extra = p.parse_known_args(argv)
    base, _ = resolve_config(args, extra)
    arms = parse_list(args.arms, str, "--arms")
    if not arms:
        raise UserError(f"unknown arm(s) (none); choose from: {', '.join(ARMS)}")
    for spec in arms:
        arm_config(base, spec, base.train.seed, 1)  # every arm's options are checked before anything trains
    if not base.data.path:
        raise UserError("no data: pass --data DATA_DIR (prepare one with `tst prepare --input bundled --out DATA_DIR`)")
    out = Path(args.out)
    _check_out(out, "base_config.json", "`tst compare`")
    n_parallel = positive_int(args.jobs, "--jobs")
    if args.dry_run:
        from ..experiments.arms import format_jobs
        from ..experiments.compare import comparison_jobs
        from .train import dry_run
        dry_run(base)
        print("\n" + format_jobs(comparison_jobs(base, out, arms, _seeds(args, base)), n_parallel))
        return 0
    tasks = parse_tasks(args.tasks)
    limit = _count(args.task_limit, "--task-limit") or None
    base.log.progress = False  # one line per run; per-run progress bars would interleave
    from ..experiments.compare import run_comparison
    from ..experiments.report import format_table
    summary = run_comparison(base, out, arms, _seeds(args, base), n_parallel=n_parallel,
                             tasks=tasks, task_limit=limit)
    print(format_table(summary))
    print(f"\nreport: {out / 'report.md'} (and report.html)")
    return 0


def sweep_parser() -> ArgumentParser:
    p = ArgumentParser(prog="tst sweep", description="Grid over bag size × superposition fraction × weighting "
                       "(and model shape, learning rate, FLOP budget), each cell against its own equal-FLOPs baseline.",
                       epilog=help_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_flags(p)
    p.add_argument("--out", required=True, help="sweep directory (rerun to resume: finished cells are skipped)")
    p.add_argument("--bag-sizes", default="2,4,8", help="bag sizes s to try, comma-separated, each >= 2 (default 2,4,8)")
    p.add_argument("--fracs", default="0.2,0.4", help="superposition fractions r to try, in (0, 1] (default 0.2,0.4)")
    p.add_argument("--weightings", default="uniform", help=f"MCE weightings to try, from {', '.join(WEIGHTINGS)}, "
                                                          "fitted (default uniform)")
    p.add_argument("--dims", default="", help="model widths (each with the Llama rule for heads and SwiGLU width; "
                                              "default: the preset's shape)")
    p.add_argument("--layers", default="", help="model depths (default: the preset's)")
    p.add_argument("--shapes", default="", help="explicit width×depth pairs instead of --dims × --layers, e.g. "
                                                "128x1,256x1,512x1,256x4; WIDTHxDEPTH@LR trains a shape at its own "
                                                "learning rate (e.g. 128x2@1e-3,512x1@5e-4) instead of every --lrs")
    p.add_argument("--lrs", default="", help="peak learning rates (default: --lr); each has its own baseline")
    p.add_argument("--budgets", default="", help="total training FLOPs per run, e.g. 1e13,3e13: each shape trains "
                                                 "for the steps its budget buys (default: --steps for every shape)")
    p.add_argument("--variants", default="", help="TST options crossed with every cell, comma-separated, each "
                                                  "key=value[+key=value] (e.g. bagging=document,loss=sum-to-one); "
                                                  "'plain' for the cell without options")
    p.add_argument("--seeds", default="1", help="number of seeds (model initialisations) per cell and baseline")
    p.add_argument("--jobs", default="1", help="runs trained at the same time, in separate processes")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the width/depth/frontier report (study.md) over every finished run in --out")
    return p


def sweep_command(argv: list[str]) -> int:
    p = sweep_parser()
    args, extra = p.parse_known_args(argv)
    if args.report_only:
        return _study_report(Path(args.out))
    base, _ = resolve_config(args, extra)
    if not base.data.path:
        raise UserError("no data: pass --data DATA_DIR")
    bags = parse_list(args.bag_sizes, int, "--bag-sizes")
    fracs = parse_list(args.fracs, float, "--fracs")
    weightings = parse_list(args.weightings, str, "--weightings")
    for w in weightings:
        if w not in WEIGHTINGS + ("fitted",):
            raise UserError(f"--weightings: unknown weighting {w!r}; choose from {', '.join(WEIGHTINGS)}, fitted")
    if any(b < 2 for b in bags) or any(not 0 < f <= 1 for f in fracs):
        raise UserError("--bag-sizes must be >= 2 and --fracs in (0, 1]")
    shapes = [_shape(x) for x in parse_list(args.shapes, str, "--shapes")]
    if shapes and (args.dims or args.layers):
        raise UserError("--shapes lists width×depth pairs: use it instead of --dims/--layers, not with them")
    if any(len(s) == 3 for s in shapes) and args.lrs:
        raise UserError("--shapes gives a shape its own rate (WIDTHxDEPTH@LR): use it instead of --lrs, not with it")
    dims = parse_list(args.dims, int, "--dims")
    layers = parse_list(args.layers, int, "--layers")
    lrs = parse_list(args.lrs, float, "--lrs")
    budgets = parse_list(args.budgets, float, "--budgets")
    variants = ["" if v == "plain" else v for v in parse_list(args.variants, str, "--variants")]
    from ..experiments.sweep import _cell_config
    for v in variants:
        _cell_config(base, "tst", 2, 0.5, "uniform", 0, v)  # each variant's options are checked now
    if any(d < 8 or d % 8 for d in dims + [d for d, *_ in shapes]) or any(n < 1 for n in layers + [s[1] for s in shapes]):
        raise UserError("--dims must be positive multiples of 8 and --layers >= 1")
    if any(not (0 < x < float("inf")) for x in lrs + budgets):
        raise UserError("--lrs and --budgets must be positive, finite numbers")
    out = Path(args.out)
    _check_out(out, "sweep_config.json", "`tst sweep`")
    n_parallel = positive_int(args.jobs, "--jobs")
    grid = dict(dims=dims, layers=layers, lrs=lrs, budgets=budgets, variants=variants, shapes=shapes)
    if args.dry_run:
        from ..experiments.arms import format_jobs
        from ..experiments.sweep import sweep_jobs
        print(format_jobs(sweep_jobs(base, out, bags, fracs, weightings, _seeds(args, base), **grid)[3], n_parallel))
        return 0
    base.log.progress = False
    from ..experiments.sweep import run_sweep
    result = run_sweep(base, out, bags, fracs, weightings, _seeds(args, base), n_parallel=n_parallel, **grid)
    print(result["table"])
    from ..experiments.report import format_best
    print(f"\n{format_best(result['best'])}\nreport: {out / 'sweep.md'}")
    return 0


def _shape(text: str) -> tuple:
    """``256x4`` → (256, 4); ``512x1@5e-4`` → (512, 1, 0.0005), a shape at its own learning rate."""
    shape, at, lr = text.lower().partition("@")
    dim, x, layers = shape.partition("x")
    try:
        parsed = (int(dim), int(layers)) + ((float(lr),) if at else ())
    except ValueError:
        raise UserError(f"--shapes: cannot read {text!r} as WIDTHxDEPTH or WIDTHxDEPTH@LR (e.g. 256x4, 512x1@5e-4)") from None
    if at and not 0 < parsed[2] < float("inf"):
        raise UserError(f"--shapes: the learning rate in {text!r} must be a positive, finite number")
    return parsed


def _study_report(out: Path) -> int:
    from ..experiments.study import study_report
    from ..experiments.sweep import rebuild_sweep_report
    if not (out / "sweep_config.json").is_file():
        raise UserError(f"--out {out} is not a `tst sweep` directory")
    try:
        rebuild_sweep_report(out)
    except UserError as e:  # the study report below does not need it: say so and go on
        print(f"note: {e}", file=sys.stderr)
    if study_report(out) is None:
        raise UserError(f"{out} holds no finished baseline/TST pair yet")
    print((out / "study.md").read_text())
    return 0


def curve_parser() -> ArgumentParser:
    p = ArgumentParser(prog="tst curve", description="A baseline's final validation loss against compute for one "
                       "shape, at several step budgets: the longest trains once, each shorter budget is a cooldown "
                       "branch of it (the same numbers as a run of that length, for its decay steps only). Writes "
                       "curve.json, curve.md and curve.png; the equal-loss speed-up and the frontier read it.",
                       epilog=help_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_flags(p)
    p.add_argument("--out", required=True, help="curve directory (rerun the same command to resume)")
    p.add_argument("--step-budgets", required=True, help="step counts, comma-separated, at least two (e.g. 500,1000,2000)")
    p.add_argument("--seeds", default="1", help="number of seeds (model initialisations)")
    p.add_argument("--jobs", default="1", help="seeds trained at the same time, in separate processes")
    p.add_argument("--separate", action="store_true", help="also train each shorter budget as a run of its own "
                                                          "(the check that a branch equals it)")
    return p


def curve_command(argv: list[str]) -> int:
    args, extra = curve_parser().parse_known_args(argv + ["--tst.mode=baseline"])  # a curve is the baseline's
    base, _ = resolve_config(args, extra)
    if not base.data.path:
        raise UserError("no data: pass --data DATA_DIR")
    budgets = parse_list(args.step_budgets, int, "--step-budgets")
    if any(b < 1 for b in budgets):
        raise UserError("--step-budgets must be positive step counts")
    out = Path(args.out)
    _check_out(out, "curve_config.json", "`tst curve`")
    n_parallel = positive_int(args.jobs, "--jobs")
    from ..experiments.curve import curve_jobs, run_curve
    jobs = curve_jobs(base, out, budgets, _seeds(args, base), args.separate)
    if args.dry_run:
        from ..experiments.arms import format_jobs
        print(format_jobs(jobs, n_parallel))
        return 0
    base.log.progress = False
    run_curve(base, out, budgets, _seeds(args, base), n_parallel, args.separate)
    print((out / "curve.md").read_text())
    return 0


def demo_parser() -> ArgumentParser:
    p = ArgumentParser(prog="tst demo", description="How much compute TST saves, measured on the CPU (<= 10 min on 2 "
                       "cores): prepares the bundled corpus, then trains at d512/L1 TST (s = 4, r = 0.25, batch fold, "
                       "fitted weights; configs/demo_cpu.toml) and the baseline as a compute curve (1x and 1.5x the "
                       "steps: one run and a cooldown branch), seeds 3 and 4 side by side. It states the equal-loss "
                       "speed-up on that curve and where TST stands against the best baseline at no more FLOPs of any "
                       "shape and step budget (measured here or shipped from the committed records), with 95% "
                       "intervals, whichever way they come out. Any config flag (e.g. --steps 500) is passed on.",
                       epilog=help_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_flags(p)
    p.add_argument("--out", default="runs/demo", help="output directory (data, runs and report; default runs/demo)")
    p.add_argument("--seeds", default="2", help="number of seeds, from --seed on (default 2: seeds 3 and 4, which took "
                                                "no part in choosing the setting; each more adds ~3 min on 2 cores)")
    return p


def _demo_paths(args) -> tuple[Path, Path]:
    """The demo's output and data folders, checked before anything is written or replaced."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory; choose a new --out")
    _check_out(out / "report", "demo_config.json", "`tst demo`")
    if args.data:
        # the demo prepares only its own out/data: a folder the user names is used as it is, never replaced
        check_data_dir(args.data)
        return out, Path(args.data)
    data_dir = out / "data"
    if data_dir.exists() and not (data_dir / "meta.json").is_file() and (
            not data_dir.is_dir() or any(data_dir.iterdir())):
        raise UserError(f"{data_dir} exists and is not a prepared data folder, and the demo would replace it: "
                        "choose a new --out")
    return out, data_dir


def demo_command(argv: list[str]) -> int:
    p = demo_parser()
    from ..experiments.demo import DEMO_FLAGS, DEMO_VOCAB, demo_jobs, prepare_demo_data, run_demo, write_demo_report
    args, extra = p.parse_known_args(DEMO_FLAGS + argv)  # the user's flags come last, so they win
    base, _ = resolve_config(args, extra)
    out, data_dir = _demo_paths(args)
    seeds = _seeds(args, base)
    if args.dry_run:
        if not args.data and not (data_dir / "meta.json").is_file():
            raise UserError(f"`tst demo --dry-run` plans on prepared data and {data_dir} has none: run `tst demo` "
                            f"(it prepares it), or `tst prepare --input bundled --out {data_dir} --vocab-size {DEMO_VOCAB}`")
        base.data.path = str(data_dir)
        from ..experiments.arms import format_jobs
        print(format_jobs(demo_jobs(base, out / "report", seeds), 2))
        return 0
    t0 = time.perf_counter()
    prepare_demo_data(data_dir)
    print(f"data ready in {time.perf_counter() - t0:.0f}s")
    base.data.path = str(data_dir)
    base.log.progress = False
    result, shipped, note = run_demo(base, out / "report", seeds)
    print("\nverdict:")
    for line in write_demo_report(out / "report", result, time.perf_counter() - t0, base, shipped, note):
        print(f"  {line}")
    print(f"\nreport: {out / 'report' / 'demo.md'} (figures: demo.png, loss_vs_step.png)")
    return 0
