"""Multi-hot cross-entropy and the fused LM-head path, checked against independent references.

References used here (none of them calls the code under test):
- ``listing3``: a transcription of the paper's Listing 3 (pad, shift, ``s`` mean-reduced ``F.cross_entropy``
  calls, weighted sum ÷ Σw);
- ``brute_force``: a per-element double loop in float64;
- ``F.cross_entropy`` itself for ``s = 1``.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tst.bags import next_bag_targets
from tst.fused import fused_linear_multi_hot_cross_entropy
from tst.loss import multi_hot_cross_entropy, multi_hot_weight_sum
from tst.weights import resolve_weights

IGN = -100
NAMED = ["uniform", "power", "exp", "first"]


# ---------------------------------------------------------------- references ------------------------------

def listing3_from_bags(pred: torch.Tensor, bags: torch.Tensor, g) -> torch.Tensor:
    """The loop of Listing 3 on already-shifted bag labels ``(B, l, s)``: Σ_i g_i·CE_mean_i / Σ_i g_i."""
    B, l, V = pred.shape
    s = bags.shape[-1]
    pred = pred.reshape(B * l, V).to(torch.float32)
    loss, wsum = 0.0, 0.0
    for i in range(s):
        w = float(g[i])
        loss = loss + w * F.cross_entropy(pred, bags[:, :, i].flatten(), ignore_index=IGN)
        wsum += w
    return loss / wsum


def listing3(pred: torch.Tensor, labels: torch.Tensor, g) -> torch.Tensor:
    """Listing 3 in full: ``pred (B, l, V)``, ordinary next-token ``labels (B, l·s)``."""
    B, l, _ = pred.shape
    s = labels.shape[1] // l
    lab = F.pad(labels, (0, s - 1), value=IGN)[:, s - 1:].reshape(B, l, s)
    return listing3_from_bags(pred, lab, g)


def python_weights(weights, s):
    """The weightings written out by hand (independent of resolve_weights)."""
    if isinstance(weights, torch.Tensor):
        return [float(x) for x in weights]
    return {
        "uniform": [1.0] * s,
        "power": [1.0 / i for i in range(1, s + 1)],
        "exp": [math.exp(-i) for i in range(1, s + 1)],
        "first": [1.0] + [0.0] * (s - 1),
    }[weights]


def brute_force(logits: torch.Tensor, targets: torch.Tensor, weights, reduction: str) -> torch.Tensor:
    """Per-element double loop in float64: Σ w_i·(logsumexp(z) − z[t_i]) over valid pairs."""
    V = logits.shape[-1]
    z = logits.reshape(-1, V).to(torch.float64)
    t = targets.reshape(z.shape[0], -1)
    g = python_weights(weights, t.shape[1])
    rows, den = [], 0.0
    for r in range(z.shape[0]):
        acc = z.new_zeros(())
        for i in range(t.shape[1]):
            if int(t[r, i]) == IGN:
                continue
            acc = acc + g[i] * (torch.logsumexp(z[r], 0) - z[r, int(t[r, i])])
            den += g[i]
        rows.append(acc)
    rows = torch.stack(rows)
    if reduction == "none":
        return rows.reshape(logits.shape[:-1])
    if reduction == "sum":
        return rows.sum()
    return rows.sum() / den if den > 0 else rows.sum() * 0.0


def make_case(B=2, L=5, V=11, s=4, seed=0, ignore_frac=0.25, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, L, V, generator=gen, dtype=dtype) * 3
    targets = torch.randint(0, V, (B, L, s), generator=gen)
    mask = torch.rand(B, L, s, generator=gen) < ignore_frac
    targets[mask] = IGN
    targets[0, 0, :] = IGN  # a position with every target ignored
    if s > 1:
        targets[1, 1, :2] = 3  # a repeated id inside one bag (multiplicity counts)
    return logits, targets


# ---------------------------------------------------------------- weights ---------------------------------

@pytest.mark.parametrize("name", NAMED)
def test_resolve_named_weights(name):
    got = resolve_weights(name, 5)
    assert got.dtype == torch.float32 and got.shape == (5,)
    torch.testing.assert_close(got, torch.tensor(python_weights(name, 5), dtype=torch.float32))


def test_resolve_tensor_weights_is_float32():
    got = resolve_weights(torch.tensor([2, 1, 0], dtype=torch.int64), 3)
    assert got.dtype == torch.float32 and got.tolist() == [2.0, 1.0, 0.0]


# ---------------------------------------------------------------- Listing 3 -------------------------------

@pytest.mark.parametrize("weights", NAMED + [torch.tensor([0.5, 2.0, 0.0, 1.0])])
def test_equals_listing3_when_every_target_is_valid(weights):
    pred, _ = make_case(B=3, L=4, V=13, s=4)
    bags = torch.randint(0, 13, (3, 4, 4), generator=torch.Generator().manual_seed(1))
    ref = listing3_from_bags(pred, bags, python_weights(weights, 4))
    got = multi_hot_cross_entropy(pred, bags, weights=weights)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("weights", ["uniform", "power"])
def test_listing3_with_ignored_targets_differs_only_by_normalisation(weights):
    """Listing 3 averages each offset separately; ours pools all valid pairs. Both from the same pieces."""
    s, B, L, V = 3, 2, 4, 9
    pred, _ = make_case(B=B, L=L, V=V, s=s)
    labels = torch.randint(0, V, (B, L * s), generator=torch.Generator().manual_seed(2))
    bags = next_bag_targets(labels, s)
    g = python_weights(weights, s)
    # Listing 3 = weighted mean of per-offset means, each computed by our s=1 path.
    per_offset = [multi_hot_cross_entropy(pred, bags[..., i:i + 1]) for i in range(s)]
    torch.testing.assert_close(listing3(pred, labels, g), sum(w * m for w, m in zip(g, per_offset)) / sum(g),
                               rtol=1e-6, atol=1e-6)
    # Ours pools the pairs: offsets i >= 1 have one fewer valid position per row.
    counts = [(bags[..., i] != IGN).sum().item() for i in range(s)]
    pooled = sum(w * m * c for w, m, c in zip(g, per_offset, counts)) / sum(w * c for w, c in zip(g, counts))
    got = multi_hot_cross_entropy(pred, bags, weights=weights)
    torch.testing.assert_close(got, pooled, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(got, listing3(pred, labels, g), rtol=0, atol=1e-7)


# ---------------------------------------------------------------- brute force -----------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weights", NAMED + [torch.tensor([0.5, 2.0, 0.0, 1.0])])
def test_matches_brute_force_float64(weights, reduction):
    logits, targets = make_case()
    got = multi_hot_cross_entropy(logits, targets, weights=weights, reduction=reduction)
    ref = brute_force(logits, targets, weights, reduction)
    assert got.dtype == torch.float32
    assert got.shape == ref.shape
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weights", ["uniform", "power", "first", torch.tensor([0.5, 2.0, 0.0, 1.0])])
def test_grads_match_autograd_through_brute_force(weights, reduction):
    logits, targets = make_case()
    ours = logits.clone().requires_grad_(True)
    ref_leaf = logits.double().requires_grad_(True)
    upstream = torch.randn(logits.shape[:-1], dtype=torch.float64) if reduction == "none" else None
    out = multi_hot_cross_entropy(ours, targets, weights=weights, reduction=reduction)
    ref = brute_force(ref_leaf, targets, weights, reduction)
    if upstream is None:
        out.backward()
        ref.backward()
    else:
        out.backward(upstream.float())
        ref.backward(upstream)
    torch.testing.assert_close(ours.grad.double(), ref_leaf.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck_mce_float64(reduction):
    logits, targets = make_case(B=2, L=3, V=7, s=3, dtype=torch.float64)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: multi_hot_cross_entropy(x, targets, weights="power", reduction=reduction), (logits,))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck_fused_float64(reduction):
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 7, (2, 3, 3), generator=gen)
    targets[0, 1, 1:] = IGN
    assert torch.autograd.gradcheck(
        lambda h, w: fused_linear_multi_hot_cross_entropy(h, w, targets, weights="exp", reduction=reduction,
                                                          chunk_size=4), (hidden, weight))


# ---------------------------------------------------------------- s = 1 canary ----------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_s1_equals_cross_entropy(reduction):
    logits, targets = make_case(B=4, L=16, V=97, s=1)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    got = multi_hot_cross_entropy(a, targets, reduction=reduction)
    ref = F.cross_entropy(b.reshape(-1, 97), targets.reshape(-1), ignore_index=IGN, reduction=reduction)
    ref = ref.reshape(got.shape)
    # Same value to the last ulp or two (one log-sum-exp vs log_softmax round differently); 0 where ignored.
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=0)
    assert torch.equal(got == 0, ref == 0)
    upstream = torch.randn(got.shape)
    got.backward(upstream)
    ref.backward(upstream)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_s1_mean_sum_are_exact_on_simple_inputs():
    logits = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0], [3.0, 0.0, -1.0]])
    targets = torch.tensor([[2], [IGN], [0]])
    for reduction in ("mean", "sum", "none"):
        ref = F.cross_entropy(logits, targets[:, 0], ignore_index=IGN, reduction=reduction)
        torch.testing.assert_close(multi_hot_cross_entropy(logits, targets, reduction=reduction), ref,
                                   rtol=0, atol=1e-7)


# ---------------------------------------------------------------- edge cases ------------------------------

@pytest.mark.parametrize("fused", [False, True])
def test_no_valid_target_gives_zero_and_zero_grads(fused):
    hidden = torch.randn(3, 4, requires_grad=True)
    weight = torch.randn(6, 4, requires_grad=True)
    targets = torch.full((3, 2), IGN)
    if fused:
        out = fused_linear_multi_hot_cross_entropy(hidden, weight, targets)
    else:
        out = multi_hot_cross_entropy(hidden @ weight.t(), targets)
    out.backward()
    assert out.item() == 0.0
    assert torch.equal(hidden.grad, torch.zeros_like(hidden))
    assert torch.equal(weight.grad, torch.zeros_like(weight))


def test_weight_sum_is_the_mean_denominator_and_accumulates():
    logits, targets = make_case(B=4, L=6, V=10, s=3)
    for weights in NAMED:
        full = multi_hot_cross_entropy(logits, targets, weights=weights)
        num = sum(multi_hot_cross_entropy(logits[i:i + 2], targets[i:i + 2], weights=weights, reduction="sum")
                  for i in (0, 2))
        den = sum(multi_hot_weight_sum(targets[i:i + 2], weights) for i in (0, 2))
        torch.testing.assert_close(num / den, full, rtol=1e-6, atol=1e-6)
    g = python_weights("power", 3)
    expected = sum(g[i] for i in range(3) for t in targets.reshape(-1, 3) if int(t[i]) != IGN)
    torch.testing.assert_close(multi_hot_weight_sum(targets, "power"), torch.tensor(expected, dtype=torch.float32))


def test_ignored_target_with_minus_inf_logit_stays_finite():
    logits = torch.randn(2, 5)
    logits[:, 0] = float("-inf")  # e.g. a masked vocabulary entry; ignored ids are gathered at 0
    logits.requires_grad_(True)
    targets = torch.tensor([[1, IGN], [2, 3]])
    out = multi_hot_cross_entropy(logits, targets)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(logits.grad).all()


def test_int32_targets_and_extra_leading_dims():
    logits, targets = make_case(B=2, L=3, V=8, s=2)
    ref = multi_hot_cross_entropy(logits, targets)
    torch.testing.assert_close(multi_hot_cross_entropy(logits, targets.int()), ref)
    torch.testing.assert_close(multi_hot_cross_entropy(logits.reshape(6, 8), targets.reshape(6, 2)), ref)


def test_bf16_logits():
    logits, targets = make_case(B=2, L=8, V=33, s=4)
    low = logits.bfloat16().requires_grad_(True)
    up = low.detach().float().requires_grad_(True)  # the exact same values, in fp32
    got = multi_hot_cross_entropy(low, targets, weights="power")
    ref = multi_hot_cross_entropy(up, targets, weights="power")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)  # upcast inside: no bf16 rounding of the loss
    torch.testing.assert_close(got.double(), brute_force(up.detach(), targets, "power", "mean"), rtol=1e-5, atol=1e-5)
    got.backward()
    ref.backward()
    assert low.grad.dtype == torch.bfloat16
    torch.testing.assert_close(low.grad.float(), up.grad, rtol=1e-2, atol=1e-4)


def test_eval_path_has_no_graph():
    logits, targets = make_case()
    assert multi_hot_cross_entropy(logits, targets).grad_fn is None
    with torch.no_grad():
        assert multi_hot_cross_entropy(logits.requires_grad_(True), targets).grad_fn is None


# ---------------------------------------------------------------- fused ----------------------------------

def fused_case(s, N_shape=(3, 7), d=6, V=19, seed=4, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(*N_shape, d, generator=gen, dtype=dtype)
    weight = torch.randn(V, d, generator=gen, dtype=dtype) / math.sqrt(d)
    targets = torch.randint(0, V, (*N_shape, s), generator=gen)
    targets[torch.rand(*N_shape, s, generator=gen) < 0.2] = IGN
    targets[0, -1, :] = IGN
    return hidden, weight, targets


def grads_of(fn, hidden, weight, upstream=None):
    h = hidden.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    out = fn(h, w)
    out.backward(upstream if upstream is not None else torch.ones_like(out))
    return out.detach(), h.grad, w.grad


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk", [None, 1, 4, 5, 21, 100])
@pytest.mark.parametrize("s", [1, 4])
def test_fused_equals_unfused(s, chunk, reduction):
    hidden, weight, targets = fused_case(s)
    upstream = torch.randn(3, 7) if reduction == "none" else None
    kw = dict(weights="power", reduction=reduction)
    ref = grads_of(lambda h, w: multi_hot_cross_entropy(h @ w.t(), targets, **kw), hidden, weight, upstream)
    got = grads_of(lambda h, w: fused_linear_multi_hot_cross_entropy(h, w, targets, chunk_size=chunk, **kw),
                   hidden, weight, upstream)
    for g, r in zip(got, ref):
        assert g.dtype == r.dtype and g.shape == r.shape
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)


def test_fused_grad_for_one_input_only_and_eval():
    hidden, weight, targets = fused_case(4)
    ref = multi_hot_cross_entropy(hidden @ weight.t(), targets)
    h = hidden.clone().requires_grad_(True)
    fused_linear_multi_hot_cross_entropy(h, weight, targets, chunk_size=5).backward()
    _, ref_h, _ = grads_of(lambda a, b: multi_hot_cross_entropy(a @ b.t(), targets), hidden, weight)
    torch.testing.assert_close(h.grad, ref_h, rtol=1e-5, atol=1e-6)
    out = fused_linear_multi_hot_cross_entropy(hidden, weight, targets)
    assert out.grad_fn is None
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        out = fused_linear_multi_hot_cross_entropy(hidden.requires_grad_(True), weight, targets)
    assert out.grad_fn is None


@pytest.mark.parametrize("s", [1, 4])
def test_fused_under_bf16_autocast_close_to_fp32(s):
    hidden, weight, targets = fused_case(s, N_shape=(4, 16), d=32, V=64)
    ref = grads_of(lambda h, w: multi_hot_cross_entropy(h @ w.t(), targets), hidden, weight)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = grads_of(lambda h, w: fused_linear_multi_hot_cross_entropy(h, w, targets, chunk_size=24),
                       hidden, weight)
        unfused = grads_of(lambda h, w: multi_hot_cross_entropy(h @ w.t(), targets), hidden, weight)
    assert got[0].dtype == torch.float32  # the loss is float32
    assert got[1].dtype == torch.float32 and got[2].dtype == torch.float32  # grads in the input dtypes
    for g, r, u in zip(got, ref, unfused):
        torch.testing.assert_close(g, r, rtol=3e-2, atol=3e-3)  # bf16 matmuls
        torch.testing.assert_close(g, u, rtol=3e-2, atol=3e-3)  # same precision as autocast's unfused path


def test_fused_bf16_params_return_bf16_grads():
    hidden, weight, targets = fused_case(4, N_shape=(2, 8), d=16, V=32)
    ref = grads_of(lambda h, w: multi_hot_cross_entropy(h @ w.t(), targets), hidden, weight)
    got = grads_of(lambda h, w: fused_linear_multi_hot_cross_entropy(h, w, targets, chunk_size=3),
                   hidden.bfloat16(), weight.bfloat16())
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.bfloat16 and got[2].dtype == torch.bfloat16
    for g, r in zip(got, ref):
        torch.testing.assert_close(g.float(), r, rtol=5e-2, atol=5e-3)


# ---------------------------------------------------------------- bad inputs ------------------------------

@pytest.mark.parametrize("fused", [False, True])
def test_out_of_range_id_names_id_and_vocab(fused):
    hidden, weight, targets = fused_case(2, V=19)
    targets[1, 2, 1] = 19
    with pytest.raises(ValueError, match=r"target id 19 .*V=19"):
        if fused:
            fused_linear_multi_hot_cross_entropy(hidden, weight, targets)
        else:
            multi_hot_cross_entropy(hidden @ weight.t(), targets)


def test_negative_id_other_than_ignore_index():
    logits, targets = make_case(V=11, s=2)
    targets[0, 1, 0] = -1
    with pytest.raises(ValueError, match=r"target id -1 .*ignore_index=-100"):
        multi_hot_cross_entropy(logits, targets)
    # ... but -1 is fine when it is the ignore index.
    multi_hot_cross_entropy(logits, targets.masked_fill(targets == IGN, -1), ignore_index=-1)


def test_shape_mismatch():
    logits = torch.randn(2, 5, 11)
    with pytest.raises(ValueError, match=r"leading dims match logits.shape\[:-1\] \(2, 5\).*\(2, 4, 3\)"):
        multi_hot_cross_entropy(logits, torch.zeros(2, 4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="hidden.shape"):
        fused_linear_multi_hot_cross_entropy(torch.randn(2, 5, 4), torch.randn(11, 4),
                                             torch.zeros(2, 4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="same d"):
        fused_linear_multi_hot_cross_entropy(torch.randn(2, 5, 4), torch.randn(11, 3),
                                             torch.zeros(2, 5, 3, dtype=torch.long))


def test_float_targets_rejected():
    with pytest.raises(ValueError, match="integer"):
        multi_hot_cross_entropy(torch.randn(3, 5), torch.zeros(3, 2))


@pytest.mark.parametrize("bad, msg", [
    ("linear", r"unknown weights 'linear'.*'uniform', 'power', 'exp', 'first'"),
    (torch.tensor([1.0, 1.0]), r"expected shape \(3,\), got \(2,\)"),
    (torch.ones(3, 1), r"1-D"),
    (torch.tensor([1.0, -0.5, 1.0]), "non-negative"),
    (torch.tensor([1.0, float("nan"), 1.0]), "finite"),
    (torch.tensor([1.0, float("inf"), 1.0]), "finite"),
    (torch.zeros(3), "all be zero"),
])
def test_bad_weights(bad, msg):
    with pytest.raises(ValueError, match=msg):
        resolve_weights(bad, 3)
    with pytest.raises(ValueError, match=msg):
        multi_hot_cross_entropy(torch.randn(2, 5), torch.zeros(2, 3, dtype=torch.long), weights=bad)


def test_bad_reduction_and_chunk():
    with pytest.raises(ValueError, match=r"unknown reduction 'avg'.*'mean', 'sum', 'none'"):
        multi_hot_cross_entropy(torch.randn(2, 5), torch.zeros(2, 1, dtype=torch.long), reduction="avg")
    with pytest.raises(ValueError, match="chunk_size"):
        fused_linear_multi_hot_cross_entropy(torch.randn(2, 4), torch.randn(5, 4),
                                             torch.zeros(2, 1, dtype=torch.long), chunk_size=0)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_fused_backward_inside_autocast_and_retain_graph(reduction):
    hidden, weight, targets = fused_case(4, N_shape=(2, 8), d=16, V=32)
    h = hidden.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused_linear_multi_hot_cross_entropy(h, weight, targets, reduction=reduction, chunk_size=5).sum()
        out.backward(retain_graph=True)  # backward while autocast is still on
        first = h.grad.clone()
        out.backward()  # a second backward through the same graph
    torch.testing.assert_close(h.grad, 2 * first)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("s", [1, 4])
def test_fused_cuda_bf16_autocast_matches_unfused(s):
    hidden, weight, targets = (t.cuda() for t in fused_case(s, N_shape=(4, 64), d=64, V=1000))
    ref = grads_of(lambda h, w: multi_hot_cross_entropy(h @ w.t(), targets), hidden, weight)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = grads_of(lambda h, w: fused_linear_multi_hot_cross_entropy(h, w, targets, chunk_size=100),
                       hidden, weight)
    for g, r in zip(got, ref):
        assert g.dtype == r.dtype
        torch.testing.assert_close(g, r, rtol=3e-2, atol=3e-3)
