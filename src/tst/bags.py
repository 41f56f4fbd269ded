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


def bag_mean(embeddings: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """The mean over the bag dimension: ``(..., s, d)`` → ``(..., d)``, summed in float32 and cast back once
    to the input dtype (the paper's Listing 2, without its Python loop over the bag).

    ``valid`` ``(..., s)``: when given, the mean is over the valid entries only (padded bags). With every
    entry valid the result is bit-identical to the unmasked mean. The one implementation of the bag
    mean: :func:`tst.superpose` and the TorchTitan embedding use it.
    """
    if valid is None:
        return (embeddings.float().sum(dim=-2) / embeddings.shape[-2]).to(embeddings.dtype)
    total = (embeddings.float() * valid.unsqueeze(-1)).sum(dim=-2)  # (..., d)
    count = valid.sum(dim=-1, keepdim=True).clamp_min(1)  # (..., 1)
    return (total / count).to(embeddings.dtype)


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


def document_bags(row: torch.Tensor, bag_size: int, n_bags: int, eos_id: int,
                  pad: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut one row of the packed stream into bags that never cross a document separator.

    ``row`` ``(T,)``: raw tokens; ``eos_id`` ends a document (it is the last token of its document's last
    bag). Each document starts a fresh bag; a document's last bag is padded with ``pad``. Returns the first
    ``n_bags`` bags ``(n_bags, s)`` and each bag's document number ``(n_bags,)`` (−1 for bags past the end
    of the row, which are all padding). Tokens that do not fit into ``n_bags`` bags are dropped. With no
    separator in the row this is ``row[: n_bags·s].view(n_bags, s)`` (padded at the end if the row is short).
    """
    T = row.shape[0]
    after_eos = torch.zeros(T, dtype=torch.long, device=row.device)
    after_eos[1:] = (row[:-1] == eos_id).long()
    doc = torch.cumsum(after_eos, 0)  # (T,) document number of each token
    n_docs = int(doc[-1]) + 1
    lengths = torch.bincount(doc, minlength=n_docs)  # (D,)
    starts = torch.cumsum(lengths, 0) - lengths  # (D,) first token of each document
    bags_per_doc = (lengths + bag_size - 1) // bag_size  # (D,)
    first_bag = torch.cumsum(bags_per_doc, 0) - bags_per_doc  # (D,)
    offset = torch.arange(T, device=row.device) - starts[doc]  # (T,) position inside its document
    bag = first_bag[doc] + offset // bag_size  # (T,)
    slot = offset % bag_size  # (T,)
    keep = bag < n_bags
    grid = torch.full((n_bags, bag_size), pad, dtype=row.dtype, device=row.device)
    grid[bag[keep], slot[keep]] = row[keep]
    bag_doc = torch.full((n_bags,), -1, dtype=torch.long, device=row.device)
    bag_doc[bag[keep]] = doc[keep]
    return grid, bag_doc  # (n_bags, s), (n_bags,)


def document_positions(starts: torch.Tensor) -> torch.Tensor:
    """Positions that restart at 0 at every document: ``starts`` ``(B, L)`` bool (True where a document's
    first bag is) → ``(B, L)`` int64, the bag's index inside its document (RoPE positions)."""
    B, L = starts.shape
    idx = torch.arange(L, device=starts.device).expand(B, L)
    last_start = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=-1).values  # (B, L)
    return idx - last_start
