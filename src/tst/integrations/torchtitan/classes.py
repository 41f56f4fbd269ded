"""The TorchTitan-backed classes of the TST integration: plain module-level classes on TorchTitan 0.3.0's
extension points. Importing this module imports TorchTitan (``tst.integrations.torchtitan`` imports it
only when one of these names is first used).
"""
import dataclasses
from dataclasses import dataclass, field

import torch

from ...bags import IGNORE_INDEX, bag_inputs, bag_mean, next_bag_targets
from ...embedding import SuperposedEmbedding
from ...weights import WEIGHTINGS
from .helpers import TSTConfig, infer_bag_size, latent_positions, mce_sum, set_dataset_seq_len
from ._triton_stub import import_torchtitan

import_torchtitan()  # before any torchtitan import: it makes them work on CPU-only PyTorch

from torch.distributed.tensor import DTensor  # noqa: E402
from torchtitan.components.loss import BaseLoss, ChunkedLossWrapper, CrossEntropyLoss, cross_entropy_loss  # noqa: E402
from torchtitan.config import CompileConfig  # noqa: E402
from torchtitan.models.common.embedding import Embedding  # noqa: E402
from torchtitan.protocols.model import ModelConfigConverter  # noqa: E402
from torchtitan.tools.logging import logger as tt_logger  # noqa: E402
from torchtitan.trainer import Trainer  # noqa: E402



class TorchTitanSuperposedEmbedding(SuperposedEmbedding, Embedding):
    """TorchTitan's ``Embedding`` that also takes bags: ``(B, L, s)`` → mean of the ``s`` embeddings.

    It is a :class:`tst.SuperposedEmbedding` and a TorchTitan ``Module``: the lookup goes through
    TorchTitan's ``Embedding.forward`` (DTensor weight, vocab-parallel TP path), then the bag is summed
    in float32 and cast back once, as Listing 2. 2-D input is the ordinary lookup. Same ``weight``
    parameter and state-dict key as ``Embedding``, so checkpoints, FSDP and HF conversion are unchanged.
    """

    @dataclass(kw_only=True, slots=True)
    class Config(Embedding.Config):
        pass

    def __init__(self, config: Config):
        Embedding.__init__(self, config)

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # "input": the name the sharding config uses
        if input.dim() != 3:
            return Embedding.forward(self, input)
        if input.shape[-1] == 1:
            return Embedding.forward(self, input[..., 0])
        return bag_mean(Embedding.forward(self, input))  # (B, L, s, d) → (B, L, d), the core's one bag mean


class SuperposedEmbeddingConverter(ModelConfigConverter):
    """``ModelConfigConverter``: ``model_registry(..., converters=[SuperposedEmbeddingConverter.Config()])``."""

    @dataclass(kw_only=True, slots=True)
    class Config(ModelConfigConverter.Config):
        pass

    def __init__(self, config: Config):
        self.config = config

    def convert(self, model_config):
        return superpose_model_config(model_config)


class MultiHotCrossEntropyLoss(BaseLoss):
    """The TST loss for ``Trainer.Config.loss``: ``(pred (B, L, V), labels (B, L·s), global_valid_tokens)``.

    ``s = labels.shape[1] // pred.shape[1]``; ``s == 1`` is TorchTitan's own cross-entropy (with its
    loss-parallel paths), ``s > 1`` the multi-hot CE of :func:`tst_cross_entropy_loss`. Returns the local
    sum ÷ ``global_valid_tokens`` (TorchTitan 0.3.0's contract: the trainer counts the non-ignored labels
    of all micro-batches and data-parallel ranks, and FSDP sums gradients), or the sum without it.
    """

    @dataclass(kw_only=True, slots=True)
    class Config(BaseLoss.Config):
        global_vocab_size: int | None = None
        """Full vocabulary size (TorchTitan's loss-parallel CE needs it when s = 1)."""

        weights: str = "uniform"
        """MCE bag weighting g(i): uniform, power (1/i), exp (e^-i) or first."""

        def __post_init__(self):
            if self.weights not in WEIGHTINGS:
                raise ValueError(f"unknown weights {self.weights!r}: choose one of {', '.join(WEIGHTINGS)}")

    def __init__(self, config: Config, *, compile_config: CompileConfig | None = None):
        self.fn = cross_entropy_loss
        self._maybe_compile(compile_config)  # compiles the s == 1 path only; the MCE runs eagerly
        self.global_vocab_size = config.global_vocab_size
        self.weights = config.weights

    def __call__(self, pred, labels, global_valid_tokens=None, **kwargs):
        bagged_targets = bool(kwargs.pop("tst_bagged_targets", False))
        s = infer_bag_size(pred, labels)
        if s == 1 and not bagged_targets:
            loss = self.fn(pred, labels, global_vocab_size=self.global_vocab_size)
        else:
            if isinstance(pred, DTensor):
                raise NotImplementedError("the multi-hot CE needs whole vocabulary rows: tensor-parallel or "
                                          "DTensor logits are not supported in the superposition phase")
            targets = labels.unflatten(1, (pred.shape[1], s)) if bagged_targets else next_bag_targets(labels, s)
            loss = mce_sum(pred, targets, self.weights, IGNORE_INDEX)
        if global_valid_tokens is not None:
            loss = loss / global_valid_tokens
        return loss, {}


