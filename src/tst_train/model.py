"""A Llama-3 style decoder whose input embedding accepts bags of tokens (TST's superposition phase).

Pre-norm RMSNorm, RoPE (Hugging Face "rotate_half" layout, so the HF export is a plain weight copy),
grouped-query attention through ``F.scaled_dot_product_attention``, SwiGLU MLP, final RMSNorm and an
untied LM head by default (the paper unties SmolLM2's embeddings). The only TST-specific part is the
input embedding, :class:`tst.SuperposedEmbedding`: tokens ``(B, L)`` or bags ``(B, L, s)`` both become
``(B, L, d)``, and everything after it is the same model in both phases.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import tst

from .moe import MoE

__all__ = ["ModelConfig", "PRESETS", "Transformer", "model_config", "scaled_shape"]


@dataclass
class ModelConfig:
    dim: int
    """Width of the residual stream (HF ``hidden_size``)."""
    n_layers: int
    """Number of transformer blocks."""
    n_heads: int
    """Query heads; ``head_dim = dim // n_heads``."""
    n_kv_heads: int
    """Key/value heads (grouped-query attention); must divide ``n_heads``."""
    ffn_dim: int
    """Hidden width of the SwiGLU MLP (HF ``intermediate_size``)."""
    vocab_size: int
    """Rows of the embedding and the LM head; comes from the tokenizer."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    rope_theta: float = 10000.0
    """RoPE base wavelength."""
    max_seq_len: int = 2048
    """Longest sequence (latent positions) the RoPE cache covers; longer inputs raise ``ValueError``."""
    tie_embeddings: bool = False
    """Share the LM head with the input embedding. The paper trains untied."""
    init_std: float = 0.02
    """Standard deviation of the normal init of embeddings and linear layers."""
    qk_norm: bool = False
    """RMSNorm on each head's queries and keys before RoPE (Qwen3; HF ``q_norm``/``k_norm``)."""
    n_experts: int = 0
    """Mixture of experts: routed SwiGLU experts per block, each ``ffn_dim`` wide (0 = a dense SwiGLU MLP)."""
    top_k: int = 0
    """Experts each position goes through (HF ``num_experts_per_tok``)."""
    norm_topk_prob: bool = True
    """Renormalise the chosen experts' router probabilities to sum to 1 (HF ``norm_topk_prob``)."""
    shared_ffn_dim: int = 0
    """Width of an always-on shared SwiGLU expert next to the routed ones (0 = none, as Qwen3-MoE)."""

    def __post_init__(self) -> None:
        if self.dim % self.n_heads:
            raise ValueError(f"dim={self.dim} is not a multiple of n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
        if self.n_experts and not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"top_k={self.top_k} must be between 1 and n_experts={self.n_experts}")
        if self.top_k and not self.n_experts:
            raise ValueError(f"top_k={self.top_k} needs n_experts (a dense model routes nothing)")
        if self.shared_ffn_dim and not self.n_experts:
            raise ValueError("shared_ffn_dim needs n_experts (a shared expert sits next to routed ones)")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


