"""Output superposition: the multi-hot cross-entropy (MCE) and a fused LM-head + MCE.

Every position predicts a bag of ``s`` future tokens. With ``z`` the position's logits, ``t_1 … t_s`` its
targets and ``w_1 … w_s`` the bag weights, the MCE of one position is

    Σ_i w_i · CE(z, t_i)  =  (Σ_i w_i) · logsumexp(z)  −  Σ_i w_i · z[t_i]

which is what the paper's Listing 3 computes with ``s`` separate ``F.cross_entropy`` calls. Here the
log-sum-exp is computed **once** per position, so the cost and the memory do not grow with ``s``.

Normalisation (``reduction="mean"``): Σ w_i·CE over all valid (position, target) pairs ÷ Σ w_i over the same
pairs. With every target valid this is exactly Listing 3; when some targets are ``ignore_index`` (the last
position of each superposition row) it differs from Listing 3 only in how the partial bag is weighted
(Listing 3 takes a separate mean per bag offset). ``"sum"`` returns the numerator, and
:func:`multi_hot_weight_sum` returns the denominator so that a trainer can normalise by a global count
under gradient accumulation or data parallelism.

Precision: logits are upcast to float32 inside (float64 inputs stay float64, for ``gradcheck``); losses come
back in that dtype and gradients in the input dtypes.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from .bags import IGNORE_INDEX

__all__ = [
    "resolve_weights",
    "multi_hot_cross_entropy",
    "multi_hot_weight_sum",
    "fused_linear_multi_hot_cross_entropy",
    "WEIGHTINGS",
]

Weights = Union[str, torch.Tensor]

#: Named weightings ``g(i)`` over the 1-based bag position ``i`` (paper §5.2, App. D).
WEIGHTINGS = ("uniform", "power", "exp", "first")

_REDUCTIONS = ("mean", "sum", "none")

#: Budget for one chunk of float32 logits, in bytes. A chunk of ``rows × V`` logits (plus at most one
#: temporary of the same size) stays around this, whatever the vocabulary size.
_CHUNK_BYTES = 2 ** 28  # 256 MiB


# --------------------------------------------------------------------------------------------------
# Weights and validation
# --------------------------------------------------------------------------------------------------

def resolve_weights(weights: Weights, bag_size: int, device=None) -> torch.Tensor:
    """Per-offset bag weights ``g(i)``, ``i = 1 … s``, as a float32 tensor of shape ``(s,)``.

    Args:
        weights: ``"uniform"`` (``g = 1``), ``"power"`` (``g = 1/i``), ``"exp"`` (``g = e^(−i)``), ``"first"``
            (only the first target: ``1, 0, 0, …``), or a 1-D tensor of exactly ``s`` non-negative finite
            weights, not all zero.
        bag_size: ``s``, the number of targets per position.
        device: where the result lives.

    Raises:
        ValueError: unknown name, or a tensor of the wrong shape, with negative / non-finite values, or all zero.
    """
    if bag_size < 1:
        raise ValueError(f"bag_size must be >= 1, got {bag_size}")
    if isinstance(weights, torch.Tensor):
        return _check_weight_tensor(weights, bag_size).to(device=device, dtype=torch.float32)
    if not isinstance(weights, str) or weights not in WEIGHTINGS:
        raise ValueError(
            f"unknown weights {weights!r}: choose one of {', '.join(map(repr, WEIGHTINGS))} "
            f"or pass a 1-D tensor of {bag_size} non-negative weights"
        )
    i = torch.arange(1, bag_size + 1, dtype=torch.float32, device=device)  # (s,) 1-based positions
    if weights == "uniform":
        return torch.ones_like(i)
    if weights == "power":
        return 1.0 / i
    if weights == "exp":
        return torch.exp(-i)
    return (i == 1).to(torch.float32)  # "first"


def _check_weight_tensor(weights: torch.Tensor, bag_size: int) -> torch.Tensor:
    if weights.dim() != 1 or weights.numel() != bag_size:
        raise ValueError(
            f"a weights tensor must be 1-D with one weight per bag offset: expected shape ({bag_size},), "
            f"got {tuple(weights.shape)}"
        )
    if weights.is_complex():
        raise ValueError(f"weights must be real numbers, got dtype {weights.dtype}")
    w = weights.detach().double()
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"weights must be finite, got {weights.tolist()}")
    if bool((w < 0).any()):
        raise ValueError(f"weights must be non-negative, got {weights.tolist()}")
    if not bool((w > 0).any()):
        raise ValueError(f"weights must not all be zero (nothing would be trained), got {weights.tolist()}")
    return weights.detach()


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}: choose one of {', '.join(map(repr, _REDUCTIONS))}")


def _check_targets(targets: torch.Tensor, lead_shape: torch.Size, vocab_size: int, ignore_index: int,
                   what: str) -> None:
    """Shapes, dtype and id range of ``targets``.

    The range check costs one min/max reduction over the targets (and one host sync on GPU); the
    offending id is searched for only when the check fails.
    """
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"targets must be an integer tensor of token ids, got dtype {targets.dtype}")
    if targets.dim() < 1 or targets.shape[:-1] != lead_shape:
        raise ValueError(
            f"targets must have shape (..., s) whose leading dims match {what} {tuple(lead_shape)}, "
            f"got targets of shape {tuple(targets.shape)}"
        )
    if targets.shape[-1] < 1:
        raise ValueError("targets must have at least one target per position (s >= 1)")
    if targets.numel() == 0:
        return
    valid = targets != ignore_index
    lo, hi = torch.aminmax(torch.where(valid, targets, 0))
    if int(lo) < 0 or int(hi) >= vocab_size:
        bad = targets[valid & ((targets < 0) | (targets >= vocab_size))][0]
        raise ValueError(
            f"target id {int(bad)} is out of range for a vocabulary of V={vocab_size} tokens: ids must be in "
            f"[0, {vocab_size}) or equal ignore_index={ignore_index}"
        )


def _acc_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """Accumulation dtype: float32, or float64 when an input is float64 (so gradcheck is exact)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _effective_weights(targets: torch.Tensor, weights: Weights, ignore_index: int, dtype: torch.dtype):
    """Flattened safe target ids and per-pair weights with ignored pairs zeroed.

    ``targets`` ``(..., s)`` → ``(ids (N, s) int64 with ignored ids replaced by 0, w (N, s) dtype)``.
    Replacing ignored ids by 0 lets every pair go through ``gather``/``scatter_add`` with weight 0.
    """
    s = targets.shape[-1]
    tgt = targets.reshape(-1, s)  # (N, s)
    valid = tgt != ignore_index  # (N, s)
    ids = torch.where(valid, tgt, 0).long()  # (N, s)
    w = resolve_weights(weights, s, targets.device).to(dtype)  # (s,)
    return ids, w * valid  # (N, s), (N, s)


