"""Run configuration: dataclasses are the schema; TOML files and ``--section.field=value`` flags override.

Each field declares, once, with :func:`opt`: its default, its valid values (checked before anything is
written) and whether it **changes the numbers** of a run — what the resume fingerprint and the
compare/sweep reuse check are built from. A field that does not say so changes the numbers (the safe
default). Files hold plain values only; derived values (steps per phase, data needed, FLOPs) are
computed in code. Unknown keys and bad values are user errors with a one-line explanation.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tst

from .errors import UserError
from .model import PRESETS

INT_MAX = 2 ** 62  # far beyond any sensible count, and safely inside int64


@dataclass(frozen=True)
class Range:
    """Valid numbers: ``lo ≤ x ≤ hi`` (``lo < x`` / ``x < hi`` when open); always finite."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def ok(self, x) -> bool:
        if not math.isfinite(x):
            return False
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return self.hi is None or (x < self.hi if self.hi_open else x <= self.hi)

    def __str__(self) -> str:
        lo = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo:g}"
        hi = "" if self.hi is None else f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return " and ".join(p for p in (lo, hi) if p) or "finite"


@dataclass(frozen=True)
class OneOf:
    values: tuple

    def ok(self, x) -> bool:
        return x in self.values

    def __str__(self) -> str:
        return "one of " + ", ".join(map(str, self.values))


@dataclass(frozen=True)
class Pattern:
    regex: str
    text: str

    def ok(self, x) -> bool:
        return re.fullmatch(self.regex, x) is not None

    def __str__(self) -> str:
        return self.text


def opt(default, *, numbers: bool = True, check=None):
    """A config field: ``default``; ``numbers``: does it change what the run computes (losses, validation
    values)? ``check``: its valid values (:class:`Range`, :class:`OneOf`, :class:`Pattern`)."""
    return field(default=default, metadata={"numbers": numbers, "check": check})


COUNT = Range(0)  # 0 is allowed (usually "off" or "keep")
POSITIVE_COUNT = Range(1)
FRACTION = Range(0, 1)


@dataclass
class ModelSection:
    preset: str = opt("tiny", check=OneOf(tuple(PRESETS)))
    """Shape preset: tiny, cpu-small, cpu-medium, gpu-25m, gpu-50m, smollm2-135m, smollm2-360m, smollm3-3b; mixtures of experts moe-tiny, qwen3-moe-tiny, gpu-25m-moe, qwen3-moe-1b (all: `tst_train.model.PRESETS`); the vocabulary size comes from the data's tokenizer."""
    tie_embeddings: bool = opt(False)
    """Share the input embedding and the LM head (the paper keeps them untied)."""
    dim: int = opt(0, check=COUNT)
    """Override the preset's hidden size (0 = keep the preset's)."""
    n_layers: int = opt(0, check=COUNT)
    """Override the preset's number of layers (0 = keep)."""
    n_heads: int = opt(0, check=COUNT)
    """Override the preset's number of query heads (0 = keep)."""
    n_kv_heads: int = opt(0, check=COUNT)
    """Override the preset's number of key/value heads (0 = keep)."""
    ffn_dim: int = opt(0, check=COUNT)
    """Override the preset's SwiGLU hidden width, each expert's in a mixture of experts (0 = keep)."""
    n_experts: int = opt(0, check=COUNT)
    """Override the preset's number of routed experts per block (0 = keep; the `moe-*`/`qwen3-moe-*` presets have experts, the others a dense MLP)."""
    top_k: int = opt(0, check=COUNT)
    """Override the number of experts each position goes through (0 = keep the preset's)."""
    router_aux_coef: float = opt(0.01, check=Range(0))
    """Mixture of experts: weight of the load-balancing loss E·Σ f_i·P_i (1.0 when balanced; Switch Transformer's 0.01; 0 = off)."""
    router_bias_rate: float = opt(0.0, check=Range(0))
    """Mixture of experts: auxiliary-loss-free balancing (DeepSeek-V3), the step by which each expert's choice bias moves toward balance after every optimizer step (e.g. 0.001; 0 = off). A model with a bias exports to Hugging Face only with it 0."""


@dataclass
class DataSection:
    path: str = opt("", numbers=False)
    """Prepared data directory (`tst prepare ... --out DIR`); what it holds is checked by its vocabulary and token count."""