class ChunkedMultiHotLossWrapper(ChunkedLossWrapper):
    """``ChunkedLossWrapper`` (LM head + loss in sequence chunks) for the multi-hot CE.

    The next-bag shift crosses chunk boundaries, so the labels are turned into bag targets **before**
    chunking (the stock wrapper would drop the ``s − 1`` targets of each chunk's last position).
    """

    @dataclass(kw_only=True, slots=True)
    class Config(ChunkedLossWrapper.Config):
        loss_fn: BaseLoss.Config = field(default_factory=lambda: MultiHotCrossEntropyLoss.Config())

        def __post_init__(self):
            if not isinstance(self.loss_fn, MultiHotCrossEntropyLoss.Config):
                raise TypeError("ChunkedMultiHotLossWrapper needs loss_fn=MultiHotCrossEntropyLoss.Config(...)")

    def __call__(self, pred, labels, global_valid_tokens=None, **loss_inputs):
        s = infer_bag_size(pred, labels)
        if s > 1:
            labels = next_bag_targets(labels, s).flatten(-2)  # (B, L·s), bag-aligned for the chunking
            loss_inputs["tst_bagged_targets"] = True
        return super().__call__(pred, labels, global_valid_tokens, **loss_inputs)


class TSTTrainer(Trainer):
    """TorchTitan's ``Trainer`` with the TST phase schedule (``tst`` config section).

    ``training.seq_len`` is the latent length ``L`` the model sees in **both** phases (RoPE cache, FLOPs per
    position, validation). In the superposition phase the dataloader reads ``L·s``-token windows; each row
    is folded into ``(L, s)`` bags, positions become ``0 … L−1`` (the packed stream is bagged blindly, as
    the paper does) and the loss infers ``s`` from the shapes. At step ``round(r·T)`` the dataloader goes
    back to ``L`` tokens and everything is ordinary training; with ``tst.stop_at_transition`` the run stops
    there instead after a full checkpoint (phase 1 of the two-run recipe). Tokens/s (hence MFU) count
    positions; ``n_tokens_seen`` still counts data tokens.
    """

    @dataclass(kw_only=True, slots=True)
    class Config(Trainer.Config):
        tst: TSTConfig = field(default_factory=TSTConfig)

    def __init__(self, config: Config):
        tst = config.tst
        total = config.lr_scheduler.total_steps or config.training.steps
        schedule = tst.schedule(total)  # validates the settings (ValueError naming the field)
        if tst.mode != "tst":
            raise NotImplementedError(f"tst.mode={tst.mode!r}: the TorchTitan trainer runs the method itself "
                                      "(mode 'tst'); the ablation modes are in the reference trainer")
        loss_weights = getattr(config.loss, "weights", None) or getattr(getattr(config.loss, "loss_fn", None),
                                                                       "weights", None)
        if schedule.transition_step > 0 and loss_weights is not None and loss_weights != tst.weights:
            raise ValueError(f"tst.weights={tst.weights!r} but the loss is configured with weights="
                             f"{loss_weights!r}: set the weighting once (to_tst_config(weights=...) sets both)")
        active = schedule.transition_step > 0
        if tst.stop_at_transition:
            if not active or schedule.transition_step >= total:
                raise ValueError("tst.stop_at_transition needs bag_size >= 2 and 0 < round(r·T) < T, got "
                                 f"s={tst.bag_size}, r={tst.superposition_frac}, T={total}")
            config.lr_scheduler.total_steps = total  # the LR schedule of the whole run
            config.training.steps = schedule.transition_step
            config.checkpoint.enable = True
            config.checkpoint.last_save_model_only = False  # phase 2 needs optimizer, scheduler, data, step
        elif config.training.steps > total:
            raise ValueError(f"training.steps ({config.training.steps}) exceeds lr_scheduler.total_steps "
                             f"({total})")
        if active:
            self._check_supported(config)
        self.tst_schedule = schedule
        self._tst_bag = 0  # bag size the dataloader currently reads (0: not set yet)
        super().__init__(config)
        if active:
            tt_logger.info(f"TST: bag size {tst.bag_size} for steps 1-{schedule.transition_step} of {total} "
                           f"(data windows of {config.training.seq_len * tst.bag_size} tokens), then "
                           + ("stop (phase 1 of the two-run recipe)" if tst.stop_at_transition
                              else "ordinary training"))

    @staticmethod
    def _check_supported(config) -> None:
        par = config.parallelism
        unsupported = {"tensor_parallel_degree": "the multi-hot CE needs whole vocabulary rows",
                       "context_parallel_degree": "sequence shards would cut next-bag targets and positions",
                       "pipeline_parallel_degree": "untested with (B, L, s) stage inputs"}
        for name, why in unsupported.items():
            if getattr(par, name) > 1:
                raise NotImplementedError(f"TST superposition phase with parallelism.{name} > 1: {why}")
        if not isinstance(config.loss, (MultiHotCrossEntropyLoss.Config, ChunkedMultiHotLossWrapper.Config)):
            raise TypeError("TST needs loss=MultiHotCrossEntropyLoss.Config or "
                            "ChunkedMultiHotLossWrapper.Config (use tst.integrations.torchtitan.to_tst_config)")
        spec = config.model_spec
        if spec is None or not isinstance(getattr(spec.model, "tok_embeddings", None),
                                          TorchTitanSuperposedEmbedding.Config):
            raise TypeError("TST needs the superposed embedding: add SuperposedEmbeddingConverter to the model "
                            "spec (or use to_tst_config)")
        if not config.training.disable_cuda_graphs:
            # shapes change at the transition, and the MCE's target range check syncs with the host
            tt_logger.warning("TST: disabling CUDA graphs (training.disable_cuda_graphs = True)")
            config.training.disable_cuda_graphs = True

    # -- the phase ------------------------------------------------------------------------------
    @property
    def tst_bag_size(self) -> int:
        """``s`` of the step being trained (``self.step`` is 1-based; the schedule is 0-based)."""
        return self.tst_schedule.phase_at(max(self.step - 1, 0)).bag_size

    def _tst_apply_phase(self) -> None:
        s = self.tst_bag_size
        if s == self._tst_bag:
            return
        seq_len = self.config.training.seq_len * s
        # the first call runs before the first batch is fetched (worker processes start then, with
        # the new length); later calls change a dataset that workers would hold copies of
        if self._tst_bag and getattr(self.dataloader, "num_workers", 0) > 0:
            raise NotImplementedError(
                "switching phase in-process needs dataloader.num_workers = 0 (worker processes hold copies "
                "of the dataset): use num_workers 0 or the two-run recipe (tst.stop_at_transition)")
        set_dataset_seq_len(self.dataloader, seq_len)
        if self._tst_bag:
            tt_logger.info(f"TST: step {self.step}: bag size {self._tst_bag} -> {s}, "
                           f"data windows of {seq_len} tokens")
        self._tst_bag = s

    def train_step(self, data_iterator):
        self._tst_apply_phase()
        return super().train_step(data_iterator)

    def post_dataloading_process(self, input_dict, labels):
        inputs = input_dict["input"]
        seq_len = self.config.training.seq_len
        if inputs.dim() == 2 and inputs.shape[1] != seq_len:
            s = inputs.shape[1] // seq_len
            if s < 2 or inputs.shape[1] != s * seq_len or labels.shape[1] != inputs.shape[1]:
                raise ValueError(f"superposition rows must hold s·L tokens with L = training.seq_len = "
                                 f"{seq_len}, got inputs {tuple(inputs.shape)} and labels {tuple(labels.shape)}")
            input_dict = dict(input_dict)
            input_dict["input"] = bag_inputs(inputs, s)  # (B, L, s), Listing 1
            if "positions" in input_dict:  # per-document positions of the L·s window → latent 0 … L−1
                input_dict["positions"] = latent_positions(inputs.shape[0], seq_len, inputs.device)
            # throughput on positions: batch_generator counted labels.numel() = B·L·s for this batch
            self.metrics_processor.ntokens_since_last_log -= labels.numel() - labels.numel() // s
        return super().post_dataloading_process(input_dict, labels)


