"""Bag weightings ``g(i)`` over the 1-based position ``i`` of a target in its bag (paper §5.2, App. D)."""
from __future__ import annotations

from typing import Union

import torch

__all__ = ["WEIGHTINGS", "Weights", "resolve_weights"]

Weights = Union[str, torch.Tensor]

#: Named weightings: ``uniform`` (g = 1), ``power`` (g = 1/i), ``exp`` (g = e^−i), ``first`` (only i = 1).
WEIGHTINGS = ("uniform", "power", "exp", "first")


def resolve_weights(weights: Weights, bag_size: int, device=None) -> torch.Tensor:
    """Per-offset bag weights ``g(i)``, ``i = 1 … s``, as a float32 tensor of shape ``(s,)``.

    Args:
        weights: one of :data:`WEIGHTINGS`, or a 1-D tensor of exactly ``s`` non-negative finite weights,
            not all zero.
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