@dataclass
class TrainSection:
    steps: int = opt(200, check=POSITIVE_COUNT)
    """Optimizer steps of the whole run, both phases."""
    batch_size: int = opt(16, check=POSITIVE_COUNT)
    """Global batch, in rows (sequences of `seq_len` latent positions) per optimizer step."""
    micro_batch_size: int = opt(0, check=COUNT)
    """Rows per forward/backward on each rank (0 = the whole per-rank batch; smaller → gradient accumulation)."""
    seq_len: int = opt(64, check=POSITIVE_COUNT)
    """Latent length the model sees (the superposition phase reads `bag_size`× more tokens per row)."""
    seed: int = opt(0, check=COUNT)
    """Seed for the model initialisation (the data order is fixed by `tst prepare`)."""
    lr: float = opt(1e-3, check=Range(0, lo_open=True))
    """Peak learning rate (tune it on the baseline and keep it for TST, as the paper does)."""
    min_lr_ratio: float = opt(0.0, check=FRACTION)
    """Learning rate at the end of the decay, as a fraction of `lr`."""
    warmup_steps: int = opt(20, check=COUNT)
    """Linear warmup steps (warmup–stable–decay over the total steps, continuous across phases)."""
    decay_frac: float = opt(0.2, check=FRACTION)
    """Fraction of the total steps spent in the final linear decay (the paper uses 0.1)."""
    weight_decay: float = opt(0.1, check=Range(0))
    """AdamW weight decay on the linear layers' matrices (LM head included); none on the input embedding or norm gains."""
    beta1: float = opt(0.9, check=Range(0, 1, hi_open=True))
    """AdamW β1 (the paper: 0.9)."""
    beta2: float = opt(0.95, check=Range(0, 1, hi_open=True))
    """AdamW β2 (the paper: 0.95)."""
    eps: float = opt(1e-8, check=Range(0, lo_open=True))
    """AdamW epsilon."""
    grad_clip: float = opt(1.0, check=Range(0))
    """Clip the global gradient norm to this value (0 = off)."""
    device: str = opt("auto", numbers=False, check=Pattern(r"auto|cpu|mps|cuda(:\d+)?", "auto, cpu, mps, cuda or cuda:N"))
    """`auto` (CUDA when available, else CPU), `cpu`, `cuda`, `cuda:1`… (a run may move between machines: only rounding changes)."""
    dtype: str = opt("auto", check=OneOf(("auto", "bf16", "fp32")))
    """Autocast dtype: `auto` (bf16 on CUDA, fp32 on CPU), `bf16`, `fp32`."""
    compile: bool = opt(False, numbers=False)
    """Compile the transformer blocks with `torch.compile` (only rounding changes)."""
    fused_optimizer: bool = opt(False)
    """AdamW as one fused kernel per step instead of `foreach` (on the CPU 5x faster for the optimizer, about 12 % of a d512/L1 step, benchmarks/RESULTS.md; rounding differs, so off by default: the committed records were trained with `foreach`)."""
    fused_loss: bool = opt(True)
    """Use the chunked fused LM-head + loss (never materialises the full logits)."""
    divergence_check: bool = opt(True, numbers=False)
    """Stop with exit 2 (recorded in summary.json) when the run diverges: a validation loss above ln(vocabulary) + 1, or a gradient norm of exactly 0 for 20 steps in a row (see `train.LossHealth`)."""
    threads: int = opt(0, numbers=False, check=Range(0, 4096))
    """CPU threads for torch (0 = torch's default)."""
    collective_timeout_s: int = opt(600, numbers=False, check=Range(1, 86400))
    """Under torchrun: seconds a collective may wait for the other ranks before the run stops with an error
    (a frozen or dead rank must not make the others wait forever)."""
    init_from: str = opt("")
    """Start from these weights instead of a random init: RUN_DIR[:STEP] or a Hugging Face Llama directory (same architecture; fresh optimizer and schedule)."""
    data_start: str = opt("auto", check=Pattern(r"auto|\d+", "auto or a token position"))
    """Where the training stream starts: `auto` continues after the tokens the `--init-from` run had consumed, when it trained on this same data folder (else at the start); a number starts at that token position."""
    branch_from: str = opt("", check=Pattern(r"(.+:\d+)?", "RUN_DIR:STEP"))
    """A cooldown branch: continue RUN_DIR's whole training state (weights, optimizer, data position) from its checkpoint at STEP, with this run's steps. Refused unless both runs have the same settings but `steps` and the same learning rate and phase at every step before STEP (`tst curve` makes such branches)."""