# --------------------------------------------------------------------------------------------------
# Building TST configs from TorchTitan's
# --------------------------------------------------------------------------------------------------

def superpose_model_config(model_config):
    """Swap the ``tok_embeddings`` config of a TorchTitan Decoder config for the superposed embedding (in place).

    All fields are kept (``num_embeddings``, ``embedding_dim``, ``param_init``, ``sharding_config``), so the
    built module has the same parameter, init and sharding; only its class (its ``forward``) changes.
    Idempotent. Returns ``model_config`` (TorchTitan's converter contract).
    """
    old = getattr(model_config, "tok_embeddings", None)
    if isinstance(old, TorchTitanSuperposedEmbedding.Config):
        return model_config
    if not isinstance(old, Embedding.Config):
        raise TypeError(f"expected a Decoder config whose tok_embeddings is an Embedding.Config, "
                        f"got {type(old).__name__}")
    values = {f.name: getattr(old, f.name) for f in dataclasses.fields(old) if f.init}
    model_config.tok_embeddings = TorchTitanSuperposedEmbedding.Config(**values)
    return model_config


def superpose_embedding_module(model: torch.nn.Module) -> torch.nn.Module:
    """Make an already built model's ``tok_embeddings`` superposed, in place (same module, same ``weight``).

    A TorchTitan ``Embedding`` becomes :class:`TorchTitanSuperposedEmbedding`, a plain ``nn.Embedding`` becomes
    :class:`tst.SuperposedEmbedding` — only the class changes, so parameters, tying, hooks and state-dict keys
    stay. Do it before ``parallelize`` (which wraps the bound ``forward``); in TorchTitan runs use the converter.
    """
    emb = getattr(model, "tok_embeddings", None)
    if not isinstance(emb, torch.nn.Embedding):
        raise TypeError(f"model.tok_embeddings must be an nn.Embedding, got {type(emb).__name__}")
    if isinstance(emb, SuperposedEmbedding):
        return model
    if "forward" in vars(emb):
        raise RuntimeError("tok_embeddings was already parallelized (its forward is wrapped): swap it before "
                           "parallelize, or use SuperposedEmbeddingConverter in the model spec")
    if type(emb) is torch.nn.Embedding:
        emb.__class__ = SuperposedEmbedding
        return model
    if type(emb) is not Embedding:
        raise TypeError(f"cannot superpose a {type(emb).__name__}: expected torchtitan's Embedding or nn.Embedding")
    emb.__class__ = TorchTitanSuperposedEmbedding
    return model


