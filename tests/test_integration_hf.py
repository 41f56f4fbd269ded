"""tst.integrations.hf: TST for any Hugging Face causal LM through transformers' Trainer (CPU, tiny random Llama)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback, TrainingArguments  # noqa: E402

import tst  # noqa: E402
from tst.integrations.hf import (  # noqa: E402
    TSTCallback, TSTTokenStream, TSTTrainer, rows_per_step, tst_causal_lm_loss, tst_collate,
)

VOCAB, L, S, STEPS, B = 128, 8, 4, 12, 2
ROWS = B  # rows per optimizer step: batch 2 × accumulation 1 × world 1
SUP_STEPS = 6  # TSTSchedule(12, 4, 0.5).transition_step


def make_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg)


def make_args(out, **overrides) -> TrainingArguments:
    kw = dict(output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=B, report_to=[], use_cpu=True,
              save_strategy="no", logging_steps=1, learning_rate=1e-2, disable_tqdm=True,
              dataloader_pin_memory=False, seed=0)
    kw.update(overrides)
    return TrainingArguments(**kw)


def make_tokens(n: int = 1000, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed))


class RecordingTrainer(TSTTrainer):
    """Records (optimizer step, input_ids) of every training micro-batch compute_loss sees."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.seen = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            self.seen.append((self.state.global_step, inputs["input_ids"].clone()))
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


