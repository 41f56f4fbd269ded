"""Export a :class:`~tst_train.model.Transformer` as a Hugging Face ``LlamaForCausalLM`` directory.

Our model uses HF's RoPE layout ("rotate_half") and Llama's module structure, so the export is a pure
renaming of weights: no permutation, no reshaping. A TST-trained model is an ordinary Llama at
inference (the superposition phase only changed what the embedding was fed).

transformers, safetensors and tokenizers are imported inside the functions that need them, so this
module imports with torch alone.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch

from .errors import UserError
from .model import ModelConfig

__all__ = ["export_hf", "export_run", "from_hf_state_dict", "hf_config_dict", "load_run_model", "to_hf_state_dict"]

EOS_TOKEN = "<|endoftext|>"

# Per-layer parameter names: ours (torchtitan-like) → HF Llama.
_LAYER_KEYS = {
    "attention_norm.weight": "input_layernorm.weight",
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
}
_GLOBAL_KEYS = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
}
_LAYER_RE = re.compile(r"^layers\.(\d+)\.(.+)$")
_HF_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
# Prefixes added by torch.compile and activation-checkpoint wrappers; they are not part of the model.
_WRAPPER_RE = re.compile(r"(_orig_mod\.|_checkpoint_wrapped_module\.)")


def hf_config_dict(cfg: ModelConfig, *, bos_id: int | None = None, eos_id: int | None = None) -> dict:
    """A ``LlamaConfig``-compatible ``config.json`` dict for ``cfg``.

    The RoPE base is written both as transformers 5's ``rope_parameters`` and as the top-level
    ``rope_theta`` that transformers 4 reads (5 folds it into ``rope_parameters``).
    """
    theta = float(cfg.rope_theta)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "initializer_range": cfg.init_std,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def to_hf_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our weights under HF Llama names (detached, sharing storage with the model).

    With tied embeddings ``lm_head.weight`` is left out, as HF checkpoints do. FSDP2 DTensors are
    gathered with ``full_tensor()``, a collective: call it on every rank.
    """
    tied = model.config.tie_embeddings
    out = {}
    for key, tensor in model.state_dict().items():
        key = _WRAPPER_RE.sub("", key)
        if key == "lm_head.weight" and tied:
            continue
        if hasattr(tensor, "full_tensor"):
            tensor = tensor.full_tensor()
        out[_to_hf_key(key)] = tensor.detach()
    return out


