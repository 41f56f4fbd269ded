"""Command-line parsing shared by the commands: one-line argparse errors, the run flags, dotted overrides."""
from __future__ import annotations

import argparse

from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:  # the config imports torch; `tst prepare` uses this module and must not
    from ..config import Config

# First-class flags → config keys (every other field is `--section.field=value`).
TRAIN_FLAGS = {
    "--preset": ("model.preset", str), "--steps": ("train.steps", int), "--batch-size": ("train.batch_size", int),
    "--seq-len": ("train.seq_len", int), "--bag-size": ("tst.bag_size", int),
    "--superposition-frac": ("tst.superposition_frac", float), "--mode": ("tst.mode", str),
    "--seed": ("train.seed", int), "--eval-every": ("eval.every", int),
    "--checkpoint-every": ("checkpoint.every", int), "--lr": ("train.lr", float),
    "--weights": ("tst.weights", str), "--device": ("train.device", str),
    "--init-from": ("train.init_from", str),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad flags as a UserError-style one-liner (exit 2), not a usage dump."""

    def error(self, message: str):  # noqa: D102
        raise UserError(f"{message} (see `{self.prog} --help`)")


def _escape(text: str) -> str:
    """argparse %-formats help strings: a doc's literal '%' ("near 5% of ...") must reach it as '%%'."""
    return text.replace("%", "%%")


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """Model/training flags shared by ``train``, ``compare``, ``sweep`` and ``demo``."""
    p.add_argument("--data", help="prepared data directory (from `tst prepare`)")
    p.add_argument("--config", help="TOML file of config values (see configs/)")
    from ..config import field_docs  # here, not at import: `tst prepare` uses this module without torch
    docs = field_docs()
    for flag, (key, typ) in TRAIN_FLAGS.items():
        p.add_argument(flag, type=str, default=None, metavar=typ.__name__.upper(), help=_escape(f"{docs.get(key, '')} (sets {key})"))
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the plan, then exit")


def resolve_config(args: argparse.Namespace, extra: list[str], base: Config | None = None) -> tuple[Config, set[str]]:
    """defaults (or ``base``) ← --config file ← first-class flags ← ``--section.field=value``; returns the keys set."""
    from ..config import Config, apply_mapping, load_toml, set_value

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
    """``--section.field=value``, ``--section.field value`` or, for a true/false field, a bare
    ``--section.field`` (= true) → [(key, value)]; anything else is a typo."""
    out, i = [], 0
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--") or "." not in item.split("=")[0]:
            raise UserError(f"unrecognised argument {item!r}; config fields are set as --section.field=value "
                            f"(e.g. --train.lr=1e-3), see `tst train --help`")
        if "=" in item:
            key, value = item[2:].split("=", 1)
        elif i + 1 >= len(extra) or extra[i + 1].startswith("--"):
            key = item[2:]
            value = _bare_flag(key.replace("-", "_"))
        else:
            key, value = item[2:], extra[i + 1]
            i += 1
        out.append((key.replace("-", "_"), value))
        i += 1
    return out


def _bare_flag(key: str) -> str:
    """A flag given without a value: ``true`` for a true/false field, otherwise a user error."""
    from ..config import Config  # lazy: `tst --help` must not import torch

    try:
        is_bool = isinstance(Config().get(key), bool)
    except (AttributeError, ValueError):
        return "true"  # not a field: set_value names the valid ones
    if not is_bool:
        raise UserError(f"--{key} needs a value: --{key}=VALUE")
    return "true"


def parse_list(text: str, typ, flag: str) -> list:
    try:
        return [typ(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag}: cannot read {text!r} as a comma-separated list of {typ.__name__}") from None


def positive_int(text: str, flag: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise UserError(f"{flag} must be a whole number >= 1, got {text!r}")
    return n


def set_threads(text: str) -> None:
    """``--threads N``: torch's CPU threads (0 keeps torch's default)."""
    if text.strip() != "0":
        import torch
        torch.set_num_threads(positive_int(text, "--threads"))
