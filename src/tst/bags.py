"""Bags and next-bag targets: reshaping the token stream for the superposition phase.

Conventions: ``s`` = bag size; ``L`` = latent length (positions the model computes on); a row of
the data stream in the superposition phase has ``L·s`` input tokens. ``labels`` are the ordinary
next-token labels of that window (``labels[j] = x[j + 1]``), as any standard loader produces them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["bag_inputs", "bag_mean", "next_bag_targets", "window_targets", "IGNORE_INDEX"]

IGNORE_INDEX = -100


def _check_divisible(length: int, bag_size: int, what: str) -> None:
    if bag_size < 1:
        raise ValueError(f"bag_size must be >= 1, got {bag_size}")
    if length % bag_size:
        raise ValueError(
            f"{what} length {length} is not a multiple of bag_size {bag_size}: "
            f"use a length of {length // bag_size * bag_size} or {(length // bag_size + 1) * bag_size} tokens, "
            f"or a bag size that divides {length}"
        )


def bag_inputs(inputs: torch.Tensor, bag_size: int) -> torch.Tensor:
    """Cut each row into non-overlapping contiguous bags: ``(B, L·s)`` → ``(B, L, s)`` (a view)."""
    _check_divisible(inputs.shape[-1], bag_size, "input")
    return inputs.unflatten(-1, (inputs.shape[-1] // bag_size, bag_size))


def bag_mean(embeddings: torch.Tensor) -> torch.Tensor:
    """The mean over the bag dimension: ``(..., s, d)`` → ``(..., d)``, summed in float32 and cast back once
    to the input dtype (the paper's Listing 2, without its Python loop over the bag).

    The one implementation of the bag mean: :func:`tst.superpose` and the TorchTitan embedding use it.
    """
    return (embeddings.float().sum(dim=-2) / embeddings.shape[-2]).to(embeddings.dtype)


def next_bag_targets(labels: torch.Tensor, bag_size: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Next-bag targets from standard next-token labels, exactly as the paper's Listing 3.

    ``labels`` ``(B, L·s)`` → ``(B, L, s)``: shift left by ``s − 1``, right-pad with ``ignore_index``, then
    cut into bags. Latent position ``k`` (covering ``x[ks … ks+s−1]``) targets ``x[(k+1)s … (k+2)s−1]``;
    the last position keeps only its first target (the window's final label), the rest are ignored.
    With ``s == 1`` this is ``labels[..., None]``.
    """
    _check_divisible(labels.shape[-1], bag_size, "label")
    shifted = F.pad(labels, (0, bag_size - 1), value=ignore_index)[..., bag_size - 1:]  # (B, L·s)
    return bag_inputs(shifted, bag_size)  # (B, L, s)


def window_targets(tokens: torch.Tensor, seq_len: int, window: int) -> torch.Tensor:
    """Each position predicts its next ``window`` tokens (the output-only ablation).

    ``tokens`` ``(B, seq_len + window)`` → ``(B, seq_len, window)`` with ``out[:, t, i] = tokens[:, t + 1 + i]``.
    """
    need = seq_len + window
    if tokens.shape[-1] < need:
        raise ValueError(f"window_targets needs rows of {need} tokens (seq_len + window), got {tokens.shape[-1]}")
    return tokens[..., 1:need].unfold(-1, window, 1)  # (B, seq_len, window)
