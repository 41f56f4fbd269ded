"""Run configuration: dataclasses are the schema; TOML files and ``--section.field=value`` flags override.

Files hold plain values only; derived values (steps per phase, data needed, FLOPs) are computed in
code. Unknown keys and badly typed values are user errors with a one-line explanation.
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError


@dataclass
class ModelSection:
    preset: str = "tiny"
    """Shape preset (see `tst_train.model.PRESETS`); the vocabulary size comes from the data's tokenizer."""
    tie_embeddings: bool = False
    """Share the input embedding and the LM head (the paper keeps them untied)."""
    dim: int = 0
    """Override the preset's hidden size (0 = keep the preset's)."""
    n_layers: int = 0
    """Override the preset's number of layers (0 = keep)."""
    n_heads: int = 0
    """Override the preset's number of query heads (0 = keep)."""
    n_kv_heads: int = 0
    """Override the preset's number of key/value heads (0 = keep)."""
    ffn_dim: int = 0
    """Override the preset's SwiGLU hidden width (0 = keep)."""


@dataclass
class DataSection:
    path: str = ""
    """Prepared data directory (`tst prepare ... --out DIR`)."""


@dataclass
class TrainSection:
    steps: int = 200
    """Optimizer steps of the whole run, both phases."""
    batch_size: int = 16
    """Global batch, in rows (sequences of `seq_len` latent positions) per optimizer step."""
    micro_batch_size: int = 0
    """Rows per forward/backward on each rank (0 = the whole per-rank batch; smaller → gradient accumulation)."""
    seq_len: int = 64
    """Latent length the model sees (the superposition phase reads `bag_size`× more tokens per row)."""
    seed: int = 0
    """Seed for the model initialisation (the data order is fixed by `tst prepare`)."""
    lr: float = 1e-3
    """Peak learning rate (tune it on the baseline and keep it for TST, as the paper does)."""
    min_lr_ratio: float = 0.0
    """Learning rate at the end of the decay, as a fraction of `lr`."""
    warmup_steps: int = 20
    """Linear warmup steps (warmup–stable–decay over the total steps, continuous across phases)."""
    decay_frac: float = 0.2
    """Fraction of the total steps spent in the final linear decay (the paper uses 0.1)."""
    weight_decay: float = 0.1
    """AdamW weight decay on the linear layers' matrices (LM head included); none on the input embedding or norm gains."""
    beta1: float = 0.9
    """AdamW β1 (the paper: 0.9)."""
    beta2: float = 0.95
    """AdamW β2 (the paper: 0.95)."""
    eps: float = 1e-8
    """AdamW epsilon."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 = off)."""
    device: str = "auto"
    """`auto` (CUDA when available, else CPU), `cpu`, `cuda`, `cuda:1`…"""
    dtype: str = "auto"
    """Autocast dtype: `auto` (bf16 on CUDA, fp32 on CPU), `bf16`, `fp32`."""
    compile: bool = False
    """Wrap the model in `torch.compile` (one recompile at the phase transition)."""
    fused_loss: bool = True
    """Use the chunked fused LM-head + loss (never materialises the full logits)."""
    threads: int = 0
    """CPU threads for torch (0 = torch's default)."""


@dataclass
class TSTSection:
    mode: str = "tst"
    """`baseline`, `tst`, `input-only` or `output-only` (the paper's ablations)."""
    bag_size: int = 4
    """Tokens per bag `s` in the superposition phase."""
    superposition_frac: float = 0.3
    """Fraction `r` of the steps in the superposition phase (0 = baseline, 1 = no recovery)."""
    weights: str = "uniform"
    """MCE weighting over the bag: `uniform`, `power` (1/i), `exp` (e^-i) or `first`."""
    reset_optimizer: bool = False
    """Reset the AdamW moments at the transition (ablation; the default carries them over)."""
    reinit_embeddings: bool = False
    """Re-initialise the input embedding and LM head at the transition (the paper's Table 2 ablation)."""


@dataclass
class EvalSection:
    every: int = 50
    """Evaluate every N steps (and always at the end; 0 = only at the end)."""
    tokens: int = 65536
    """Fixed held-out token budget for each evaluation (standard next-token CE, whatever the phase)."""
    batch_size: int = 16
    """Rows per evaluation forward pass."""


@dataclass
class CheckpointSection:
    every: int = 0
    """Checkpoint every N steps (0 = only at the phase boundary, on a stop signal and at the end)."""
    keep: int = 2
    """Keep the last K checkpoints."""


@dataclass
class LogSection:
    progress: bool = True
    """Show a progress bar (on a terminal)."""
    tensorboard: bool = True
    """Write TensorBoard logs to RUN_DIR/tb (when tensorboard is installed)."""
    wandb: bool = False
    """Also log to Weights & Biases (when wandb is installed)."""
    wandb_project: str = "token-superposition"
    """W&B project name."""
    peak_tflops: float = 0.0
    """Hardware peak in TFLOP/s for MFU (0 = detect for known GPUs, otherwise no MFU)."""