class ParamWatch(TrainerCallback):
    """Snapshots of the embedding and LM head at the start, at the transition and at the end; grad norms per step."""

    def __init__(self):
        self.snaps, self.grads = {}, []

    def _snap(self, key, model):
        self.snaps[key] = (model.get_input_embeddings().weight, model.get_output_embeddings().weight,
                           model.get_input_embeddings().weight.detach().clone(),
                           model.get_output_embeddings().weight.detach().clone())

    def on_step_begin(self, args, state, control, model=None, **kw):
        if state.global_step in (0, SUP_STEPS):
            self._snap(state.global_step, model)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        self.grads.append((state.global_step, emb.grad.norm().item(), head.grad.norm().item()))

    def on_train_end(self, args, state, control, model=None, **kw):
        self._snap("end", model)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One 12-step TST run (6 superposition steps of bag 4, then 6 recovery steps)."""
    out = tmp_path_factory.mktemp("hf_run")
    model = make_model()
    emb0, head0 = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    args = make_args(out)
    schedule = tst.TSTSchedule(STEPS, bag_size=S, superposition_frac=0.5)
    tokens = make_tokens()
    stream = TSTTokenStream(tokens, seq_len=L, schedule=schedule, rows_per_step=rows_per_step(args))
    watch = ParamWatch()
    trainer = RecordingTrainer(model=model, args=args, train_dataset=stream, callbacks=[watch])
    trainer.train()
    return dict(trainer=trainer, model=model, watch=watch, tokens=tokens, emb0=emb0, head0=head0, out=out)


# --------------------------------------------------------------------------------------------------
# A full run through the Trainer
# --------------------------------------------------------------------------------------------------

def test_switch_at_step_6_bag_size_per_step(run):
    trainer = run["trainer"]
    logged = [(h["step"], h["tst_bag_size"]) for h in trainer.state.log_history if "tst_bag_size" in h]
    assert [step for step, _ in logged] == list(range(1, STEPS + 1))  # one log per optimizer step
    assert [bag for _, bag in logged] == [4] * 6 + [1] * 6
    # What compute_loss actually received: one micro-batch per step, phase-1 rows L·s+1 long, phase-2 rows L+1.
    assert [step for step, _ in trainer.seen] == list(range(STEPS))
    assert [ids.shape for _, ids in trainer.seen] == [(B, L * S + 1)] * 6 + [(B, L + 1)] * 6
    assert isinstance(next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, TSTCallback)),
                      TSTCallback)
    last = [h for h in trainer.state.log_history if "tst_data_tokens" in h][-1]
    assert last["tst_data_tokens"] == trainer.tst_schedule.data_tokens(ROWS, L) == 6 * ROWS * L * S + 6 * ROWS * L
    assert last["tst_positions"] == STEPS * ROWS * L


def test_same_embedding_and_head_trained_in_both_phases(run):
    model, watch = run["model"], run["watch"]
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert emb is run["emb0"] and head is run["head0"]  # the very same Parameter objects throughout
    assert emb is not head  # Llama default: untied, so both are checked separately
    for key in (0, SUP_STEPS, "end"):
        assert watch.snaps[key][0] is emb and watch.snaps[key][1] is head
    # Every optimizer step (phase 1 and phase 2) had a non-zero gradient on both.
    assert [g[0] for g in watch.grads] == list(range(STEPS))
    assert all(ge > 0 and gh > 0 for _, ge, gh in watch.grads)
    # Values changed during phase 1 (step 0 → 6) and during phase 2 (step 6 → end).
    for a, b in ((0, SUP_STEPS), (SUP_STEPS, "end")):
        assert not torch.equal(watch.snaps[a][2], watch.snaps[b][2])
        assert not torch.equal(watch.snaps[a][3], watch.snaps[b][3])


def test_stream_is_contiguous_across_the_boundary(run):
    tokens, seen = run["tokens"], run["trainer"].seen
    rows = [row for _, ids in seen for row in ids]
    pos = 0
    for i, row in enumerate(rows):
        step = i // ROWS
        stride = L * S if step < SUP_STEPS else L
        assert torch.equal(row, tokens[pos:pos + row.numel()]), f"row {i} is not at stream offset {pos}"
        pos += stride
    last_sup = rows[SUP_STEPS * ROWS - 1]
    first_rec = rows[SUP_STEPS * ROWS]
    boundary = SUP_STEPS * ROWS * L * S
    assert torch.equal(last_sup, tokens[boundary - L * S:boundary + 1])  # its stride ends at the boundary
    assert torch.equal(first_rec, tokens[boundary:boundary + L + 1])  # the next row starts exactly there


def test_trained_model_is_an_ordinary_llama(run, tmp_path):
    model = run["model"]
    model.save_pretrained(tmp_path)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is LlamaForCausalLM
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    x = run["tokens"][None, :16]
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x).logits, loaded(x).logits, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# The loss against independent computations
# --------------------------------------------------------------------------------------------------

def _first_batch(stream):
    it = iter(stream)
    return tst_collate([next(it) for _ in range(B)])


def test_phase1_loss_equals_listing3_style_computation(tmp_path):
    model = make_model(seed=3)
    schedule = tst.TSTSchedule(STEPS, bag_size=S, superposition_frac=0.5)
    tokens = make_tokens(seed=4)
    args = make_args(tmp_path)
    stream = TSTTokenStream(tokens, L, schedule, rows_per_step(args))
    trainer = TSTTrainer(model=model, args=args, train_dataset=stream)
    batch = _first_batch(stream)
    assert batch["input_ids"].shape == (B, L * S + 1) and batch["tst_step"].tolist() == [0, 0]

    # By hand, from the initial weights: rows read straight from the stream, bag means, s CE calls.
    with torch.no_grad():
        rows = torch.stack([tokens[r * L * S: r * L * S + L * S + 1] for r in range(B)])  # (B, L·s+1)
        bags = rows[:, :L * S].reshape(B, L, S)
        embeds = model.get_input_embeddings().weight[bags].mean(dim=-2)  # (B, L, d)
        logits = model(inputs_embeds=embeds).logits.reshape(B * L, VOCAB).float()
        labels = rows[:, 1:]  # ordinary next-token labels of the window
        shifted = torch.cat([labels[:, S - 1:], torch.full((B, S - 1), -100)], dim=1).reshape(B, L, S)
        ce_sum = [F.cross_entropy(logits, shifted[..., i].reshape(-1), reduction="sum") for i in range(S)]
        ce_mean = [F.cross_entropy(logits, shifted[..., i].reshape(-1)) for i in range(S)]
        count = (shifted != -100).sum()
        assert count == B * (L * S - (S - 1))  # the last position of each row keeps one target
        expected = sum(ce_sum) / count  # Σ CE over valid (position, target) pairs ÷ their number
        listing3 = sum(ce_mean) / S  # the paper's per-offset means (differs only at the partial last bag)

    loss = trainer.compute_loss(trainer.model, batch)
    assert torch.allclose(loss, expected, atol=1e-5, rtol=1e-5), (loss.item(), expected.item())
    assert abs(loss.item() - listing3.item()) < 0.02

    # The fused head (never materialising logits) and the logits path agree in value and gradient.
    params = (model.get_input_embeddings().weight, model.get_output_embeddings().weight)
    fused = tst_causal_lm_loss(model, batch["input_ids"], schedule.phase_at(0), L, loss_impl="fused")
    fused.backward()
    grads = [p.grad.clone() for p in params]
    model.zero_grad()
    unfused = tst_causal_lm_loss(model, batch["input_ids"], schedule.phase_at(0), L, loss_impl="logits")
    unfused.backward()
    assert torch.allclose(fused, unfused, atol=1e-6) and torch.allclose(loss, fused, atol=1e-6)
    for g, p in zip(grads, params):
        assert torch.allclose(g, p.grad, atol=1e-6)


class ScaledLogitsLlama(LlamaForCausalLM):
    """A model whose logits are not ``hidden @ W.T`` (like logit scaling / soft-capping models)."""

    def forward(self, input_ids=None, inputs_embeds=None, logits_to_keep=0, **kwargs):
        out = super().forward(input_ids=input_ids, inputs_embeds=inputs_embeds, logits_to_keep=logits_to_keep,
                              **kwargs)
        out.logits = out.logits * 0.5
        return out


def test_auto_loss_falls_back_to_logits_when_the_head_is_not_plain():
    torch.manual_seed(11)
    model = ScaledLogitsLlama(make_model().config)
    phase = tst.TSTSchedule(STEPS, bag_size=S, superposition_frac=0.5).phase_at(0)
    ids = make_tokens(seed=12)[: B * (L * S + 1)].reshape(B, L * S + 1)
    with torch.no_grad():
        auto = tst_causal_lm_loss(model, ids, phase, L)  # the probe sees head(hidden) != logits
        logits = tst_causal_lm_loss(model, ids, phase, L, loss_impl="logits")
        fused = tst_causal_lm_loss(model, ids, phase, L, loss_impl="fused")
    assert auto == logits and abs(fused.item() - logits.item()) > 1e-3


def test_frac0_is_ordinary_causal_lm_training(tmp_path):
    model = make_model(seed=5)
    schedule = tst.TSTSchedule(STEPS, bag_size=S, superposition_frac=0.0)
    args = make_args(tmp_path)
    stream = TSTTokenStream(make_tokens(seed=6), L, schedule, rows_per_step(args))
    trainer = TSTTrainer(model=model, args=args, train_dataset=stream)
    batch = _first_batch(stream)
    assert batch["input_ids"].shape == (B, L + 1)
    loss = trainer.compute_loss(trainer.model, batch)
    ref = model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
    assert torch.allclose(loss, ref, atol=1e-5), (loss.item(), ref.item())


def test_evaluation_is_next_token_ce(tmp_path):
    """Plain {"input_ids", "labels"} eval rows get the model's own loss; a recovery-only stream the same value."""
    model = make_model(seed=7)
    tokens = make_tokens(seed=8)
    args = make_args(tmp_path, per_device_eval_batch_size=2)
    schedule = tst.TSTSchedule(STEPS, bag_size=S, superposition_frac=0.5)
    trainer = TSTTrainer(model=model, args=args, train_dataset=TSTTokenStream(tokens, L, schedule, ROWS))
    plain = [{"input_ids": tokens[k * L: k * L + L + 1], "labels": tokens[k * L: k * L + L + 1]} for k in range(4)]
    m1 = trainer.evaluate(eval_dataset=plain)
    with torch.no_grad():
        ids = torch.stack([p["input_ids"] for p in plain])
        ref = (model(input_ids=ids[:2], labels=ids[:2]).loss + model(input_ids=ids[2:], labels=ids[2:]).loss) / 2
    assert m1["eval_loss"] == pytest.approx(ref.item(), abs=1e-5)
    eval_stream = TSTTokenStream(tokens[:4 * L + 1], L, tst.TSTSchedule(1, 1, 0.0), rows_per_step=1)
    m2 = trainer.evaluate(eval_dataset=eval_stream)
    assert m2["eval_loss"] == pytest.approx(m1["eval_loss"], abs=1e-5)


