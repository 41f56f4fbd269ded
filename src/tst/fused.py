"""The LM head fused with the multi-hot cross-entropy: ``multi_hot_cross_entropy(hidden @ W.T, targets)``
without ever materialising the ``(N, V)`` logits (forward or backward), in row chunks — the scheme of
Liger's fused linear cross-entropy, with one log-sum-exp per position for a bag of ``s`` targets.
"""
from __future__ import annotations

from typing import Optional

import torch

from .bags import IGNORE_INDEX
from .loss import (TargetsLike, _acc_dtype, _check_reduction, _check_targets, _chunks, _default_chunk_rows,
                   _effective_weights, _grad_from_probs_, _reduce, _row_terms, unpack_targets)
from .weights import Weights

__all__ = ["fused_linear_multi_hot_cross_entropy"]


def _chunk_logits(h: torch.Tensor, weight_mm: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """``h`` ``(C, d)`` @ ``weight_mm.T`` → fresh ``(C, V)`` logits in ``acc`` (owned, safe to modify in place).

    The matmul runs in ``weight_mm``'s dtype (the autocast dtype under autocast); the upcast copy is the
    only float32 ``(C, V)`` buffer a chunk needs.
    """
    logits = h.to(weight_mm.dtype) @ weight_mm.t()  # (C, V)
    return logits if logits.dtype == acc else logits.to(acc)


def _exp_lse_(x: torch.Tensor):
    """Overwrite logits ``x`` ``(C, V)`` with ``exp(x − max)``; return (log-sum-exp ``(C,)``, Σexp ``(C, 1)``).

    In place, so a chunk needs no second ``(C, V)`` buffer; the caller folds the division by Σexp into
    its next pass over the chunk.
    """
    m = x.amax(-1, keepdim=True)  # (C, 1)
    x.sub_(m).exp_()  # (C, V) exp(x − max)
    total = x.sum(-1, keepdim=True)  # (C, 1)
    return (m + total.log()).squeeze(-1), total  # (C,), (C, 1)


def _backprop_chunk(grad_logits: torch.Tensor, h: torch.Tensor, weight_mm: torch.Tensor,
                    dh: Optional[torch.Tensor], dw: Optional[torch.Tensor]) -> None:
    """Chain rule through ``logits = h @ W.T`` for one chunk, in place.

    Writes ``grad_logits @ W`` into ``dh`` ``(C, d)`` and adds ``grad_logits.T @ h`` into ``dw`` ``(V, d)``;
    either may be None (no grad wanted). When the matmul dtype is the accumulation dtype this uses
    ``out=``/``addmm_`` so no ``(V, d)`` temporary is created per chunk.
    """
    g = grad_logits.to(weight_mm.dtype)  # (C, V) in the matmul dtype
    if dh is not None:
        if dh.dtype == g.dtype:
            torch.mm(g, weight_mm, out=dh)  # (C, d)
        else:
            dh.copy_(g @ weight_mm)  # low-precision matmul, float32 result buffer
    if dw is not None:
        hm = h.to(weight_mm.dtype)  # (C, d)
        if dw.dtype == g.dtype:
            dw.addmm_(g.t(), hm)  # (V, d)
        else:
            dw.add_(g.t() @ hm)  # low-precision matmul, float32 accumulation


class _FusedLinearMCE(torch.autograd.Function):
    """LM head + MCE in row chunks; ``(N, V)`` logits never exist, in forward or backward.

    ``mean``/``sum`` (``rows=False``): the Liger "fused linear cross-entropy" scheme — the forward computes
    each chunk's logits, loss and its gradients wrt hidden and weight at once (the loss is a scalar, so
    the only missing factor is the upstream gradient), and the backward just scales them. Total matmul
    work equals the unfused path (3 matmuls per chunk).

    ``none`` (``rows=True``): the upstream gradient differs per row, which cannot be applied to an already
    summed weight gradient, so the forward keeps only the log-sum-exps and the backward recomputes each
    chunk's logits (4 matmuls per chunk instead of 3).
    """

    @staticmethod
    def forward(ctx, hidden, weight, ids, w, scale, weight_mm, chunk, rows, loss):  # noqa: D102
        ctx.need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        ctx.dtypes = (hidden.dtype, weight.dtype)
        ctx.chunk = chunk
        ctx.rows = rows
        if rows:
            out, lse, c = _fused_rows(hidden, weight_mm, ids, w, chunk, loss)
            ctx.save_for_backward(hidden, weight_mm, ids, c, lse)
            return out  # (N,)
        out, dh, dw = _fused_total_with_grads(hidden, weight_mm, ids, w, scale, chunk, ctx.need, loss)
        ctx.save_for_backward(dh, dw)
        return out  # scalar

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # noqa: D102
        if ctx.rows:
            hidden, weight_mm, ids, c, lse = ctx.saved_tensors
            # backward() may be called inside the caller's autocast region; our dtypes are explicit.
            with torch.autocast(hidden.device.type, enabled=False):
                dh, dw = _fused_rows_backward(hidden, weight_mm, ids, c, lse, grad_out, ctx.chunk, ctx.need)
        else:
            # Not in place: with retain_graph the saved gradients must survive for the next backward.
            dh, dw = ctx.saved_tensors
            dh = dh * grad_out if dh is not None else None  # (N, d)
            dw = dw * grad_out if dw is not None else None  # (V, d)
        dh = dh.to(ctx.dtypes[0]) if dh is not None else None
        dw = dw.to(ctx.dtypes[1]) if dw is not None else None
        return dh, dw, None, None, None, None, None, None, None


def _fused_total_with_grads(hidden, weight_mm, ids, w, scale, chunk, need, loss):
    """Scalar Σ rows·scale and its gradients wrt hidden ``(N, d)`` and weight ``(V, d)``, chunk by chunk.

    Gradients accumulate in the accumulation dtype (float32) and are cast to the input dtypes in backward.
    """
    acc = w.dtype
    n = hidden.shape[0]
    dh = torch.empty(n, hidden.shape[1], dtype=acc, device=hidden.device) if need[0] else None  # (N, d)
    dw = torch.zeros(weight_mm.shape, dtype=acc, device=hidden.device) if need[1] else None  # (V, d)
    total = torch.zeros((), dtype=acc, device=hidden.device)
    for a, b in _chunks(n, chunk):
        h = hidden[a:b]  # (C, d)
        x = _chunk_logits(h, weight_mm, acc)  # (C, V)
        z = x.gather(-1, ids[a:b])  # (C, s), before x is overwritten
        lse, sum_exp = _exp_lse_(x)  # (C,), (C, 1); x is now exp(logits − max)
        rows, c = _row_terms(lse, z, w[a:b], loss)
        total += rows.sum()
        _grad_from_probs_(x, ids[a:b], c, scale, sum_exp)  # x is now d(loss·scale)/dlogits
        _backprop_chunk(x, h, weight_mm, dh[a:b] if dh is not None else None, dw)
    return total * scale, dh, dw


def _fused_rows(hidden, weight_mm, ids, w, chunk, loss):
    """Per-row losses ``(N,)``, log-sum-exps ``(N,)`` and gradient coefficients ``(N, s)``; no gradient work
    (also the eval path)."""
    acc = w.dtype
    n = hidden.shape[0]
    out = torch.empty(n, dtype=acc, device=hidden.device)  # (N,)
    lse = torch.empty(n, dtype=acc, device=hidden.device)  # (N,)
    c = torch.empty_like(w)  # (N, s)
    for a, b in _chunks(n, chunk):
        x = _chunk_logits(hidden[a:b], weight_mm, acc)  # (C, V)
        z = x.gather(-1, ids[a:b])  # (C, s)
        lse[a:b] = torch.logsumexp(x, dim=-1)  # (C,)
        out[a:b], c[a:b] = _row_terms(lse[a:b], z, w[a:b], loss)
    return out, lse, c


def _fused_rows_backward(hidden, weight_mm, ids, c, lse, grad_rows, chunk, need):
    """Recompute each chunk's softmax from saved log-sum-exps and chain through the LM head."""
    acc = c.dtype
    n = hidden.shape[0]
    dh = torch.empty(n, hidden.shape[1], dtype=acc, device=hidden.device) if need[0] else None  # (N, d)
    dw = torch.zeros(weight_mm.shape, dtype=acc, device=hidden.device) if need[1] else None  # (V, d)
    for a, b in _chunks(n, chunk):
        h = hidden[a:b]  # (C, d)
        x = _chunk_logits(h, weight_mm, acc)  # (C, V)
        x.sub_(lse[a:b].unsqueeze(-1)).exp_()  # (C, V) softmax
        _grad_from_probs_(x, ids[a:b], c[a:b], grad_rows[a:b].to(acc))
        _backprop_chunk(x, h, weight_mm, dh[a:b] if dh is not None else None, dw)
    return dh, dw


def _matmul_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The LM head's matmul dtype: the autocast dtype when autocast is on for this device, else promoted."""
    dev = hidden.device.type
    low = (torch.float32, torch.float16, torch.bfloat16)
    if torch.is_autocast_enabled(dev) and hidden.dtype in low and weight.dtype in low:
        return torch.get_autocast_dtype(dev)
    return torch.promote_types(hidden.dtype, weight.dtype)


def fused_linear_multi_hot_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: TargetsLike, *,
                                         weights: Optional[Weights] = None, ignore_index: int = IGNORE_INDEX,
                                         reduction: str = "mean", chunk_size: Optional[int] = None,
                                         loss: Optional[str] = None) -> torch.Tensor:
    """``multi_hot_cross_entropy(hidden @ weight.T, targets)`` without ever materialising the ``(N, V)`` logits.

    Rows are processed in chunks of ``chunk_size``; per chunk the logits are computed (in the autocast dtype
    under autocast, else the input dtype), upcast to float32 for the log-sum-exp, and turned into the
    chunk's loss and gradients. See :class:`_FusedLinearMCE` for how ``mean``/``sum`` (gradients computed
    in the forward, scaled in the backward) and ``none`` (recomputed in the backward) differ.

    Args:
        hidden: ``(..., d)`` final hidden states (after the final norm).
        weight: ``(V, d)`` LM-head weight (no bias).
        targets: a :class:`tst.BagTargets` or ``(..., s)`` integer ids / ``ignore_index``; ``...`` must match ``hidden``.
        weights, ignore_index, reduction, loss: as :func:`multi_hot_cross_entropy` (same normalisation).
        chunk_size: rows per chunk. Default: ``2**28 // (4·V)`` rows (a 256 MiB float32 chunk of logits),
            rounded down to a power of two (e.g. 2048 rows at V = 32768, 512 at V = 131072). Peak extra memory
            is about one such chunk (softmax and gradient are formed in place in the chunk's logits; under
            autocast add the chunk's low-precision logits) plus float32 ``(N, d)`` and ``(V, d)`` gradient
            buffers, independent of ``N·V``.

    Returns:
        Same value as the unfused path, float32 (float64 for float64 inputs). Gradients for ``hidden`` and
        ``weight`` come back in their own dtypes. With no input requiring grad (or under ``no_grad``) no
        gradient work is done.
    """
    _check_reduction(reduction)
    targets, weights, loss = unpack_targets(targets, weights, loss)
    if weight.dim() != 2 or hidden.dim() < 1 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"hidden must be (..., d) and weight (V, d) with the same d, got hidden {tuple(hidden.shape)} "
            f"and weight {tuple(weight.shape)}"
        )
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    vocab = weight.shape[0]
    _check_targets(targets, hidden.shape[:-1], vocab, ignore_index, "hidden.shape[:-1]")
    acc = _acc_dtype(hidden, weight)
    ids, w = _effective_weights(targets.to(hidden.device), weights, ignore_index, acc)  # (N, s), (N, s)
    flat = hidden.reshape(-1, hidden.shape[-1])  # (N, d)
    chunk = chunk_size or _default_chunk_rows(vocab)
    mm_dtype = _matmul_dtype(hidden, weight)  # read before autocast is switched off below
    with torch.autocast(hidden.device.type, enabled=False):  # dtypes are explicit from here on
        return _fused_dispatch(flat, weight, ids, w, reduction, chunk, mm_dtype, hidden.shape[:-1], loss)