def multi_hot_weight_sum(targets: torch.Tensor, weights: Weights = "uniform",
                         ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Σ w_i over the valid (position, target) pairs of ``targets`` ``(..., s)``: the ``"mean"`` denominator.

    Returns a float32 scalar. ``multi_hot_cross_entropy(..., reduction="sum") / multi_hot_weight_sum(...)``
    equals ``reduction="mean"``; summing both over micro-batches / ranks gives the global mean.
    """
    _, w = _effective_weights(targets, weights, ignore_index, torch.float32)
    return w.sum()


def _default_chunk_rows(vocab_size: int) -> int:
    """Rows per chunk so that one chunk of float32 logits is about ``_CHUNK_BYTES`` (256 MiB)."""
    rows = max(1, _CHUNK_BYTES // (4 * vocab_size))
    return 1 << (rows.bit_length() - 1) if rows >= 64 else rows  # a power of two for matmul-friendly shapes


def _row_losses(lse: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Σ_i w_i·(lse − z_i) per row: lse ``(C,)``, gathered target logits z ``(C, s)``, w ``(C, s)`` → ``(C,)``.

    Zero-weight pairs are masked with ``where`` rather than multiplied, so an ignored target whose
    (placeholder) logit is −inf cannot turn the row into ``0·inf = NaN``.
    """
    ce = lse.unsqueeze(-1) - z  # (C, s)
    return torch.where(w > 0, w * ce, torch.zeros((), dtype=ce.dtype, device=ce.device)).sum(-1)  # (C,)


def _grad_from_probs_(p: torch.Tensor, ids: torch.Tensor, w: torch.Tensor, scale: torch.Tensor,
                      row_norm: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Turn softmax probabilities ``p`` ``(C, V)`` into the MCE gradient wrt the logits, in place.

    d/dz Σ_i w_i·(lse − z_i) = (Σ_i w_i)·softmax(z) − Σ_i w_i·onehot(t_i); each row is then multiplied by
    ``scale`` (``(C,)`` or a scalar: the upstream gradient, already divided by the mean's norm).
    ``row_norm`` ``(C, 1)``: when given, ``p`` holds unnormalised ``exp(z − max)`` and is divided by it in
    the same pass (saves one sweep over the chunk).
    Repeated ids in a bag accumulate (``scatter_add``), so a token appearing k times gets k·w.
    """
    scale = scale.reshape(-1, 1) if scale.dim() else scale  # (C, 1) or ()
    factor = w.sum(-1, keepdim=True) * scale  # (C, 1)
    p.mul_(factor if row_norm is None else factor / row_norm)  # (C, V)
    p.scatter_add_(-1, ids, -(w * scale))  # (C, V)
    return p


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(n, start + size)


# --------------------------------------------------------------------------------------------------
# Multi-hot cross-entropy on materialised logits
# --------------------------------------------------------------------------------------------------

def _mce_rows(logits: torch.Tensor, ids: torch.Tensor, w: torch.Tensor, chunk: int):
    """Per-row losses and log-sum-exps: logits ``(N, V)``, ids/w ``(N, s)`` → ``((N,), (N,))`` in w's dtype.

    Row chunks keep the upcast copy (bf16 logits) and logsumexp's temporary to one chunk.
    """
    n = logits.shape[0]
    lse = torch.empty(n, dtype=w.dtype, device=logits.device)  # (N,)
    for a, b in _chunks(n, chunk):
        lse[a:b] = torch.logsumexp(logits[a:b].to(w.dtype), dim=-1)  # (C,)
    z = logits.gather(-1, ids).to(w.dtype)  # (N, s)
    return _row_losses(lse, z, w), lse


class _MultiHotCE(torch.autograd.Function):
    """Per-row MCE ``(N,)`` from logits ``(N, V)``; the backward is written out to save memory.

    Autograd through logsumexp + gather would hold several ``(N, V)`` temporaries; here the backward
    writes softmax·Σw − scatter(w) straight into the one ``(N, V)`` gradient buffer, chunk by chunk.
    """

    @staticmethod
    def forward(ctx, logits, ids, w, chunk):  # noqa: D102
        rows, lse = _mce_rows(logits, ids, w, chunk)
        ctx.save_for_backward(logits, ids, w, lse)
        ctx.chunk = chunk
        return rows

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_rows):  # noqa: D102
        logits, ids, w, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)  # (N, V) in the logits dtype
        direct = grad.dtype == w.dtype  # fp32/fp64 logits: compute straight into the output buffer
        for a, b in _chunks(logits.shape[0], ctx.chunk):
            buf = grad[a:b] if direct else torch.empty(b - a, logits.shape[1], dtype=w.dtype, device=grad.device)
            torch.sub(logits[a:b], lse[a:b].unsqueeze(-1), out=buf).exp_()  # (C, V) softmax
            _grad_from_probs_(buf, ids[a:b], w[a:b], grad_rows[a:b].to(w.dtype))
            if not direct:
                grad[a:b] = buf  # cast back to the logits dtype, one chunk at a time
        return grad, None, None, None


def _reduce(rows: torch.Tensor, w: torch.Tensor, reduction: str) -> torch.Tensor:
    """rows ``(N,)`` → scalar (mean: ÷ Σw over valid pairs, 0 when there are none) or ``(N,)``."""
    if reduction == "none":
        return rows
    total = rows.sum()
    if reduction == "sum":
        return total
    norm = w.sum()
    # No valid pair → total is exactly 0 and so are its grads; dividing by 1 keeps it 0 instead of NaN.
    return total / torch.where(norm > 0, norm, torch.ones_like(norm))


def multi_hot_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, *, weights: Weights = "uniform",
                            ignore_index: int = IGNORE_INDEX, reduction: str = "mean") -> torch.Tensor:
    """Multi-hot cross-entropy: each position's logits scored against a bag of ``s`` target ids.

    One log-sum-exp per position whatever ``s`` (never ``s`` CE calls); logits upcast to float32 inside.

    Args:
        logits: ``(..., V)``, any float dtype.
        targets: ``(..., s)`` integer ids in ``[0, V)`` or ``ignore_index``; ``...`` must match ``logits``.
        weights: per-offset weighting, see :func:`resolve_weights`.
        ignore_index: target id that contributes nothing.
        reduction: ``"mean"`` → Σ w_i·CE_i over valid pairs ÷ Σ w_i over the same pairs (0.0 if none);
            ``"sum"`` → the numerator only; ``"none"`` → shape ``logits.shape[:-1]``, each position's
            **unnormalised** Σ_i w_i·CE_i over its valid targets (0 where all are ignored).

    Returns:
        float32 (float64 for float64 logits). With ``s = 1`` this equals ``F.cross_entropy`` for every reduction.

    Raises:
        ValueError: shape mismatch, out-of-range target ids, bad weights or an unknown reduction.
    """
    _check_reduction(reduction)
    if logits.dim() < 1:
        raise ValueError("logits must have shape (..., V)")
    vocab = logits.shape[-1]
    _check_targets(targets, logits.shape[:-1], vocab, ignore_index, "logits.shape[:-1]")
    acc = _acc_dtype(logits)
    ids, w = _effective_weights(targets.to(logits.device), weights, ignore_index, acc)  # (N, s), (N, s)
    flat = logits.reshape(-1, vocab)  # (N, V)
    chunk = _default_chunk_rows(vocab)
    if torch.is_grad_enabled() and flat.requires_grad:
        rows = _MultiHotCE.apply(flat, ids, w, chunk)  # (N,)
    else:
        rows, _ = _mce_rows(flat, ids, w, chunk)  # (N,) no graph, no saved tensors
    out = _reduce(rows, w, reduction)
    return out.reshape(logits.shape[:-1]) if reduction == "none" else out


# --------------------------------------------------------------------------------------------------
# Fused LM head + multi-hot cross-entropy
# --------------------------------------------------------------------------------------------------

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
    def forward(ctx, hidden, weight, ids, w, scale, weight_mm, chunk, rows):  # noqa: D102
        ctx.need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        ctx.dtypes = (hidden.dtype, weight.dtype)
        ctx.chunk = chunk
        ctx.rows = rows
        if rows:
            out, lse = _fused_rows(hidden, weight_mm, ids, w, chunk)
            ctx.save_for_backward(hidden, weight_mm, ids, w, lse)
            return out  # (N,)
        out, dh, dw = _fused_total_with_grads(hidden, weight_mm, ids, w, scale, chunk, ctx.need)
        ctx.save_for_backward(dh, dw)
        return out  # scalar

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # noqa: D102
        if ctx.rows:
            hidden, weight_mm, ids, w, lse = ctx.saved_tensors
            # backward() may be called inside the caller's autocast region; our dtypes are explicit.
            with torch.autocast(hidden.device.type, enabled=False):
                dh, dw = _fused_rows_backward(hidden, weight_mm, ids, w, lse, grad_out, ctx.chunk, ctx.need)
        else:
            # Not in place: with retain_graph the saved gradients must survive for the next backward.
            dh, dw = ctx.saved_tensors
            dh = dh * grad_out if dh is not None else None  # (N, d)
            dw = dw * grad_out if dw is not None else None  # (V, d)
        dh = dh.to(ctx.dtypes[0]) if dh is not None else None
        dw = dw.to(ctx.dtypes[1]) if dw is not None else None
        return dh, dw, None, None, None, None, None, None


def _fused_total_with_grads(hidden, weight_mm, ids, w, scale, chunk, need):
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
        total += _row_losses(lse, z, w[a:b]).sum()
        _grad_from_probs_(x, ids[a:b], w[a:b], scale, sum_exp)  # x is now d(loss·scale)/dlogits
        _backprop_chunk(x, h, weight_mm, dh[a:b] if dh is not None else None, dw)
    return total * scale, dh, dw


def _fused_rows(hidden, weight_mm, ids, w, chunk):
    """Per-row losses ``(N,)`` and log-sum-exps ``(N,)``; no gradient work (also the eval path)."""
    acc = w.dtype
    n = hidden.shape[0]
    out = torch.empty(n, dtype=acc, device=hidden.device)  # (N,)
    lse = torch.empty(n, dtype=acc, device=hidden.device)  # (N,)
    for a, b in _chunks(n, chunk):
        x = _chunk_logits(hidden[a:b], weight_mm, acc)  # (C, V)
        z = x.gather(-1, ids[a:b])  # (C, s)
        lse[a:b] = torch.logsumexp(x, dim=-1)  # (C,)
        out[a:b] = _row_losses(lse[a:b], z, w[a:b])
    return out, lse


def _fused_rows_backward(hidden, weight_mm, ids, w, lse, grad_rows, chunk, need):
    """Recompute each chunk's softmax from saved log-sum-exps and chain through the LM head."""
    acc = w.dtype
    n = hidden.shape[0]
    dh = torch.empty(n, hidden.shape[1], dtype=acc, device=hidden.device) if need[0] else None  # (N, d)
    dw = torch.zeros(weight_mm.shape, dtype=acc, device=hidden.device) if need[1] else None  # (V, d)
    for a, b in _chunks(n, chunk):
        h = hidden[a:b]  # (C, d)
        x = _chunk_logits(h, weight_mm, acc)  # (C, V)
        x.sub_(lse[a:b].unsqueeze(-1)).exp_()  # (C, V) softmax
        _grad_from_probs_(x, ids[a:b], w[a:b], grad_rows[a:b].to(acc))
        _backprop_chunk(x, h, weight_mm, dh[a:b] if dh is not None else None, dw)
    return dh, dw


def _matmul_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The LM head's matmul dtype: the autocast dtype when autocast is on for this device, else promoted."""
    dev = hidden.device.type
    low = (torch.float32, torch.float16, torch.bfloat16)
    if torch.is_autocast_enabled(dev) and hidden.dtype in low and weight.dtype in low:
        return torch.get_autocast_dtype(dev)
    return torch.promote_types(hidden.dtype, weight.dtype)


def fused_linear_multi_hot_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                                         weights: Weights = "uniform", ignore_index: int = IGNORE_INDEX,
                                         reduction: str = "mean",
                                         chunk_size: Optional[int] = None) -> torch.Tensor:
    """``multi_hot_cross_entropy(hidden @ weight.T, targets)`` without ever materialising the ``(N, V)`` logits.

    Rows are processed in chunks of ``chunk_size``; per chunk the logits are computed (in the autocast dtype
    under autocast, else the input dtype), upcast to float32 for the log-sum-exp, and turned into the
    chunk's loss and gradients. See :class:`_FusedLinearMCE` for how ``mean``/``sum`` (gradients computed
    in the forward, scaled in the backward) and ``none`` (recomputed in the backward) differ.

    Args:
        hidden: ``(..., d)`` final hidden states (after the final norm).
        weight: ``(V, d)`` LM-head weight (no bias).
        targets: ``(..., s)`` integer ids or ``ignore_index``; ``...`` must match ``hidden``.
        weights, ignore_index, reduction: as :func:`multi_hot_cross_entropy` (same normalisation).
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
        return _fused_dispatch(flat, weight, ids, w, reduction, chunk, mm_dtype, hidden.shape[:-1])


def _fused_dispatch(flat, weight, ids, w, reduction, chunk, mm_dtype, lead_shape):
    weight_mm = weight.to(mm_dtype)  # (V, d), a no-op without autocast
    need_grad = torch.is_grad_enabled() and (flat.requires_grad or weight.requires_grad)
    if reduction == "none":
        if need_grad:
            rows = _FusedLinearMCE.apply(flat, weight, ids, w, None, weight_mm.detach(), chunk, True)
        else:
            rows, _ = _fused_rows(flat.detach(), weight_mm.detach(), ids, w, chunk)
        return rows.reshape(lead_shape)  # (...,)
    if not need_grad:
        rows, _ = _fused_rows(flat.detach(), weight_mm.detach(), ids, w, chunk)
        return _reduce(rows, w, reduction)
    scale = _mean_scale(w) if reduction == "mean" else torch.ones((), dtype=w.dtype, device=w.device)
    return _FusedLinearMCE.apply(flat, weight, ids, w, scale, weight_mm.detach(), chunk, False)


def _mean_scale(w: torch.Tensor) -> torch.Tensor:
    """1 / Σw over valid pairs, or 1 when there are none (the total is then exactly 0)."""
    norm = w.sum()
    return 1.0 / torch.where(norm > 0, norm, torch.ones_like(norm))

