"""Load a trained model for inference or as a starting point: a run directory (any saved step, the latest
by default) or a Hugging Face Llama directory (our export, or any ``LlamaForCausalLM`` whose
architecture our model holds). One code path serves ``eval``, ``generate``, ``export`` and
``train --init-from``, so a run and its export score and generate the same.

    RUN_DIR          the run's latest checkpoint
    RUN_DIR:STEP     the checkpoint written after STEP steps (``step_XXXXXXX``)
    HF_DIR           config.json + model.safetensors (+ tokenizer.json for text)
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import received
from .errors import UserError
from .hf_format import EXPORT_INFO_FILE, from_hf_state_dict, model_config_from_hf
from .model import ModelConfig, Transformer


@dataclass
class Loaded:
    """A model ready for inference (eval mode) and what is known about where it came from."""
    model: Transformer
    tokenizer: object | None  # tst_train.data.prepare.Tokenizer (None when loaded without one)
    kind: str  # "run" or "hf"
    path: Path
    step: int | None = None  # run directories: the checkpoint's step
    total_steps: int | None = None  # run directories: the steps the run was configured for
    completed: bool | None = None  # run directories: did it reach its last step
    context_len: int = 2048  # positions per sequence it was trained on (scoring truncates to this)
    data_dir: str | None = None  # the run's data directory (absolute), for validation
    info: dict = field(default_factory=dict)

    def text_tokenizer(self):
        """The tokenizer, or a user error saying that reading and writing text needs one."""
        if self.tokenizer is None:
            raise UserError(f"{self.path} has no tokenizer (tokenizer.json): text cannot be encoded or decoded")
        return self.tokenizer

    def describe(self) -> str:
        if self.kind == "run":
            state = "finished" if self.completed else f"UNFINISHED: {self.total_steps} steps planned"
            return f"{self.path} at step {self.step} ({state})"
        return str(self.path)


def split_source(text: str | Path, step: int | None = None) -> tuple[Path, int | None]:
    """``RUN_DIR:STEP`` → (path, step); a plain path keeps ``step`` (paths with a colon still work)."""
    text = str(text)
    head, sep, tail = text.rpartition(":")
    if sep and tail.isdigit() and head and not Path(text).exists():
        if step is not None and step != int(tail):
            raise UserError(f"{text} names step {tail} but --step {step} was also given")
        return Path(head), int(tail)
    return Path(text), step


def load(source: str | Path, step: int | None = None, *, device: str | torch.device = "cpu",
         tokenizer: bool = True) -> Loaded:
    """A run directory (``RUN_DIR[:STEP]``) or a Hugging Face directory → :class:`Loaded`, on ``device``."""
    path, step = split_source(source, step)
    from . import rundir
    if rundir.is_run_dir(path):
        loaded = _load_run(path, step, tokenizer)
    elif (path / "config.json").is_file():
        if step is not None:
            raise UserError(f"{path} is a Hugging Face directory: it holds one set of weights, not steps")
        loaded = _load_hf(path, tokenizer)
    else:
        raise UserError(f"{path} is neither a run directory (config.toml) nor a Hugging Face model directory "
                        "(config.json)")
    loaded.model.to(device).eval()
    return loaded


def load_weights(source: str | Path, step: int | None = None) -> tuple[ModelConfig, dict, str]:
    """(model config, our state dict, description) of a run step or an HF directory — no tokenizer needed."""
    loaded = load(source, step, tokenizer=False)
    return loaded.model.config, loaded.model.state_dict(), loaded.describe()


# ------------------------------------------------------------------ run directories
def checkpoint_steps(run_dir: Path) -> dict[int, Path]:
    """``{step: checkpoint directory}`` of a run's complete checkpoints."""
    from .checkpoint import list_checkpoints
    return {int(p.name.removeprefix("step_")): p for p in list_checkpoints(run_dir / "checkpoints")}


