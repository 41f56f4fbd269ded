"""FLOP accounting on *positions* (what the model computes on), never on data tokens.

A superposition step reads ``s×`` more data tokens than a baseline step but computes on the same
number of positions, so it costs the same FLOPs; throughput and MFU must be counted on positions.
:func:`flops_per_position` is the one formula; the reference trainer, its plan and its reports use it.
"""
from __future__ import annotations

__all__ = ["flops_per_position", "decoder_matmul_params", "training_flops_per_position"]


def decoder_matmul_params(d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, ffn_dim: int,
                          vocab_size: int, *, n_experts: int = 0, top_k: int = 0, shared_ffn_dim: int = 0) -> int:
    """Parameters that take part in a position's matmuls for a Llama-style decoder: attention, SwiGLU and LM head.

    With ``n_experts`` (a mixture of experts, each a SwiGLU of width ``ffn_dim``) a position goes through the
    router (``d_model × n_experts``), its ``top_k`` experts and the shared expert (width ``shared_ffn_dim``) —
    the *active* parameters; the other experts cost it nothing. The input embedding is a lookup (no matmul)
    and norms are elementwise, so neither counts.
    """
    head_dim = d_model // n_heads
    attn = d_model * head_dim * (n_heads + 2 * n_kv_heads) + n_heads * head_dim * d_model
    if n_experts:
        mlp = d_model * n_experts + top_k * 3 * d_model * ffn_dim + 3 * d_model * shared_ffn_dim
    else:
        mlp = 3 * d_model * ffn_dim
    return n_layers * (attn + mlp) + d_model * vocab_size


def training_flops_per_position(matmul_params: int, n_layers: int, d_model: int, seq_len: int) -> float:
    """Forward+backward FLOPs per position: ``6·N + 12·n_layers·d_model·seq_len``.

    ``6·N`` counts the weight matmuls (2 forward, 4 backward per parameter); the second term counts the
    attention scores and value products over a ``seq_len`` context (PaLM, App. B; torchtitan counts it
    the same way, without halving for the causal mask). ``seq_len`` is the *latent* length the model
    sees, which TST keeps equal to the baseline's.
    """
    return 6.0 * matmul_params + 12.0 * n_layers * d_model * seq_len


def flops_per_position(*, dim: int, n_layers: int, n_heads: int, n_kv_heads: int, ffn_dim: int,
                       vocab_size: int, seq_len: int, n_experts: int = 0, top_k: int = 0,
                       shared_ffn_dim: int = 0) -> float:
    """Training FLOPs per position of a Llama-style decoder at a context of ``seq_len`` latent positions
    (a mixture of experts: counted on its active parameters, see :func:`decoder_matmul_params`)."""
    n = decoder_matmul_params(dim, n_layers, n_heads, n_kv_heads, ffn_dim, vocab_size, n_experts=n_experts,
                              top_k=top_k, shared_ffn_dim=shared_ffn_dim)
    return training_flops_per_position(n, n_layers, dim, seq_len)
