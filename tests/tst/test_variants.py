"""The variants the paper left open, against independent references on tiny tensors: the sum-to-one
objective, document-aware bags, the batch fold, the smooth transition and the fitted weights."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tst
from tst.bags import IGNORE_INDEX, document_bags, document_positions
from tst.weights import resolve_weights

IGN = IGNORE_INDEX


# ------------------------------------------------------------------------------------------ sum-to-one
def sum_to_one_reference(logits, ids, weights, reduction):
    """Float64 brute force: per position W·(−log Σ_i (w_i/W)·softmax(z)[t_i]) over valid targets."""
    logits = logits.double()
    p = torch.softmax(logits, -1)
    s = ids.shape[-1]
    w = resolve_weights(weights, s).double() if not isinstance(weights, torch.Tensor) else weights.double()
    rows, norm = [], 0.0
    for z_p, t in zip(p.reshape(-1, p.shape[-1]), ids.reshape(-1, s)):
        valid = [i for i in range(s) if int(t[i]) != IGN]
        W = sum(float(w[i]) for i in valid)
        if not valid or W == 0:
            rows.append(torch.zeros((), dtype=torch.float64))
            continue
        mix = sum((w[i] / W) * z_p[int(t[i])] for i in valid)
        rows.append(W * -torch.log(mix))
        norm += W
    rows = torch.stack(rows)
    if reduction == "none":
        return rows.reshape(ids.shape[:-1])
    return rows.sum() if reduction == "sum" else rows.sum() / norm


@pytest.mark.parametrize("weights", ["uniform", "power", torch.tensor([0.5, 0.0, 2.0])])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_sum_to_one_matches_brute_force_values_and_gradients(weights, reduction):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 11, (2, 5, 3), generator=g)
    ids[0, -1, 1:] = IGN  # a partial bag, as at the end of a superposition row
    ids[1, 2, 0] = ids[1, 2, 1]  # a repeated token counts with its multiplicity
    ref = sum_to_one_reference(logits, ids, weights, reduction)
    got = tst.multi_hot_cross_entropy(logits, ids, weights=weights, reduction=reduction, loss="sum-to-one")
    assert torch.allclose(got, ref, atol=1e-10)
    gr, = torch.autograd.grad(ref.sum(), logits)
    gg, = torch.autograd.grad(got.sum(), logits)
    assert torch.allclose(gg, gr, atol=1e-10)


def test_sum_to_one_fused_equals_materialised_and_s1_is_cross_entropy():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(12, 8, generator=g, requires_grad=True)
    W = torch.randn(30, 8, generator=g, requires_grad=True)
    ids = torch.randint(0, 30, (12, 4), generator=g)
    targets = tst.BagTargets(ids, "exp", "sum-to-one")
    fused = tst.fused_linear_multi_hot_cross_entropy(h, W, targets, chunk_size=5)
    plain = tst.multi_hot_cross_entropy(h @ W.T, targets)
    assert torch.allclose(fused, plain, atol=1e-6)
    g1 = torch.autograd.grad(fused, (h, W))
    g2 = torch.autograd.grad(plain, (h, W))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g1, g2))
    t1 = ids[:, :1]
    ce = F.cross_entropy(h @ W.T, t1[:, 0])
    assert torch.allclose(tst.multi_hot_cross_entropy(h @ W.T, t1, loss="sum-to-one"), ce, atol=1e-6)
    with pytest.raises(ValueError, match="carries its own objective"):
        tst.multi_hot_cross_entropy(h @ W.T, targets, loss="mce")
    with pytest.raises(ValueError, match="loss must be one of"):
        tst.multi_hot_cross_entropy(h @ W.T, ids, loss="hinge")


# ------------------------------------------------------------------------------------------ document bags
def document_bags_reference(row, s, n_bags, eos):
    """Plain Python: walk the tokens, start a new bag at each document, pad each document's last bag."""
    bags, docs, cur, doc = [], [], [], 0
    for tok in row.tolist():
        cur.append(tok)
        if len(cur) == s or tok == eos:
            bags.append(cur + [IGN] * (s - len(cur)))
            docs.append(doc)
            cur = []
        if tok == eos:
            doc += 1
    if cur:
        bags.append(cur + [IGN] * (s - len(cur)))
        docs.append(doc)
    bags, docs = bags[:n_bags], docs[:n_bags]
    while len(bags) < n_bags:
        bags.append([IGN] * s)
        docs.append(-1)
    return bags, docs


@pytest.mark.parametrize("seed", range(5))
def test_document_bags_match_the_reference(seed):
    g = torch.Generator().manual_seed(seed)
    row = torch.randint(1, 9, (29,), generator=g)
    row[torch.randint(0, 29, (4,), generator=g)] = 0  # eos = 0 at random places
    for s in (2, 3, 4):
        grid, doc = document_bags(row, s, 9, eos_id=0)
        ref_bags, ref_docs = document_bags_reference(row, s, 9, 0)
        assert grid.tolist() == ref_bags and doc.tolist() == ref_docs


