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

Targets: a :class:`tst.BagTargets` (what ``Phase.fold`` returns: ids *and* their weighting), or a plain
``(..., s)`` id tensor with ``weights=`` (uniform by default). The fused LM head + MCE is in ``tst.fused``.

Checks: shapes and dtypes always; target-id ranges only for CPU tensors, where the check needs no
device sync — trainers check ids where batches enter (the reference trainer checks each batch on the
host), and on an accelerator an out-of-range id fails the gather's own bounds assert.

Precision: logits are upcast to float32 inside (float64 inputs stay float64, for ``gradcheck``); losses come
back in that dtype and gradients in the input dtypes.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from .bags import IGNORE_INDEX
from .schedule import LOSSES, BagTargets
from .weights import Weights, resolve_weights

__all__ = ["LOSSES", "multi_hot_cross_entropy", "multi_hot_weight_sum"]

#: Budget for one chunk of float32 logits, in bytes. A chunk of ``rows × V`` logits (plus at most one
#: temporary of the same size) stays around this, whatever the vocabulary size.
_CHUNK_BYTES = 2 ** 28  # 256 MiB

_REDUCTIONS = ("mean", "sum", "none")

TargetsLike = Union[BagTargets, torch.Tensor]


# The bag objectives (tst.schedule.LOSSES). ``mce``: Σ_i w_i·CE(z, t_i), the paper's MCE (one log-sum-exp
# per position). ``sum-to-one``: the bag as one composite label, −log Σ_i w̃_i·p(t_i) with w̃ = w/Σw, scaled
# by Σw (the paper's "MCEAlt"; a repeated token counts with its multiplicity, as in the MCE). Both equal
# F.cross_entropy when s = 1.


def unpack_targets(targets: TargetsLike, weights: Optional[Weights],
                   loss: Optional[str] = None) -> tuple[torch.Tensor, Weights, str]:
    """``(ids, weights, loss)`` from a :class:`BagTargets` (whose weighting and objective win; passing
    others is an error) or from an id tensor plus ``weights`` (``None`` → uniform) and ``loss`` (→ mce)."""
    if isinstance(targets, BagTargets):
        if weights is not None and not (isinstance(weights, str) and isinstance(targets.weights, str)
                                        and weights == targets.weights):
            raise ValueError("targets is a BagTargets, which carries its own weighting: do not pass weights=")
        if loss is not None and loss != targets.loss:
            raise ValueError("targets is a BagTargets, which carries its own objective: do not pass loss=")
        ids, weights, loss = targets
    elif isinstance(targets, torch.Tensor):
        ids, weights, loss = targets, "uniform" if weights is None else weights, loss or "mce"
    else:
        raise ValueError(f"targets must be a tst.BagTargets or a tensor of token ids, got {type(targets).__name__}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    return ids, weights, loss


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}: choose one of {', '.join(map(repr, _REDUCTIONS))}")


def _check_targets(targets: torch.Tensor, lead_shape: torch.Size, vocab_size: int, ignore_index: int,
                   what: str) -> None:
    """Shapes and dtype of ``targets``, and their id range when they live on the CPU (no device sync)."""
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"targets must be an integer tensor of token ids, got dtype {targets.dtype}")
    if targets.dim() < 1 or targets.shape[:-1] != lead_shape:
        raise ValueError(
            f"targets must have shape (..., s) whose leading dims match {what} {tuple(lead_shape)}, "
            f"got targets of shape {tuple(targets.shape)}"
        )
    if targets.shape[-1] < 1:
        raise ValueError("targets must have at least one target per position (s >= 1)")
    if targets.numel() == 0 or targets.device.type != "cpu":
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


