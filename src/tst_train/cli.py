"""The ``tst`` command: ``prepare``, ``train``, ``compare``, ``sweep``, ``demo``, ``export``.

    tst prepare --input bundled --out data/bundled
    tst train --data data/bundled --out runs/tiny --preset tiny --steps 500 --bag-size 4
    tst train --out runs/tiny --resume

User errors (bad flags, missing data, incompatible checkpoints …) print one line and exit with 2.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from .config import Config, apply_mapping, help_epilog, load_toml, set_value, to_toml
from .errors import UserError

# First-class flags → config keys (every other field is `--section.field=value`).
TRAIN_FLAGS = {
    "--preset": ("model.preset", str), "--steps": ("train.steps", int), "--batch-size": ("train.batch_size", int),
    "--seq-len": ("train.seq_len", int), "--bag-size": ("tst.bag_size", int),
    "--superposition-frac": ("tst.superposition_frac", float), "--mode": ("tst.mode", str),
    "--seed": ("train.seed", int), "--eval-every": ("eval.every", int),
    "--checkpoint-every": ("checkpoint.every", int), "--lr": ("train.lr", float),
    "--weights": ("tst.weights", str), "--device": ("train.device", str),
}
# Settings that may change when resuming (they do not affect the numbers of the run).
RESUMABLE_KEYS = {"eval.every", "eval.batch_size", "checkpoint.every", "checkpoint.keep", "log.progress",
                  "log.tensorboard", "log.wandb", "log.wandb_project", "log.peak_tflops", "train.device",
                  "train.threads", "train.compile", "data.path"}

CONFIG_FILE = "config.toml"
SUMMARY_FILE = "summary.json"


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad flags as a UserError-style one-liner (exit 2), not a usage dump."""

    def error(self, message: str):  # noqa: D102
        raise UserError(f"{message} (see `{self.prog} --help`)")


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """Model/training flags shared by ``train``, ``compare``, ``sweep`` and ``demo``."""
    p.add_argument("--data", help="prepared data directory (from `tst prepare`)")
    p.add_argument("--config", help="TOML file of config values (see configs/)")
    for flag, (key, typ) in TRAIN_FLAGS.items():
        p.add_argument(flag, type=str, default=None, metavar=typ.__name__.upper(), help=f"sets {key}")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the plan, then exit")


def resolve_config(args: argparse.Namespace, extra: list[str], base: Config | None = None) -> tuple[Config, set[str]]:
    """defaults (or ``base``) ← --config file ← first-class flags ← ``--section.field=value``; returns the keys set."""
    cfg = base if base is not None else Config()
    touched: set[str] = set()
    if getattr(args, "config", None):
        data = load_toml(args.config)
        apply_mapping(cfg, data, args.config)
        touched |= {f"{s}.{k}" for s, v in data.items() for k in v}
    for flag, (key, _) in TRAIN_FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is not None:
            set_value(cfg, key, value)
            touched.add(key)
    if getattr(args, "data", None):
        set_value(cfg, "data.path", args.data)
        touched.add("data.path")
    for key, value in parse_dotted(extra):
        set_value(cfg, key, value)
        touched.add(key)
    return cfg.validate(), touched


def parse_dotted(extra: list[str]) -> list[tuple[str, str]]:
    """``--section.field=value`` or ``--section.field value`` → [(key, value)]; anything else is a typo."""
    out, i = [], 0
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--") or "." not in item.split("=")[0]:
            raise UserError(f"unrecognised argument {item!r}; config fields are set as --section.field=value "
                            f"(e.g. --train.lr=1e-3), see `tst train --help`")
        if "=" in item:
            key, value = item[2:].split("=", 1)
        else:
            if i + 1 >= len(extra):
                raise UserError(f"{item} needs a value")
            key, value = item[2:], extra[i + 1]
            i += 1
        out.append((key.replace("-", "_"), value))
        i += 1
    return out


