"""Bags and next-bag targets against the paper's worked example (docs/paper_notes.md §1.5) and index arithmetic."""
from __future__ import annotations

import pytest
import torch

from tst.bags import IGNORE_INDEX, bag_inputs, next_bag_targets, window_targets

IGN = IGNORE_INDEX


def test_ignore_index_is_torch_default():
    assert IGN == -100  # F.cross_entropy's default ignore_index


def test_worked_example_s3_l2():
    """Raw x0…x6 (x_k = 10 + k); inputs x0…x5, labels x1…x6 → [x3 x4 x5 | x6 −100 −100]."""
    x = torch.arange(10, 17)[None]  # (1, 7)
    inputs, labels = x[:, :6], x[:, 1:7]
    assert bag_inputs(inputs, 3).tolist() == [[[10, 11, 12], [13, 14, 15]]]
    assert next_bag_targets(labels, 3).tolist() == [[[13, 14, 15], [16, IGN, IGN]]]


@pytest.mark.parametrize("s, L", [(1, 5), (2, 4), (4, 3), (16, 2)])
def test_next_bag_targets_general(s, L):
    B = 2
    x = torch.arange(B * (L * s + 1)).reshape(B, L * s + 1) * 7 + 1  # distinct ids, row-dependent
    inputs, labels = x[:, :-1], x[:, 1:]
    bags = bag_inputs(inputs, s)
    tgt = next_bag_targets(labels, s)
    assert bags.shape == tgt.shape == (B, L, s)
    for b in range(B):
        for k in range(L):
            for i in range(s):
                assert bags[b, k, i] == x[b, k * s + i]  # bag k covers x[ks … ks+s−1]
                j = (k + 1) * s + i  # its targets are the next bag x[(k+1)s … (k+2)s−1]
                expected = x[b, j] if j < x.shape[1] else IGN
                assert tgt[b, k, i] == expected
    # Only the last position has ignored targets, and exactly s − 1 of them.
    assert (tgt[:, :-1] != IGN).all()
    assert (tgt[:, -1] == IGN).sum(-1).tolist() == [s - 1] * B


def test_s1_is_plain_labels():
    labels = torch.arange(12).reshape(2, 6)
    assert torch.equal(next_bag_targets(labels, 1), labels[..., None])
    assert torch.equal(bag_inputs(labels, 1), labels[..., None])


def test_bag_inputs_is_a_view():
    x = torch.arange(12).reshape(2, 6)
    assert bag_inputs(x, 3).data_ptr() == x.data_ptr()


def test_custom_ignore_index():
    assert next_bag_targets(torch.arange(1, 5)[None], 2, ignore_index=-1).tolist() == [[[2, 3], [4, -1]]]


@pytest.mark.parametrize("fn", [bag_inputs, next_bag_targets])
def test_non_multiple_length_suggests_a_fix(fn):
    with pytest.raises(ValueError, match=r"length 10 is not a multiple of bag_size 4: use a length of 8 or 12"):
        fn(torch.zeros(2, 10, dtype=torch.long), 4)


@pytest.mark.parametrize("fn", [bag_inputs, next_bag_targets])
def test_bag_size_below_one(fn):
    with pytest.raises(ValueError, match="bag_size must be >= 1"):
        fn(torch.zeros(2, 8, dtype=torch.long), 0)


def test_window_targets():
    tokens = torch.arange(100, 108)[None]  # (1, 8)
    out = window_targets(tokens, seq_len=5, window=3)
    assert out.shape == (1, 5, 3)
    for t in range(5):
        assert out[0, t].tolist() == [100 + t + 1 + i for i in range(3)]


def test_window_targets_window1_is_next_token():
    tokens = torch.arange(20).reshape(2, 10)
    assert torch.equal(window_targets(tokens, 9, 1)[..., 0], tokens[:, 1:])


def test_window_targets_too_short():
    with pytest.raises(ValueError, match=r"needs rows of 8 tokens \(seq_len \+ window\), got 7"):
        window_targets(torch.zeros(1, 7, dtype=torch.long), 5, 3)
