"""Input superposition: each bag of ``s`` tokens enters the model as the mean of its embeddings.

The paper's Listing 2 sums the ``s`` embeddings in float32 and casts back once to the weight dtype;
we do the same with one gather and one reduction instead of a Python loop over the bag.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .bags import bag_mean

__all__ = ["SuperposedEmbedding", "superpose"]


def superpose(embedding: nn.Embedding, tokens: torch.Tensor) -> torch.Tensor:
    """Embed ``tokens`` with ``embedding``, averaging bags when given a bag dimension.

    tokens ``(B, T)`` → ordinary lookup ``(B, T, d)``.
    tokens ``(B, L, s)`` → mean of the ``s`` embeddings of each bag ``(B, L, d)``, summed in float32 and
    cast back once to the weight dtype. With ``s == 1`` this is bit-identical to the ordinary lookup.
    Negative ids in a bag are padding (document-aware bagging pads a document's last bag): the mean is
    over the bag's real tokens.

    Works on any ``nn.Embedding`` (or subclass), so hosts that feed ``inputs_embeds`` can use it.
    """
    if tokens.dim() != 3:
        return _lookup(embedding, tokens)
    bag_size = tokens.shape[-1]
    if bag_size == 1:
        return _lookup(embedding, tokens[..., 0])
    valid = tokens >= 0  # (B, L, s); all True unless bags are padded
    return bag_mean(_lookup(embedding, tokens.clamp_min(0)), valid)  # (B, L, s, d) → (B, L, d)


def _lookup(embedding: nn.Embedding, tokens: torch.Tensor) -> torch.Tensor:
    # Call the module's own forward when it is a plain nn.Embedding so hooks and subclasses behave;
    # SuperposedEmbedding would recurse, so it goes through F.embedding directly.
    if isinstance(embedding, SuperposedEmbedding):
        return F.embedding(
            tokens, embedding.weight, embedding.padding_idx, embedding.max_norm,
            embedding.norm_type, embedding.scale_grad_by_freq, embedding.sparse,
        )
    return embedding(tokens)


class SuperposedEmbedding(nn.Embedding):
    """``nn.Embedding`` that also accepts bags of tokens.

    Same constructor, parameters and state-dict keys as ``nn.Embedding`` (a checkpoint of one loads
    into the other). Input ``(B, T)`` → ordinary lookup ``(B, T, d)``; input ``(B, L, s)`` → the mean of
    the ``s`` embeddings of each bag ``(B, L, d)`` (see :func:`superpose`).
    """

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return superpose(self, tokens)