def from_hf_state_dict(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """HF Llama weights → a state dict that ``Transformer(cfg).load_state_dict`` accepts (strict)."""
    out = {}
    for key, tensor in sd.items():
        if key.endswith("rotary_emb.inv_freq"):  # derived buffer some old checkpoints carry
            continue
        out[_from_hf_key(key)] = tensor
    if cfg.tie_embeddings:
        # Our model registers the shared tensor under both names; the HF file holds it once.
        out["lm_head.weight"] = out.get("tok_embeddings.weight")
    expected = set(_GLOBAL_KEYS) | {f"layers.{i}.{k}" for i in range(cfg.n_layers) for k in _LAYER_KEYS}
    missing = sorted(k for k in expected if out.get(k) is None)
    extra = sorted(set(out) - expected)
    if missing or extra:
        raise ValueError(f"HF state dict does not match the config: missing {missing[:5]}, unexpected {extra[:5]}")
    return out


def export_hf(model: torch.nn.Module, cfg: ModelConfig, out_dir: str | os.PathLike, *,
              tokenizer_file: str | os.PathLike | None = None, eos_id: int | None = None,
              bos_id: int | None = None, dtype: torch.dtype = torch.float32) -> Path:
    """Write an HF model directory loadable offline by ``AutoModelForCausalLM`` / ``AutoTokenizer``.

    Files: config.json, generation_config.json, model.safetensors and, with ``tokenizer_file`` (an HF
    ``tokenizer.json``), tokenizer.json + tokenizer_config.json. ``eos_id`` defaults to the id of
    ``<|endoftext|>`` in the tokenizer when it has one. Everything is written to a temporary sibling
    directory that is renamed into place at the end, so ``out_dir`` is either complete or absent.
    Raises :class:`UserError` if ``out_dir`` exists and is not empty. Returns ``out_dir``.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"export directory {out} already exists and is not empty; choose a new path or remove it")

    tok_config = None
    if tokenizer_file is not None:
        eos_id, tok_config = _tokenizer_config(Path(tokenizer_file), eos_id, bos_id, cfg)

    # Cast and move once; contiguous because safetensors writes raw storage.
    weights = {k: v.to(device="cpu", dtype=dtype).contiguous() for k, v in to_hf_state_dict(model).items()}
    config = hf_config_dict(cfg, bos_id=bos_id, eos_id=eos_id)
    config["torch_dtype"] = str(dtype).removeprefix("torch.")
    generation = {"_from_model_config": True,
                  **{k: v for k, v in (("bos_token_id", bos_id), ("eos_token_id", eos_id)) if v is not None}}

    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by an export that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the export is meant to be shared
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        _write_json(tmp / "config.json", config)
        _write_json(tmp / "generation_config.json", generation)
        if tok_config is not None:
            shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
            _write_json(tmp / "tokenizer_config.json", tok_config)
        if out.exists():
            out.rmdir()  # empty (checked above); os.replace cannot always replace a directory
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _tokenizer_config(path: Path, eos_id: int | None, bos_id: int | None, cfg: ModelConfig) -> tuple[int | None, dict]:
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on unreadable files
        raise UserError(f"cannot read tokenizer {path}: {exc}") from None
    if eos_id is None:
        eos_id = tok.token_to_id(EOS_TOKEN)
    if tok.get_vocab_size(with_added_tokens=True) > cfg.vocab_size:
        raise UserError(f"tokenizer {path} has {tok.get_vocab_size()} tokens but the model only {cfg.vocab_size}")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": cfg.max_seq_len,
        "clean_up_tokenization_spaces": False,
    }
    if eos_id is not None:
        config["eos_token"] = tok.id_to_token(eos_id)
    if bos_id is not None:
        config["bos_token"] = tok.id_to_token(bos_id)
    return eos_id, config


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _to_hf_key(key: str) -> str:
    if key in _GLOBAL_KEYS:
        return _GLOBAL_KEYS[key]
    m = _LAYER_RE.match(key)
    if m is None or m.group(2) not in _LAYER_KEYS:
        raise ValueError(f"no Hugging Face name for parameter {key!r}")
    return f"model.layers.{m.group(1)}.{_LAYER_KEYS[m.group(2)]}"


_HF_GLOBAL = {v: k for k, v in _GLOBAL_KEYS.items()}
_HF_LAYER = {v: k for k, v in _LAYER_KEYS.items()}


def _from_hf_key(key: str) -> str:
    if key in _HF_GLOBAL:
        return _HF_GLOBAL[key]
    m = _HF_LAYER_RE.match(key)
    if m is None or m.group(2) not in _HF_LAYER:
        raise ValueError(f"unexpected Hugging Face parameter {key!r} for a Llama model")
    return f"layers.{m.group(1)}.{_HF_LAYER[m.group(2)]}"


def load_run_model(run_dir: Path):
    """Rebuild a run's model and load the weights of its latest sound checkpoint → (model, model_cfg, cfg, meta).

    The checkpoint must match the run's config (the same fingerprint a resume checks) and pass its
    integrity manifest; its files are read with the safe loaders of :mod:`tst_train.checkpoint`.
    """
    from . import checkpoint, rundir
    from .data.loader import check_data_dir
    from .model import Transformer
    from .train import build_model, fingerprint
    cfg = rundir.read_config(run_dir)
    path = checkpoint.latest_valid(run_dir / "checkpoints")
    if path is None:
        raise UserError(f"{run_dir} has no checkpoint to export (train it first, or to the end)")
    meta = check_data_dir(cfg.data.path)
    mcfg = build_model(cfg, meta["vocab_size"])
    model = Transformer(mcfg)
    checkpoint.load_model_weights(path, model, fingerprint(cfg, mcfg, meta))
    return model.eval(), mcfg, cfg, meta


def export_run(run_dir: Path, out: Path) -> None:
    """``tst export``: a run directory's latest checkpoint → a Hugging Face ``LlamaForCausalLM`` directory."""
    model, mcfg, cfg, meta = load_run_model(run_dir)
    tok = Path(cfg.data.path) / "tokenizer.json"
    export_hf(model, mcfg, out, tokenizer_file=tok if tok.is_file() else None, eos_id=meta.get("eos_id"),
              dtype=torch.float32)