# Shapes without a vocabulary (it comes from the tokenizer). In "gpu-*" names the size counts the
# transformer blocks only (no embedding, no LM head), which does not depend on the vocabulary. SmolLM shapes and their rope_theta /
# norm_eps / max_seq_len come from the public HF config.json of HuggingFaceTB/SmolLM2-135M, -360M and
# SmolLM3-3B (see docs/paper_notes.md §2.2); the paper runs them untied on Llama-3 modelling code.
PRESETS: dict[str, dict] = {
    # ~0.62M params at vocab 4096; for tests and CPU demos.
    "tiny": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=176, max_seq_len=1024),
    # ~2.8M params at vocab 8192.
    "cpu-small": dict(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=344, max_seq_len=1024),
    # ~8.2M params at vocab 8192.
    "cpu-medium": dict(dim=256, n_layers=6, n_heads=4, n_kv_heads=2, ffn_dim=688, max_seq_len=1024),
    # GPU experiments: ~25M / ~50M non-embedding parameters, head_dim 64.
    "gpu-25m": dict(dim=512, n_layers=8, n_heads=8, n_kv_heads=4, ffn_dim=1536, max_seq_len=2048),
    "gpu-50m": dict(dim=640, n_layers=10, n_heads=10, n_kv_heads=5, ffn_dim=1920, max_seq_len=2048),
    # The paper's "270M" (SmolLM2-135M shape, untied).
    "smollm2-135m": dict(dim=576, n_layers=30, n_heads=9, n_kv_heads=3, ffn_dim=1536,
                         rope_theta=100000.0, norm_eps=1e-5, max_seq_len=8192),
    # The paper's "600M" (SmolLM2-360M shape, untied).
    "smollm2-360m": dict(dim=960, n_layers=32, n_heads=15, n_kv_heads=5, ffn_dim=2560,
                         rope_theta=100000.0, norm_eps=1e-5, max_seq_len=8192),
    # The paper's "3B" (SmolLM3-3B shape, untied). SmolLM3 skips RoPE in every 4th layer (NoPE); the
    # paper does not say whether it kept that, so every layer here uses RoPE.
    "smollm3-3b": dict(dim=2048, n_layers=36, n_heads=16, n_kv_heads=4, ffn_dim=11008,
                       rope_theta=5000000.0, norm_eps=1e-6, max_seq_len=65536),
    # Mixtures of experts in Qwen3-MoE's form (QK-norm, top-k softmax router renormalised over the k, no
    # shared expert); ffn_dim is each expert's width. The paper's 10B-A1B shape is not published (docs/
    # paper_notes.md §7), so these keep Qwen3-30B-A3B's proportions (8 of 128 experts active) scaled down.
    # ~1.1M parameters (0.7M active) at vocab 4096; for tests and CPU runs: 8 experts, top-2.
    "moe-tiny": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=176, max_seq_len=1024,
                     qk_norm=True, n_experts=8, top_k=2),
    # ~8.6M parameters (3.1M active) at vocab 8192: 32 fine-grained experts, top-4.
    "qwen3-moe-tiny": dict(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=2048,
                           rope_theta=1000000.0, norm_eps=1e-6, qk_norm=True, n_experts=32, top_k=4),
    # GPU: gpu-25m's active FLOPs (4 experts of 384 = its SwiGLU of 1536) with 8x its MLP parameters: 32 experts, top-4.
    "gpu-25m-moe": dict(dim=512, n_layers=8, n_heads=8, n_kv_heads=4, ffn_dim=384, max_seq_len=2048,
                        qk_norm=True, n_experts=32, top_k=4),
    # GPU: ~0.85B parameters in the blocks, ~0.16B active per position with the head (64 experts, top-8).
    "qwen3-moe-1b": dict(dim=1024, n_layers=16, n_heads=16, n_kv_heads=4, ffn_dim=256, max_seq_len=4096,
                         rope_theta=1000000.0, norm_eps=1e-6, qk_norm=True, n_experts=64, top_k=8),
}