@dataclass
class TSTSection(tst.TSTConfig):
    """The core's :class:`tst.TSTConfig` (bag size, fraction, mode, weighting) plus the trainer's ablations."""
    reset_optimizer: bool = opt(False)
    """Reset the AdamW moments at the transition (ablation; the default carries them over)."""
    reinit_embeddings: bool = opt(False)
    """Re-initialise the input embedding and LM head at the transition (the paper's Table 2 ablation)."""


@dataclass
class EvalSection:
    every: int = opt(-1, numbers=False, check=Range(-1))
    """Evaluate every N steps, and always at the phase boundary and the end (0 = only there; -1 = automatic: the round number of steps that keeps evaluation near 5% of the training time, see `auto_eval_every`)."""
    tokens: int = opt(16384, check=POSITIVE_COUNT)
    """Fixed held-out token budget for each evaluation (standard next-token CE, whatever the phase)."""
    batch_size: int = opt(16, numbers=False, check=POSITIVE_COUNT)
    """Rows per evaluation forward pass."""


@dataclass
class CheckpointSection:
    every: int = opt(0, numbers=False, check=COUNT)
    """Checkpoint every N steps (0 = only at the phase boundary, on a stop signal and at the end)."""
    keep: int = opt(2, numbers=False, check=POSITIVE_COUNT)
    """Keep the last K checkpoints."""
    keep_steps: str = opt("", numbers=False, check=Pattern(r"(\d+(,\d+)*)?", "comma-separated step numbers"))
    """Also checkpoint after these steps and keep those checkpoints (e.g. `800,1200`: where cooldown branches start)."""


@dataclass
class LogSection:
    progress: bool = opt(True, numbers=False)
    """Show progress: a bar on a terminal, periodic lines otherwise, and the validation loss at each evaluation."""
    every: int = opt(0, numbers=False, check=COUNT)
    """When the output is not a terminal, print a progress line every N steps (0 = about 20 lines per run)."""
    tensorboard: bool = opt(True, numbers=False)
    """Write TensorBoard logs to RUN_DIR/tb (when tensorboard is installed)."""
    wandb: bool = opt(False, numbers=False)
    """Also log to Weights & Biases (when wandb is installed)."""
    wandb_project: str = opt("token-superposition", numbers=False)
    """W&B project name."""
    peak_tflops: float = opt(0.0, numbers=False, check=Range(0))
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
        """Check every field against its declaration (and the core's TST rules); raise UserError naming the flag."""
        for key, f, value in iter_fields(self):
            _check_value(key, f, value)
        try:
            self.tst.validate()
        except ValueError as e:
            raise UserError(f"--tst.{e}") from None
        t = self.tst
        if t.fold == "batch" and t.mode != "baseline" and t.bag_size > 1 and self.train.seq_len % t.bag_size:
            raise UserError(f"--tst.fold=batch needs --train.seq_len ({self.train.seq_len}) to be a multiple of "
                            f"--tst.bag_size ({t.bag_size})")
        return self

    def numbers(self) -> dict:
        """``{"section.field": value}`` of every field that changes the numbers of a run."""
        return {key: value for key, f, value in iter_fields(self) if f.metadata.get("numbers", True)}

    def get(self, key: str):
        section, name = key.split(".", 1)
        return getattr(getattr(self, section), name)