def _load_run(run_dir: Path, step: int | None, with_tokenizer: bool) -> Loaded:
    """A run's model at ``step`` (default: its newest sound checkpoint), checked against the run's config
    (the resume fingerprint) and read with the checkpoint module's safe, verified loaders."""
    from . import checkpoint, rundir, tokenizer_files
    from .build import build_model, fingerprint
    cfg = rundir.read_config(run_dir)
    steps = checkpoint_steps(run_dir)
    if not steps:
        if (rundir.read_summary(run_dir) or {}).get("completed"):  # e.g. a record collected into experiments/ keeps no weights
            raise UserError(f"{run_dir} finished, but holds no checkpoint (its weights were removed, as in a "
                            "collected record): retrain it, or point at a run that keeps its checkpoints")
        raise UserError(f"{run_dir} has no checkpoint yet (train it first: a checkpoint is written at the phase "
                        "boundary, every --checkpoint-every steps and at the end)")
    if step is not None and step not in steps:
        raise UserError(f"{run_dir} has no checkpoint at step {step}; saved steps: {', '.join(map(str, sorted(steps)))}")
    data = tokenizer_files.run_data(run_dir, cfg.data.path)  # the run's own copy of the data's meta
    mcfg = build_model(cfg, data["meta"]["vocab_size"])
    model = Transformer(mcfg)
    for attempt in range(3):
        path = steps[step] if step is not None else checkpoint.latest_valid(run_dir / "checkpoints")
        try:
            checkpoint.load_model_weights(path, model, fingerprint(cfg, mcfg, data["meta"]))
            break
        except UserError:
            if step is not None or path.exists() or attempt == 2:
                raise
            # the newest checkpoint was rotated away while being read (a run is training there): take the newer one
            print(f"note: {path.name} was replaced while reading (a run is training there); retrying", file=sys.stderr)
    step = int(path.name.removeprefix("step_"))
    tok = tokenizer_files.run_tokenizer(run_dir, cfg.data.path) if with_tokenizer else None
    return Loaded(model, tok, "run", run_dir, step=step, total_steps=cfg.train.steps,
                  completed=step >= cfg.train.steps,
                  context_len=cfg.train.seq_len, data_dir=data.get("path") or cfg.data.path,
                  info={"config": cfg, "meta": data.get("meta")})


