"""``tst train`` and ``tst export``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import rundir
from ..config import Config, help_epilog, to_toml
from ..errors import UserError
from .args import ArgumentParser, add_run_flags, resolve_config


def train_command(argv: list[str]) -> int:
    p = ArgumentParser(prog="tst train", description="Two-phase TST training (or a baseline) on prepared data.",
                       epilog=help_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_flags(p)
    p.add_argument("--out", required=True, help="run directory (created; must not exist unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    args, extra = p.parse_known_args(argv)
    out = Path(args.out)
    if args.resume:
        saved = rundir.read_config(out)
        cfg, _ = resolve_config(args, extra, base=rundir.read_config(out))  # the saved values, then today's flags
        if cfg.train.steps != saved.train.steps:
            from ..train import extension_hint
            raise UserError(extension_hint(saved, cfg, out))
        rundir.check_resume_overrides(saved, cfg, out)
    else:
        cfg = resolve_config(args, extra)[0]
    if not cfg.data.path:
        raise UserError("no data: pass --data DATA_DIR (prepare one with `tst prepare --input bundled --out DATA_DIR`)")
    if args.dry_run:
        return dry_run(cfg)
    from .. import api, distributed
    from ..errors import EXIT_INTERRUPTED
    summary = api.train(cfg, out, resume=args.resume)
    if not summary["completed"]:
        if distributed.is_main():  # once, not once per rank
            print(f"stopped by {summary['interrupted_by']} after step {summary['steps']}; checkpoint saved. "
                  f"Continue with: tst train --out {out} --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    loss = summary["final_val_loss"]
    loss_text = f"final val loss {loss:.4f}, " if loss is not None else ""
    distributed.print0(f"done: {summary['steps']} steps, {loss_text}{summary['data_tokens']:,} data tokens, "
                       f"{summary['wall_time']:.0f}s → {out}")
    return 0


def dry_run(cfg: Config) -> int:
    from ..data.loader import check_data_dir
    from ..train import format_plan, plan
    print(to_toml(cfg))
    print(format_plan(plan(cfg, check_data_dir(cfg.data.path))))
    return 0


def export_command(argv: list[str]) -> int:
    p = ArgumentParser(prog="tst export", description="Write a run's model (its latest checkpoint, or --step) as a "
                       "Hugging Face LlamaForCausalLM directory with its tokenizer.")
    p.add_argument("--run", required=True, help="run directory (from `tst train`), or RUN_DIR:STEP")
    p.add_argument("--step", type=int, default=None, help="the checkpoint to export (default: the latest)")
    p.add_argument("--out", required=True, help="output directory (must not exist, or be empty)")
    args = p.parse_args(argv)
    from .. import api
    from ..errors import io_errors
    with io_errors(f"exporting to {args.out}"):  # disk full, read-only: one line naming the cause
        out = api.export(args.run, args.out, args.step)
    print(f"exported {args.run} → {out}")
    return 0
