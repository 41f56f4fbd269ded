"""Train any Hugging Face causal LM with Token Superposition Training (TST).

Importing this module imports ``transformers``; ``import tst`` and ``import tst.integrations`` never do.

Three pieces (see ``docs/integrations_hf.md`` for a complete example):

* :class:`TSTTokenStream` — an ``IterableDataset`` over ONE contiguous token stream that follows the
  schedule: the rows of optimizer step ``k`` are read with step ``k``'s phase (superposition rows are
  ``s×`` longer) and the stream continues seamlessly into the recovery phase. Rows are grouped by step:
  ``rows_per_step`` must equal the rows the Trainer consumes per optimizer step (:func:`rows_per_step`).
* :func:`tst_causal_lm_loss` — the TST loss of a batch of raw rows for any causal LM, through
  ``inputs_embeds`` (bag means) and, when safe, a fused LM head + multi-hot CE (no full logits).
* :class:`TSTTrainer` — a ``transformers.Trainer`` whose ``compute_loss`` picks the phase of the current
  optimizer step and checks that the data agrees; it adds a :class:`TSTCallback` (phase transition
  logging) and logs ``tst_bag_size``, ``tst_data_tokens`` and ``tst_positions``.

The model is never modified: the same input embedding and LM head are trained in both phases and the
result is an ordinary HF causal LM (``save_pretrained`` / ``from_pretrained`` as usual).
"""
from __future__ import annotations

import inspect
import logging
import math
import weakref
from typing import Any, Iterator, NamedTuple, Optional

import torch
from torch import nn
from torch.utils.data import IterableDataset, get_worker_info

from ..embedding import superpose
from ..flops import training_flops_per_position
from ..fused import fused_linear_multi_hot_cross_entropy
from ..loss import multi_hot_cross_entropy, multi_hot_weight_sum
from ..schedule import Phase, TSTSchedule

try:
    from transformers import Trainer, TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tst.integrations.hf needs transformers and accelerate: pip install 'transformers>=4.45' accelerate"
    ) from exc

__all__ = [
    "LOSS_IMPLS", "TSTCallback", "TSTRow", "TSTTokenStream", "TSTTrainer", "rows_per_step", "tst_causal_lm_loss",
    "tst_collate",
]

logger = logging.getLogger(__name__)

#: ``"fused"``: final hidden states → fused LM head + MCE (full logits never exist). ``"logits"``: the model's
#: own logits → MCE (always correct; needed for heads with a bias, logit scaling or soft-capping).
#: ``"auto"``: ``"fused"`` when the model is verified to compute ``logits = hidden @ W.T``, else ``"logits"``.
LOSS_IMPLS = ("auto", "fused", "logits")

#: Batch key holding the optimizer step each row belongs to (set by :func:`tst_collate`).
STEP_KEY = "tst_step"


# --------------------------------------------------------------------------------------------------
# Data: one contiguous stream that follows the phase
# --------------------------------------------------------------------------------------------------

class TSTRow(NamedTuple):
    """One row of a :class:`TSTTokenStream`: its raw tokens and the optimizer step it belongs to."""

    tokens: torch.Tensor  # (phase.tokens_per_row(seq_len),) int64
    step: int


def rows_per_step(args: Any) -> int:
    """Rows one optimizer step consumes from the stream, for ``transformers.TrainingArguments`` ``args``.

    ``per_device_train_batch_size × max(1, n_gpu) × gradient_accumulation_steps × world_size`` (the global
    batch in rows; with ``accelerator_config.split_batches`` the per-device batch is already global).
    """
    per_step = args.train_batch_size * args.gradient_accumulation_steps
    split = bool(getattr(getattr(args, "accelerator_config", None), "split_batches", False))
    return per_step if split else per_step * args.world_size