# --------------------------------------------------------------------------------------------------
# Gradient accumulation and the step/data consistency checks
# --------------------------------------------------------------------------------------------------

def _short_run(out, batch, accum):
    model = make_model(seed=9)
    schedule = tst.TSTSchedule(4, bag_size=S, superposition_frac=0.5)
    args = make_args(out, max_steps=4, per_device_train_batch_size=batch, gradient_accumulation_steps=accum)
    trainer = TSTTrainer(model=model, args=args,
                         train_dataset=TSTTokenStream(make_tokens(seed=10), L, schedule, rows_per_step(args)))
    trainer.train()
    return [h for h in trainer.state.log_history if "tst_bag_size" in h]


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    accum = _short_run(tmp_path / "ga", batch=1, accum=2)
    full = _short_run(tmp_path / "full", batch=2, accum=1)
    assert [h["tst_bag_size"] for h in accum] == [4, 4, 1, 1]
    # Same rows, same initial weights: the first step's loss and gradient norm agree.
    assert accum[0]["loss"] == pytest.approx(full[0]["loss"], rel=1e-5)
    assert accum[0]["grad_norm"] == pytest.approx(full[0]["grad_norm"], rel=1e-4)


def test_rows_per_step_mismatch_is_an_error(tmp_path):
    schedule = tst.TSTSchedule(STEPS, bag_size=S, superposition_frac=0.5)
    args = make_args(tmp_path, gradient_accumulation_steps=2)  # the trainer reads 4 rows per step
    with pytest.raises(ValueError, match="rows_per_step"):
        TSTTrainer(model=make_model(), args=args, train_dataset=TSTTokenStream(make_tokens(), L, schedule, 2))
    # Too few tokens for max_steps is caught up front too.
    with pytest.raises(ValueError, match="whole steps"):
        TSTTrainer(model=make_model(), args=make_args(tmp_path),
                   train_dataset=TSTTokenStream(make_tokens(200), L, schedule, ROWS))
    # At run time: a batch whose rows belong to another step than the Trainer's.
    args = make_args(tmp_path)
    stream = TSTTokenStream(make_tokens(), L, schedule, ROWS)
    trainer = TSTTrainer(model=make_model(), args=args, train_dataset=stream)
    rows = list(iter(stream))
    with pytest.raises(ValueError, match="mismatch"):
        trainer.compute_loss(trainer.model, tst_collate(rows[ROWS:2 * ROWS]))  # step 1's rows at step 0
    with pytest.raises(ValueError, match="mixes rows"):
        tst_collate([rows[SUP_STEPS * ROWS - 1], rows[SUP_STEPS * ROWS]])


def test_stream_steps_available_and_restart():
    schedule = tst.TSTSchedule(STEPS, bag_size=S, superposition_frac=0.5)
    need = schedule.data_tokens(ROWS, L) + 1
    stream = TSTTokenStream(make_tokens(need).numpy().astype("uint16"), L, schedule, ROWS)  # numpy works too
    assert stream.steps_available() == STEPS
    rows = list(stream)
    assert len(rows) == STEPS * ROWS and rows[-1].step == STEPS - 1 and rows[0].tokens.dtype == torch.long
    assert TSTTokenStream(make_tokens(need - 1), L, schedule, ROWS).steps_available() == STEPS - 1
    assert [r.step for r in stream][:3] == [0, 0, 1]  # iterating again restarts at token 0


def test_import_tst_does_not_import_transformers():
    code = ("import sys, tst, tst.integrations; "
            "assert 'transformers' not in sys.modules and 'tst.integrations.hf' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