def auto_eval_every(cfg: Config) -> int:
    """``eval.every`` itself, or for -1 the interval that keeps periodic evaluation near 5% of the training time —
    but at least four evaluations a run, so a short run has a curve (there evaluation costs more than 5 %).

    One evaluation forwards ``eval.tokens`` positions; one step forwards and backwards ``batch_size ×
    seq_len``. Measured on the CPU, an evaluated token costs 0.6 of a trained position (forward only,
    but smaller matrix products), so evaluating every ``13 × eval.tokens / (batch_size × seq_len)``
    steps costs 0.6 / 13 ≈ 4.6%; the interval is rounded up to 1, 2, 2.5 or 5 × 10^k steps.
    """
    if cfg.eval.every >= 0:
        return cfg.eval.every
    steps = 13 * cfg.eval.tokens / (cfg.train.batch_size * cfg.train.seq_len)
    scale = 10 ** max(0, math.floor(math.log10(max(steps, 1))))
    every = int(next(m * scale for m in (1, 2, 2.5, 5, 10) if m * scale >= steps))
    # a short run still gets a curve: at least four evaluations, whatever they cost
    return min(every, max(1, cfg.train.steps // 4))


def iter_fields(cfg: Config):
    """``(dotted key, dataclass field, value)`` for every field of every section."""
    for sf in dataclasses.fields(cfg):
        section = getattr(cfg, sf.name)
        for f in dataclasses.fields(section):
            yield f"{sf.name}.{f.name}", f, getattr(section, f.name)


def numbers_differ(a: Config, b: Config) -> list[str]:
    """The fields that change the numbers and differ between ``a`` and ``b``, as ``key: a → b`` lines."""
    na, nb = a.numbers(), b.numbers()
    return [f"{k}: {na[k]!r} → {nb[k]!r}" for k in na if na[k] != nb[k]]


def _check_value(key: str, f: dataclasses.Field, value) -> None:
    typ = _field_type(f)
    if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value):
        raise UserError(f"--{key} must be a finite number, got {value!r}")
    if typ is int and isinstance(value, int) and abs(value) > INT_MAX:
        raise UserError(f"--{key} = {value} is too large")
    check = f.metadata.get("check")
    if check is not None and not check.ok(value):
        raise UserError(f"--{key} must be {check}, got {value!r}")


_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _field_type(f: dataclasses.Field) -> type:
    return _TYPES[f.type] if isinstance(f.type, str) else f.type


def _sections() -> dict[str, type]:
    return {f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)}


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
            if typ is int:
                return _whole(float(text) if re.search(r"[.eE]", text) else int(text), key, value)
            return float(text)
        except (ValueError, OverflowError):
            raise UserError(f"--{key}: cannot read {value!r} as {'true/false' if typ is bool else typ.__name__}") from None
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, float):
        return _whole(value, key, value)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise UserError(f"--{key}: expected {typ.__name__}, got {value!r}")
    return value


def _whole(x, key: str, shown) -> int:
    if isinstance(x, float) and math.isinf(x):
        raise UserError(f"--{key} = {shown} is too large")
    if isinstance(x, float) and not (math.isfinite(x) and x.is_integer()):
        raise UserError(f"--{key} must be a whole number, got {shown!r}")
    if abs(x) > INT_MAX:
        raise UserError(f"--{key} = {shown} is too large")
    return int(x)


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
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"config file {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise UserError(f"config file {path} cannot be read: {e.strerror}") from None


def from_mapping(data: dict, source: str) -> Config:
    cfg = Config()
    apply_mapping(cfg, data, source)
    return cfg


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
    """``{"section.field": attribute docstring}``, read from the sections' source (for ``--help``)."""
    import ast
    import inspect
    docs = {}
    for sf in dataclasses.fields(Config):
        for cls in reversed(typing.get_type_hints(Config)[sf.name].__mro__):
            if not dataclasses.is_dataclass(cls) or cls is object:
                continue
            tree = ast.parse(inspect.getsource(cls).strip())
            body = tree.body[0].body
            for stmt, nxt in zip(body, body[1:] + [None]):
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    doc = nxt.value.value if (isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                                              and isinstance(nxt.value.value, str)) else ""
                    docs[f"{sf.name}.{stmt.target.id}"] = " ".join(doc.split())
    return docs


def help_epilog() -> str:
    """Every config field as ``--section.field=DEFAULT  doc``, for the commands' ``--help``."""
    defaults = Config().to_dict()
    lines = ["config fields (set any of them as --section.field=value, or in a --config TOML file):"]
    for key, doc in field_docs().items():
        section, name = key.split(".")
        lines.append(f"  --{key}={json.dumps(defaults[section][name])}" + (f"  {doc}" if doc else ""))
    return "\n".join(lines)