def _fused_dispatch(flat, weight, ids, w, reduction, chunk, mm_dtype, lead_shape, loss):
    weight_mm = weight.to(mm_dtype)  # (V, d), a no-op without autocast
    need_grad = torch.is_grad_enabled() and (flat.requires_grad or weight.requires_grad)
    if reduction == "none":
        if need_grad:
            rows = _FusedLinearMCE.apply(flat, weight, ids, w, None, weight_mm.detach(), chunk, True, loss)
        else:
            rows, _, _ = _fused_rows(flat.detach(), weight_mm.detach(), ids, w, chunk, loss)
        return rows.reshape(lead_shape)  # (...,)
    if not need_grad:
        rows, _, _ = _fused_rows(flat.detach(), weight_mm.detach(), ids, w, chunk, loss)
        return _reduce(rows, w, reduction)
    scale = _mean_scale(w) if reduction == "mean" else torch.ones((), dtype=w.dtype, device=w.device)
    return _FusedLinearMCE.apply(flat, weight, ids, w, scale, weight_mm.detach(), chunk, False, loss)


def _mean_scale(w: torch.Tensor) -> torch.Tensor:
    """1 / Σw over valid pairs, or 1 when there are none (the total is then exactly 0)."""
    norm = w.sum()
    return 1.0 / torch.where(norm > 0, norm, torch.ones_like(norm))