@dataclass
class Config:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    tst: TSTSection = field(default_factory=TSTSection)
    eval: EvalSection = field(default_factory=EvalSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    log: LogSection = field(default_factory=LogSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "Config":
        """Check value ranges; raise UserError naming the flag to change."""
        t, s = self.train, self.tst
        checks = [
            (t.steps >= 1, "--train.steps must be >= 1"),
            (t.batch_size >= 1, "--train.batch_size must be >= 1"),
            (t.micro_batch_size >= 0, "--train.micro_batch_size must be >= 0"),
            (t.seq_len >= 1, "--train.seq_len must be >= 1"),
            (t.lr > 0, "--train.lr must be > 0"),
            (0 <= t.decay_frac <= 1, "--train.decay_frac must be in [0, 1]"),
            (t.warmup_steps >= 0, "--train.warmup_steps must be >= 0"),
            (t.dtype in ("auto", "bf16", "fp32"), "--train.dtype must be auto, bf16 or fp32"),
            (s.bag_size >= 1, "--tst.bag_size must be >= 1"),
            (0 <= s.superposition_frac <= 1, "--tst.superposition_frac must be in [0, 1]"),
            (s.weights in ("uniform", "power", "exp", "first"), "--tst.weights must be uniform, power, exp or first"),
            (self.eval.every >= 0 and self.eval.tokens >= 1, "--eval.every must be >= 0 and --eval.tokens >= 1"),
            (self.checkpoint.keep >= 1, "--checkpoint.keep must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UserError(msg)
        from tst import MODES
        if s.mode not in MODES:
            raise UserError(f"--tst.mode {s.mode!r} is not one of: {', '.join(MODES)}")
        return self


def _sections() -> dict[str, type]:
    return {f.name: f.type if isinstance(f.type, type) else typing.get_type_hints(Config)[f.name]
            for f in dataclasses.fields(Config)}


def _coerce(value, typ: type, key: str):
    """Convert a TOML value or a CLI string to the field's type, or raise UserError."""
    if isinstance(value, str) and typ is not str:
        text = value.strip()
        try:
            if typ is bool:
                if text.lower() in ("true", "1", "yes", "on"):
                    return True
                if text.lower() in ("false", "0", "no", "off"):
                    return False
                raise ValueError
            return typ(float(text)) if typ is int and "e" in text.lower() else typ(text)
        except ValueError:
            raise UserError(f"{key}: cannot read {value!r} as {typ.__name__}") from None
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise UserError(f"{key}: expected {typ.__name__}, got {value!r}")
    return value


def set_value(cfg: Config, dotted: str, value) -> None:
    """Set ``section.field`` on ``cfg``; unknown keys are user errors that list the valid ones."""
    section_name, _, field_name = dotted.partition(".")
    sections = _sections()
    if section_name not in sections or not field_name:
        raise UserError(f"unknown config key {dotted!r}; sections are: {', '.join(sections)}")
    section = getattr(cfg, section_name)
    hints = typing.get_type_hints(type(section))
    if field_name not in hints:
        close = [n for n in hints if n.startswith(field_name[:3])]
        hint = f" (did you mean {', '.join(section_name + '.' + c for c in close)}?)" if close else ""
        raise UserError(f"unknown config key {dotted!r}{hint}; {section_name} has: {', '.join(hints)}")
    setattr(section, field_name, _coerce(value, hints[field_name], dotted))


def apply_mapping(cfg: Config, data: dict, source: str) -> None:
    """Apply a nested mapping (a parsed TOML file or a saved config) onto ``cfg``."""
    for section_name, values in data.items():
        if not isinstance(values, dict):
            raise UserError(f"{source}: top-level key {section_name!r} must be a [section] table")
        for key, value in values.items():
            set_value(cfg, f"{section_name}.{key}", value)


def load_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"config file {path} is not valid TOML: {e}") from None


def to_toml(cfg: Config) -> str:
    """The resolved config as TOML (plain values only), for the run directory."""
    lines = []
    for section, values in cfg.to_dict().items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    return "\n".join(lines)


def field_docs() -> dict[str, str]:
    """``{"section.field": attribute docstring}``, read from this module's source (for ``--help``)."""
    import ast
    import inspect
    import sys
    tree = ast.parse(inspect.getsource(sys.modules[__name__]))
    section_of = {f.type if isinstance(f.type, str) else f.type.__name__: f.name for f in dataclasses.fields(Config)}
    docs = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or node.name not in section_of:
            continue
        for stmt, nxt in zip(node.body, node.body[1:] + [None]):
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                doc = nxt.value.value if (isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                                          and isinstance(nxt.value.value, str)) else ""
                docs[f"{section_of[node.name]}.{stmt.target.id}"] = " ".join(doc.split())
    return docs


def help_epilog() -> str:
    """Every config field as ``--section.field=DEFAULT  doc``, for the commands' ``--help``."""
    defaults = Config().to_dict()
    lines = ["config fields (set any of them as --section.field=value, or in a --config TOML file):"]
    for key, doc in field_docs().items():
        section, name = key.split(".")
        lines.append(f"  --{key}={json.dumps(defaults[section][name])}" + (f"  {doc}" if doc else ""))
    return "\n".join(lines)
