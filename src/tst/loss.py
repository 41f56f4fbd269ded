"""PLACEHOLDER (being replaced by the full implementation): multi-hot cross-entropy."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .bags import IGNORE_INDEX


def resolve_weights(weights, bag_size: int, device=None) -> torch.Tensor:
    if isinstance(weights, torch.Tensor):
        return weights.to(device=device, dtype=torch.float32)
    i = torch.arange(1, bag_size + 1, dtype=torch.float32, device=device)
    if weights == "uniform":
        return torch.ones_like(i)
    if weights == "power":
        return 1.0 / i
    if weights == "exp":
        return torch.exp(-i)
    if weights == "first":
        return (i == 1).float()
    raise ValueError(f"unknown weights {weights!r}")


def multi_hot_weight_sum(targets, weights="uniform", ignore_index=IGNORE_INDEX):
    w = resolve_weights(weights, targets.shape[-1], targets.device)
    return ((targets != ignore_index).float() * w).sum()


def multi_hot_cross_entropy(logits, targets, *, weights="uniform", ignore_index=IGNORE_INDEX, reduction="mean"):
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (..., 1)
    valid = targets != ignore_index
    safe = torch.where(valid, targets, 0)
    tl = logits.gather(-1, safe)  # (..., s)
    w = resolve_weights(weights, targets.shape[-1], logits.device) * valid
    num = (w * (lse - tl)).sum(-1)
    if reduction == "none":
        return num
    if reduction == "sum":
        return num.sum()
    return num.sum() / w.sum()


def fused_linear_multi_hot_cross_entropy(hidden, weight, targets, *, weights="uniform", ignore_index=IGNORE_INDEX,
                                         reduction="mean", chunk_size=4096):
    return multi_hot_cross_entropy(hidden @ weight.t(), targets, weights=weights, ignore_index=ignore_index,
                                   reduction=reduction)
