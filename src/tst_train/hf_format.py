"""The Hugging Face format of our model: parameter names, ``config.json`` both ways, state dicts.

A dense model is a ``LlamaForCausalLM`` (with QK-norm: a ``Qwen3ForCausalLM``), a mixture of experts a
``Qwen3MoeForCausalLM``. Our model uses HF's RoPE layout ("rotate_half") and their module structure, so the
conversion is a renaming of weights — no permutation — plus, for experts, one 3-D tensor per projection
written as one matrix per expert (``mlp.experts.{e}.gate_proj.weight``: the format of the published Qwen3-MoE
checkpoints, which transformers 4 and 5 both read). Imports torch only.
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
_QK_NORM_KEYS = {"attention.q_norm.weight": "self_attn.q_norm.weight",
                 "attention.k_norm.weight": "self_attn.k_norm.weight"}
_ROUTER_KEYS = {"feed_forward.router.gate.weight": "mlp.gate.weight"}
# Our 3-D expert weights (E, ·, ·) and the per-expert HF names of their slices
_EXPERT_KEYS = {"feed_forward.experts.w1": "gate_proj", "feed_forward.experts.w3": "up_proj",
                "feed_forward.experts.w2": "down_proj"}
_EXPERT_BIAS = "feed_forward.router.expert_bias"  # auxiliary-loss-free balancing; HF has no such buffer
_GLOBAL_KEYS = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
}
_LAYER_RE = re.compile(r"^layers\.(\d+)\.(.+)$")
_HF_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
# HF experts: per expert ("…mlp.experts.3.gate_proj.weight") or fused ("…mlp.experts.gate_up_proj")
_HF_EXPERT_RE = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(?:(\d+)\.(gate_proj|up_proj|down_proj)\.weight|"
                           r"(?P<fused>gate_up_proj|down_proj))$")
# Prefixes added by torch.compile and activation-checkpoint wrappers; they are not part of the model.
_WRAPPER_RE = re.compile(r"(_orig_mod\.|_checkpoint_wrapped_module\.)")


def hf_architecture(cfg: ModelConfig) -> tuple[str, str]:
    """(model_type, architecture) of ``cfg`` in transformers; a shape HF has no class for is a ``UserError``."""
    if cfg.n_experts:
        if not cfg.qk_norm or cfg.shared_ffn_dim:
            raise UserError("this mixture of experts has no Hugging Face class: Qwen3-MoE has QK-norm and no shared "
                            "expert (use --model.preset moe-tiny, qwen3-moe-tiny or qwen3-moe-1b)")
        return "qwen3_moe", "Qwen3MoeForCausalLM"
    return ("qwen3", "Qwen3ForCausalLM") if cfg.qk_norm else ("llama", "LlamaForCausalLM")


def hf_config_dict(cfg: ModelConfig, *, bos_id: int | None = None, eos_id: int | None = None) -> dict:
    """A ``config.json`` dict for ``cfg`` (Llama, Qwen3 or Qwen3-MoE, :func:`hf_architecture`).

    The RoPE base is written both as transformers 5's ``rope_parameters`` and as the top-level
    ``rope_theta`` that transformers 4 reads (5 folds it into ``rope_parameters``).
    """
    theta = float(cfg.rope_theta)
    model_type, arch = hf_architecture(cfg)
    extra = {}
    if model_type == "qwen3_moe":
        extra = {"num_experts": cfg.n_experts, "num_experts_per_tok": cfg.top_k, "moe_intermediate_size": cfg.ffn_dim,
                 "norm_topk_prob": cfg.norm_topk_prob, "decoder_sparse_step": 1, "mlp_only_layers": [],
                 "output_router_logits": False}
    if model_type != "llama":
        extra |= {"use_sliding_window": False, "sliding_window": None}
    return {
        "architectures": [arch],
        "model_type": model_type,
        **extra,
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
    """Our weights under HF names (detached, sharing storage with the model).

    With tied embeddings ``lm_head.weight`` is left out, as HF checkpoints do. FSDP2 DTensors are
    gathered with ``full_tensor()``, a collective: call it on every rank. A mixture of experts whose
    auxiliary-loss-free bias moved has no HF form (the bias changes which experts are chosen): ``UserError``.
    """
    tied = model.config.tie_embeddings
    hf_architecture(model.config)
    out = {}
    for key, tensor in model.state_dict().items():
        key = _WRAPPER_RE.sub("", key)
        if key == "lm_head.weight" and tied:
            continue
        if hasattr(tensor, "full_tensor"):
            tensor = tensor.full_tensor()
        m = _LAYER_RE.match(key)
        if m and m.group(2) == _EXPERT_BIAS:
            if bool(tensor.any()):
                raise UserError("this model was trained with --model.router_bias_rate > 0: its experts' choice bias "
                                "has no place in a Hugging Face Qwen3-MoE model, so it cannot be exported")
            continue
        if m and m.group(2) in _EXPERT_KEYS:  # (E, ·, ·) → one matrix per expert
            name = _EXPERT_KEYS[m.group(2)]
            out.update({f"model.layers.{m.group(1)}.mlp.experts.{e}.{name}.weight": w.detach()
                        for e, w in enumerate(tensor)})
            continue
        out[_to_hf_key(key)] = tensor.detach()
    return out


def from_hf_state_dict(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """HF Llama / Qwen3 / Qwen3-MoE weights → a state dict that ``Transformer(cfg).load_state_dict`` accepts
    (strict). Experts come per expert (``mlp.experts.{e}.gate_proj.weight``) or fused as transformers 5 keeps
    them in memory (``mlp.experts.gate_up_proj`` ``(E, 2·ffn, d)``, ``mlp.experts.down_proj``)."""
    out, experts = {}, {}
    for key, tensor in sd.items():
        if key.endswith("rotary_emb.inv_freq"):  # derived buffer some old checkpoints carry
            continue
        m = _HF_EXPERT_RE.match(key)
        if m and cfg.n_experts:
            layer, e, name = m.group(1), m.group(2), m.group(3) or m.group("fused")
            if e is None and name == "gate_up_proj":  # fused: gate rows first, then up (HF's chunk(2))
                gate, up = tensor.chunk(2, dim=1)
                experts[(layer, "gate_proj")], experts[(layer, "up_proj")] = list(gate), list(up)
            elif e is None:
                experts[(layer, name)] = list(tensor)
            else:
                experts.setdefault((layer, name), {})[int(e)] = tensor
            continue
        out[_from_hf_key(key)] = tensor
    ours = {v: k for k, v in _EXPERT_KEYS.items()}
    for (layer, name), mats in experts.items():
        if isinstance(mats, dict):
            if sorted(mats) != list(range(cfg.n_experts)):
                raise ValueError(f"HF state dict: layer {layer} has experts {sorted(mats)[:5]}…, not 0…{cfg.n_experts - 1}")
            mats = [mats[e] for e in range(cfg.n_experts)]
        out[f"layers.{layer}.{ours[name]}"] = torch.stack(mats)
    if cfg.tie_embeddings:
        # Our model registers the shared tensor under both names; the HF file holds it once.
        out["lm_head.weight"] = out.get("tok_embeddings.weight")
    layer_keys = _layer_keys(cfg)
    if cfg.n_experts:
        for i in range(cfg.n_layers):  # HF has no choice bias: it is zero
            out[f"layers.{i}.{_EXPERT_BIAS}"] = torch.zeros(cfg.n_experts)
        layer_keys |= {_EXPERT_BIAS}
    expected = set(_GLOBAL_KEYS) | {f"layers.{i}.{k}" for i in range(cfg.n_layers) for k in layer_keys}
    missing = sorted(k for k in expected if out.get(k) is None)
    extra = sorted(set(out) - expected)
    if missing or extra:
        raise ValueError(f"HF state dict does not match the config: missing {missing[:5]}, unexpected {extra[:5]}")
    return out


def _layer_keys(cfg: ModelConfig) -> set[str]:
    """Our per-layer parameter names (without the ``layers.N.`` prefix) for ``cfg``'s shape."""
    keys = set(_LAYER_KEYS) | (set(_QK_NORM_KEYS) if cfg.qk_norm else set())
    if cfg.n_experts:
        keys = (keys - {k for k in _LAYER_KEYS if k.startswith("feed_forward.")}) | set(_ROUTER_KEYS) | set(_EXPERT_KEYS)
    return keys


