"""The two-phase TST schedule, looked up by step (one source of truth for the phase).

A :class:`Phase` says everything a training step needs: how many tokens each input position
averages (``bag_size``), how many future tokens each position predicts (``target_bag_size``), the MCE
weighting, how many raw tokens a loader must read per row, and how to fold such a row into
``(inputs, targets)``. The recovery phase is simply ``bag_size == target_bag_size == 1`` — the same
code path as the superposition phase, so a trainer needs no phase branches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch

from .bags import IGNORE_INDEX, bag_inputs, next_bag_targets, window_targets

__all__ = ["Phase", "TSTSchedule", "MODES"]

Weights = Union[str, torch.Tensor]

#: Training modes. ``tst``: bagged input, next-bag MCE (the method). ``input-only``: bagged input,
#: the first token of the next bag as the only target. ``output-only``: ordinary input, each position
#: predicts the bag of its next ``s`` tokens. ``baseline``: ordinary next-token training throughout.
MODES = ("baseline", "tst", "input-only", "output-only")


@dataclass(frozen=True)
class Phase:
    """One phase of training: what the loader reads and what the loss sees.

    Attributes:
        name: ``"superposition"`` or ``"recovery"`` (the baseline runs entirely in ``"recovery"``).
        bag_size: input tokens averaged into one position (1 = ordinary input).
        target_bag_size: future tokens each position predicts (1 = ordinary next-token target).
        weights: MCE weighting over the ``target_bag_size`` targets (see ``multi_hot_cross_entropy``).
        index: 0 for the first phase of the run, 1 for the second.
    """

    name: str
    bag_size: int
    target_bag_size: int
    weights: Weights = "uniform"
    index: int = 0

    @property
    def is_superposition(self) -> bool:
        return self.name == "superposition"

    def tokens_per_row(self, seq_len: int) -> int:
        """Raw tokens a loader reads for one row of ``seq_len`` latent positions (inputs + label lookahead)."""
        if self.bag_size > 1:
            return seq_len * self.bag_size + 1  # Listing 3: the labels are the window shifted by one
        return seq_len + self.target_bag_size

    def data_tokens_per_row(self, seq_len: int) -> int:
        """Raw tokens a row consumes from the stream (the loader's stride; the lookahead overlaps the next row)."""
        return seq_len * self.bag_size

    def fold(self, tokens: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Fold raw rows ``(B, tokens_per_row(seq_len))`` into ``(inputs (B, L, bag_size), targets (B, L, t))``.

        ``t = target_bag_size``. Targets use ``IGNORE_INDEX`` where the window has no token (the last
        position of a superposition row keeps only its first target, as in the paper).
        """
        expected = self.tokens_per_row(seq_len)
        if tokens.shape[-1] != expected:
            raise ValueError(f"phase {self.name!r} needs rows of {expected} tokens for seq_len {seq_len}, got {tokens.shape[-1]}")
        n_in = seq_len * self.bag_size
        inputs = bag_inputs(tokens[..., :n_in], self.bag_size)  # (B, L, s)
        if self.bag_size > 1:
            targets = next_bag_targets(tokens[..., 1:n_in + 1], self.bag_size, IGNORE_INDEX)  # (B, L, s)
            if self.target_bag_size == 1:  # input-only: the first token of the next bag
                targets = targets[..., :1]
        else:
            targets = window_targets(tokens, seq_len, self.target_bag_size)  # (B, L, t)
        return inputs, targets


class TSTSchedule:
    """Which phase a step is in: the first ``round(superposition_frac · total_steps)`` steps superpose.

    Args:
        total_steps: steps of the whole run (both phases).
        bag_size: ``s``, tokens per bag in the superposition phase (``>= 1``).
        superposition_frac: ``r`` in ``[0, 1]``; 0 is the baseline, 1 is TST without recovery.
        mode: one of :data:`MODES`; ``baseline`` ignores ``bag_size`` and ``superposition_frac``.
        weights: MCE weighting in the superposition phase (``"uniform"``, ``"power"``, ``"exp"``,
            ``"first"`` or a tensor of ``bag_size`` weights). The input-only mode always uses one target.

    ``phase_at(step)`` → :class:`Phase`; ``transition_step`` is the first recovery step.
    """

    def __init__(
        self,
        total_steps: int,
        bag_size: int,
        superposition_frac: float,
        *,
        mode: str = "tst",
        weights: Weights = "uniform",
    ) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if not isinstance(bag_size, int) or bag_size < 1:
            raise ValueError(f"bag_size must be an integer >= 1, got {bag_size!r}")
        if not 0.0 <= float(superposition_frac) <= 1.0:
            raise ValueError(f"superposition_frac must be in [0, 1], got {superposition_frac}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        self.total_steps = total_steps
        self.bag_size = bag_size
        self.superposition_frac = float(superposition_frac)
        self.mode = mode
        self.weights = weights
        trivial = mode == "baseline" or bag_size == 1
        self.transition_step = 0 if trivial else round(self.superposition_frac * total_steps)
        self._superposition = self._make_superposition_phase()
        self._recovery = Phase("recovery", 1, 1, "uniform", index=1 if self.transition_step > 0 else 0)

    def _make_superposition_phase(self) -> Phase:
        s = self.bag_size
        if self.mode == "input-only":
            return Phase("superposition", s, 1, "uniform", 0)
        if self.mode == "output-only":
            return Phase("superposition", 1, s, self.weights, 0)
        return Phase("superposition", s, s, self.weights, 0)

    def phase_at(self, step: int) -> Phase:
        """The phase of 0-based ``step``."""
        return self._superposition if step < self.transition_step else self._recovery

    @property
    def phases(self) -> list[tuple[int, int, Phase]]:
        """``[(first_step, end_step, phase), ...]`` for the non-empty phases, in order."""
        out = []
        if self.transition_step > 0:
            out.append((0, self.transition_step, self._superposition))
        if self.transition_step < self.total_steps:
            out.append((self.transition_step, self.total_steps, self._recovery))
        return out

    def data_tokens(self, rows_per_step: int, seq_len: int, steps: int | None = None) -> int:
        """Raw tokens the loader consumes over the first ``steps`` steps (default: the whole run)."""
        steps = self.total_steps if steps is None else steps
        total = 0
        for start, end, phase in self.phases:
            n = max(0, min(end, steps) - start)
            total += n * rows_per_step * phase.data_tokens_per_row(seq_len)
        return total

    def __repr__(self) -> str:
        return (f"TSTSchedule(total_steps={self.total_steps}, bag_size={self.bag_size}, "
                f"superposition_frac={self.superposition_frac}, mode={self.mode!r}, "
                f"transition_step={self.transition_step})")