def test_document_fold_equals_stream_fold_without_separators_and_never_crosses_documents():
    sched = tst.TSTConfig(bag_size=3, superposition_frac=0.5, bagging="document").schedule(10)
    stream = tst.TSTConfig(bag_size=3, superposition_frac=0.5).schedule(10)
    L = 4
    rows = torch.arange(1, 2 * 13 + 1).reshape(2, 13)  # no eos (id 0) anywhere
    a, ta = sched.phase_at(0).fold(rows, L, eos_id=0)
    b, tb = stream.phase_at(0).fold(rows, L)
    assert torch.equal(a, b) and torch.equal(ta.ids, tb.ids)
    rows = torch.tensor([[5, 6, 0, 7, 8, 9, 1, 0, 2, 3, 4, 5, 6]])  # docs: [5 6 eos] [7 8 9 1 eos] [2 3 4 5 6…]
    inputs, targets = sched.phase_at(0).fold(rows, L, eos_id=0)
    assert inputs[0].tolist() == [[5, 6, 0], [7, 8, 9], [1, 0, IGN], [2, 3, 4]]
    assert targets.ids[0].tolist() == [[IGN] * 3, [1, 0, IGN], [IGN] * 3, [5, 6, IGN]]
    assert sched.phase_at(0).positions(inputs, 0).tolist() == [[0, 0, 1, 0]]
    emb = tst.SuperposedEmbedding(10, 4)
    out = emb(inputs)  # padded slots are left out of the mean
    assert torch.allclose(out[0, 2], emb.weight[[1, 0]].mean(0), atol=1e-6)


def test_document_positions_restart():
    starts = torch.tensor([[True, False, False, True, False], [True, True, False, False, True]])
    assert document_positions(starts).tolist() == [[0, 1, 2, 0, 1], [0, 0, 1, 2, 0]]


# ------------------------------------------------------------------------------------------ batch fold
def test_batch_fold_keeps_positions_and_data_and_equals_a_shorter_sequence_fold():
    s, L, B = 4, 8, 3
    batch = tst.TSTConfig(bag_size=s, superposition_frac=0.5, fold="batch").schedule(10).phase_at(0)
    seq = tst.TSTConfig(bag_size=s, superposition_frac=0.5).schedule(10).phase_at(0)
    assert batch.rows_per_step(B) == B * s and batch.positions_per_row(L) == L // s
    assert batch.rows_per_step(B) * batch.positions_per_row(L) == B * L  # equal positions (FLOPs)
    assert batch.data_tokens_per_step(B, L) == seq.data_tokens_per_step(B, L) == B * L * s  # same data
    rows = torch.arange(batch.rows_per_step(B) * batch.tokens_per_row(L)).reshape(B * s, -1)
    x, t = batch.fold(rows, L)
    y, u = seq.fold(rows, L // s)  # the same rows folded as sequences of L/s bags
    assert x.shape == (B * s, L // s, s) and torch.equal(x, y) and torch.equal(t.ids, u.ids)
    with pytest.raises(ValueError, match="multiple of the bag size"):
        batch.positions_per_row(10)


# ------------------------------------------------------------------------------------------ smooth transition
def test_smooth_transition_ladder_weights_and_data():
    K = 6
    sched = tst.TSTConfig(bag_size=8, superposition_frac=0.25, transition_steps=K).schedule(40)
    assert sched.transition_step == 10 and sched.recovery_step == 16
    ladder = []
    for t in range(10, 16):
        ph = sched.phase_at(t)
        alpha = (t - 10 + 1) / (K + 1)
        s_t = max(1, round(8 ** (1 - alpha)))
        ladder.append(ph.bag_size)
        assert ph.name == "transition" and ph.bag_size == ph.target_bag_size == s_t
        g = torch.ones(s_t) / s_t
        expect = (1 - alpha) * g + alpha * F.one_hot(torch.tensor(0), s_t).float()
        assert torch.allclose(ph.weights, expect) and math.isclose(float(ph.weights.sum()), 1.0, rel_tol=1e-6)
    assert ladder == sorted(ladder, reverse=True) and ladder[0] < 8 and sched.phase_at(16).bag_size == 1
    hard = tst.TSTConfig(bag_size=8, superposition_frac=0.25).schedule(40)
    per_step = [sched.phase_at(t).data_tokens_per_step(2, 4) for t in range(40)]
    assert sched.data_tokens(2, 4) == sum(per_step) < hard.data_tokens(2, 4) + 6 * 2 * 4 * 8
    assert [p.name for _, _, p in sched.phases] == ["superposition", "transition", "recovery"]
    with pytest.raises(ValueError, match="does not fit"):
        tst.TSTConfig(bag_size=8, superposition_frac=0.9, transition_steps=10).schedule(40)
    with pytest.raises(ValueError, match="needs mode 'tst'"):
        tst.TSTConfig(mode="output-only", transition_steps=3).validate()


# ------------------------------------------------------------------------------------------ fitted weights
def test_power_law_fit_recovers_exact_parameters():
    from tst_train.mutual_info import fit_power_law
    d = np.arange(1, 33)
    fit = fit_power_law(d, 0.3 + 1.7 * d ** -1.25, ks=np.linspace(-3, -0.05, 296))
    assert fit["k"] == pytest.approx(-1.25, abs=1e-9) and fit["a"] == pytest.approx(1.7) and fit["c0"] == pytest.approx(0.3)


def test_mutual_information_of_known_sequences():
    from tst_train.mutual_info import mutual_information
    rng = np.random.default_rng(0)
    iid = rng.integers(0, 16, 200_000)
    assert abs(mutual_information(iid, [1, 5], 16)[0]) < 2e-3  # independent tokens: ~0 after the bias correction
    perm = rng.permutation(16)
    chain = np.empty(50_000, dtype=np.int64)
    chain[0] = 3
    for i in range(1, chain.size):
        chain[i] = perm[chain[i - 1]]  # a deterministic permutation: x_{t+1} is a function of x_t
    cycle_states = len(set(chain.tolist()))
    assert mutual_information(chain, [1], 16)[0] == pytest.approx(math.log(cycle_states), abs=2e-3)
