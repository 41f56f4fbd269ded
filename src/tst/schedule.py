"""The TST settings, the two-phase schedule looked up by step, and the phase a step is in.

:class:`TSTConfig` holds the method's settings (``s``, ``r``, mode, weighting) — the one definition the
reference trainer, the experiment arms and both integrations extend or use. ``config.schedule(T)`` gives
the :class:`TSTSchedule` of a run of ``T`` steps, the one place that decides the phase:
``phase_at(step)``, ``transition_step`` and ``is_transition(step)``.

A :class:`Phase` says everything a training step needs: how many tokens each input position averages
(``bag_size``), how many future tokens each position predicts (``target_bag_size``), how many raw tokens
a loader reads per row, and how to fold such a row into inputs and :class:`BagTargets` — the target ids
*with* their weighting, so a loss cannot be handed the wrong one. The recovery phase is simply
``bag_size == target_bag_size == 1``: the same code path as the superposition phase, no phase branches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .bags import IGNORE_INDEX, bag_inputs, next_bag_targets, window_targets
from .weights import WEIGHTINGS, Weights

__all__ = ["BagTargets", "MODES", "Phase", "TSTConfig", "TSTSchedule"]

#: Training modes. ``tst``: bagged input, next-bag MCE (the method). ``input-only``: bagged input,
#: the first token of the next bag as the only target. ``output-only``: ordinary input, each position
#: predicts the bag of its next ``s`` tokens. ``baseline``: ordinary next-token training throughout.
MODES = ("baseline", "tst", "input-only", "output-only")


@dataclass
class TSTConfig:
    """The settings of Token Superposition Training. Plain values, so any config system can hold them."""

    bag_size: int = 4
    """Tokens per bag ``s`` in the superposition phase (1 = ordinary training)."""
    superposition_frac: float = 0.3
    """Fraction ``r`` of the steps in the superposition phase (0 = baseline, 1 = no recovery)."""
    mode: str = "tst"
    """``baseline``, ``tst``, ``input-only`` or ``output-only`` (the paper's ablations)."""
    weights: str = "uniform"
    """MCE weighting over the bag: ``uniform``, ``power`` (1/i), ``exp`` (e^-i) or ``first``."""

    def validate(self) -> "TSTConfig":
        """Check every field; ``ValueError`` names the field and its valid values. Returns ``self``."""
        if isinstance(self.bag_size, bool) or not isinstance(self.bag_size, int) or self.bag_size < 1:
            raise ValueError(f"bag_size must be an integer >= 1, got {self.bag_size!r}")
        r = self.superposition_frac
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= float(r) <= 1.0:
            raise ValueError(f"superposition_frac must be a number in [0, 1], got {r!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.weights not in WEIGHTINGS:
            raise ValueError(f"weights must be one of {', '.join(WEIGHTINGS)}, got {self.weights!r}")
        return self

    def schedule(self, total_steps: int) -> "TSTSchedule":
        """The schedule of a run of ``total_steps`` optimizer steps (both phases)."""
        self.validate()
        return TSTSchedule(total_steps, self.bag_size, float(self.superposition_frac), mode=self.mode,
                           weights=self.weights)


class BagTargets(NamedTuple):
    """What a position must predict: target ids ``(..., t)`` (``IGNORE_INDEX`` where the window has no
    token) and the weighting over the ``t`` offsets. The losses take it as their ``targets`` argument."""

    ids: torch.Tensor
    weights: Weights = "uniform"

    def rows(self, start: int, stop: int) -> "BagTargets":
        """The targets of rows ``start:stop`` (a micro-batch), with the same weighting."""
        return BagTargets(self.ids[start:stop], self.weights)


@dataclass(frozen=True)
class Phase:
    """One phase of training: what the loader reads and what the loss sees.

    Attributes:
        name: ``"superposition"`` or ``"recovery"`` (the baseline runs entirely in ``"recovery"``).
        bag_size: input tokens averaged into one position (1 = ordinary input).
        target_bag_size: future tokens each position predicts (1 = ordinary next-token target).
        weights: MCE weighting over the ``target_bag_size`` targets.
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

    def fold(self, tokens: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, BagTargets]:
        """Fold raw rows ``(B, tokens_per_row(seq_len))`` into ``(inputs (B, L, bag_size), BagTargets)``.

        The target ids are ``(B, L, target_bag_size)``, with ``IGNORE_INDEX`` where the window has no token
        (the last position of a superposition row keeps only its first target, as in the paper), and carry
        this phase's weighting.
        """
        expected = self.tokens_per_row(seq_len)
        if tokens.shape[-1] != expected:
            raise ValueError(f"phase {self.name!r} needs rows of {expected} tokens for seq_len {seq_len}, got {tokens.shape[-1]}")
        n_in = seq_len * self.bag_size
        inputs = bag_inputs(tokens[..., :n_in], self.bag_size)  # (B, L, s)
        if self.bag_size > 1:
            ids = next_bag_targets(tokens[..., 1:n_in + 1], self.bag_size, IGNORE_INDEX)  # (B, L, s)
            if self.target_bag_size == 1:  # input-only: the first token of the next bag
                ids = ids[..., :1]
        else:
            ids = window_targets(tokens, seq_len, self.target_bag_size)  # (B, L, t)
        return inputs, BagTargets(ids, self.weights)


class TSTSchedule:
    """Which phase a step is in: the first ``round(superposition_frac · total_steps)`` steps superpose.

    Args:
        total_steps: steps of the whole run (both phases).
        bag_size: ``s``, tokens per bag in the superposition phase (``>= 1``).
        superposition_frac: ``r`` in ``[0, 1]``; 0 is the baseline, 1 is TST without recovery.
        mode: one of :data:`MODES`; ``baseline`` ignores ``bag_size`` and ``superposition_frac``.
        weights: MCE weighting in the superposition phase (a name of ``tst.weights.WEIGHTINGS`` or a tensor
            of ``bag_size`` weights). The input-only mode always uses one target.

    ``phase_at(step)`` → :class:`Phase`; ``transition_step`` is the first recovery step; ``phases`` lists
    ``(first_step, end_step, phase)``. Usually built by :meth:`TSTConfig.schedule`.
    """

    def __init__(self, total_steps: int, bag_size: int, superposition_frac: float, *, mode: str = "tst",
                 weights: Weights = "uniform") -> None:
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be an integer >= 1, got {total_steps!r}")
        if not isinstance(bag_size, int) or bag_size < 1:
            raise ValueError(f"bag_size must be an integer >= 1, got {bag_size!r}")
        if not (isinstance(superposition_frac, (int, float)) and math.isfinite(superposition_frac)
                and 0.0 <= float(superposition_frac) <= 1.0):
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
        """The phase of 0-based ``step`` (steps past ``total_steps`` stay in the last phase)."""
        return self._superposition if step < self.transition_step else self._recovery

    def is_transition(self, step: int) -> bool:
        """True when 0-based ``step`` is the first recovery step after a superposition phase — equivalently,
        when ``step`` completed steps end the superposition phase and training goes on."""
        return 0 < self.transition_step == step < self.total_steps

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
