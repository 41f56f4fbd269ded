"""The Triton backend of the fused LM-head + MCE, checked without a GPU.

Without CUDA, ``tests/conftest.py`` sets ``TRITON_INTERPRET=1`` before anything imports triton, and Triton's
interpreter runs the kernel on CPU tensors; with CUDA the same tests run the compiled kernel on the GPU.
References (none calls the kernel): float64 autograd through the materialised logits, the float64
per-element loop ``brute_force`` of test_loss.py, ``F.cross_entropy`` for ``s = 1``, and the torch backend.
The interpreter runs each program in Python (tens of ms per row here), so every shape is tiny.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from test_loss import IGN, brute_force  # noqa: E402  (tests/tst is on sys.path: pytest's rootdir import)

import tst.fused as fused  # noqa: E402
from tst.fused import fused_linear_multi_hot_cross_entropy  # noqa: E402
from tst.loss import _effective_weights  # noqa: E402


import tst.fused_triton as ft  # noqa: E402  (tests/conftest.py sets TRITON_INTERPRET=1 when there is no GPU)

DEVICE = "cpu" if ft.INTERPRETED else "cuda"
if DEVICE == "cuda" and not torch.cuda.is_available():
    pytest.skip("triton was imported before TRITON_INTERPRET=1 was set, and there is no GPU to compile for",
                allow_module_level=True)


def triton_fused(*args, **kw):
    return fused_linear_multi_hot_cross_entropy(*args, backend="triton", **kw)


def case(s, n_shape=(3, 4), d=8, V=40, seed=0, dtype=torch.float32):
    """hidden (…, d), weight (V, d), targets (…, s) with ignored slots, an all-ignored row and a repeated id."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(*n_shape, d, generator=gen, dtype=dtype)
    weight = torch.randn(V, d, generator=gen, dtype=dtype) * (3 / math.sqrt(d))  # logits of a few units
    targets = torch.randint(0, V, (*n_shape, s), generator=gen)
    targets[torch.rand(*n_shape, s, generator=gen) < 0.2] = IGN
    targets[0, -1, :] = IGN
    if s > 1:
        targets[1, 0, :2] = 7
    return hidden.to(DEVICE), weight.to(DEVICE), targets.to(DEVICE)


def loss_and_grads(fn, hidden, weight, upstream=None):
    h = hidden.detach().clone().requires_grad_(True)
    w = weight.detach().clone().requires_grad_(True)
    out = fn(h, w)
    out.backward(upstream if upstream is not None else torch.ones_like(out))
    return out.detach(), h.grad, w.grad


def float64_reference(hidden, weight, targets, weights, reduction, upstream=None):
    """brute_force on float64 materialised logits, differentiated by autograd."""
    return loss_and_grads(lambda h, w: brute_force(h @ w.t(), targets.cpu(), weights, reduction),
                          hidden.cpu().double(), weight.cpu().double(),
                          None if upstream is None else upstream.cpu().double())


def assert_close_to(got, ref, rtol, atol):
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        torch.testing.assert_close(g.cpu().double(), r, rtol=rtol, atol=atol)


# ---------------------------------------------------------------- the kernel itself -----------------------