def to_tst_config(base, *, bag_size: int = 1, superposition_frac: float = 0.0, weights: str = "uniform",
                  stop_at_transition: bool = False):
    """Turn a stock ``Trainer.Config`` (e.g. ``llama3_debugmodel()``) into a :class:`TSTTrainer` config.

    The model spec gets the superposed embedding, the loss becomes the multi-hot CE (a
    ``ChunkedLossWrapper`` stays chunked: :class:`ChunkedMultiHotLossWrapper`), everything else is kept.
    """
    if base.model_spec is None:
        raise ValueError("the base config has no model_spec")
    superpose_model_config(base.model_spec.model)
    loss = base.loss
    if isinstance(loss, (MultiHotCrossEntropyLoss.Config, ChunkedMultiHotLossWrapper.Config)):
        pass
    elif isinstance(loss, ChunkedLossWrapper.Config):
        inner = loss.loss_fn
        if not isinstance(inner, CrossEntropyLoss.Config):
            raise TypeError(f"cannot replace a chunked {type(inner).__name__} by the multi-hot CE")
        loss = ChunkedMultiHotLossWrapper.Config(
            num_chunks=loss.num_chunks,
            loss_fn=MultiHotCrossEntropyLoss.Config(global_vocab_size=inner.global_vocab_size,
                                                            weights=weights))
    elif isinstance(loss, CrossEntropyLoss.Config):
        loss = MultiHotCrossEntropyLoss.Config(global_vocab_size=loss.global_vocab_size, weights=weights)
    else:
        raise TypeError(f"cannot replace a {type(loss).__name__} by the multi-hot CE")
    values = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init}
    values["loss"] = loss
    values["tst"] = TSTConfig(bag_size=bag_size, superposition_frac=superposition_frac, weights=weights,
                              stop_at_transition=stop_at_transition)
    return TSTTrainer.Config(**values)
