"""Validation: always standard next-token cross-entropy on a fixed held-out token budget, in both phases.

The superposition-phase training loss is an MCE (with the constant ``log s`` dropped) and is not
comparable to next-token CE; validation is what makes phases and arms comparable.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from . import distributed
from .data.loader import val_batches


class Validator:
    """Holds the fixed validation rows; ``evaluate(model)`` → {val_loss, val_bpb, val_tokens}."""

    def __init__(self, val_tokens: np.ndarray, seq_len: int, budget_tokens: int, batch_size: int,
                 bytes_per_token: float, device: torch.device) -> None:
        rows = torch.cat(list(val_batches(val_tokens, seq_len, budget_tokens, batch_size=1024)))  # (R, L+1)
        # Under FSDP every rank must run the same number of forward passes: a multiple of the world size.
        world = distributed.rank_world()[1]
        keep = len(rows) // world * world
        if keep == 0:
            from .errors import UserError
            raise UserError(f"the validation split has {len(rows)} rows of --train.seq_len={seq_len}, fewer than "
                            f"the {world} ranks; prepare the data with a larger --val-fraction")
        self.rows = rows[:keep]
        self.batch_size = batch_size
        self.bytes_per_token = bytes_per_token
        self.device = device
        self.num_tokens = keep * seq_len

    @torch.no_grad()
    def evaluate(self, objective: nn.Module, autocast_dtype: torch.dtype | None) -> dict:
        """Next-token CE through the training objective (its root forward is what FSDP2 unshards)."""
        was_training = objective.training
        objective.eval()
        # Each rank evaluates its share of the rows; sums are reduced so every rank sees the same value.
        info_rank, info_world = distributed.rank_world()
        total = torch.zeros(2, dtype=torch.float64, device=self.device)
        rows = self.rows[info_rank::info_world]
        for i in range(0, len(rows), self.batch_size):
            batch = rows[i:i + self.batch_size].to(self.device)
            with distributed.autocast(self.device, autocast_dtype):
                loss = objective(batch[:, :-1], batch[:, 1:, None])  # targets (B, L, 1): plain next-token CE
            total += torch.tensor([loss.item(), batch[:, 1:].numel()], dtype=torch.float64, device=self.device)
        total = distributed.all_reduce_sum(total)
        objective.train(was_training)
        val_loss = (total[0] / total[1]).item()
        bpb = val_loss / math.log(2) / self.bytes_per_token if self.bytes_per_token else None
        return {"val_loss": val_loss, "val_bpb": bpb, "val_tokens": int(total[1].item())}