def multi_hot_weight_sum(targets: TargetsLike, weights: Optional[Weights] = None,
                         ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Σ w_i over the valid (position, target) pairs of ``targets`` ``(..., s)``: the ``"mean"`` denominator.

    Returns a float32 scalar. ``multi_hot_cross_entropy(..., reduction="sum") / multi_hot_weight_sum(...)``
    equals ``reduction="mean"``; summing both over micro-batches / ranks gives the global mean.
    """
    ids, weights, _ = unpack_targets(targets, weights)
    _, w = _effective_weights(ids, weights, ignore_index, torch.float32)
    return w.sum()


def _default_chunk_rows(vocab_size: int) -> int:
    """Rows per chunk so that one chunk of float32 logits is about ``_CHUNK_BYTES`` (256 MiB)."""
    rows = max(1, _CHUNK_BYTES // (4 * vocab_size))
    return 1 << (rows.bit_length() - 1) if rows >= 64 else rows  # a power of two for matmul-friendly shapes


def _row_terms(lse: torch.Tensor, z: torch.Tensor, w: torch.Tensor, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row losses ``(C,)`` and the per-target gradient coefficients ``c`` ``(C, s)`` of the objective.

    lse ``(C,)``, gathered target logits z ``(C, s)``, w ``(C, s)`` (0 for ignored targets). Both objectives
    have the gradient ``(Σ_i c_i)·softmax(z) − Σ_i c_i·onehot(t_i)`` with ``Σ_i c_i = Σ_i w_i``:

    * ``mce``: row = Σ_i w_i·(lse − z_i), c = w;
    * ``sum-to-one``: row = W·(lse − log Σ_i (w_i/W)·e^{z_i}) with W = Σ_i w_i, c = W·q where
      q = softmax over the bag of z_i + log w_i (each target's share of the bag's probability).

    Zero-weight pairs are masked with ``where``, so an ignored target whose (placeholder) logit is −inf
    cannot turn a row into ``0·inf = NaN``.
    """
    zero = torch.zeros((), dtype=z.dtype, device=z.device)
    if loss == "mce":
        ce = lse.unsqueeze(-1) - z  # (C, s)
        return torch.where(w > 0, w * ce, zero).sum(-1), w
    total = w.sum(-1)  # (C,) W
    logits_bag = torch.where(w > 0, z + torch.log(torch.where(w > 0, w, torch.ones_like(w))), -torch.inf)  # (C, s)
    lse_bag = torch.logsumexp(logits_bag, dim=-1)  # (C,)
    safe = total > 0
    rows = torch.where(safe, total * (lse - lse_bag + torch.log(torch.where(safe, total, torch.ones_like(total)))), zero)
    q = torch.where(safe.unsqueeze(-1), torch.softmax(torch.where(safe.unsqueeze(-1), logits_bag, zero), dim=-1), zero)
    return rows, q * total.unsqueeze(-1)  # (C,), (C, s)


def _grad_from_probs_(p: torch.Tensor, ids: torch.Tensor, c: torch.Tensor, scale: torch.Tensor,
                      row_norm: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Turn softmax probabilities ``p`` ``(C, V)`` into the bag objective's gradient wrt the logits, in place.

    The gradient is ``(Σ_i c_i)·softmax(z) − Σ_i c_i·onehot(t_i)`` (``c`` from :func:`_row_terms`: the
    weights for the MCE); each row is then multiplied by ``scale`` (``(C,)`` or a scalar: the upstream
    gradient, already divided by the mean's norm). ``row_norm`` ``(C, 1)``: when given, ``p`` holds
    unnormalised ``exp(z − max)`` and is divided by it in the same pass (saves one sweep over the chunk).
    Repeated ids in a bag accumulate (``scatter_add``), so a token appearing k times gets k·c.
    """
    scale = scale.reshape(-1, 1) if scale.dim() else scale  # (C, 1) or ()
    factor = c.sum(-1, keepdim=True) * scale  # (C, 1)
    p.mul_(factor if row_norm is None else factor / row_norm)  # (C, V)
    p.scatter_add_(-1, ids, -(c * scale))  # (C, V)
    return p


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(n, start + size)


# --------------------------------------------------------------------------------------------------
# Multi-hot cross-entropy on materialised logits
# --------------------------------------------------------------------------------------------------

def _mce_rows(logits: torch.Tensor, ids: torch.Tensor, w: torch.Tensor, chunk: int, loss: str):
    """Per-row losses, log-sum-exps and gradient coefficients: logits ``(N, V)``, ids/w ``(N, s)`` →
    ``((N,), (N,), (N, s))`` in w's dtype.

    Row chunks keep the upcast copy (bf16 logits) and logsumexp's temporary to one chunk.
    """
    n = logits.shape[0]
    lse = torch.empty(n, dtype=w.dtype, device=logits.device)  # (N,)
    for a, b in _chunks(n, chunk):
        lse[a:b] = torch.logsumexp(logits[a:b].to(w.dtype), dim=-1)  # (C,)
    z = logits.gather(-1, ids).to(w.dtype)  # (N, s)
    rows, c = _row_terms(lse, z, w, loss)
    return rows, lse, c


class _MultiHotCE(torch.autograd.Function):
    """Per-row MCE ``(N,)`` from logits ``(N, V)``; the backward is written out to save memory.

    Autograd through logsumexp + gather would hold several ``(N, V)`` temporaries; here the backward
    writes softmax·Σw − scatter(w) straight into the one ``(N, V)`` gradient buffer, chunk by chunk.
    """

    @staticmethod
    def forward(ctx, logits, ids, w, chunk, loss):  # noqa: D102
        rows, lse, c = _mce_rows(logits, ids, w, chunk, loss)
        ctx.save_for_backward(logits, ids, c, lse)
        ctx.chunk = chunk
        return rows

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_rows):  # noqa: D102
        logits, ids, c, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)  # (N, V) in the logits dtype
        direct = grad.dtype == c.dtype  # fp32/fp64 logits: compute straight into the output buffer
        for a, b in _chunks(logits.shape[0], ctx.chunk):
            buf = grad[a:b] if direct else torch.empty(b - a, logits.shape[1], dtype=c.dtype, device=grad.device)
            torch.sub(logits[a:b], lse[a:b].unsqueeze(-1), out=buf).exp_()  # (C, V) softmax
            _grad_from_probs_(buf, ids[a:b], c[a:b], grad_rows[a:b].to(c.dtype))
            if not direct:
                grad[a:b] = buf  # cast back to the logits dtype, one chunk at a time
        return grad, None, None, None, None


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


def multi_hot_cross_entropy(logits: torch.Tensor, targets: TargetsLike, *, weights: Optional[Weights] = None,
                            ignore_index: int = IGNORE_INDEX, reduction: str = "mean",
                            loss: Optional[str] = None) -> torch.Tensor:
    """Multi-hot cross-entropy: each position's logits scored against a bag of ``s`` target ids.

    One log-sum-exp per position whatever ``s`` (never ``s`` CE calls); logits upcast to float32 inside.

    Args:
        logits: ``(..., V)``, any float dtype.
        targets: a :class:`tst.BagTargets`, or ``(..., s)`` integer ids in ``[0, V)`` or ``ignore_index``;
            ``...`` must match ``logits``.
        weights: per-offset weighting for plain id tensors (``tst.weights.resolve_weights``; default uniform).
        ignore_index: target id that contributes nothing.
        reduction: ``"mean"`` → Σ w_i·CE_i over valid pairs ÷ Σ w_i over the same pairs (0.0 if none);
            ``"sum"`` → the numerator only; ``"none"`` → shape ``logits.shape[:-1]``, each position's
            **unnormalised** Σ_i w_i·CE_i over its valid targets (0 where all are ignored).
        loss: the bag objective for plain id tensors, one of :data:`LOSSES` (default ``mce``); a
            ``BagTargets`` carries its own. ``mean`` normalises both by Σ w over valid pairs.

    Returns:
        float32 (float64 for float64 logits). With ``s = 1`` this equals ``F.cross_entropy`` for every reduction.

    Raises:
        ValueError: shape mismatch, out-of-range target ids, bad weights or an unknown reduction.
    """
    _check_reduction(reduction)
    targets, weights, loss = unpack_targets(targets, weights, loss)
    if logits.dim() < 1:
        raise ValueError("logits must have shape (..., V)")
    vocab = logits.shape[-1]
    _check_targets(targets, logits.shape[:-1], vocab, ignore_index, "logits.shape[:-1]")
    acc = _acc_dtype(logits)
    ids, w = _effective_weights(targets.to(logits.device), weights, ignore_index, acc)  # (N, s), (N, s)
    flat = logits.reshape(-1, vocab)  # (N, V)
    chunk = _default_chunk_rows(vocab)
    if torch.is_grad_enabled() and flat.requires_grad:
        rows = _MultiHotCE.apply(flat, ids, w, chunk, loss)  # (N,)
    else:
        rows, _, _ = _mce_rows(flat, ids, w, chunk, loss)  # (N,) no graph, no saved tensors
    out = _reduce(rows, w, reduction)
    return out.reshape(logits.shape[:-1]) if reduction == "none" else out


