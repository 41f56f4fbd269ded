"""The Triton kernel behind ``fused_linear_multi_hot_cross_entropy(..., backend="triton")``.

Imported only when that backend is used (``tst.fused`` imports it inside a function), so ``import tst``
never needs Triton. With ``TRITON_INTERPRET=1`` set before this module is first imported, Triton's
interpreter runs the kernel on CPU tensors: that is how the tests check it without a GPU.

What runs where, per chunk of ``C`` rows (the scheme of Liger's fused linear cross-entropy):

1. ``logits = h @ W.T`` — one cuBLAS matmul into a ``(C, V)`` buffer in the matmul dtype (bf16 under
   autocast); no float32 copy of the chunk.
2. :func:`_mce_chunk_kernel` — one program per row: an online max / sum-exp sweep over the row (float32
   in registers) gives the log-sum-exp; the row's loss is ``Σ_i w_i·(lse − z[t_i])``; with gradients a
   second sweep overwrites the row *in place* with ``c·softmax`` (``c = scale·Σ_i w_i``), then the ``s``
   target columns are rewritten with ``c·softmax − scale·Σ_{j: t_j = t} w_j`` computed in float32 (so
   ``softmax − 1`` never cancels in bf16; a token repeated in the bag gets its summed weight, and the
   repeated columns all store the same value).
3. ``dh = g @ W`` and ``dW += g.T @ h`` — two cuBLAS matmuls on the chunk's gradient.

Each logit is therefore read twice and written once by the kernel, in bf16; the ``s`` targets add
``O(s²)`` work per row, not per logit, which is why the cost does not grow with ``s``.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import triton
import triton.language as tl

__all__ = ["INTERPRETED", "chunk_loss_"]

#: Whether the kernel was built for Triton's CPU interpreter (``TRITON_INTERPRET=1`` at import time;
#: ``triton.knobs`` reads it from triton 3.4 on, older releases read the variable directly).
INTERPRETED = (bool(triton.knobs.runtime.interpret) if hasattr(triton, "knobs")
               else os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes"))

#: Largest vocabulary block one program holds in registers per sweep (Liger's choice for this layout).
MAX_BLOCK_V = 32768


@triton.jit
def _mce_chunk_kernel(x_ptr, x_stride, ids_ptr, w_ptr, scale_ptr, scale_stride, loss_ptr, lse_ptr,
                      n_targets, N_COLS: tl.constexpr,
                      GRAD: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_S: tl.constexpr):
    """Row ``program_id``: loss and log-sum-exp; with ``GRAD``, the row becomes d(scale·loss)/dlogits."""
    row = tl.program_id(0).to(tl.int64)  # int64: row · stride overflows int32 on large chunks
    x_row = x_ptr + row * x_stride
    bag = tl.arange(0, BLOCK_S)
    in_bag = bag < n_targets
    ids = tl.load(ids_ptr + row * n_targets + bag, mask=in_bag, other=0)  # (BLOCK_S,) ignored ids are 0
    w = tl.load(w_ptr + row * n_targets + bag, mask=in_bag, other=0.0)  # (BLOCK_S,) 0 where ignored
    z = tl.load(x_row + ids, mask=in_bag, other=0.0).to(tl.float32)  # (BLOCK_S,) target logits

    # Sweep 1: online max and sum of exp (Milakov & Gimelshein 2018). The max is clamped to 0 while
    # still -inf, so a block of -inf logits gives exp(-inf) = 0 instead of exp(-inf + inf) = NaN.
    m = float("-inf")
    total = 0.0
    for start in range(0, N_COLS, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        x = tl.load(x_row + cols, mask=cols < N_COLS, other=float("-inf")).to(tl.float32)  # (BLOCK_V,)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        total = total * tl.exp(m - shift) + tl.sum(tl.exp(x - shift), axis=0)
        m = m_new
    lse = m + tl.log(total)
    # masked before the product: an ignored target's placeholder logit may be -inf (0·inf = NaN)
    loss = tl.sum(tl.where(w > 0, lse - z, 0.0) * w, axis=0)
    tl.store(loss_ptr + row, loss)
    tl.store(lse_ptr + row, lse)

    if GRAD:
        scale = tl.load(scale_ptr + row * scale_stride).to(tl.float32)
        c = tl.sum(w, axis=0) * scale
        # Sweep 2: the softmax part of the gradient, in place, in the logits dtype.
        for start in range(0, N_COLS, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            x = tl.load(x_row + cols, mask=cols < N_COLS, other=float("-inf")).to(tl.float32)
            tl.store(x_row + cols, c * tl.exp(x - lse), mask=cols < N_COLS)
        # The s target columns, rewritten in float32 after every thread's sweep-2 store has landed.
        tl.debug_barrier()
        same = (ids[:, None] == ids[None, :]) & in_bag[None, :]  # (BLOCK_S, BLOCK_S)
        weight_of_id = tl.sum(tl.where(same, w[None, :], 0.0), axis=1)  # (BLOCK_S,) multiplicity-aware
        # An ignored slot (id 0, weight 0) rewrites column 0 with its own correct value.
        tl.store(x_row + ids, c * tl.exp(z - lse) - scale * weight_of_id, mask=in_bag)


def _launch_config(n_cols: int, block_v: Optional[int]) -> tuple[int, int]:
    """(BLOCK_V, num_warps): the whole row up to ``MAX_BLOCK_V`` columns, one warp per 1024 of them."""
    block = block_v or min(MAX_BLOCK_V, triton.next_power_of_2(n_cols))
    return block, max(4, min(32, block // 1024))


def chunk_loss_(logits: torch.Tensor, ids: torch.Tensor, w: torch.Tensor, scale: Optional[torch.Tensor] = None,
                block_v: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row MCE of one chunk; with ``scale``, overwrite ``logits`` with the gradient of ``Σ_rows scale·loss``.

    Args:
        logits: ``(C, V)`` contiguous, float32/float16/bfloat16; overwritten in place when ``scale`` is given.
        ids: ``(C, s)`` int64 target ids, ignored ones replaced by 0 (``tst.loss._effective_weights``).
        w: ``(C, s)`` float32 weights, 0 for ignored targets.
        scale: ``()`` or ``(1,)`` (one factor for every row: the mean's 1/Σw) or ``(C,)`` (the upstream
            gradient of ``reduction="none"``), float32; ``None``: forward only, ``logits`` untouched.
        block_v: columns per sweep step (tests use a small one to exercise the online log-sum-exp).

    Returns:
        rows ``(C,)`` float32 (Σ_i w_i·CE_i, unnormalised) and the log-sum-exps ``(C,)`` float32.
    """
    n_rows, n_cols = logits.shape
    n_targets = ids.shape[1]
    if not logits.is_contiguous():
        raise ValueError("chunk_loss_ needs contiguous logits (it writes the gradient in place)")
    rows = torch.empty(n_rows, dtype=torch.float32, device=logits.device)  # (C,)
    lse = torch.empty(n_rows, dtype=torch.float32, device=logits.device)  # (C,)
    if n_rows == 0:
        return rows, lse
    grad = scale is not None
    scale = (scale.reshape(-1).to(torch.float32).contiguous() if grad
             else torch.ones(1, dtype=torch.float32, device=logits.device))  # (1,) or (C,)
    if scale.numel() not in (1, n_rows):
        raise ValueError(f"scale must hold 1 or {n_rows} values, got {scale.numel()}")
    block, warps = _launch_config(n_cols, block_v)
    lanes = max(2, triton.next_power_of_2(n_targets))  # ≥ 2: no 1-element blocks (never compiled here on a GPU)
    _mce_chunk_kernel[(n_rows,)](
        logits, logits.stride(0), ids.contiguous(), w.to(torch.float32).contiguous(), scale,
        0 if scale.numel() == 1 else 1, rows, lse, n_targets, N_COLS=n_cols,
        GRAD=grad, BLOCK_V=block, BLOCK_S=lanes, num_warps=warps,
    )
    return rows, lse
