"""The LM head fused with the multi-hot cross-entropy: ``multi_hot_cross_entropy(hidden @ W.T, targets)``
without ever materialising the ``(N, V)`` logits (forward or backward), in row chunks — the scheme of
Liger's fused linear cross-entropy, with one log-sum-exp per position for a bag of ``s`` targets.

Two backends do the per-chunk softmax work between the matmuls (``backend=`` or the environment
variable ``TST_FUSED_BACKEND``; default ``auto``):

- ``torch``: float32 chunk logits swept by PyTorch ops (max, exp, sum, scale, scatter) — the reference
  path, and the only one on CPU and for float64;
- ``triton``: the chunk logits stay in the matmul dtype and one Triton kernel reads each row twice and
  writes its gradient once (``tst.fused_triton``). ``auto`` picks it for CUDA tensors when Triton is
  installed and a one-time self-check against the torch backend passes on that device (otherwise it
  warns once and uses ``torch``).
"""
from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from typing import Optional

import torch

from .bags import IGNORE_INDEX
from .loss import (TargetsLike, _acc_dtype, _check_reduction, _check_targets, _chunks, _default_chunk_rows,
                   _effective_weights, _grad_from_probs_, _reduce, _row_terms, unpack_targets)
from .weights import Weights

__all__ = ["BACKENDS", "ENV_BACKEND", "fused_linear_multi_hot_cross_entropy"]

BACKENDS = ("auto", "torch", "triton")
#: Environment variable that sets the backend when the call does not pass ``backend=``.
ENV_BACKEND = "TST_FUSED_BACKEND"
#: One chunk of logits in the matmul dtype on the Triton backend: bf16 gets 1024 rows at V = 131072, which
#: keeps the dW matmul (K = rows) compute-bound on an H100/H200 while the float32 dW is re-read per chunk.
_TRITON_CHUNK_BYTES = 2 ** 28  # 256 MiB
# torch.mm / torch.addmm with out_dtype= (bf16 operands, float32 result) exist on CUDA since torch 2.8.
_MM_OUT_DTYPE = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 8)


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


class _TorchChunks:
    """The per-chunk softmax work in PyTorch ops, on a float32 (float64) copy of the chunk's logits."""

    name = "torch"

    @staticmethod
    def logits(h, weight_mm, acc):
        return _chunk_logits(h, weight_mm, acc)  # (C, V) in acc

    @staticmethod
    def loss_and_grad_(x, ids, w, scale, loss="mce"):
        """Rows ``(C,)``; ``x`` becomes d(Σ rows·scale)/dlogits (``scale`` a scalar tensor)."""
        z = x.gather(-1, ids)  # (C, s), before x is overwritten
        lse, sum_exp = _exp_lse_(x)  # (C,), (C, 1); x is now exp(logits − max)
        rows, c = _row_terms(lse, z, w, loss)
        _grad_from_probs_(x, ids, c, scale, sum_exp)
        return rows

    @staticmethod
    def loss(x, ids, w, loss="mce"):
        """Rows ``(C,)``, log-sum-exps ``(C,)`` and gradient coefficients ``(C, s)``; ``x`` untouched."""
        lse = torch.logsumexp(x, dim=-1)  # (C,)
        rows, c = _row_terms(lse, x.gather(-1, ids), w, loss)
        return rows, lse, c

    @staticmethod
    def grad_(x, ids, c, lse, scale):
        """``x`` becomes the gradient for per-row upstream ``scale`` ``(C,)``, from the saved ``lse``."""
        x.sub_(lse.unsqueeze(-1)).exp_()  # (C, V) softmax
        _grad_from_probs_(x, ids, c, scale)


class _TritonChunks:
    """The per-chunk softmax work in one Triton kernel, on the chunk's logits in the matmul dtype."""

    name = "triton"

    @staticmethod
    def logits(h, weight_mm, acc):
        return h.to(weight_mm.dtype) @ weight_mm.t()  # (C, V) in the matmul dtype, no float32 copy

    # The kernel computes the MCE only (the sum-to-one objective runs on the torch backend).
    @staticmethod
    def loss_and_grad_(x, ids, w, scale, loss="mce"):
        from .fused_triton import chunk_loss_
        return chunk_loss_(x, ids, w, scale)[0]

    @staticmethod
    def loss(x, ids, w, loss="mce"):
        from .fused_triton import chunk_loss_
        rows, lse = chunk_loss_(x, ids, w)
        return rows, lse, w  # the MCE's gradient coefficients are its weights

    @staticmethod
    def grad_(x, ids, c, lse, scale):
        from .fused_triton import chunk_loss_
        chunk_loss_(x, ids, c, scale)  # recomputes the log-sum-exp: one more read of the row, no state