@pytest.mark.parametrize("dtype, block_v", [(torch.float32, None), (torch.float32, 16), (torch.bfloat16, 16)])
def test_kernel_rows_lse_and_grad_match_float64_autograd(dtype, block_v):
    """One chunk: rows, log-sum-exps and the in-place gradient for a per-row upstream factor.

    V = 77 is no power of two (masked tail); block_v = 16 makes the online log-sum-exp take 5 steps, and
    the first 16 logits of row 2 are -inf (a whole block of them) with an ignored target pointing there.
    """
    gen = torch.Generator().manual_seed(1)
    C, V = 6, 77
    x = (torch.randn(C, V, generator=gen) * 4).to(dtype)
    x[2, :16] = float("-inf")
    t = torch.randint(16, V, (C, 3), generator=gen)
    t[2, 0], t[4, :] = IGN, IGN  # row 2: the ignored slot is gathered at column 0 = -inf; row 4: none valid
    t[3, 0] = t[3, 2] = 11  # a repeated id: its weight counts twice
    ids, w = _effective_weights(t, "power", IGN, torch.float32)
    scale = torch.rand(C, generator=gen) + 0.5

    ref_x = x.double().requires_grad_(True)
    lse_ref = torch.logsumexp(ref_x, -1)  # (C,)
    ce = lse_ref[:, None] - ref_x.gather(-1, ids)  # (C, s)
    rows_ref = torch.where(w > 0, w.double() * ce, torch.zeros((), dtype=torch.float64)).sum(-1)
    (rows_ref * scale.double()).sum().backward()

    got = x.clone().to(DEVICE)
    rows, lse = ft.chunk_loss_(got, ids.to(DEVICE), w.to(DEVICE), scale.to(DEVICE), block_v=block_v)
    assert rows.dtype == lse.dtype == torch.float32 and got.dtype == dtype
    torch.testing.assert_close(rows.cpu().double(), rows_ref.detach(), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(lse.cpu().double(), lse_ref.detach(), rtol=1e-6, atol=1e-5)
    # The gradient is rounded once to the logits dtype: to nearest on a GPU (2^-8 relative in bf16), by
    # truncation in the interpreter, whose float32 → bf16 conversion drops the low bits (2^-7).
    ulp = (2 ** -7 if ft.INTERPRETED else 2 ** -8) if dtype == torch.bfloat16 else 1e-6
    torch.testing.assert_close(got.cpu().double(), ref_x.grad, rtol=ulp, atol=1e-7)
    assert torch.equal(got[4].cpu(), torch.zeros(V, dtype=dtype))  # no valid target: no gradient


def test_kernel_forward_only_leaves_logits_untouched():
    x = torch.randn(3, 20).to(DEVICE)
    ids, w = _effective_weights(torch.tensor([[1, 2], [3, IGN], [IGN, IGN]]), "uniform", IGN, torch.float32)
    before = x.clone()
    rows, _ = ft.chunk_loss_(x, ids.to(DEVICE), w.to(DEVICE))
    assert torch.equal(x, before) and rows[2].item() == 0.0
    with pytest.raises(ValueError, match="1 or 3 values"):
        ft.chunk_loss_(x, ids.to(DEVICE), w.to(DEVICE), torch.ones(2, device=DEVICE))


# ---------------------------------------------------------------- through the public function -------------

@pytest.mark.parametrize("s, weights, reduction", [
    (4, "power", "mean"), (4, torch.tensor([0.5, 2.0, 0.0, 1.0]), "sum"), (4, "uniform", "none"),
    (1, "uniform", "mean"),
])
def test_fused_triton_matches_float64_brute_force(s, weights, reduction):
    """Loss and both gradients, 3 chunks of ≤ 5 rows (the last one ragged), against float64 autograd."""
    hidden, weight, targets = case(s)
    upstream = torch.randn(3, 4).to(DEVICE) if reduction == "none" else None
    got = loss_and_grads(lambda h, w: triton_fused(h, w, targets, weights=weights, reduction=reduction,
                                                   chunk_size=5), hidden, weight, upstream)
    assert got[0].dtype == torch.float32 and got[1].dtype == got[2].dtype == torch.float32
    assert_close_to(got, float64_reference(hidden, weight, targets, weights, reduction, upstream),
                    rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_s1_triton_equals_cross_entropy(reduction):
    """s = 1 is plain CE, including a custom ignore_index."""
    hidden, weight, targets = case(1)
    targets = targets.masked_fill(targets == IGN, -1)
    got = loss_and_grads(lambda h, w: triton_fused(h, w, targets, ignore_index=-1, reduction=reduction),
                         hidden, weight, torch.ones(3, 4, device=DEVICE) if reduction == "none" else None)

    def ce(h, w):
        logits = (h @ w.t()).reshape(12, -1)  # (N, V)
        out = F.cross_entropy(logits, targets[..., 0].reshape(-1).cpu(), ignore_index=-1, reduction=reduction)
        return out.reshape(3, 4) if reduction == "none" else out

    ref = loss_and_grads(ce, hidden.cpu().double(), weight.cpu().double(),
                         torch.ones(3, 4, dtype=torch.float64) if reduction == "none" else None)
    assert_close_to(got, ref, rtol=1e-5, atol=1e-6)


def test_no_valid_target_gives_zero_loss_and_grads():
    hidden, weight, _ = case(2)
    out, dh, dw = loss_and_grads(lambda h, w: triton_fused(h, w, torch.full((3, 4, 2), IGN, device=DEVICE)),
                                 hidden, weight)
    assert out.item() == 0.0 and not dh.any() and not dw.any()


@pytest.mark.parametrize("s", [1, 4])
def test_bf16_autocast_matches_torch_backend(s):
    """Under bf16 autocast both backends run bf16 matmuls; Triton keeps the chunk's logits in bf16."""
    hidden, weight, targets = case(s, d=16)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        got = loss_and_grads(lambda h, w: triton_fused(h, w, targets, chunk_size=7), hidden, weight)
        ref = loss_and_grads(lambda h, w: fused_linear_multi_hot_cross_entropy(h, w, targets, chunk_size=7,
                                                                               backend="torch"), hidden, weight)
    for g, r in zip(got, ref):
        assert g.dtype == r.dtype == torch.float32
        torch.testing.assert_close(g, r, rtol=2e-2, atol=2e-2 * float(r.abs().max()))


def test_bf16_params_give_bf16_grads_close_to_float64():
    hidden, weight, targets = case(3)
    got = loss_and_grads(lambda h, w: triton_fused(h, w, targets), hidden.bfloat16(), weight.bfloat16())
    assert got[0].dtype == torch.float32 and got[1].dtype == got[2].dtype == torch.bfloat16
    ref = float64_reference(hidden.bfloat16().float(), weight.bfloat16().float(), targets, "uniform", "mean")
    for g, r in zip(got, ref):
        torch.testing.assert_close(g.cpu().double(), r, rtol=2e-2, atol=2e-2 * float(r.abs().max()))


def test_retain_graph_and_no_grad_paths():
    hidden, weight, targets = case(2)
    h = hidden.clone().requires_grad_(True)
    out = triton_fused(h, weight, targets, chunk_size=5)
    out.backward(retain_graph=True)
    first = h.grad.clone()
    out.backward()  # the saved gradients are scaled, not consumed
    torch.testing.assert_close(h.grad, 2 * first)
    with torch.no_grad():
        again = triton_fused(h, weight, targets, chunk_size=5)
    assert again.grad_fn is None
    torch.testing.assert_close(again, out.detach(), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- choosing the backend --------------------

def spy_on_triton(monkeypatch) -> list:
    calls = []
    real = ft.chunk_loss_
    monkeypatch.setattr(ft, "chunk_loss_", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_auto_and_torch_stay_on_pytorch_for_cpu_tensors(monkeypatch):
    calls = spy_on_triton(monkeypatch)
    hidden, weight, targets = (t.cpu() for t in case(2))
    ref = fused_linear_multi_hot_cross_entropy(hidden, weight, targets)  # auto: CPU tensors → torch
    monkeypatch.setenv(fused.ENV_BACKEND, "torch")
    assert torch.equal(fused_linear_multi_hot_cross_entropy(hidden, weight, targets), ref)
    assert calls == []
    if DEVICE == "cpu":  # the argument wins over the environment
        got = fused_linear_multi_hot_cross_entropy(hidden, weight, targets, backend="triton")
        assert calls and torch.allclose(got, ref, rtol=1e-5)


def test_environment_variable_selects_triton(monkeypatch):
    calls = spy_on_triton(monkeypatch)
    monkeypatch.setenv(fused.ENV_BACKEND, "triton")
    hidden, weight, targets = case(2)
    fused_linear_multi_hot_cross_entropy(hidden, weight, targets)
    assert calls


def test_bad_backend_choices_say_what_to_do(monkeypatch):
    hidden, weight, targets = case(1)
    with pytest.raises(ValueError, match=r"unknown fused-loss backend 'cuda' \(from backend\).*'auto', 'torch'"):
        fused_linear_multi_hot_cross_entropy(hidden, weight, targets, backend="cuda")
    monkeypatch.setenv(fused.ENV_BACKEND, "liger")
    with pytest.raises(ValueError, match=r"'liger' \(from TST_FUSED_BACKEND\)"):
        fused_linear_multi_hot_cross_entropy(hidden, weight, targets)
    monkeypatch.delenv(fused.ENV_BACKEND)
    with pytest.raises(ValueError, match="use backend='torch' for float64"):
        triton_fused(hidden.double(), weight.double(), targets)
    monkeypatch.setattr(ft, "INTERPRETED", False)
    with pytest.raises(ValueError, match="needs CUDA tensors.*TRITON_INTERPRET=1"):
        triton_fused(hidden.cpu(), weight.cpu(), targets.cpu())
    monkeypatch.setattr(fused, "_triton_installed", lambda: False)
    with pytest.raises(ValueError, match="needs the triton package"):
        triton_fused(hidden, weight, targets)


def test_self_check_passes_and_catches_a_wrong_kernel(monkeypatch):
    """The once-per-device check that ``auto`` runs before trusting the kernel on a GPU."""
    device = torch.device(DEVICE)
    monkeypatch.setattr(fused, "_TRITON_CHECKED", {})
    assert fused._triton_self_check(device) is None

    real = ft.chunk_loss_

    def off_by_a_little(logits, ids, w, scale=None, block_v=None):
        rows, lse = real(logits, ids, w, scale, block_v)
        return rows * 1.01, lse

    monkeypatch.setattr(ft, "chunk_loss_", off_by_a_little)
    monkeypatch.setattr(fused, "_TRITON_CHECKED", {})
    with pytest.warns(RuntimeWarning, match="failed its self-check.*loss differs.*using the PyTorch backend"):
        assert "loss differs" in fused._triton_self_check(device)
    assert fused._triton_self_check(device)  # remembered: checked once per device
