"""``tst compare``, ``tst sweep`` and ``tst demo``: argument parsing; the work is in ``tst_train.experiments``.

    tst compare --data DATA_DIR --out reports/cmp --preset tiny --steps 3000 --seeds 3 --arms baseline,tst
    tst sweep   --data DATA_DIR --out reports/sweep --bag-sizes 2,4,8 --fracs 0.2,0.4 --weightings uniform,power
    tst sweep   --data DATA_DIR --out reports/width --dims 64,128,256,512 --layers 2 --bag-sizes 4 --fracs 0.25 --seeds 3
    tst demo    --out runs/demo
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..config import Config, help_epilog
from ..errors import UserError
from ..experiments.arms import ARMS, arm_config
from .args import ArgumentParser, add_run_flags, parse_list, positive_int, resolve_config


def _seeds(args, base: Config) -> list[int]:
    """``--seeds N`` consecutive seeds starting at the resolved ``train.seed``."""
    n = positive_int(args.seeds, "--seeds")
    return list(range(base.train.seed, base.train.seed + n))


def _check_out(out: Path, marker: str, what: str) -> None:
    """Refuse to write into a non-empty directory that is not an earlier run of the same command."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / marker).is_file())):
        raise UserError(f"--out {out} exists and is not a {what} directory; choose a new --out")


def compare_command(argv: list[str]) -> int:
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
    if args.dry_run:
        from .train import dry_run
        return dry_run(base)
    base.log.progress = False  # one line per run; per-run progress bars would interleave
    from ..experiments.compare import run_comparison
    from ..experiments.report import format_table
    summary = run_comparison(base, out, arms, _seeds(args, base), n_parallel=positive_int(args.jobs, "--jobs"))
    print(format_table(summary))
    print(f"\nreport: {out / 'report.md'} (and report.html)")
    return 0


def sweep_command(argv: list[str]) -> int:
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
    p.add_argument("--shapes", default="", help="explicit width×depth pairs instead of --dims × --layers, e.g. "
                                                "128x1,256x1,512x1,256x4")
    p.add_argument("--lrs", default="", help="peak learning rates (default: --lr); each has its own baseline")
    p.add_argument("--budgets", default="", help="total training FLOPs per run, e.g. 1e13,3e13: each shape trains "
                                                 "for the steps its budget buys (default: --steps for every shape)")
    p.add_argument("--variants", default="", help="TST options crossed with every cell, comma-separated, each "
                                                  "key=value[+key=value] (e.g. bagging=document,loss=sum-to-one); "
                                                  "'plain' for the cell without options")
    p.add_argument("--seeds", default="1")
    p.add_argument("--jobs", default="1", help="runs trained at the same time, in separate processes")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the width/depth/frontier report (study.md) over every finished run in --out")
    args, extra = p.parse_known_args(argv)
    if args.report_only:
        return _study_report(Path(args.out))
    base, _ = resolve_config(args, extra)
    if not base.data.path:
        raise UserError("no data: pass --data DATA_DIR")
    bags = parse_list(args.bag_sizes, int, "--bag-sizes")
    fracs = parse_list(args.fracs, float, "--fracs")
    weightings = parse_list(args.weightings, str, "--weightings")
    from tst.weights import WEIGHTINGS
    for w in weightings:
        if w not in WEIGHTINGS + ("fitted",):
            raise UserError(f"--weightings: unknown weighting {w!r}; choose from {', '.join(WEIGHTINGS)}, fitted")
    if any(b < 2 for b in bags) or any(not 0 < f <= 1 for f in fracs):
        raise UserError("--bag-sizes must be >= 2 and --fracs in (0, 1]")
    shapes = [_shape(x) for x in parse_list(args.shapes, str, "--shapes")]
    if shapes and (args.dims or args.layers):
        raise UserError("--shapes lists width×depth pairs: use it instead of --dims/--layers, not with them")
    dims = parse_list(args.dims, int, "--dims")
    layers = parse_list(args.layers, int, "--layers")
    lrs = parse_list(args.lrs, float, "--lrs")
    budgets = parse_list(args.budgets, float, "--budgets")
    variants = ["" if v == "plain" else v for v in parse_list(args.variants, str, "--variants")]
    from ..experiments.sweep import _cell_config
    for v in variants:
        _cell_config(base, "tst", 2, 0.5, "uniform", 0, v)  # each variant's options are checked now
    if any(d < 8 or d % 8 for d in dims + [d for d, _ in shapes]) or any(n < 1 for n in layers + [n for _, n in shapes]):
        raise UserError("--dims must be positive multiples of 8 and --layers >= 1")
    if any(not (0 < x < float("inf")) for x in lrs + budgets):
        raise UserError("--lrs and --budgets must be positive, finite numbers")
    out = Path(args.out)
    _check_out(out, "sweep_config.json", "`tst sweep`")
    base.log.progress = False
    from ..experiments.sweep import run_sweep
    result = run_sweep(base, out, bags, fracs, weightings, _seeds(args, base), n_parallel=positive_int(args.jobs, "--jobs"),
                       dims=dims, layers=layers, lrs=lrs, budgets=budgets, variants=variants, shapes=shapes)
    print(result["table"])
    print(f"\nbest cell: {result['best']}\nreport: {out / 'sweep.md'}")
    return 0


def _shape(text: str) -> tuple[int, int]:
    dim, x, layers = text.lower().partition("x")
    try:
        return int(dim), int(layers)
    except ValueError:
        raise UserError(f"--shapes: cannot read {text!r} as WIDTHxDEPTH (e.g. 256x4)") from None


def _study_report(out: Path) -> int:
    from ..experiments.study import study_report
    if not (out / "sweep_config.json").is_file():
        raise UserError(f"--out {out} is not a `tst sweep` directory")
    if study_report(out) is None:
        raise UserError(f"{out} holds no finished baseline/TST pair yet")
    print((out / "study.md").read_text())
    return 0


def demo_command(argv: list[str]) -> int:
    p = ArgumentParser(prog="tst demo", description="TST vs baseline on the bundled corpus, on the CPU (<= 10 min).")
    p.add_argument("--out", default="runs/demo", help="output directory (data, runs and report)")
    p.add_argument("--seeds", default="1")
    args, extra = p.parse_known_args(argv)
    out = Path(args.out)
    data_dir = out / "data"
    t0 = time.perf_counter()
    from ..experiments.demo import DEMO_FLAGS, prepare_demo_data
    prepare_demo_data(data_dir)
    print(f"data ready in {time.perf_counter() - t0:.0f}s")
    # Both arms side by side, one core each: the fastest use of 2 cores for a model this small, and
    # the arms' step times are measured under the same load.
    return compare_command(DEMO_FLAGS + ["--data", str(data_dir), "--out", str(out / "report"),
                                      "--seeds", args.seeds, "--jobs", "2"] + extra)
