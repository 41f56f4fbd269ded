"""TSTSchedule and Phase against hand-built expectations."""
from __future__ import annotations

import pytest
import torch

from tst import Phase, TSTSchedule
from tst.bags import IGNORE_INDEX
from tst.schedule import MODES

IGN = IGNORE_INDEX


@pytest.mark.parametrize("T, r, expected", [(100, 0.3, 30), (10, 0.25, 2), (10, 0.35, 4), (7, 0.5, 4), (1000, 0.2, 200)])
def test_transition_step_is_round_r_T(T, r, expected):
    assert TSTSchedule(T, 4, r).transition_step == expected == round(r * T)


def test_phase_lookup_around_the_transition():
    sched = TSTSchedule(10, 4, 0.3)
    assert [sched.phase_at(k).name for k in range(10)] == ["superposition"] * 3 + ["recovery"] * 7
    sup, rec = sched.phase_at(0), sched.phase_at(3)
    assert (sup.bag_size, sup.target_bag_size, sup.index) == (4, 4, 0)
    assert (rec.bag_size, rec.target_bag_size, rec.index) == (1, 1, 1)
    assert sup.is_superposition and not rec.is_superposition
    assert [(a, b, p.name) for a, b, p in sched.phases] == [(0, 3, "superposition"), (3, 10, "recovery")]


def test_frac_zero_is_the_baseline():
    sched = TSTSchedule(10, 4, 0.0)
    assert sched.transition_step == 0
    assert all(sched.phase_at(k).name == "recovery" for k in range(10))
    assert [(a, b) for a, b, _ in sched.phases] == [(0, 10)]
    assert sched.phase_at(0).index == 0


@pytest.mark.parametrize("mode, s", [("baseline", 4), ("tst", 1)])
def test_trivial_runs_are_all_recovery(mode, s):
    sched = TSTSchedule(10, s, 0.5, mode=mode)
    assert sched.transition_step == 0 and len(sched.phases) == 1


def test_frac_one_is_all_superposition():
    sched = TSTSchedule(10, 4, 1.0)
    assert sched.transition_step == 10
    assert all(sched.phase_at(k).is_superposition for k in range(10))
    assert [(a, b) for a, b, _ in sched.phases] == [(0, 10)]


