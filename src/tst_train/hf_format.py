"""The Hugging Face Llama format of our model: parameter names, ``config.json`` both ways, state dicts.

Our model uses HF's RoPE layout ("rotate_half") and Llama's module structure, so the conversion is a
pure renaming of weights: no permutation, no reshaping. Imports torch only.
"""
from __future__ import annotations

import re

import torch

from .errors import UserError
from .model import ModelConfig

__all__ = ["from_hf_state_dict", "hf_config_dict", "model_config_from_hf", "to_hf_state_dict"]

EXPORT_INFO_FILE = "tst_export.json"  # our exports: which run and step, finished or not, the training context

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


def model_config_from_hf(config: dict, where: str = "config.json") -> ModelConfig:
    """A Hugging Face Llama ``config.json`` → our :class:`ModelConfig` (the inverse of :func:`hf_config_dict`).

    Raises :class:`UserError` for anything our model does not implement (another architecture, biases,
    RoPE scaling, a head size other than hidden_size / heads).
    """
    def need(cond: bool, what: str) -> None:
        if not cond:
            raise UserError(f"{where}: {what}; only Llama models without biases or RoPE scaling can be loaded")

    need(config.get("model_type") == "llama", f"model_type is {config.get('model_type')!r}, not 'llama'")
    need(config.get("hidden_act", "silu") == "silu", f"hidden_act is {config.get('hidden_act')!r}")
    need(not config.get("attention_bias") and not config.get("mlp_bias"), "the model has biases")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    need(rope.get("rope_type", rope.get("type", "default")) == "default", f"RoPE type {rope.get('rope_type')!r}")
    heads = config["num_attention_heads"]
    need(config.get("head_dim", config["hidden_size"] // heads) * heads == config["hidden_size"],
         "head_dim × num_attention_heads differs from hidden_size")
    try:
        return ModelConfig(dim=config["hidden_size"], n_layers=config["num_hidden_layers"], n_heads=heads,
                           n_kv_heads=config.get("num_key_value_heads") or heads,
                           ffn_dim=config["intermediate_size"], vocab_size=config["vocab_size"],
                           norm_eps=config.get("rms_norm_eps", 1e-6),
                           rope_theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
                           max_seq_len=config.get("max_position_embeddings", 2048),
                           tie_embeddings=bool(config.get("tie_word_embeddings", False)),
                           init_std=config.get("initializer_range", 0.02))
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{where} is not a usable Llama config ({type(e).__name__}: {e})") from None


_HF_GLOBAL = {v: k for k, v in _GLOBAL_KEYS.items()}
_HF_LAYER = {v: k for k, v in _LAYER_KEYS.items()}


def _rename(key: str, global_names: dict, layer_re: re.Pattern, layer_names: dict, layer_prefix: str,
            error: str) -> str:
    """One parameter name in the other convention: a global name, or ``<prefix>N.<layer name>``."""
    if key in global_names:
        return global_names[key]
    m = layer_re.match(key)
    if m is None or m.group(2) not in layer_names:
        raise ValueError(f"{error} {key!r}")
    return f"{layer_prefix}{m.group(1)}.{layer_names[m.group(2)]}"


def _to_hf_key(key: str) -> str:
    return _rename(key, _GLOBAL_KEYS, _LAYER_RE, _LAYER_KEYS, "model.layers.", "no Hugging Face name for parameter")


def _from_hf_key(key: str) -> str:
    return _rename(key, _HF_GLOBAL, _HF_LAYER_RE, _HF_LAYER, "layers.", "unexpected Llama parameter")
