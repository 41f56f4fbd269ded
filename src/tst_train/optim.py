"""AdamW with decay on matrices only, and the warmup–stable–decay learning rate as a pure function."""
from __future__ import annotations

import torch
from torch import nn

from .config import TrainSection


def build_optimizer(model: nn.Module, cfg: TrainSection) -> torch.optim.AdamW:
    """AdamW(β1, β2); weight decay on the linear layers' matrices, none on embeddings and norm gains."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.dim() < 2 or "tok_embeddings" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    kind = {"fused": True} if cfg.fused_optimizer else {"foreach": True}  # fused: one kernel per step
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, **kind)


def lr_at(step: int, cfg: TrainSection) -> float:
    """Warmup–stable–decay over the *total* steps, continuous across the phase boundary.

    Linear warmup over ``warmup_steps``, constant, then linear decay to ``min_lr_ratio·lr`` over the last
    ``decay_frac`` of the steps (the paper: 2,000 warmup steps, decay over the last 10%).
    """
    total = cfg.steps
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_steps = round(cfg.decay_frac * total)
    decay_start = total - decay_steps
    if decay_steps == 0 or step < decay_start:
        return cfg.lr
    progress = (step - decay_start + 1) / decay_steps  # reaches 1 at the last step
    return cfg.lr * (1.0 - (1.0 - cfg.min_lr_ratio) * progress)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def reset_moments(optimizer: torch.optim.Optimizer, params=None) -> None:
    """Drop AdamW state (moments and step count) for ``params`` (default: all) — the reset ablation."""
    targets = set(params) if params is not None else None
    for p in list(optimizer.state):
        if targets is None or p in targets:
            del optimizer.state[p]