def _moe_fields(config: dict, where: str) -> dict:
    """The mixture-of-experts fields of a Qwen3-MoE ``config.json`` (types and ranges already checked, by
    :func:`model_config_from_hf`) as :class:`ModelConfig` overrides."""
    if config.get("mlp_only_layers") or config.get("decoder_sparse_step", 1) != 1:
        raise UserError(f"{where}: dense layers between the expert layers (mlp_only_layers / decoder_sparse_step) "
                        "are not implemented; every layer must be a mixture of experts")
    experts = config.get("num_experts") or config.get("num_local_experts")
    return {"n_experts": experts, "top_k": config["num_experts_per_tok"], "ffn_dim": config["moe_intermediate_size"],
            "norm_topk_prob": bool(config.get("norm_topk_prob", False)), "qk_norm": True}


_MODEL_TYPES = ("llama", "qwen3", "qwen3_moe")


def model_config_from_hf(config: dict, where: str = "config.json") -> ModelConfig:
    """A Hugging Face Llama / Qwen3 / Qwen3-MoE ``config.json`` → our :class:`ModelConfig` (the inverse of
    :func:`hf_config_dict`).

    Raises :class:`UserError` for a malformed ``config.json`` (``received.check_hf_config``: field types and ranges,
    a mixture of experts' own fields, ids inside the vocabulary) and for anything our model does not implement
    (another architecture, biases, RoPE scaling, a head size other than hidden_size / heads, sliding-window attention).
    """
    from .received import check_hf_config
    check_hf_config(config, where)
    def need(cond: bool, what: str) -> None:
        if not cond:
            raise UserError(f"{where}: {what}; only Llama, Qwen3 and Qwen3-MoE models without biases, RoPE scaling "
                            "or sliding windows can be loaded")

    model_type = config.get("model_type")
    need(model_type in _MODEL_TYPES, f"model_type is {model_type!r}, not one of {', '.join(_MODEL_TYPES)}")
    need(not config.get("use_sliding_window"), "it uses sliding-window attention")
    moe = _moe_fields(config, where) if model_type == "qwen3_moe" else {"qk_norm": model_type == "qwen3"}
    ffn_dim = moe.pop("ffn_dim", None) or config.get("intermediate_size")
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
                           ffn_dim=ffn_dim, vocab_size=config["vocab_size"],
                           norm_eps=config.get("rms_norm_eps", 1e-6),
                           rope_theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
                           max_seq_len=config.get("max_position_embeddings", 2048),
                           tie_embeddings=bool(config.get("tie_word_embeddings", False)),
                           init_std=config.get("initializer_range", 0.02), **moe)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{where} is not a usable model config ({type(e).__name__}: {e})") from None


_HF_GLOBAL = {v: k for k, v in _GLOBAL_KEYS.items()}
_HF_LAYER = {v: k for k, v in (_LAYER_KEYS | _QK_NORM_KEYS | _ROUTER_KEYS).items()}


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
    return _rename(key, _GLOBAL_KEYS, _LAYER_RE, _LAYER_KEYS | _QK_NORM_KEYS | _ROUTER_KEYS, "model.layers.",
                   "no Hugging Face name for parameter")


def _from_hf_key(key: str) -> str:
    return _rename(key, _HF_GLOBAL, _HF_LAYER_RE, _HF_LAYER, "layers.", "unexpected Hugging Face parameter")