class TSTTokenStream(IterableDataset):
    """Rows of one contiguous token stream, shaped by the phase of the step they belong to.

    Row ``r`` belongs to optimizer step ``r // rows_per_step``; with that step's phase it holds
    ``phase.tokens_per_row(seq_len)`` tokens and the next row starts ``phase.data_tokens_per_row(seq_len)``
    tokens later (rows overlap by their label lookahead). Superposition rows hold ``seq_len · s + 1`` tokens
    (stride ``seq_len · s``), recovery rows ``seq_len + 1`` (stride ``seq_len``); the first recovery row
    starts exactly where the last superposition row's stride ends.

    Args:
        tokens: 1-D token ids (torch tensor, numpy array or ``np.memmap``; any integer dtype).
        seq_len: ``L``, the positions the model computes on per row, in both phases.
        schedule: the run's :class:`tst.TSTSchedule` (the same object the trainer uses).
        rows_per_step: rows per optimizer step over all processes:
            ``per_device_train_batch_size × gradient_accumulation_steps × world_size`` (see :func:`rows_per_step`).

    The stream yields only whole steps and stops when the tokens cannot fill the next one
    (:meth:`steps_available`); iterating again restarts at token 0. Use ``dataloader_num_workers <= 1``:
    rows are cheap slices, and the order across workers would not follow the steps.
    """

    def __init__(self, tokens: Any, seq_len: int, schedule: TSTSchedule, rows_per_step: int) -> None:
        super().__init__()
        if getattr(tokens, "ndim", None) != 1:
            raise ValueError(
                f"tokens must be a 1-D array or tensor of token ids, got shape {getattr(tokens, 'shape', None)}")
        if not isinstance(schedule, TSTSchedule):
            raise TypeError(f"schedule must be a tst.TSTSchedule, got {type(schedule).__name__}")
        for name, value in (("seq_len", seq_len), ("rows_per_step", rows_per_step)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.tokens = tokens
        self.num_tokens = int(tokens.shape[0])
        self.seq_len = seq_len
        self.schedule = schedule
        self.rows_per_step = rows_per_step

    def _segments(self):
        """The schedule's phases, the last one extended without end (``phase_at`` semantics past ``total_steps``)."""
        phases = self.schedule.phases
        for i, (first, end, phase) in enumerate(phases):
            yield first, (math.inf if i == len(phases) - 1 else end), phase

    def steps_available(self) -> int:
        """How many whole optimizer steps the tokens can feed."""
        n, rows, pos, steps = self.num_tokens, self.rows_per_step, 0, 0
        for first, end, phase in self._segments():
            stride, width = phase.data_tokens_per_row(self.seq_len), phase.tokens_per_row(self.seq_len)
            last_row_end = (rows - 1) * stride + width  # tokens one step needs past its start
            if pos + last_row_end > n:
                return steps
            k = min((n - pos - last_row_end) // (rows * stride) + 1, end - first)
            steps += int(k)
            pos += int(k) * rows * stride
            if k < end - first:
                return steps
        return steps  # pragma: no cover - the recovery segment is unbounded

    def _slice(self, start: int, stop: int) -> torch.Tensor:
        return torch.as_tensor(self.tokens[start:stop]).to(torch.long)

    def __iter__(self) -> Iterator[TSTRow]:
        info = get_worker_info()
        if info is not None and info.num_workers > 1:
            raise RuntimeError(
                "TSTTokenStream must be read by a single DataLoader worker (dataloader_num_workers <= 1): "
                "several workers would each replay the stream and interleave batches out of step order"
            )
        pos, step, rows, n = 0, 0, self.rows_per_step, self.num_tokens
        while True:
            phase = self.schedule.phase_at(step)
            stride, width = phase.data_tokens_per_row(self.seq_len), phase.tokens_per_row(self.seq_len)
            if pos + (rows - 1) * stride + width > n:
                return  # no whole step left
            for _ in range(rows):
                yield TSTRow(self._slice(pos, pos + width), step)
                pos += stride
            step += 1

    def __repr__(self) -> str:
        return (f"TSTTokenStream(num_tokens={self.num_tokens}, seq_len={self.seq_len}, "
                f"rows_per_step={self.rows_per_step}, schedule={self.schedule!r})")


def tst_collate(rows: list) -> dict:
    """Stack :class:`TSTRow` s into ``{"input_ids": (B, tokens_per_row), "tst_step": (B,)}``.

    Anything else (e.g. ordinary ``{"input_ids", "labels"}`` evaluation rows) goes to
    ``transformers.default_data_collator``.
    """
    if not rows or not isinstance(rows[0], TSTRow):
        from transformers import default_data_collator
        return default_data_collator(rows)
    widths = sorted({r.tokens.numel() for r in rows})
    if len(widths) > 1:
        raise ValueError(
            f"a batch mixes rows of different phases (row lengths {widths}, steps "
            f"{sorted({r.step for r in rows})}): the stream's rows_per_step must be a multiple of the DataLoader "
            "batch size (it should equal per_device_train_batch_size × gradient_accumulation_steps × world_size)"
        )
    return {"input_ids": torch.stack([r.tokens for r in rows]),
            STEP_KEY: torch.tensor([r.step for r in rows], dtype=torch.long)}


# --------------------------------------------------------------------------------------------------
# Loss: bag means through inputs_embeds, MCE on the final hidden states
# --------------------------------------------------------------------------------------------------

#: Config attributes of models whose logits are not just ``hidden @ W.T`` (soft-capping, scaling).
_LOGIT_SOFTCAPS = ("final_logit_softcapping", "logit_softcapping", "output_logit_softcapping")
_LOGIT_SCALES = ("logit_scale", "logits_scaling", "output_multiplier_scale", "logit_multiplier")

_FUSED_VERDICT: "weakref.WeakKeyDictionary[nn.Module, str]" = weakref.WeakKeyDictionary()


def _unwrap(model: nn.Module) -> nn.Module:
    """Strip DDP / DeepSpeed (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _forward_params(model: nn.Module) -> set:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):  # pragma: no cover - exotic forward
        return set()


def _logits_to_keep_name(model: nn.Module) -> Optional[str]:
    params = _forward_params(model)
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return name
    return None


def _extra_forward_kwargs(model: nn.Module) -> dict:
    return {"use_cache": False} if "use_cache" in _forward_params(model) else {}


def _check_fused_head(model: nn.Module, base: nn.Module, embeds: torch.Tensor) -> tuple[str, str]:
    """(``"fused"`` or ``"logits"``, reason): is ``logits == final_hidden @ head.weight.T`` for this model?"""
    head = base.get_output_embeddings()
    if not isinstance(head, nn.Linear) or head.bias is not None:
        return "logits", "the output head is not a bias-free nn.Linear"
    if _logits_to_keep_name(base) is None:
        return "logits", "the model's forward() takes no logits_to_keep, so it computes full logits anyway"
    config = getattr(base, "config", None)
    for attr in _LOGIT_SOFTCAPS + _LOGIT_SCALES:
        value = getattr(config, attr, None)
        if value is not None and value is not False and not (attr in _LOGIT_SCALES and value == 1):
            return "logits", f"config.{attr}={value!r} transforms the logits after the LM head"
    # Numerical probe on a short slice of the real input: one forward, compare its logits with head(hidden).
    probe = embeds[:1, : min(16, embeds.shape[1])].detach()
    with torch.no_grad():
        out = model(inputs_embeds=probe, output_hidden_states=True, **_extra_forward_kwargs(base))
        hidden = getattr(out, "hidden_states", None)
        logits = getattr(out, "logits", None)
        if not hidden or logits is None or hidden[-1].shape[:-1] != logits.shape[:-1]:
            return "logits", "the model does not return logits and final hidden states"
        mine = nn.functional.linear(hidden[-1], head.weight).float()
        ref = logits.float()
    low = (torch.is_autocast_enabled(probe.device.type) or hasattr(base, "_original_forward")
           or any(t.dtype in (torch.float16, torch.bfloat16) for t in (hidden[-1], head.weight, logits)))
    tol = (3e-2 if low else 1e-4) * max(1.0, float(ref.abs().max()))
    err = float((mine - ref).abs().max())
    if not err <= tol:
        return "logits", f"head(final hidden state) differs from the model's logits by {err:.3g} (> {tol:.3g})"
    return "fused", "verified"


def tst_causal_lm_loss(model: nn.Module, input_ids: torch.Tensor, phase: Phase, seq_len: int, *,
                       loss_impl: str = "auto", reduction: str = "mean",
                       base: Optional[nn.Module] = None) -> torch.Tensor:
    """TST loss of raw rows for a Hugging Face causal LM (either phase; the recovery phase is plain CE).

    ``phase.fold(input_ids, seq_len)`` gives bags ``(B, L, s)`` and next-bag targets ``(B, L, t)``; the bags
    enter as ``inputs_embeds = superpose(model.get_input_embeddings(), bags)`` (mean of the bag's
    embeddings) and each position's output is scored against its targets with the multi-hot CE
    (the phase's weighting travels with the targets), normalised as :func:`tst.multi_hot_cross_entropy` (``"mean"``: Σ w·CE ÷ Σ w over
    valid targets; ``"sum"``: the numerator). Phase 2 rows give exactly the model's own causal-LM loss.

    Args:
        model: the model to run forward — possibly wrapped (DDP, DeepSpeed, compile): the forward goes
            through the wrapper so gradient synchronisation works.
        input_ids: ``(B, phase.tokens_per_row(seq_len))`` raw rows (e.g. from :class:`TSTTokenStream`).
        phase: the phase of the current optimizer step (``schedule.phase_at(step)``).
        seq_len: ``L``, latent positions per row.
        loss_impl: see :data:`LOSS_IMPLS`. ``"auto"`` checks the model once (cached per model).
        reduction: ``"mean"`` or ``"sum"``.
        base: the unwrapped ``PreTrainedModel`` (default: unwrap ``model``).

    Returns:
        float32 scalar loss.
    """
    if loss_impl not in LOSS_IMPLS:
        raise ValueError(f"unknown loss_impl {loss_impl!r}; choose one of {', '.join(LOSS_IMPLS)}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    base = _unwrap(model) if base is None else base
    inputs, targets = phase.fold(input_ids, seq_len)  # (B, L, s), ids (B, L, t) with the phase's weighting
    embeds = superpose(base.get_input_embeddings(), inputs)  # (B, L, d)
    impl = loss_impl
    if impl == "auto":
        impl = _FUSED_VERDICT.get(base)
        if impl is None:
            impl, why = _check_fused_head(model, base, embeds)
            if impl == "logits":
                logger.warning("TST: computing the loss from the model's full logits (%s)", why)
            _FUSED_VERDICT[base] = impl
    extra = _extra_forward_kwargs(base)
    if impl == "fused":
        keep = _logits_to_keep_name(base)
        if keep is None:
            raise ValueError("loss_impl='fused' needs a model whose forward() takes logits_to_keep; use 'logits'")
        extra[keep] = 1  # the model's own head then runs on the last position only
        out = model(inputs_embeds=embeds, output_hidden_states=True, **extra)
        hidden = out.hidden_states[-1]  # (B, L, d), after the final norm
        weight = base.get_output_embeddings().weight  # (V, d)
        loss = fused_linear_multi_hot_cross_entropy(hidden, weight, targets, reduction=reduction)
    else:
        out = model(inputs_embeds=embeds, **extra)
        loss = multi_hot_cross_entropy(out.logits, targets, reduction=reduction)  # (B, L, V)
    return loss + _router_loss(out, base, targets, reduction)


def _router_loss(out, base: nn.Module, targets, reduction: str):
    """A mixture of experts' own balancing loss, as its model adds it when given labels: ``router_aux_loss_coef ×
    aux_loss`` when the config asks for it (``output_router_logits=True``); 0 otherwise. Scaled to the reduction."""
    aux = getattr(out, "aux_loss", None)
    coef = getattr(getattr(base, "config", None), "router_aux_loss_coef", 0.0) or 0.0
    if aux is None or not coef:
        return 0.0
    scale = multi_hot_weight_sum(targets) if reduction == "sum" else 1.0
    return coef * aux * scale


# --------------------------------------------------------------------------------------------------
# Trainer: "what" (the loss of the current step) and callback: "when" (the phase transition)
# --------------------------------------------------------------------------------------------------

class TSTCallback(TrainerCallback):
    """Announces the TST schedule and the phase transition, and forces a log line on both sides of it.

    :class:`TSTTrainer` adds one automatically. The per-step values (``tst_bag_size``, ``tst_data_tokens``,
    ``tst_positions``) are added to the logs by the trainer, which knows what the loss actually used.
    """

    def __init__(self, schedule: TSTSchedule) -> None:
        self.schedule = schedule

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: D102
        s = self.schedule
        t = s.transition_step
        if t > 0:
            logger.info("TST: steps [0, %d) superpose bags of %d tokens (mode %s, weights %s); ordinary "
                        "next-token training from step %d", t, s.bag_size, s.mode, s.weights, t)
        else:
            logger.info("TST: no superposition phase (%r): ordinary next-token training", s)
        if args.max_steps > 0 and args.max_steps != s.total_steps:
            logger.warning("TST: max_steps=%d but the schedule has total_steps=%d: the phase switch stays at "
                           "step %d", args.max_steps, s.total_steps, t)
        return control

    def on_step_begin(self, args, state, control, **kwargs):  # noqa: D102
        if self.schedule.is_transition(state.global_step):
            logger.info("TST: step %d: superposition phase done, recovery phase (ordinary next-token "
                        "training) starts", state.global_step)
        return control

    def on_step_end(self, args, state, control, **kwargs):  # noqa: D102
        if (self.schedule.is_transition(state.global_step) or self.schedule.is_transition(state.global_step - 1)) \
                and str(getattr(args, "logging_strategy", "steps")).split(".")[-1].lower() != "no":
            control.should_log = True  # the last superposition step and the first recovery step
        return control


def inactive_expert_params(config) -> int:
    """Parameters of the experts a position is *not* routed to, for a mixture-of-experts HF config whose every
    layer is sparse (Qwen2/3-MoE, Mixtral, OLMoE field names: ``num_experts``/``num_local_experts``,
    ``num_experts_per_tok``, ``moe_intermediate_size``/``intermediate_size``); 0 for a dense config. FLOPs count
    active parameters only."""
    experts = getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None) or 0
    top_k = getattr(config, "num_experts_per_tok", None) or 0
    if not experts or not top_k or getattr(config, "mlp_only_layers", None) or getattr(config, "decoder_sparse_step", 1) != 1:
        return 0
    width = getattr(config, "moe_intermediate_size", None) or getattr(config, "intermediate_size", 0)
    return config.num_hidden_layers * (experts - top_k) * 3 * config.hidden_size * width


class TSTTrainer(Trainer):
    """``transformers.Trainer`` that trains with TST. Same arguments as ``Trainer``, plus:

    Args:
        tst_schedule: the :class:`tst.TSTSchedule` (default: ``train_dataset.schedule``).
        seq_len: latent positions per row (default: ``train_dataset.seq_len``).
        loss_impl: see :data:`LOSS_IMPLS` (``"auto"``; FSDP and DeepSpeed ZeRO-3 use ``"logits"``).

    ``train_dataset`` should be a :class:`TSTTokenStream` with ``rows_per_step == rows_per_step(args)``
    (checked here); ``data_collator`` defaults to :func:`tst_collate`. ``compute_loss`` uses the phase of
    the current optimizer step (``state.global_step``) and raises if the batch's rows belong to another
    step. Batches without ``tst_step`` (e.g. ordinary ``{"input_ids", "labels"}`` evaluation data) get the
    model's usual loss.

    Gradient accumulation: the loss is the mean over the micro-batch and the Trainer divides it by the
    accumulation steps (HF's default). Every row of a phase has the same targets and weights (no padding),
    so this equals the weighted mean over the whole global batch exactly.
    """

    #: compute_loss returns a per-micro-batch mean: the Trainer divides by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, tst_schedule: Optional[TSTSchedule] = None, seq_len: Optional[int] = None,
                 loss_impl: str = "auto", **kwargs) -> None:
        if loss_impl not in LOSS_IMPLS:
            raise ValueError(f"unknown loss_impl {loss_impl!r}; choose one of {', '.join(LOSS_IMPLS)}")
        if len(args) < 3 and kwargs.get("data_collator") is None:
            kwargs["data_collator"] = tst_collate
        super().__init__(*args, **kwargs)
        stream = self.train_dataset if isinstance(self.train_dataset, TSTTokenStream) else None
        if stream is not None:
            tst_schedule = stream.schedule if tst_schedule is None else tst_schedule
            seq_len = stream.seq_len if seq_len is None else seq_len
        if tst_schedule is None or seq_len is None:
            raise ValueError("TSTTrainer needs tst_schedule= and seq_len= (or a TSTTokenStream as train_dataset)")
        self.tst_schedule = tst_schedule
        self.tst_seq_len = seq_len
        self.tst_rows_per_step = rows_per_step(self.args)
        if stream is not None:
            self._check_stream(stream)
        if loss_impl == "auto" and (self.is_fsdp_enabled or self._zero3()):
            loss_impl = "logits"  # sharded LM-head weights: only the model's own forward can use them
        self.tst_loss_impl = loss_impl
        self._tst_last_phase: Optional[Phase] = None
        self._tst_eval_stream = None
        if not any(isinstance(cb, TSTCallback) for cb in self.callback_handler.callbacks):
            self.add_callback(TSTCallback(tst_schedule))

    def _zero3(self) -> bool:
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None) if self.is_deepspeed_enabled else None
        return plugin is not None and getattr(plugin, "zero_stage", 0) == 3

    def _check_stream(self, stream: TSTTokenStream) -> None:
        s, t = stream.schedule, self.tst_schedule
        if s is not t and (s.transition_step, s.total_steps, s.bag_size, s.mode) != \
                (t.transition_step, t.total_steps, t.bag_size, t.mode):
            raise ValueError(f"the train_dataset's schedule {s!r} differs from tst_schedule {t!r}")
        if stream.seq_len != self.tst_seq_len:
            raise ValueError(f"the train_dataset's seq_len {stream.seq_len} differs from seq_len={self.tst_seq_len}")
        if stream.rows_per_step != self.tst_rows_per_step:
            a = self.args
            raise ValueError(
                f"TSTTokenStream(rows_per_step={stream.rows_per_step}) does not match the rows this Trainer "
                f"consumes per optimizer step: per_device_train_batch_size {a.per_device_train_batch_size} × "
                f"n_gpu {max(1, a.n_gpu)} × gradient_accumulation_steps {a.gradient_accumulation_steps} × "
                f"world_size {a.world_size} = {self.tst_rows_per_step}; build the stream with "
                "rows_per_step=tst.integrations.hf.rows_per_step(args)")
        if self.args.dataloader_num_workers > 1:
            raise ValueError("a TSTTokenStream needs dataloader_num_workers <= 1 (rows must stay in step order)")
        if self.args.max_steps > 0 and stream.steps_available() < self.args.max_steps:
            need = t.data_tokens(self.tst_rows_per_step, self.tst_seq_len, self.args.max_steps) + 1
            raise ValueError(
                f"the token stream feeds only {stream.steps_available()} whole steps but max_steps="
                f"{self.args.max_steps}: it has {stream.num_tokens} tokens and needs about {need}")

    def _phase_of_batch(self, steps: torch.Tensor, training: bool) -> Phase:
        """The phase of a batch's rows: the current optimizer step's when training (checked against the
        rows' own step); for evaluation, the step's phase in the evaluation stream's own schedule."""
        step = self.state.global_step if training else int(steps[0])
        if training and bool((steps != step).any()):
            ds = self.train_dataset
            hint = (f" The stream holds {ds.steps_available()} whole steps of {ds.rows_per_step} rows; it may "
                    "have run out and restarted." if isinstance(ds, TSTTokenStream) else "")
            raise ValueError(
                f"TST data/step mismatch: the batch's rows belong to optimizer step(s) "
                f"{sorted(set(steps.tolist()))} but the Trainer is at step {step}. The stream's rows_per_step "
                f"must equal per_device_train_batch_size × gradient_accumulation_steps × world_size "
                f"(= {self.tst_rows_per_step} here), and the data must not be skipped or reordered "
                f"(ignore_data_skip, several dataloader workers).{hint}")
        if training:
            return self.tst_schedule.phase_at(step)
        stream = self._tst_eval_stream
        if not isinstance(stream, TSTTokenStream):
            raise ValueError("evaluation batches with tst_step rows need eval_dataset to be a TSTTokenStream "
                             "(its schedule says each row's phase); for ordinary next-token evaluation pass "
                             "{input_ids, labels} rows")
        return stream.schedule.phase_at(step)

    def get_eval_dataloader(self, eval_dataset=None):
        """Remember which dataset is being evaluated: a :class:`TSTTokenStream`'s schedule gives its rows' phase."""
        ds = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(ds, str) and isinstance(self.eval_dataset, dict):
            ds = self.eval_dataset[ds]
        self._tst_eval_stream = ds
        return super().get_eval_dataloader(eval_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """TST loss of a :func:`tst_collate` batch in the current step's phase (mean over the micro-batch)."""
        if STEP_KEY not in inputs:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        phase = self._phase_of_batch(inputs[STEP_KEY], model.training)
        if model.training:
            self._tst_last_phase = phase
        base = self.accelerator.unwrap_model(model)
        with self.accelerator.autocast():
            loss = tst_causal_lm_loss(model, inputs["input_ids"], phase, self.tst_seq_len,
                                      loss_impl=self.tst_loss_impl, base=base)
        return (loss, {"loss": loss}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Evaluation on :func:`tst_collate` batches: the loss only, in the rows' own phase."""
        if STEP_KEY not in inputs:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def floating_point_ops(self, inputs) -> int:
        """FLOPs of a TST batch, counted on latent positions (not raw tokens) with ``tst.flops``' formula:
        6 × matmul parameters (the non-embedding ones; a mixture of experts' active ones) + the attention term
        when the config names the shape."""
        if STEP_KEY not in inputs:
            return super().floating_point_ops(inputs)
        base = self.accelerator.unwrap_model(self.model)
        if not hasattr(base, "num_parameters"):
            return 0
        config = getattr(base, "config", None)
        layers, dim = getattr(config, "num_hidden_layers", 0) or 0, getattr(config, "hidden_size", 0) or 0
        active = base.num_parameters(exclude_embeddings=True) - inactive_expert_params(config)
        per_position = training_flops_per_position(active, layers, dim, self.tst_seq_len)
        return int(per_position * inputs["input_ids"].shape[0] * self.tst_seq_len)

    def log(self, logs: dict, *args, **kwargs) -> None:
        """Add ``tst_bag_size`` (last step trained), ``tst_data_tokens`` and ``tst_positions`` to training logs."""
        phase = self._tst_last_phase
        if phase is not None and "loss" in logs:
            done = self.state.global_step
            logs["tst_bag_size"] = phase.bag_size
            logs["tst_data_tokens"] = self.tst_schedule.data_tokens(self.tst_rows_per_step, self.tst_seq_len, done)
            logs["tst_positions"] = done * self.tst_rows_per_step * self.tst_seq_len
        super().log(logs, *args, **kwargs)
