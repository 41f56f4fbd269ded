"""SuperposedEmbedding / superpose against nn.Embedding and a transcription of the paper's Listing 2."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tst import SuperposedEmbedding, superpose


def listing2(weight: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Listing 2: look up offset 0, upcast to fp32, add offsets 1…s−1 one at a time, divide by s, cast back."""
    s = tokens.shape[-1]
    h = weight[tokens[..., 0]]
    dt = h.dtype
    h = h.to(torch.float32)
    for j in range(1, s):
        h = h + weight[tokens[..., j]].to(torch.float32)
    return (h / s).to(dt)


def make(V=23, d=8, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    ref = nn.Embedding(V, d).to(dtype)
    ours = SuperposedEmbedding(V, d).to(dtype)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def test_plain_tokens_bit_identical():
    ref, ours = make()
    tokens = torch.randint(0, 23, (3, 7))
    assert torch.equal(ours(tokens), ref(tokens))


def test_bags_of_one_bit_identical():
    ref, ours = make()
    tokens = torch.randint(0, 23, (3, 7))
    assert torch.equal(ours(tokens[..., None]), ref(tokens))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("s", [2, 3, 8])
def test_bag_mean_matches_listing2(dtype, s):
    ref, ours = make(dtype=dtype)
    tokens = torch.randint(0, 23, (2, 5, s))
    got = ours(tokens)
    assert got.dtype == dtype and got.shape == (2, 5, 8)
    expected = listing2(ref.weight.detach(), tokens)
    if dtype == torch.float32:
        # fp32 sums may associate differently from the sequential loop: equal to rounding.
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    else:
        # bf16: the fp32 sum of s bf16 values is exact for small s, so one final rounding → bit-identical.
        assert torch.equal(got, expected)


def test_bag_mean_manual_loop_fp32():
    _, ours = make()
    tokens = torch.randint(0, 23, (2, 4, 3))
    w = ours.weight.detach()
    manual = torch.stack([torch.stack([sum(w[t] for t in bag) / 3 for bag in row]) for row in tokens])
    torch.testing.assert_close(ours(tokens), manual, rtol=1e-6, atol=1e-7)


def test_state_dict_keys_identical_and_cross_loadable():
    ref, ours = make()
    assert list(ref.state_dict()) == list(ours.state_dict()) == ["weight"]
    plain = nn.Embedding(23, 8)
    plain.load_state_dict(ours.state_dict())
    assert torch.equal(plain.weight, ours.weight)
    fresh = SuperposedEmbedding(23, 8)
    fresh.load_state_dict(plain.state_dict())
    assert torch.equal(fresh.weight, plain.weight)


def test_gradients_flow_to_every_bag_member():
    _, ours = make()
    tokens = torch.tensor([[[1, 2, 2]]])  # token 2 twice: gets twice the gradient
    ours(tokens).sum().backward()
    g = ours.weight.grad
    torch.testing.assert_close(g[1], torch.full((8,), 1 / 3))
    torch.testing.assert_close(g[2], torch.full((8,), 2 / 3))
    assert g[0].abs().sum() == 0


def test_superpose_on_plain_embedding():
    ref, _ = make()
    tokens = torch.randint(0, 23, (2, 6, 4))
    torch.testing.assert_close(superpose(ref, tokens), listing2(ref.weight.detach(), tokens), rtol=1e-6, atol=1e-7)
    flat = torch.randint(0, 23, (2, 6))
    assert torch.equal(superpose(ref, flat), ref(flat))


def test_superpose_respects_padding_idx_gradient():
    emb = nn.Embedding(10, 4, padding_idx=0)
    superpose(emb, torch.tensor([[[0, 3]]])).sum().backward()
    assert emb.weight.grad[0].abs().sum() == 0 and emb.weight.grad[3].abs().sum() > 0
