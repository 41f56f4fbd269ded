"""Names of arms and runs, derived from their configs alone — one scheme for every experiment command.

    arm_name(cfg)   ``baseline``, ``s4-r0.25-fitted+fold-batch`` (TST), ``input-only-s4-r0.5-uniform`` (an ablation)
    shape_name(cfg) ``d512-L1``: the resolved width and depth (``d128-L4-E32k4``: a mixture of 32 experts, top-4)
    run_name(cfg)   ``d512-L1-lr0.0005-1000steps-s4-r0.25-fitted+fold-batch-seed0``, with ``-branch800`` for a
                    cooldown branch that starts at step 800 of its trunk

Two configs that train the same numbers get the same name however they were asked for (a rate written
out or left at its default is one rate).
"""
from __future__ import annotations

from ..config import Config
from ..model import PRESETS

# TST options whose non-default values name a variant (``+fold-batch``), in this order
VARIANT_DEFAULTS = {"loss": "mce", "bagging": "stream", "fold": "sequence", "transition_steps": 0}


def is_baseline(cfg: Config) -> bool:
    t = cfg.tst
    return t.mode == "baseline" or t.bag_size == 1 or t.superposition_frac == 0


def arm_name(cfg: Config) -> str:
    """The arm a config trains: the baseline, or TST (or an ablation) with its bag size, fraction, weighting
    and every variant option that differs from the paper's default."""
    t = cfg.tst
    if is_baseline(cfg):
        return "baseline"  # the equal-data baseline is a baseline with more steps: its name says how many
    prefix = {"tst": "tst-reinit-" if t.reinit_embeddings else "", "input-only": "input-only-",
              "output-only": "output-only-"}[t.mode]
    options = [f"{k}-{getattr(t, k)}" for k, default in VARIANT_DEFAULTS.items() if getattr(t, k) != default]
    if t.reset_optimizer:
        options.append("reset-optimizer")
    return f"{prefix}s{t.bag_size}-r{t.superposition_frac:g}-{t.weights}" + "".join(f"+{o}" for o in options)


def shape(cfg: Config) -> tuple[int, int]:
    """The (width, depth) the config resolves to."""
    preset = PRESETS[cfg.model.preset]
    return cfg.model.dim or preset["dim"], cfg.model.n_layers or preset["n_layers"]


def shape_name(cfg: Config) -> str:
    dim, layers = shape(cfg)
    preset = PRESETS[cfg.model.preset]
    experts, top_k = cfg.model.n_experts or preset.get("n_experts", 0), cfg.model.top_k or preset.get("top_k", 0)
    return f"d{dim}-L{layers}" + (f"-E{experts}k{top_k}" if experts else "")


def run_name(cfg: Config) -> str:
    """A run directory's name: shape, peak rate, steps, arm, branch point and seed."""
    parts = [shape_name(cfg), f"lr{cfg.train.lr:g}", f"{cfg.train.steps}steps", arm_name(cfg)]
    if cfg.train.branch_from:
        parts.append(f"branch{cfg.train.branch_from.rpartition(':')[2]}")
    return "-".join(parts + [f"seed{cfg.train.seed}"])