# ---------------------------------------------------------------------------------- run directories
def git_revision() -> dict:
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=5)
        if rev.returncode == 0:
            return {"commit": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    return {"commit": None, "dirty": None}


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def prepare_run_dir(out: Path, cfg: Config, resume: bool) -> None:
    """Create (or check, on resume) the run directory and record the resolved config and provenance."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if not resume and out.exists() and any(out.iterdir()):
        raise UserError(f"run directory {out} already exists; pass --resume to continue it, or choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    import torch
    write_atomic(out / CONFIG_FILE, to_toml(cfg))
    write_atomic(out / "run.json", json.dumps({
        "argv": sys.argv, "git": git_revision(), "python": platform.python_version(), "torch": torch.__version__,
        "host": platform.node(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
    }, indent=2))


def load_run_config(out: Path, args, extra) -> Config:
    """On resume, the run's saved config is the truth; only harmless settings may be overridden."""
    if not (out / CONFIG_FILE).is_file():
        raise UserError(f"{out} is not a run directory (no {CONFIG_FILE}); nothing to resume")
    saved = Config()
    apply_mapping(saved, load_toml(out / CONFIG_FILE), str(out / CONFIG_FILE))
    merged, touched = resolve_config(args, extra, base=copy.deepcopy(saved))  # saved values, then today's flags
    changed = sorted(k for k in touched - RESUMABLE_KEYS
                     if _get(merged, k) != _get(saved, k))
    if changed:
        raise UserError(f"cannot change {', '.join(changed)} when resuming {out} (the checkpoint was trained "
                        f"with the saved values); drop those flags or start a new --out")
    return merged


def _get(cfg: Config, key: str):
    section, name = key.split(".", 1)
    return getattr(getattr(cfg, section), name)


# ---------------------------------------------------------------------------------- commands
def train_command(argv: list[str]) -> int:
    p = ArgumentParser(prog="tst train", description="Two-phase TST training (or a baseline) on prepared data.",
                       epilog=help_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_flags(p)
    p.add_argument("--out", required=True, help="run directory (created; must not exist unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    args, extra = p.parse_known_args(argv)
    out = Path(args.out)
    cfg = load_run_config(out, args, extra) if args.resume else resolve_config(args, extra)[0]
    if not cfg.data.path:
        raise UserError("no data: pass --data DATA_DIR (prepare one with `tst prepare --input bundled --out DATA_DIR`)")
    if args.dry_run:
        return dry_run(cfg)
    summary = run_training(cfg, out, resume=args.resume)
    if not summary["completed"]:
        return _interrupted_exit(summary, out)
    from . import distributed
    loss = summary["final_val_loss"]
    loss_text = f"final val loss {loss:.4f}, " if loss is not None else "already complete, "
    distributed.print0(f"done: {summary['steps']} steps, {loss_text}{summary['data_tokens']:,} data tokens, "
                       f"{summary['wall_time']:.0f}s → {out}")
    return 0


def _interrupted_exit(summary: dict, out: Path) -> int:
    from .train import EXIT_INTERRUPTED
    print(f"stopped by {summary['interrupted_by']} after step {summary['steps']}; checkpoint saved. "
          f"Continue with: tst train --out {out} --resume", file=sys.stderr)
    return EXIT_INTERRUPTED


def dry_run(cfg: Config) -> int:
    from .data.loader import check_data_dir
    from .train import format_plan, plan
    print(to_toml(cfg))
    print(format_plan(plan(cfg, check_data_dir(cfg.data.path))))
    return 0


def run_training(cfg: Config, out: Path, resume: bool = False) -> dict:
    """Train into run directory ``out`` (Python API); writes ``summary.json`` when the run ends or stops."""
    from . import distributed
    from .train import Trainer, format_plan, plan
    distributed.init(cfg.train.device)
    if distributed.is_main():
        prepare_run_dir(out, cfg, resume)
    distributed.barrier()
    trainer = Trainer(cfg, out, resume)
    p = plan(cfg, trainer.meta)
    if distributed.is_main():
        write_atomic(out / "plan.json", json.dumps(p, indent=2))
        if not resume:
            distributed.print0(format_plan(p))
    summary = trainer.run()
    if distributed.is_main():
        write_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2))
    return summary


def export_command(argv: list[str]) -> int:
    p = ArgumentParser(prog="tst export", description="Write a run's final model as a Hugging Face LlamaForCausalLM.")
    p.add_argument("--run", required=True, help="run directory (from `tst train`)")
    p.add_argument("--out", required=True, help="output directory (must not exist)")
    args = p.parse_args(argv)
    from .export_run import export_run
    export_run(Path(args.run), Path(args.out))
    print(f"exported {args.run} → {args.out}")
    return 0


def _lazy(module: str, func: str = "main"):
    def run(argv):
        import importlib
        return getattr(importlib.import_module(module, __package__), func)(argv)
    return run


COMMANDS = {
    "prepare": (_lazy(".data.prepare"), "tokenize text into a training data directory"),
    "train": (train_command, "train a model (TST or baseline)"),
    "compare": (_lazy(".compare", "compare_main"), "equal-FLOPs baseline-vs-TST experiment with a report"),
    "sweep": (_lazy(".compare", "sweep_main"), "grid over bag size, superposition fraction and weighting"),
    "demo": (_lazy(".compare", "demo_main"), "the bundled-corpus comparison (<= 10 min on 2 CPU cores)"),
    "export": (export_command, "export a run to a Hugging Face model directory"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: tst COMMAND [options]\n\ncommands:")
        for name, (_, help_) in COMMANDS.items():
            print(f"  {name:<8} {help_}")
        print("\n`tst COMMAND --help` for a command's options.")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[name][0](rest) or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
