"""The training objective around a pure model: hidden states → fused LM head + MCE, summed.

The model stays a pure ``nn.Module`` (tokens in, hidden states/logits out). This wrapper is the
trainer's — it makes the LM head's weight be used *inside* one forward, which FSDP2 needs, and keeps
the loss a sum so callers divide by a global count (gradient accumulation and data parallelism then
give exactly the gradients of one large batch).
"""
from __future__ import annotations

import torch
from torch import nn

import tst


class TrainObjective(nn.Module):
    def __init__(self, model: nn.Module, fused: bool = True) -> None:
        super().__init__()
        self.model = model
        self.fused = fused

    def forward(self, inputs: torch.Tensor, targets, positions: torch.Tensor | None = None) -> torch.Tensor:
        """inputs ``(B, L)`` or ``(B, L, s)``; targets a ``tst.BagTargets`` (ids ``(B, L, t)``, their weighting
        and objective) or plain ids ``(B, L, t)`` (uniform MCE); positions ``(B, L)`` or None → the summed
        bag loss over valid targets (fp32 scalar)."""
        head = self.model.lm_head.weight  # (V, d)
        if self.fused:
            hidden = self.model(inputs, return_hidden=True, positions=positions)  # (B, L, d)
            return tst.fused_linear_multi_hot_cross_entropy(hidden, head, targets, reduction="sum")
        logits = self.model(inputs, positions=positions)  # (B, L, V)
        return tst.multi_hot_cross_entropy(logits, targets, reduction="sum")


__all__ = ["TrainObjective"]