# ------------------------------------------------------------------ Hugging Face directories
def _load_hf(path: Path, with_tokenizer: bool) -> Loaded:
    config = _read_json(path / "config.json")
    mcfg = model_config_from_hf(config, str(path / "config.json"))  # checks config.json first (received)
    model = Transformer(mcfg)
    try:
        model.load_state_dict(from_hf_state_dict(_read_safetensors(path), mcfg))
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    except RuntimeError as e:  # wrong shapes: the weights were not made for this config.json
        first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e).splitlines()[0])
        raise UserError(f"{path}: the weights do not match its config.json ({first})") from None
    export_info = (received.read_json(path / EXPORT_INFO_FILE, received.EXPORT_INFO)
                   if (path / EXPORT_INFO_FILE).is_file() else {})
    tok = _hf_dir_tokenizer(path) if with_tokenizer and (path / "tokenizer.json").is_file() else None
    if tok is not None and tok.vocab_size > mcfg.vocab_size:
        raise UserError(f"{path}: its tokenizer has {tok.vocab_size:,} tokens but the model's embedding only "
                        f"{mcfg.vocab_size:,} rows: the tokenizer does not belong to these weights")
    context = export_info.get("train_seq_len") or min(mcfg.max_seq_len, 2048)
    return Loaded(model, tok, "hf", path, context_len=context, info={"hf_config": config, "export": export_info})


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}") from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    index = path / "model.safetensors.index.json"
    if index.is_file():
        listing = _read_json(index)
        weight_map = listing.get("weight_map") if isinstance(listing, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise UserError(f"{index} has no weight_map of file names: the index is broken")
        files = sorted(set(weight_map.values()))
    else:
        files = ["model.safetensors"]
    sd = {}
    root = os.path.realpath(path)
    for name in files:
        if os.path.isabs(name) or not os.path.realpath(path / name).startswith(root + os.sep):
            raise UserError(f"{index} points at {name!r}, outside {path}: refused (a model directory loads only its "
                            "own files)")
        if not (path / name).is_file():
            raise UserError(f"{path} has no {name} (only safetensors weights are read)")
        try:
            sd.update(load_file(str(path / name)))
        except Exception as e:  # a truncated or malformed file: one line, not safetensors' traceback
            raise UserError(f"{path / name} could not be read as safetensors ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return {k: v.float() for k, v in sd.items()}


def _hf_dir_tokenizer(path: Path):
    from .tokenizer_files import hf_tokenizer_file
    eos = None
    for source in (path / "generation_config.json", path / "config.json"):
        if source.is_file():
            value = _read_json(source).get("eos_token_id")
            eos = value[0] if isinstance(value, list) and value else value
            if isinstance(eos, int):
                break
    return hf_tokenizer_file(path / "tokenizer.json", eos if isinstance(eos, int) else None)


# ------------------------------------------------------------------ starting weights (train --init-from)
# Fields that must match for weights to fit and mean the same (max_seq_len only sizes the RoPE cache,
# init_std only the random init).
_ARCHITECTURE = ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "norm_eps", "rope_theta",
                 "tie_embeddings", "qk_norm", "n_experts", "top_k", "norm_topk_prob", "shared_ffn_dim")


def absolute_source(source: str) -> str:
    """``RUN_DIR[:STEP]`` / ``HF_DIR`` with an absolute path (what a run directory records)."""
    path, step = split_source(source)
    return str(path.resolve()) + ("" if step is None else f":{step}")


def consumed_position(source: str, data_dir: str) -> int | None:
    """The training-stream position ``source`` (a run step) had reached on ``data_dir`` — where a continued run
    starts so that it reads only tokens that run never saw; None for a Hugging Face directory or a run trained
    on another data folder."""
    from . import checkpoint, rundir
    path, step = split_source(source)
    if not rundir.is_run_dir(path):  # an export records where its run's stream stood
        try:
            info = json.loads((path / EXPORT_INFO_FILE).read_text())
        except (OSError, ValueError):
            return None
        same = isinstance(info, dict) and isinstance(info.get("data_path"), str) and \
            os.path.realpath(info["data_path"]) == os.path.realpath(data_dir)
        pos = info.get("data_position") if same else None
        return pos if isinstance(pos, int) and not isinstance(pos, bool) and pos >= 0 else None
    if os.path.realpath(rundir.read_config(path).data.path) != os.path.realpath(data_dir):
        return None
    steps = checkpoint_steps(path)
    ckpt = steps.get(step) if step is not None else checkpoint.latest_valid(path / "checkpoints")
    if ckpt is None:
        return None
    loader = checkpoint.read_trainer_state(ckpt).get("loader") or {}
    try:
        return int(loader["position"])  # a position within the split's stream (it wraps at each epoch)
    except (KeyError, TypeError, ValueError):
        return None


def data_start(cfg) -> tuple[int, str]:
    """(token position where the run's stream starts, why): ``train.data_start`` resolved."""
    t = cfg.train
    if t.data_start != "auto":
        return int(t.data_start), "--train.data_start"
    if t.init_from:
        pos = consumed_position(t.init_from, cfg.data.path)
        if pos:
            return pos, f"after the {pos:,} tokens {t.init_from} consumed"
    return 0, ""


def init_from(model: Transformer, source: str, data_dir: str) -> str:
    """Copy the weights of ``source`` into ``model`` after checking that the architecture and the tokenizer
    match; returns a line saying what was loaded."""
    from .data.prepare import load_tokenizer
    from .tokenizer_files import PROBE_TEXT
    try:
        loaded = load(source)
    except UserError as e:
        raise UserError(f"--train.init_from: {e}") from None
    theirs, ours = loaded.model.config, model.config
    diffs = [f"{k} {getattr(theirs, k)} vs {getattr(ours, k)}" for k in _ARCHITECTURE
             if getattr(theirs, k) != getattr(ours, k)]
    if diffs:
        raise UserError(f"--train.init_from {source} does not match this run's model ({', '.join(diffs)}: "
                        "theirs vs this run's); choose the same --preset / --model.* settings and tokenizer")
    if loaded.tokenizer is not None:
        data_tok = load_tokenizer(data_dir)
        if loaded.tokenizer.encode(PROBE_TEXT) != data_tok.encode(PROBE_TEXT):
            raise UserError(f"--train.init_from {source} was trained with another tokenizer than {data_dir}'s; "
                            "prepare the data with its tokenizer (tst prepare --tokenizer PATH/tokenizer.json)")
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            tensor.copy_(loaded.model.state_dict()[name])
    return f"initialised from {loaded.describe()}"