def scaled_shape(dim: int) -> dict:
    """The shape of a width in the Llama-3 family, for width studies: head_dim 64 (at least 4 heads),
    two query heads per key/value head, SwiGLU width 8·dim/3 rounded up to a multiple of 8.

    It reproduces the presets' rule (``tiny``, ``cpu-small``, ``cpu-medium`` at 64, 128, 256), so a sweep
    over widths changes the width and nothing else about the architecture.
    """
    if dim < 8 or dim % 8:
        raise ValueError(f"dim={dim} must be a positive multiple of 8")
    n_heads = max(4, dim // 64)
    if dim % n_heads or (dim // n_heads) % 2:
        raise ValueError(f"dim={dim} does not split into {n_heads} heads of even size")
    return dict(dim=dim, n_heads=n_heads, n_kv_heads=max(1, n_heads // 2), ffn_dim=8 * math.ceil(dim / 3))


def model_config(preset: str, vocab_size: int, **overrides) -> ModelConfig:
    """The :class:`ModelConfig` of a named preset with the tokenizer's vocabulary; overrides win."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    return ModelConfig(**{**PRESETS[preset], "vocab_size": vocab_size, **overrides})


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 and cast back before the gain, as HF's LlamaRMSNorm (bf16 parity)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def rope_cache(head_dim: int, max_seq_len: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin ``(max_seq_len, head_dim)`` in float32, with the same arithmetic as HF's default RoPE."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float, device=device) / head_dim))
    freqs = torch.arange(max_seq_len, dtype=torch.float, device=device)[:, None] * inv_freq  # (T, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, hd): the two halves rotate together ("rotate_half")
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``(B, H, L, hd)`` by position; cos/sin ``(L, hd)`` already in x's dtype."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        # Qwen3's QK-norm: one gain per head dimension, shared by all heads, before RoPE
        self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        q = self.q_norm(self.wq(x).view(B, L, self.n_heads, self.head_dim)).transpose(1, 2)  # (B, H, L, hd)
        k = self.k_norm(self.wk(x).view(B, L, self.n_kv_heads, self.head_dim)).transpose(1, 2)  # (B, Hkv, L, hd)
        v = self.wv(x).view(B, L, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, L, hd)
        # Cast here, not once per model: under autocast or FSDP mixed precision q may be bf16 while the
        # buffers stay float32, and a float32 cos would silently promote q back to float32.
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.n_kv_heads != self.n_heads:
            # Query head j reads kv head j // n_rep (HF's repeat_kv order). Repeating explicitly keeps
            # every SDPA backend available (enable_gqa=True rules out the memory-efficient kernel).
            n_rep = self.n_heads // self.n_kv_heads
            k = k.repeat_interleave(n_rep, dim=1)  # (B, H, L, hd)
            v = v.repeat_interleave(n_rep, dim=1)  # (B, H, L, hd)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, L, hd)
        return self.wo(y.transpose(1, 2).reshape(B, L, -1))  # (B, L, d)


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x); w1 is HF's gate_proj, w3 up_proj, w2 down_proj."""

    def __init__(self, dim: int, ffn_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, ffn_dim, bias=False)
        self.w2 = nn.Linear(ffn_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, ffn_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        if cfg.n_experts:  # a mixture of experts in place of the dense MLP
            shared = FeedForward(cfg.dim, cfg.shared_ffn_dim) if cfg.shared_ffn_dim else None
            self.feed_forward = MoE(cfg.dim, cfg.ffn_dim, cfg.n_experts, cfg.top_k, cfg.norm_topk_prob, shared)
        else:
            self.feed_forward = FeedForward(cfg.dim, cfg.ffn_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin)  # (B, L, d)
        return h + self.feed_forward(self.ffn_norm(h))  # (B, L, d)


class Transformer(nn.Module):
    """Llama-3 decoder with a bag-aware input embedding. No loss, optimizer or distributed code inside."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        # Build on meta, then materialise once where the caller asked: skips nn.Linear's default init
        # (wasted work on big models, and RNG draws), so the weights depend only on init_weights() and
        # the RNG state. `with torch.device("meta"): Transformer(cfg)` stays on meta for FSDP2 setups.
        device = torch.get_default_device()
        with torch.device("meta"):
            self.tok_embeddings = tst.SuperposedEmbedding(cfg.vocab_size, cfg.dim)
            self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
            self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
            self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
            cos, sin = rope_cache(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        # Non-persistent: derived from the config, so they stay out of checkpoints and exports.
        self.register_buffer("rope_cos", cos, persistent=False)  # (max_seq_len, hd)
        self.register_buffer("rope_sin", sin, persistent=False)  # (max_seq_len, hd)
        self.to_empty(device=device)
        self.init_weights()

    def _apply(self, fn, recurse=True):
        # to_empty() and some device moves give each module its own new Parameter, which would
        # silently untie the LM head from the embedding; tie them again after every such move.
        super()._apply(fn, recurse)
        if self.config.tie_embeddings:
            self.lm_head.weight = self.tok_embeddings.weight
        return self

    @torch.no_grad()
    def init_weights(self) -> None:
        """(Re)initialise every parameter and the RoPE buffers; deterministic given torch's RNG state.

        Linears and the embedding draw from N(0, init_std²); the residual-branch outputs (wo, w2) use
        init_std / sqrt(2·n_layers) so the residual stream's variance does not grow with depth
        (GPT-2's scaling). Norm gains are 1. Safe after ``to_empty(device=...)`` from a meta model.
        """
        cfg = self.config
        out_std = cfg.init_std / math.sqrt(2 * cfg.n_layers)
        nn.init.normal_(self.tok_embeddings.weight, std=cfg.init_std)
        for layer in self.layers:
            ffn = _swiglu_weights(layer.feed_forward)  # [(w1, w3, w2)]: the dense MLP, or the experts (+ shared)
            # This draw order is the dense model's since the first records: keep it, or seeds change meaning.
            for w in (layer.attention.wq.weight, layer.attention.wk.weight, layer.attention.wv.weight,
                      *(w for w1, w3, _ in ffn for w in (w1, w3))):
                nn.init.normal_(w, std=cfg.init_std)
            for w in (layer.attention.wo.weight, *(w2 for _, _, w2 in ffn)):
                nn.init.normal_(w, std=out_std)
            if isinstance(layer.feed_forward, MoE):
                moe = layer.feed_forward
                nn.init.normal_(moe.router.gate.weight, std=cfg.init_std)
                for buf in (moe.router.expert_bias, moe.load, moe.sums):
                    buf.zero_()
            for norm in (layer.attention_norm, layer.ffn_norm, layer.attention.q_norm, layer.attention.k_norm):
                if isinstance(norm, RMSNorm):
                    norm.reset_parameters()
        self.norm.reset_parameters()
        if not cfg.tie_embeddings:
            nn.init.normal_(self.lm_head.weight, std=cfg.init_std)
        # Compute in float32 on the buffer's device, then copy into the existing buffer (keeps its dtype).
        cos, sin = rope_cache(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta, device=self.rope_cos.device)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)

    def forward(self, tokens: torch.Tensor, *, return_hidden: bool = False,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """tokens ``(B, L)`` or bags ``(B, L, s)`` → logits ``(B, L, V)``, or with ``return_hidden`` the
        final-normed hidden states ``(B, L, d)`` (for a fused LM-head loss on ``lm_head.weight``).

        ``positions`` ``(B, L)``: RoPE positions (default ``0 … L−1``), e.g. restarting at each document."""
        h = self.tok_embeddings(tokens)  # (B, L, d): bags are averaged here and nowhere else
        if h.dim() != 3:
            raise ValueError(f"tokens must be (B, L) or bags (B, L, s); got shape {tuple(tokens.shape)}")
        seq_len = h.shape[1]  # latent positions: the bag size never reaches the transformer
        if seq_len > self.config.max_seq_len:
            raise ValueError(f"sequence of {seq_len} positions exceeds max_seq_len={self.config.max_seq_len}; "
                             "build the model with a larger max_seq_len")
        if positions is None:
            cos, sin = self.rope_cos[:seq_len], self.rope_sin[:seq_len]  # (L, hd): positions 0..L-1
        else:
            cos, sin = self.rope_cos[positions].unsqueeze(1), self.rope_sin[positions].unsqueeze(1)  # (B, 1, L, hd)
        for layer in self.layers:
            h = layer(h, cos, sin)
        h = self.norm(h)  # (B, L, d)
        if return_hidden:
            return h
        return self.lm_head(h)  # (B, L, V)

    def moe_layers(self) -> list[MoE]:
        """The blocks' mixture-of-experts modules (empty for a dense model)."""
        return [layer.feed_forward for layer in self.layers if isinstance(layer.feed_forward, MoE)]

    def router_aux_loss(self) -> torch.Tensor | None:
        """The load-balancing loss of the last training forward, averaged over MoE layers (None when dense)."""
        losses = [m.aux_loss for m in self.moe_layers() if m.aux_loss is not None]
        return torch.stack(losses).mean() if losses else None

    def num_active_params(self) -> int:
        """Parameters one position uses: all of them but the experts it is not routed to."""
        c, n = self.config, self.num_params()
        if c.n_experts:
            n -= c.n_layers * (c.n_experts - c.top_k) * 3 * c.dim * c.ffn_dim
        return n

    def num_params(self, exclude_embedding: bool = False) -> int:
        """Parameter count (shared tensors once). ``exclude_embedding`` drops the input embedding table,
        which with tied embeddings is also the LM head."""
        params = {id(p): p for p in self.parameters()}
        if exclude_embedding:
            params.pop(id(self.tok_embeddings.weight), None)
        return sum(p.numel() for p in params.values())

    def flops_per_position(self, seq_len: int) -> float:
        """Training (forward+backward) FLOPs per position at a context of ``seq_len`` latent positions."""
        c = self.config
        return tst.flops_per_position(dim=c.dim, n_layers=c.n_layers, n_heads=c.n_heads, n_kv_heads=c.n_kv_heads,
                                      ffn_dim=c.ffn_dim, vocab_size=c.vocab_size, seq_len=seq_len,
                                      n_experts=c.n_experts, top_k=c.top_k, shared_ffn_dim=c.shared_ffn_dim)


def _swiglu_weights(ffn: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(w1, w3, w2) of a block's feed-forward: the dense MLP's, or the experts' 3-D ones and the shared expert's."""
    dense = [ffn] if isinstance(ffn, FeedForward) else [m for m in (ffn.shared,) if m is not None]
    experts = [(ffn.experts.w1, ffn.experts.w3, ffn.experts.w2)] if isinstance(ffn, MoE) else []
    return experts + [(m.w1.weight, m.w3.weight, m.w2.weight) for m in dense]
