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


class Validator:
    """Holds the fixed validation rows; ``evaluate(model)`` → {val_loss, val_bpb, val_tokens}."""

    def __init__(self, val_tokens: np.ndarray, seq_len: int, budget_tokens: int, batch_size: int,
                 bytes_per_token: float, device: torch.device) -> None:
        n_rows = max(1, min(budget_tokens, len(val_tokens) - 1) // seq_len)
        n_rows = min(n_rows, (len(val_tokens) - 1) // seq_len)
        # Under FSDP every rank must run the same number of forward passes: a multiple of the world size.
        world = _rank_world()[1]
        n_rows = max(world, n_rows // world * world)
        if n_rows < 1:
            from .errors import UserError
            raise UserError(f"the validation split has {len(val_tokens)} tokens, fewer than one row of "
                            f"--train.seq_len={seq_len}; prepare more data or a larger --val-fraction")
        idx = np.arange(n_rows)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]  # (R, L+1)
        self.rows = torch.from_numpy(np.asarray(val_tokens[idx], dtype=np.int64))
        self.batch_size = batch_size
        self.bytes_per_token = bytes_per_token
        self.device = device
        self.num_tokens = n_rows * seq_len

    @torch.no_grad()
    def evaluate(self, objective: nn.Module, autocast_dtype: torch.dtype | None) -> dict:
        """Next-token CE through the training objective (its root forward is what FSDP2 unshards)."""
        model = objective
        was_training = model.training
        model.eval()
        # Each rank evaluates its share of the rows; sums are reduced so every rank sees the same value.
        info_rank, info_world = _rank_world()
        total = torch.zeros(2, dtype=torch.float64, device=self.device)
        rows = self.rows[info_rank::info_world]
        for i in range(0, len(rows), self.batch_size):
            batch = rows[i:i + self.batch_size].to(self.device)
            with _autocast(self.device, autocast_dtype):
                loss = objective(batch[:, :-1], batch[:, 1:, None])  # targets (B, L, 1): plain next-token CE
            total += torch.tensor([loss.item(), batch[:, 1:].numel()], dtype=torch.float64, device=self.device)
        total = distributed.all_reduce_sum(total)
        model.train(was_training)
        val_loss = (total[0] / total[1]).item()
        bpb = val_loss / math.log(2) / self.bytes_per_token if self.bytes_per_token else None
        return {"val_loss": val_loss, "val_bpb": bpb, "val_tokens": int(total[1].item())}


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        import contextlib
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