@pytest.mark.parametrize("kwargs, msg", [
    (dict(total_steps=10, bag_size=0, superposition_frac=0.5), "bag_size"),
    (dict(total_steps=10, bag_size=2.0, superposition_frac=0.5), "bag_size"),
    (dict(total_steps=10, bag_size=2, superposition_frac=-0.1), r"superposition_frac must be in \[0, 1\]"),
    (dict(total_steps=10, bag_size=2, superposition_frac=1.5), r"superposition_frac must be in \[0, 1\]"),
    (dict(total_steps=0, bag_size=2, superposition_frac=0.5), "total_steps"),
    (dict(total_steps=10, bag_size=2, superposition_frac=0.5, mode="both"), "mode must be one of .*got 'both'"),
])
def test_bad_arguments(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        TSTSchedule(**kwargs)


def test_unknown_mode_lists_the_choices():
    with pytest.raises(ValueError) as err:
        TSTSchedule(10, 2, 0.5, mode="both")
    assert all(m in str(err.value) for m in MODES)


def rows(n):
    """Two distinct rows of raw tokens: row b is 100·b + (0, 1, 2, …)."""
    return torch.stack([torch.arange(n), torch.arange(n) + 100])


def test_fold_tst():
    phase = TSTSchedule(10, 3, 0.5).phase_at(0)
    assert phase.tokens_per_row(2) == 7  # L·s inputs + 1 label lookahead
    inputs, targets = phase.fold(rows(7), 2)
    assert inputs.tolist()[0] == [[0, 1, 2], [3, 4, 5]]
    assert targets.ids.tolist()[0] == [[3, 4, 5], [6, IGN, IGN]]
    assert inputs.tolist()[1] == [[100, 101, 102], [103, 104, 105]]
    assert targets.ids.tolist()[1] == [[103, 104, 105], [106, IGN, IGN]]


def test_fold_input_only():
    phase = TSTSchedule(10, 3, 0.5, mode="input-only").phase_at(0)
    assert (phase.bag_size, phase.target_bag_size) == (3, 1)
    inputs, targets = phase.fold(rows(7), 2)
    assert inputs.tolist()[0] == [[0, 1, 2], [3, 4, 5]]
    assert targets.ids.tolist()[0] == [[3], [6]]  # the first token of the next bag


def test_fold_output_only():
    phase = TSTSchedule(10, 3, 0.5, mode="output-only", weights="power").phase_at(0)
    assert (phase.bag_size, phase.target_bag_size, phase.weights) == (1, 3, "power")
    assert phase.tokens_per_row(4) == 7  # L inputs + s lookahead
    inputs, targets = phase.fold(rows(7), 4)
    assert inputs.tolist()[0] == [[0], [1], [2], [3]]
    assert targets.ids.tolist()[0] == [[1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 6]]


def test_fold_recovery():
    phase = TSTSchedule(10, 3, 0.5).phase_at(9)
    assert phase.tokens_per_row(4) == 5
    inputs, targets = phase.fold(rows(5), 4)
    assert inputs.tolist()[1] == [[100], [101], [102], [103]]
    assert targets.ids.tolist()[1] == [[101], [102], [103], [104]]


def test_fold_wrong_row_length():
    phase = TSTSchedule(10, 3, 0.5).phase_at(0)
    with pytest.raises(ValueError, match="needs rows of 7 tokens for seq_len 2, got 6"):
        phase.fold(rows(6), 2)


@pytest.mark.parametrize("s, L", [(1, 8), (4, 8), (16, 3)])
def test_tokens_per_row(s, L):
    assert Phase("superposition", s, s).tokens_per_row(L) == (L * s + 1 if s > 1 else L + 1)
    assert Phase("superposition", s, s).data_tokens_per_row(L) == L * s
    assert Phase("recovery", 1, 1).tokens_per_row(L) == L + 1


@pytest.mark.parametrize("T, s, r", [(100, 4, 0.3), (50, 16, 0.2), (10, 6, 0.5), (20, 2, 1.0), (20, 8, 0.0)])
def test_data_tokens_tst_vs_baseline(T, s, r):
    rows_per_step, L = 8, 32
    base = TSTSchedule(T, s, r, mode="baseline").data_tokens(rows_per_step, L)
    assert base == T * rows_per_step * L
    tst = TSTSchedule(T, s, r).data_tokens(rows_per_step, L)
    assert tst == pytest.approx((r * s + 1 - r) * base)


def test_data_tokens_partial_run():
    sched = TSTSchedule(10, 4, 0.3)
    # 3 superposition steps at 4·L tokens, then 2 recovery steps at L tokens.
    assert sched.data_tokens(2, 16, steps=5) == 3 * 2 * 64 + 2 * 2 * 16


def test_fold_hands_the_loss_its_weighting():
    """The targets of a phase carry its weighting, so a loss cannot silently train with another one."""
    import tst
    phase = tst.TSTConfig(bag_size=3, superposition_frac=0.5, weights="power").schedule(10).phase_at(0)
    _, targets = phase.fold(rows(7), 2)
    assert targets.weights == "power"
    logits = torch.randn(2, 2, 200, generator=torch.Generator().manual_seed(0))
    by_targets = tst.multi_hot_cross_entropy(logits, targets)
    assert torch.equal(by_targets, tst.multi_hot_cross_entropy(logits, targets.ids, weights="power"))
    assert not torch.equal(by_targets, tst.multi_hot_cross_entropy(logits, targets.ids))  # uniform differs
    with pytest.raises(ValueError, match="carries its own weighting"):
        tst.multi_hot_cross_entropy(logits, targets, weights="uniform")
    assert torch.equal(tst.multi_hot_weight_sum(targets), tst.multi_hot_weight_sum(targets.ids, "power"))
    assert targets.rows(1, 2).ids.shape == (1, 2, 3) and targets.rows(1, 2).weights == "power"


def test_config_schedule_and_transition():
    import tst
    cfg = tst.TSTConfig(bag_size=4, superposition_frac=0.25)
    sched = cfg.schedule(100)
    assert sched.transition_step == 25 and [p.name for _, _, p in sched.phases] == ["superposition", "recovery"]
    assert [s for s in range(101) if sched.is_transition(s)] == [25]
    assert not any(tst.TSTConfig(mode="baseline").schedule(10).is_transition(s) for s in range(11))
    assert not any(tst.TSTConfig(superposition_frac=1.0).schedule(10).is_transition(s) for s in range(11))
    for bad, field in [(dict(bag_size=0), "bag_size"), (dict(superposition_frac=1.5), "superposition_frac"),
                       (dict(superposition_frac=float("nan")), "superposition_frac"), (dict(mode="x"), "mode"),
                       (dict(weights="x"), "weights")]:
        with pytest.raises(ValueError, match=field):
            tst.TSTConfig(**bad).validate()