def _backprop_chunk(grad_logits: torch.Tensor, h: torch.Tensor, weight_mm: torch.Tensor,
                    dh: Optional[torch.Tensor], dw: Optional[torch.Tensor]) -> None:
    """Chain rule through ``logits = h @ W.T`` for one chunk, in place.

    Writes ``grad_logits @ W`` into ``dh`` ``(C, d)`` and adds ``grad_logits.T @ h`` into ``dw`` ``(V, d)``;
    either may be None (no grad wanted). No ``(V, d)`` temporary is created per chunk when the matmul
    dtype is the buffer dtype (``out=``/``addmm_``), or on CUDA with low-precision operands (cuBLAS
    accumulates into the float32 buffer directly, ``out_dtype=``).
    """
    g = grad_logits.to(weight_mm.dtype)  # (C, V) in the matmul dtype
    direct = _MM_OUT_DTYPE and g.is_cuda and g.dtype in (torch.float16, torch.bfloat16)
    if dh is not None:
        if dh.dtype == g.dtype:
            torch.mm(g, weight_mm, out=dh)  # (C, d)
        elif direct and dh.dtype == torch.float32:
            torch.mm(g, weight_mm, out_dtype=torch.float32, out=dh)  # (C, d) float32 result of bf16 operands
        else:
            dh.copy_(g @ weight_mm)  # low-precision matmul, float32 result buffer
    if dw is not None:
        hm = h.to(weight_mm.dtype)  # (C, d)
        if dw.dtype == g.dtype:
            dw.addmm_(g.t(), hm)  # (V, d)
        elif direct and dw.dtype == torch.float32:
            torch.addmm(dw, g.t(), hm, out_dtype=torch.float32, out=dw)  # (V, d) accumulated in float32
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

    ``ops`` is the backend's chunk work (:class:`_TorchChunks` or :class:`_TritonChunks`).
    """

    @staticmethod
    def forward(ctx, hidden, weight, ids, w, scale, weight_mm, chunk, rows, ops, loss):  # noqa: D102
        ctx.need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        ctx.dtypes = (hidden.dtype, weight.dtype)
        ctx.chunk = chunk
        ctx.rows = rows
        ctx.ops = ops
        if rows:
            out, lse, c = _fused_rows(hidden, weight_mm, ids, w, chunk, ops, loss)
            ctx.save_for_backward(hidden, weight_mm, ids, c, lse)
            return out  # (N,)
        out, dh, dw = _fused_total_with_grads(hidden, weight_mm, ids, w, scale, chunk, ctx.need, ops, loss)
        ctx.save_for_backward(dh, dw)
        return out  # scalar

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # noqa: D102
        if ctx.rows:
            hidden, weight_mm, ids, c, lse = ctx.saved_tensors
            # backward() may be called inside the caller's autocast region; our dtypes are explicit.
            with torch.autocast(hidden.device.type, enabled=False):
                dh, dw = _fused_rows_backward(hidden, weight_mm, ids, c, lse, grad_out, ctx.chunk, ctx.need,
                                              ctx.ops)
        else:
            # Not in place: with retain_graph the saved gradients must survive for the next backward.
            # Scaled straight into the input dtype: no second float32 (V, d) buffer.
            dh, dw = ctx.saved_tensors
            return (_scaled(dh, grad_out, ctx.dtypes[0]), _scaled(dw, grad_out, ctx.dtypes[1]),
                    None, None, None, None, None, None, None, None)
        dh = dh.to(ctx.dtypes[0]) if dh is not None else None
        dw = dw.to(ctx.dtypes[1]) if dw is not None else None
        return dh, dw, None, None, None, None, None, None, None, None


def _scaled(grad: Optional[torch.Tensor], factor: torch.Tensor, dtype: torch.dtype) -> Optional[torch.Tensor]:
    """``grad · factor`` as a new tensor of ``dtype``, rounded once (no intermediate of ``grad``'s size)."""
    if grad is None:
        return None
    return torch.mul(grad, factor, out=torch.empty(grad.shape, dtype=dtype, device=grad.device))


def _grad_buffers(hidden, weight_mm, acc, need):
    """Gradient buffers: dw ``(V, d)`` is summed into over chunks, so it is float32 (float64); each row of
    dh ``(N, d)`` is written once by one matmul, so it takes the hidden dtype when that is the matmul's
    low-precision dtype (bf16 hidden: no float32 copy) and the accumulation dtype otherwise."""
    low = hidden.dtype == weight_mm.dtype and hidden.dtype in (torch.float16, torch.bfloat16)
    dh = torch.empty(hidden.shape, dtype=hidden.dtype if low else acc, device=hidden.device) if need[0] else None
    dw = torch.zeros(weight_mm.shape, dtype=acc, device=hidden.device) if need[1] else None  # (V, d)
    return dh, dw


def _fused_total_with_grads(hidden, weight_mm, ids, w, scale, chunk, need, ops, loss):
    """Scalar Σ rows·scale and its gradients wrt hidden ``(N, d)`` and weight ``(V, d)``, chunk by chunk.

    Gradients accumulate in the accumulation dtype (float32) and are cast to the input dtypes in backward.
    """
    acc = w.dtype
    dh, dw = _grad_buffers(hidden, weight_mm, acc, need)
    total = torch.zeros((), dtype=acc, device=hidden.device)
    for a, b in _chunks(hidden.shape[0], chunk):
        h = hidden[a:b]  # (C, d)
        x = ops.logits(h, weight_mm, acc)  # (C, V)
        total += ops.loss_and_grad_(x, ids[a:b], w[a:b], scale, loss).sum()  # x is now d(loss·scale)/dlogits
        _backprop_chunk(x, h, weight_mm, dh[a:b] if dh is not None else None, dw)
    return total * scale, dh, dw


def _fused_rows(hidden, weight_mm, ids, w, chunk, ops, loss):
    """Per-row losses ``(N,)``, log-sum-exps ``(N,)`` and gradient coefficients ``(N, s)``; no gradient work
    (also the eval path)."""
    acc = w.dtype
    n = hidden.shape[0]
    out = torch.empty(n, dtype=acc, device=hidden.device)  # (N,)
    lse = torch.empty(n, dtype=acc, device=hidden.device)  # (N,)
    c = torch.empty_like(w)  # (N, s)
    for a, b in _chunks(n, chunk):
        out[a:b], lse[a:b], c[a:b] = ops.loss(ops.logits(hidden[a:b], weight_mm, acc), ids[a:b], w[a:b], loss)
    return out, lse, c


def _fused_rows_backward(hidden, weight_mm, ids, c, lse, grad_rows, chunk, need, ops):
    """Recompute each chunk's softmax (from the saved log-sum-exps) and chain through the LM head."""
    acc = c.dtype
    dh, dw = _grad_buffers(hidden, weight_mm, acc, need)
    for a, b in _chunks(hidden.shape[0], chunk):
        h = hidden[a:b]  # (C, d)
        x = ops.logits(h, weight_mm, acc)  # (C, V)
        ops.grad_(x, ids[a:b], c[a:b], lse[a:b], grad_rows[a:b].to(acc))
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
                                         backend: Optional[str] = None, loss: Optional[str] = None) -> torch.Tensor:
    """``multi_hot_cross_entropy(hidden @ weight.T, targets)`` without ever materialising the ``(N, V)`` logits.

    Rows are processed in chunks of ``chunk_size``; per chunk the logits are computed (in the autocast dtype
    under autocast, else the input dtype) and turned into the chunk's loss and gradients by the backend.
    See :class:`_FusedLinearMCE` for how ``mean``/``sum`` (gradients computed in the forward, scaled in the
    backward) and ``none`` (recomputed in the backward) differ.

    Args:
        hidden: ``(..., d)`` final hidden states (after the final norm).
        weight: ``(V, d)`` LM-head weight (no bias).
        targets: a :class:`tst.BagTargets` or ``(..., s)`` integer ids / ``ignore_index``; ``...`` must match ``hidden``.
        weights, ignore_index, reduction, loss: as :func:`multi_hot_cross_entropy` (same normalisation).
        chunk_size: rows per chunk. Default on the torch backend: ``2**28 // (4·V)`` rows (a 256 MiB float32
            chunk of logits), rounded down to a power of two (e.g. 2048 rows at V = 32768, 512 at V = 131072);
            on the triton backend: a 256 MiB chunk in the matmul dtype (bf16: 4096 rows at V = 32768, 1024 at
            V = 131072). Peak extra memory is about one such chunk (softmax and gradient are formed in place
            in the chunk's logits; on the torch backend under autocast add the chunk's low-precision logits)
            plus a float32 ``(V, d)`` gradient buffer and an ``(N, d)`` one (float32, or the hidden dtype when
            that is bf16/fp16), independent of ``N·V``.
        backend: ``"auto"`` (Triton for CUDA tensors when available and self-checked, else torch),
            ``"torch"`` or ``"triton"``; ``None`` reads the environment variable ``TST_FUSED_BACKEND``
            (default ``auto``). ``"triton"`` takes float32/float16/bfloat16 and needs CUDA tensors (CPU
            tensors only under Triton's interpreter). The Triton kernel computes the MCE; the ``sum-to-one``
            objective always runs on the torch backend.

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
    mm_dtype = _matmul_dtype(hidden, weight)  # read before autocast is switched off below
    ops = _chunk_ops(backend, hidden.device, mm_dtype, acc, loss)
    ids, w = _effective_weights(targets.to(hidden.device), weights, ignore_index, acc)  # (N, s), (N, s)
    flat = hidden.reshape(-1, hidden.shape[-1])  # (N, d)
    default_chunk = _triton_chunk_rows(vocab, mm_dtype) if ops is _TritonChunks else _default_chunk_rows(vocab)
    chunk = chunk_size or default_chunk
    with torch.autocast(hidden.device.type, enabled=False):  # dtypes are explicit from here on
        return _fused_dispatch(flat, weight, ids, w, reduction, chunk, mm_dtype, hidden.shape[:-1], ops, loss)


def _fused_dispatch(flat, weight, ids, w, reduction, chunk, mm_dtype, lead_shape, ops, loss):
    weight_mm = weight.to(mm_dtype)  # (V, d), a no-op without autocast
    need_grad = torch.is_grad_enabled() and (flat.requires_grad or weight.requires_grad)
    if reduction == "none":
        if need_grad:
            rows = _FusedLinearMCE.apply(flat, weight, ids, w, None, weight_mm.detach(), chunk, True, ops, loss)
        else:
            rows, _, _ = _fused_rows(flat.detach(), weight_mm.detach(), ids, w, chunk, ops, loss)
        return rows.reshape(lead_shape)  # (...,)
    if not need_grad:
        rows, _, _ = _fused_rows(flat.detach(), weight_mm.detach(), ids, w, chunk, ops, loss)
        return _reduce(rows, w, reduction)
    scale = _mean_scale(w) if reduction == "mean" else torch.ones((), dtype=w.dtype, device=w.device)
    return _FusedLinearMCE.apply(flat, weight, ids, w, scale, weight_mm.detach(), chunk, False, ops, loss)


def _mean_scale(w: torch.Tensor) -> torch.Tensor:
    """1 / Σw over valid pairs, or 1 when there are none (the total is then exactly 0)."""
    norm = w.sum()
    return 1.0 / torch.where(norm > 0, norm, torch.ones_like(norm))


# --------------------------------------------------------------------------------------------------
# Backend choice
# --------------------------------------------------------------------------------------------------

#: Matmul (logits) dtypes the Triton kernel takes; it computes in float32 inside.
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: Per device: None once the Triton backend passed its self-check there, else why it did not.
_TRITON_CHECKED: dict[str, Optional[str]] = {}


def _chunk_ops(backend: Optional[str], device: torch.device, mm_dtype: torch.dtype, acc: torch.dtype,
               loss: str = "mce"):
    """The chunk backend for this call: the argument, else ``$TST_FUSED_BACKEND``, else ``auto``."""
    choice = backend or os.environ.get(ENV_BACKEND) or "auto"
    if choice not in BACKENDS:
        source = "backend" if backend else ENV_BACKEND
        raise ValueError(f"unknown fused-loss backend {choice!r} (from {source}): choose one of "
                         f"{', '.join(map(repr, BACKENDS))}")
    if loss != "mce":
        if backend == "triton":
            raise ValueError(f"backend='triton' computes the MCE only; loss={loss!r} runs on backend='torch'")
        return _TorchChunks
    if choice == "torch" or (choice == "auto" and device.type != "cuda"):
        return _TorchChunks
    unusable = _triton_unusable(device, mm_dtype, acc)
    if choice == "triton":
        if unusable:
            raise ValueError(f"backend='triton' {unusable}")
        return _TritonChunks
    return _TorchChunks if unusable or _triton_self_check(device) else _TritonChunks


@functools.lru_cache(maxsize=None)
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _triton_unusable(device: torch.device, mm_dtype: torch.dtype, acc: torch.dtype) -> Optional[str]:
    """Why the Triton kernel cannot take this call (None: it can)."""
    if not _triton_installed():
        return "needs the triton package, which is not installed (pip install triton)"
    if acc != torch.float32 or mm_dtype not in _TRITON_DTYPES:
        return (f"computes in float32 and takes float32/float16/bfloat16 inputs, not {mm_dtype}; "
                "use backend='torch' for float64")
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        from .fused_triton import INTERPRETED
        if INTERPRETED:
            return None
    return (f"needs CUDA tensors, got {device.type} ones; CPU tensors run only in Triton's interpreter "
            "(TRITON_INTERPRET=1 set before triton is first imported)")


def _triton_self_check(device: torch.device) -> Optional[str]:
    """Once per device: does the Triton backend match the torch backend there? None if so, else why not.

    A failure (compile error, launch error, wrong numbers) warns once and ``auto`` stays on torch, so a
    Triton or driver version this kernel was never run on costs speed, never a wrong loss.
    """
    key = str(device)
    if key not in _TRITON_CHECKED:
        try:
            # Callable from inside the caller's no_grad / inference_mode.
            with torch.inference_mode(False), torch.enable_grad():
                problem = _compare_backends(device)
        except Exception as exc:  # noqa: BLE001 - any failure means "do not use it here"
            problem = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        if problem:
            warnings.warn(f"tst: the Triton fused loss failed its self-check on {device} ({problem}); "
                          f"using the PyTorch backend", RuntimeWarning, stacklevel=3)
        _TRITON_CHECKED[key] = problem
    return _TRITON_CHECKED[key]


def _compare_backends(device: torch.device) -> Optional[str]:
    """Loss and both gradients, triton vs torch, on a small case with ignored and repeated targets:
    float32 (tight) and bf16 autocast (loose), reductions ``sum`` and ``none``. None if all agree."""
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(19, 32, generator=gen).to(device)  # (N, d)
    weight = (torch.randn(300, 32, generator=gen) / 6).to(device)  # (V, d)
    targets = torch.randint(0, 300, (19, 3), generator=gen)  # (N, s)
    targets[0] = IGNORE_INDEX
    targets[1, 1:] = targets[1, 0]
    targets, upstream = targets.to(device), torch.rand(19, generator=gen).to(device)
    for low, tol in ((False, 1e-4), (True, 3e-2)):
        for reduction in ("sum", "none"):
            got, ref = (_loss_and_grads(hidden, weight, targets, upstream, reduction, low, name)
                        for name in ("triton", "torch"))
            for name, g, r in zip(("loss", "d hidden", "d weight"), got, ref):
                if not torch.allclose(g, r, rtol=tol, atol=tol * float(r.abs().max())):
                    err = float((g - r).abs().max())
                    return f"{name} differs by up to {err:.2e} ({'bf16' if low else 'float32'}, {reduction})"
    return None


def _loss_and_grads(hidden, weight, targets, upstream, reduction, low, backend):
    h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    with torch.autocast(hidden.device.type, dtype=torch.bfloat16, enabled=low):  # also overrides the caller's
        out = fused_linear_multi_hot_cross_entropy(h, w, targets, reduction=reduction, chunk_size=16,
                                                   backend=backend)
    (out * upstream if reduction == "none" else out).sum().backward()
    return out.detach(), h.grad, w.grad


def _triton_chunk_rows(vocab_size: int, dtype: torch.dtype) -> int:
    """Rows per Triton chunk: ``_TRITON_CHUNK_BYTES`` of logits in the matmul dtype, a power of two."""
    rows = max(1, _TRITON_CHUNK_BYTES // (torch.finfo(dtype).bits // 8 * vocab_size))
    return 1 << (rows.bit_length() - 1)
