"""FLOP accounting against hand arithmetic and a hand-built tiny Llama-like module."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tst.flops import decoder_matmul_params, flops_per_position, training_flops_per_position
from tst_train.metrics import mfu


def test_training_flops_hand_arithmetic():
    # 6·N + 12·layers·d·seq = 6·1000 + 12·2·64·128 = 6000 + 196608
    assert training_flops_per_position(1000, 2, 64, 128) == 202_608.0
    assert training_flops_per_position(0, 1, 1, 1) == 12.0
    assert training_flops_per_position(7, 0, 64, 128) == 42.0


def test_training_flops_scale_with_latent_seq_len_only():
    a = training_flops_per_position(10**6, 4, 256, 512)
    b = training_flops_per_position(10**6, 4, 256, 1024)
    assert b - a == 12 * 4 * 256 * 512


class TinyBlock(nn.Module):
    def __init__(self, d, n_heads, n_kv, ffn):
        super().__init__()
        hd = d // n_heads
        self.attn_norm = nn.RMSNorm(d)
        self.q = nn.Linear(d, n_heads * hd, bias=False)
        self.k = nn.Linear(d, n_kv * hd, bias=False)
        self.v = nn.Linear(d, n_kv * hd, bias=False)
        self.o = nn.Linear(n_heads * hd, d, bias=False)
        self.mlp_norm = nn.RMSNorm(d)
        self.gate = nn.Linear(d, ffn, bias=False)
        self.up = nn.Linear(d, ffn, bias=False)
        self.down = nn.Linear(ffn, d, bias=False)


class TinyLlama(nn.Module):
    def __init__(self, d, layers, n_heads, n_kv, ffn, vocab):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(TinyBlock(d, n_heads, n_kv, ffn) for _ in range(layers))
        self.norm = nn.RMSNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)


@pytest.mark.parametrize("d, layers, heads, kv, ffn, vocab", [
    (64, 2, 4, 4, 172, 101),   # multi-head attention
    (96, 3, 6, 2, 256, 257),   # grouped-query attention
    (32, 1, 4, 1, 64, 50),     # multi-query attention
])
def test_decoder_matmul_params_counts_linear_layers(d, layers, heads, kv, ffn, vocab):
    model = TinyLlama(d, layers, heads, kv, ffn, vocab)
    linear = sum(p.numel() for m in model.modules() if isinstance(m, nn.Linear) for p in m.parameters())
    assert decoder_matmul_params(d, layers, heads, kv, ffn, vocab) == linear
    # The embedding lookup and the norms are not matmuls.
    total = sum(p.numel() for p in model.parameters())
    assert total - linear == vocab * d + (2 * layers + 1) * d


def test_mfu():
    assert mfu(5e12, 1e13) == 0.5
    assert mfu(5e12, None) is None
    assert mfu(5e12, 0) is None


def test_flops_per_position_is_the_models_formula():
    """The one formula: the trainer's model reports exactly what tst.flops_per_position computes."""
    from tst_train.model import Transformer, model_config
    cfg = model_config("tiny", 512)
    with torch.device("meta"):
        model = Transformer(cfg)
    expected = training_flops_per_position(
        decoder_matmul_params(cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.ffn_dim, cfg.vocab_size),
        cfg.n_layers, cfg.dim, 64)
    assert model.flops_per_position(64) == expected == flops_per_position(
        dim=cfg.dim, n_layers=cfg.n_layers, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads, ffn_dim=cfg.ffn_dim,
        vocab_size=cfg.vocab_size, seq_len=64)
