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

from .bags import IGNORE_INDEX, bag_inputs, document_bags, document_positions, next_bag_targets, window_targets
from .weights import WEIGHTINGS, Weights, resolve_weights

__all__ = ["BAGGINGS", "BagTargets", "FOLDS", "LOSSES", "MODES", "Phase", "TSTConfig", "TSTSchedule"]

#: Training modes. ``tst``: bagged input, next-bag MCE (the method). ``input-only``: bagged input,
#: the first token of the next bag as the only target. ``output-only``: ordinary input, each position
#: predicts the bag of its next ``s`` tokens. ``baseline``: ordinary next-token training throughout.
MODES = ("baseline", "tst", "input-only", "output-only")
#: Bag objectives (see ``tst.loss``), bag layouts and the two ways of keeping FLOPs equal in phase 1.
LOSSES = ("mce", "sum-to-one")
BAGGINGS = ("stream", "document")
FOLDS = ("sequence", "batch")


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
    """MCE weighting over the bag: ``uniform``, ``power`` (1/i), ``exp`` (e^-i), ``first``, or ``fitted`` (a power
    law fitted to the corpus's token mutual information; the trainer computes it from the data)."""
    loss: str = "mce"
    """Bag objective: ``mce`` (the paper's multi-hot CE) or ``sum-to-one`` (−log of the bag's total probability)."""
    bagging: str = "stream"
    """``stream``: bags cut the packed stream blindly (the paper); ``document``: bags never cross a document
    separator (a document's last bag is padded; positions restart at each document)."""
    fold: str = "sequence"
    """How phase 1 keeps FLOPs equal: ``sequence`` (rows of L·s tokens → L bags, the paper) or ``batch``
    (s× as many rows of L tokens → L/s bags each; attention spans L/s bags)."""
    transition_steps: int = 0
    """Steps of a smooth transition after the superposition phase (0 = the paper's hard switch): the bag size
    falls geometrically from s to 1 and the bag weighting moves linearly to next-token (``first``)."""

    def validate(self) -> "TSTConfig":
        """Check every field; ``ValueError`` names the field and its valid values. Returns ``self``."""
        if isinstance(self.bag_size, bool) or not isinstance(self.bag_size, int) or self.bag_size < 1:
            raise ValueError(f"bag_size must be an integer >= 1, got {self.bag_size!r}")
        r = self.superposition_frac
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= float(r) <= 1.0:
            raise ValueError(f"superposition_frac must be a number in [0, 1], got {r!r}")
        for name, allowed in (("mode", MODES), ("weights", WEIGHTINGS + ("fitted",)), ("loss", LOSSES),
                              ("bagging", BAGGINGS), ("fold", FOLDS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        k = self.transition_steps
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"transition_steps must be an integer >= 0, got {k!r}")
        if k and self.mode != "tst":
            raise ValueError(f"transition_steps needs mode 'tst' (got {self.mode!r}): the ablations switch hard")
        return self

    def schedule(self, total_steps: int, fitted_weights: torch.Tensor | None = None) -> "TSTSchedule":
        """The schedule of a run of ``total_steps`` optimizer steps (both phases). ``weights = "fitted"`` needs
        the fitted per-offset weights ``(bag_size,)`` (see ``tst_train.mutual_info``)."""
        self.validate()
        weights: Weights = self.weights
        if self.weights == "fitted":
            if fitted_weights is None:
                raise ValueError("weights='fitted' needs the corpus's fitted weights (fitted_weights=...)")
            weights = fitted_weights
        return TSTSchedule(total_steps, self.bag_size, float(self.superposition_frac), mode=self.mode,
                           weights=weights, loss=self.loss, bagging=self.bagging, fold=self.fold,
                           transition_steps=self.transition_steps)


class BagTargets(NamedTuple):
    """What a position must predict: target ids ``(..., t)`` (``IGNORE_INDEX`` where the window has no
    token), the weighting over the ``t`` offsets and the bag objective (``mce`` or ``sum-to-one``). The
    losses take it as their ``targets`` argument."""

    ids: torch.Tensor
    weights: Weights = "uniform"
    loss: str = "mce"

    def rows(self, start: int, stop: int) -> "BagTargets":
        """The targets of rows ``start:stop`` (a micro-batch), with the same weighting and objective."""
        return BagTargets(self.ids[start:stop], self.weights, self.loss)


@dataclass(frozen=True)
class Phase:
    """One phase of training (or one step of a smooth transition): what the loader reads and the loss sees.

    Attributes:
        name: ``"superposition"``, ``"transition"`` or ``"recovery"`` (the baseline runs entirely in ``"recovery"``).
        bag_size: input tokens averaged into one position (1 = ordinary input).
        target_bag_size: future tokens each position predicts (1 = ordinary next-token target).
        weights: weighting over the ``target_bag_size`` targets (a name or a tensor).
        index: 0 for the first phase of the run, 1 for the second.
        loss: the bag objective (``mce`` or ``sum-to-one``).
        bagging: ``stream`` or ``document`` (bags never cross a document separator).
        fold_by: ``sequence`` (rows of L·s tokens) or ``batch`` (s× the rows, L tokens each).
    """

    name: str
    bag_size: int
    target_bag_size: int
    weights: Weights = "uniform"
    index: int = 0
    loss: str = "mce"
    bagging: str = "stream"
    fold_by: str = "sequence"

    @property
    def is_superposition(self) -> bool:
        return self.name == "superposition"

    @property
    def _batch_fold(self) -> bool:
        return self.fold_by == "batch" and self.bag_size > 1

    def rows_per_step(self, batch_size: int) -> int:
        """Rows the loader reads per optimizer step for a nominal batch of ``batch_size`` rows."""
        return batch_size * self.bag_size if self._batch_fold else batch_size

    def positions_per_row(self, seq_len: int) -> int:
        """Latent positions the model computes on per row (``seq_len``; ``seq_len / s`` with the batch fold)."""
        if self._batch_fold:
            if seq_len % self.bag_size:
                raise ValueError(f"fold='batch' needs seq_len ({seq_len}) to be a multiple of the bag size "
                                 f"{self.bag_size}")
            return seq_len // self.bag_size
        return seq_len

    def tokens_per_row(self, seq_len: int) -> int:
        """Raw tokens a loader reads for one row (inputs + label lookahead)."""
        if self.bag_size > 1:
            return self.data_tokens_per_row(seq_len) + 1  # Listing 3: the labels are the window shifted by one
        return seq_len + self.target_bag_size

    def data_tokens_per_row(self, seq_len: int) -> int:
        """Raw tokens a row consumes from the stream (the loader's stride; the lookahead overlaps the next row)."""
        return self.positions_per_row(seq_len) * self.bag_size

    def data_tokens_per_step(self, batch_size: int, seq_len: int) -> int:
        return self.rows_per_step(batch_size) * self.data_tokens_per_row(seq_len)

    def fold(self, tokens: torch.Tensor, seq_len: int, eos_id: int | None = None) -> tuple[torch.Tensor, BagTargets]:
        """Fold raw rows ``(R, tokens_per_row(seq_len))`` into ``(inputs (R, P, bag_size), BagTargets)``.

        ``P = positions_per_row(seq_len)``. The target ids are ``(R, P, target_bag_size)``, with
        ``IGNORE_INDEX`` where the window has no token (the last position of a superposition row keeps only
        its first target, as in the paper), and carry this phase's weighting and objective. Document
        bagging (``eos_id`` needed) pads input bags with ``IGNORE_INDEX`` (the embedding averages the real
        tokens only) and ignores targets in another document.
        """
        expected = self.tokens_per_row(seq_len)
        if tokens.shape[-1] != expected:
            raise ValueError(f"phase {self.name!r} needs rows of {expected} tokens for seq_len {seq_len}, got {tokens.shape[-1]}")
        n_in = self.data_tokens_per_row(seq_len)
        if self.bagging == "document" and self.bag_size > 1:
            if eos_id is None:
                raise ValueError("bagging='document' needs the data's eos_id")
            return self._fold_documents(tokens, n_in // self.bag_size, eos_id)
        inputs = bag_inputs(tokens[..., :n_in], self.bag_size)  # (R, P, s)
        if self.bag_size > 1:
            ids = next_bag_targets(tokens[..., 1:n_in + 1], self.bag_size, IGNORE_INDEX)  # (R, P, s)
            if self.target_bag_size == 1:  # input-only: the first token of the next bag
                ids = ids[..., :1]
        else:
            ids = window_targets(tokens, seq_len, self.target_bag_size)  # (R, L, t)
        return inputs, BagTargets(ids, self.weights, self.loss)

    def _fold_documents(self, tokens: torch.Tensor, n_bags: int, eos_id: int):
        bags, docs = zip(*(document_bags(row, self.bag_size, n_bags + 1, eos_id) for row in tokens))
        grid, doc = torch.stack(bags), torch.stack(docs)  # (R, P+1, s), (R, P+1)
        inputs = grid[:, :-1]  # (R, P, s)
        same_doc = (doc[:, 1:] == doc[:, :-1]) & (doc[:, 1:] >= 0)  # (R, P): the next bag is in this document
        ids = torch.where(same_doc.unsqueeze(-1), grid[:, 1:], torch.full_like(grid[:, 1:], IGNORE_INDEX))
        if self.target_bag_size == 1:
            ids = ids[..., :1]
        return inputs, BagTargets(ids, self.weights, self.loss)

    def positions(self, inputs: torch.Tensor, eos_id: int | None = None) -> torch.Tensor | None:
        """RoPE positions of folded ``inputs`` ``(R, P, s)``: ``None`` (0 … P−1) for stream bagging; for
        document bagging each document's bags count from 0 (a row starts at 0)."""
        if self.bagging != "document" or self.bag_size == 1:
            return None
        ends = (inputs == eos_id).any(-1)  # (R, P): the bag closes a document
        starts = torch.zeros_like(ends)
        starts[:, 0] = True
        starts[:, 1:] = ends[:, :-1]
        return document_positions(starts)


class TSTSchedule:
    """Which phase a step is in: the first ``round(superposition_frac · total_steps)`` steps superpose.

    Args:
        total_steps: steps of the whole run (both phases).
        bag_size: ``s``, tokens per bag in the superposition phase (``>= 1``).
        superposition_frac: ``r`` in ``[0, 1]``; 0 is the baseline, 1 is TST without recovery.
        mode: one of :data:`MODES`; ``baseline`` ignores ``bag_size`` and ``superposition_frac``.
        weights: weighting in the superposition phase (a name of ``tst.weights.WEIGHTINGS`` or a tensor of
            ``bag_size`` weights). The input-only mode always uses one target.
        loss, bagging, fold: see :class:`TSTConfig`.
        transition_steps: ``K`` steps of smooth transition after the superposition phase (0 = hard switch).

    ``phase_at(step)`` → :class:`Phase`; ``transition_step`` is the first step after the superposition
    phase; ``recovery_step`` the first plain next-token step (``transition_step + K``); ``phases`` lists
    ``(first_step, end_step, phase)``. Usually built by :meth:`TSTConfig.schedule`.

    The smooth transition (step ``t`` of the window, ``α = (t + 1)/(K + 1)``): bags of
    ``s_t = round(s^(1−α))`` tokens (geometric from ``s`` to 1) whose targets are the next ``s_t`` tokens,
    weighted ``(1 − α)·ĝ + α·δ₁`` — the run's weighting ``ĝ`` (normalised) moving linearly to the first
    target alone, which is next-token prediction at bag granularity. Every step still computes the same
    positions (FLOPs equal); the data read per step falls from ``s×`` to ``1×``.
    """

    def __init__(self, total_steps: int, bag_size: int, superposition_frac: float, *, mode: str = "tst",
                 weights: Weights = "uniform", loss: str = "mce", bagging: str = "stream", fold: str = "sequence",
                 transition_steps: int = 0) -> None:
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be an integer >= 1, got {total_steps!r}")
        if not isinstance(bag_size, int) or bag_size < 1:
            raise ValueError(f"bag_size must be an integer >= 1, got {bag_size!r}")
        if not (isinstance(superposition_frac, (int, float)) and math.isfinite(superposition_frac)
                and 0.0 <= float(superposition_frac) <= 1.0):
            raise ValueError(f"superposition_frac must be in [0, 1], got {superposition_frac}")
        for name, value, allowed in (("mode", mode, MODES), ("loss", loss, LOSSES), ("bagging", bagging, BAGGINGS),
                                     ("fold", fold, FOLDS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        self.total_steps = total_steps
        self.bag_size = bag_size
        self.superposition_frac = float(superposition_frac)
        self.mode = mode
        self.weights = weights
        self.loss, self.bagging, self.fold = loss, bagging, fold
        trivial = mode == "baseline" or bag_size == 1
        self.transition_step = 0 if trivial else round(self.superposition_frac * total_steps)
        self.transition_steps = 0 if trivial else int(transition_steps)
        if self.transition_step + self.transition_steps > total_steps:
            raise ValueError(f"transition_steps={transition_steps} does not fit after the {self.transition_step} "
                             f"superposition steps of a {total_steps}-step run")
        self.recovery_step = self.transition_step + self.transition_steps
        self._superposition = self._make_superposition_phase()
        self._recovery = Phase("recovery", 1, 1, "uniform", index=1 if self.transition_step > 0 else 0)

    def _make_superposition_phase(self) -> Phase:
        s, extra = self.bag_size, dict(loss=self.loss, bagging=self.bagging, fold_by=self.fold)
        if self.mode == "input-only":
            return Phase("superposition", s, 1, "uniform", 0, **extra)
        if self.mode == "output-only":
            return Phase("superposition", 1, s, self.weights, 0, **extra)
        return Phase("superposition", s, s, self.weights, 0, **extra)

    def _transition_phase(self, step: int) -> Phase:
        alpha = (step - self.transition_step + 1) / (self.transition_steps + 1)  # (0, 1)
        s_t = max(1, round(self.bag_size ** (1.0 - alpha)))
        g = resolve_weights(self.weights, s_t) if not isinstance(self.weights, torch.Tensor) else self.weights[:s_t].float()
        first = torch.zeros(s_t)
        first[0] = 1.0
        w = (1.0 - alpha) * g / g.sum() + alpha * first  # (s_t,)
        return Phase("transition", s_t, s_t, w, 1, loss=self.loss, bagging=self.bagging, fold_by=self.fold)

    def phase_at(self, step: int) -> Phase:
        """The phase of 0-based ``step`` (steps past ``total_steps`` stay in the last phase)."""
        if step < self.transition_step:
            return self._superposition
        if step < self.recovery_step:
            return self._transition_phase(step)
        return self._recovery

    def is_transition(self, step: int) -> bool:
        """True when 0-based ``step`` is the first step after a superposition phase — equivalently, when
        ``step`` completed steps end the superposition phase and training goes on."""
        return 0 < self.transition_step == step < self.total_steps

    @property
    def phases(self) -> list[tuple[int, int, Phase]]:
        """``[(first_step, end_step, phase), ...]`` for the non-empty phases, in order (a smooth transition
        is one segment, shown by its first step's phase)."""
        out = []
        if self.transition_step > 0:
            out.append((0, self.transition_step, self._superposition))
        if self.transition_steps:
            out.append((self.transition_step, self.recovery_step, self._transition_phase(self.transition_step)))
        if self.recovery_step < self.total_steps:
            out.append((self.recovery_step, self.total_steps, self._recovery))
        return out

    def data_tokens(self, rows_per_step: int, seq_len: int, steps: int | None = None) -> int:
        """Raw tokens the loader consumes over the first ``steps`` steps (default: the whole run)."""
        steps = self.total_steps if steps is None else steps
        total = 0
        for start, end, phase in self.phases:
            if phase.name == "transition":
                total += sum(self._transition_phase(t).data_tokens_per_step(rows_per_step, seq_len)
                             for t in range(start, min(end, steps)))
                continue
            n = max(0, min(end, steps) - start)
            total += n * phase.data_tokens_per_step(rows_per_step, seq_len)
        return total

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v, d in (("loss", self.loss, "mce"), ("bagging", self.bagging, "stream"),
                                                      ("fold", self.fold, "sequence"),
                                                      ("transition_steps", self.transition_steps, 0)) if v != d)
        return (f"TSTSchedule(total_steps={self.total_steps}, bag_size={self.bag_size}, "
                f"superposition_frac={self.superposition_frac}, mode={self.mode!r}, "
                f"transition_step={self.transition_step}{extra})")
