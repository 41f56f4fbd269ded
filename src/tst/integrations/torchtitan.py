"""Token Superposition Training in TorchTitan 0.3.0 (the framework the paper ran on, with FSDP).

Importing this module does **not** import torchtitan: the TorchTitan-backed classes are built on first
access (``tst.integrations.torchtitan.TSTTrainer`` etc.) and the pure helpers need torch only. ``import
tst`` and ``import tst.integrations`` never import torchtitan either. See ``docs/integrations_torchtitan.md``.

The pieces, each on a real TorchTitan 0.3.0 extension point:

* :class:`SuperposedEmbeddingConverter` — a ``ModelConfigConverter`` that swaps a Decoder's
  ``tok_embeddings`` config for :class:`TorchTitanSuperposedEmbedding` (a TorchTitan ``Embedding`` that
  is also a :class:`tst.SuperposedEmbedding`): same ``weight`` parameter and state-dict key, same init,
  sharding config and vocab-parallel path; ``(B, L, s)`` tokens → mean of the ``s`` embeddings.
* :class:`MultiHotCrossEntropyLoss` / :class:`ChunkedMultiHotLossWrapper` — ``BaseLoss`` configs for
  ``Trainer.Config.loss``: ``(pred (B, L, V), labels (B, L·s))`` exactly as the paper's Listing 3, ``s``
  inferred from the shapes, plain cross-entropy when ``s == 1``; local **sum** ÷ ``global_valid_tokens``
  (TorchTitan's contract). :func:`tst_cross_entropy_loss` is the same loss as a plain function.
* :class:`TSTTrainer` — a ``Trainer`` subclass (``Trainer.Config`` + a ``tst`` section, so it runs from
  ``python -m torchtitan.train --module tst.integrations.torchtitan --config tst_<llama3 config>``): reads
  ``L·s``-token data windows in the superposition phase, folds them into ``(B, L, s)`` bags with latent
  positions ``0 … L−1``, switches phase in-process at step ``round(r·T)`` (or stops there and saves a full
  checkpoint for the paper's two-run recipe), and counts throughput on positions.
* :func:`phase1_throughput` — corrects tokens/s and MFU logged by an unpatched run; :func:`two_run_commands`
  — the launch commands of the two-run recipe.
"""
import dataclasses
import functools
import importlib
import importlib.util
import logging
import sys
import types
from typing import Optional

import torch
import torch.nn.functional as F

# Private aliases: TorchTitan's ``--config`` lookup lists this module's public callables.
from ..bags import IGNORE_INDEX
from ..bags import bag_inputs as _bag_inputs
from ..bags import next_bag_targets as _next_bag_targets
from ..embedding import SuperposedEmbedding
from ..loss import WEIGHTINGS
from ..loss import multi_hot_cross_entropy as _multi_hot_cross_entropy
from ..loss import resolve_weights as _resolve_weights
from ..schedule import TSTSchedule

_dataclass = dataclasses.dataclass
_field = dataclasses.field

__all__ = [
    "SUPPORTED_TORCHTITAN", "TSTConfig", "import_torchtitan", "infer_bag_size", "latent_positions",
    "phase1_throughput", "set_dataset_seq_len", "superpose_model_config", "superpose_embedding_module",
    "to_tst_config", "transition_step", "tst_cross_entropy_loss", "two_run_commands",
    # built on first access (they subclass TorchTitan classes):
    "TorchTitanSuperposedEmbedding", "SuperposedEmbeddingConverter", "MultiHotCrossEntropyLoss",
    "ChunkedMultiHotLossWrapper", "TSTTrainer",
]

logger = logging.getLogger(__name__)

#: The TorchTitan release this module was written against (its extension points change between releases).
SUPPORTED_TORCHTITAN = "0.3.0"

#: This module, as TorchTitan's ``--module`` flag names it.
MODULE = __name__


# --------------------------------------------------------------------------------------------------
# Pure helpers (torch only)
# --------------------------------------------------------------------------------------------------

def infer_bag_size(pred: torch.Tensor, labels: torch.Tensor) -> int:
    """``s = labels.shape[1] // pred.shape[1]`` (Listing 3), checking that it divides exactly."""
    if pred.dim() < 2 or labels.dim() != 2 or labels.shape[0] != pred.shape[0]:
        raise ValueError(f"expected pred (B, L, ...) and labels (B, L·s), got {tuple(pred.shape)} and "
                         f"{tuple(labels.shape)}")
    n, length = labels.shape[1], pred.shape[1]
    if length == 0 or n % length:
        raise ValueError(f"labels length {n} is not a multiple of the {length} positions of pred: "
                         "labels must be the next-token labels of the L·s-token window")
    return n // length


def tst_cross_entropy_loss(pred: torch.Tensor, labels: torch.Tensor, *, weights="uniform",
                           ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Listing 3 with TorchTitan's **sum** reduction: ``pred (B, L, V)``, ``labels (B, L·s)`` → a scalar sum.

    ``labels`` are the ordinary next-token labels of the ``L·s``-token data window; ``s`` is inferred from
    the shapes. Each position is scored against its next bag (``tst.next_bag_targets``) with the multi-hot
    CE; the bag weights ``g(i)`` are normalised to sum to ``s`` over a full bag, so that the sum divided by
    the number of label tokens is Listing 3's ``Σ_i g(i)·CE_i / Σ_i g(i)`` averaged over positions (see
    ``docs/integrations_torchtitan.md`` for the ``(s−1)/(L·s)`` boundary difference). With ``s == 1`` this
    is ``F.cross_entropy(..., reduction="sum")``. Logits are upcast to float32 inside.
    """
    s = infer_bag_size(pred, labels)
    if s == 1:
        return F.cross_entropy(pred.flatten(0, 1).float(), labels.flatten(0, 1), reduction="sum",
                               ignore_index=ignore_index)
    return _mce_sum(pred, _next_bag_targets(labels, s, ignore_index), weights, ignore_index)


def _pair_weights(weights, s: int, device) -> torch.Tensor:
    """Bag weights rescaled to sum to ``s``: a full bag then counts as its ``s`` label tokens."""
    w = _resolve_weights(weights, s, device)  # (s,)
    return w * (s / w.sum())


def _mce_sum(pred: torch.Tensor, targets: torch.Tensor, weights, ignore_index: int) -> torch.Tensor:
    """Σ over valid (position, target) pairs of ``s·g(i)/Σg · CE``; targets ``(B, L, s)``."""
    w = _pair_weights(weights, targets.shape[-1], targets.device)
    return _multi_hot_cross_entropy(pred, targets, weights=w, ignore_index=ignore_index, reduction="sum")


def latent_positions(batch: int, length: int, device=None) -> torch.Tensor:
    """RoPE positions ``0 … L−1`` of ``L`` latent positions, ``(B, L)`` int64 (blind bagging: one document)."""
    return torch.arange(length, dtype=torch.long, device=device).expand(batch, length)


def transition_step(total_steps: int, superposition_frac: float) -> int:
    """First recovery step (0-based) = number of superposition steps = ``round(r·T)`` (as ``tst.TSTSchedule``)."""
    return round(float(superposition_frac) * int(total_steps))


def phase1_throughput(tps: float, mfu: Optional[float], bag_size: int, *,
                      flops_per_token: Optional[float] = None,
                      flops_per_position: Optional[float] = None) -> tuple[float, Optional[float]]:
    """Convert the tokens/s and MFU an **unpatched** TorchTitan logged in a superposition step to positions.

    TorchTitan counts ``labels.numel()`` per batch, i.e. ``L·s`` data tokens per row, while the model
    computes on ``L`` positions: its tokens/s is ``s×`` too high. Its MFU is ``flops_per_token · tps / peak``:

    * when the run kept ``training.seq_len = L`` (as :class:`TSTTrainer` does), its FLOPs per token are already
      FLOPs per position: pass neither FLOP argument and both numbers are divided by ``s``;
    * when it set ``training.seq_len = L·s``, its FLOPs per token also over-count attention
      (``6·n_layers·n_heads·head_dims·L·s``): pass ``flops_per_token`` (the value it logged, computed with
      ``L·s``) and ``flops_per_position`` (the same formula with ``L``) and the MFU is rescaled by their ratio too.

    Returns ``(positions per second, MFU on positions)`` (MFU ``None`` stays ``None``). Recovery-phase
    numbers need no correction (``bag_size = 1``).
    """
    if not isinstance(bag_size, int) or bag_size < 1:
        raise ValueError(f"bag_size must be an integer >= 1, got {bag_size!r}")
    if (flops_per_token is None) != (flops_per_position is None):
        raise ValueError("pass both flops_per_token and flops_per_position, or neither")
    tps_pos = tps / bag_size
    if mfu is None:
        return tps_pos, None
    ratio = 1.0 if flops_per_token is None else float(flops_per_position) / float(flops_per_token)
    return tps_pos, mfu * ratio / bag_size


def two_run_commands(config: str, *, bag_size: int, superposition_frac: float, total_steps: int,
                     dump_folder: str, nproc_per_node: int = 8, model_module: str = "llama3",
                     extra_args: tuple = ()) -> tuple[list[str], list[str]]:
    """The paper's recipe as two ``torchrun`` command lines (argument lists): phase 1, then phase 2.

    Phase 1 runs ``--config tst_<config>`` from this module with ``--tst.stop_at_transition``: it trains
    steps ``1 … round(r·T)`` on ``L·s``-token windows with an LR schedule over all ``T`` steps and saves a
    full checkpoint (model, optimizer, LR scheduler, data position, step) at ``round(r·T)``. Phase 2 is the
    stock TorchTitan config ``<config>`` of ``--module <model_module>`` — no TST code — resuming that
    checkpoint from the same ``dump_folder`` and training to step ``T``. ``extra_args`` go to both runs
    (they must agree on the batch size, ``training.seq_len``, optimizer and LR scheduler settings).
    """
    t = transition_step(total_steps, superposition_frac)
    if bag_size < 2 or not 0 < t < total_steps:
        raise ValueError(f"the two-run recipe needs bag_size >= 2 and 0 < round(r·T) = {t} < T = {total_steps}")
    head = ["torchrun", f"--nproc_per_node={nproc_per_node}", "-m", "torchtitan.train"]
    common = ["--training.steps", str(total_steps), "--dump_folder", dump_folder, "--checkpoint.enable",
              *map(str, extra_args)]
    phase1 = [*head, "--module", MODULE, "--config", f"tst_{config}", "--tst.bag_size", str(bag_size),
              "--tst.superposition_frac", str(superposition_frac), "--tst.stop_at_transition", *common]
    phase2 = [*head, "--module", model_module, "--config", config, *common]
    return phase1, phase2


@_dataclass(kw_only=True, slots=True)
class TSTConfig:
    """The ``tst`` section of :class:`TSTTrainer`'s config (``--tst.<field>`` on the command line)."""

    bag_size: int = 1
    """s: tokens averaged into one position in the superposition phase (1 = ordinary training)."""

    superposition_frac: float = 0.0
    """r: the first round(r·T) steps superpose; T = lr_scheduler.total_steps or training.steps."""

    stop_at_transition: bool = False
    """Phase-1 run of the two-run recipe: train round(r·T) steps with the LR schedule of T steps, save a full
    checkpoint there and stop (phase 2 resumes it with the stock TorchTitan config)."""


# --------------------------------------------------------------------------------------------------
# Importing TorchTitan (lazily), on CPU-only PyTorch too
# --------------------------------------------------------------------------------------------------

def import_torchtitan():
    """Import ``torchtitan.trainer`` and the Llama3 model and return the ``torchtitan`` package.

    TorchTitan 0.3.0 imports ``triton`` unconditionally (``torchtitan/distributed/minimal_async_ep/kernels.py``,
    reached from ``torchtitan.models.common`` → ``decoder`` → ``moe`` → ``token_dispatcher``), and CPU builds
    of PyTorch ship no triton. When triton is missing, that one kernels module is imported against a
    placeholder whose kernels raise when launched; the placeholder is removed from ``sys.modules`` right
    after, and ``torch``'s own triton probes are resolved (to "absent") before it exists, so nothing else
    sees it. With triton installed (every CUDA build), this is a plain import.
    """
    if "torchtitan.trainer" not in sys.modules:
        try:
            tt_spec = importlib.util.find_spec("torchtitan")
        except ValueError:  # pragma: no cover - broken installs
            tt_spec = None
        if tt_spec is None:
            raise ImportError("tst.integrations.torchtitan needs torchtitan: pip install torchtitan==0.3.0")
        if importlib.util.find_spec("triton") is None:
            _import_minimal_async_ep_without_triton()
        importlib.import_module("torchtitan.trainer")
        importlib.import_module("torchtitan.models.llama3")
    tt = sys.modules["torchtitan"]
    version = getattr(tt, "__version__", "")
    if not str(version).startswith(SUPPORTED_TORCHTITAN):
        logger.warning("tst.integrations.torchtitan targets torchtitan %s, found %s", SUPPORTED_TORCHTITAN, version)
    return tt


class _TritonPlaceholder:
    """Stands for any ``triton.language`` attribute at import time (dtypes, ``constexpr``, ``pointer_type(...)``)."""

    def __call__(self, *args, **kwargs):
        return _TritonPlaceholder()

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _TritonPlaceholder()


def _unavailable_kernel(fn):
    def launch(*args, **kwargs):
        raise RuntimeError(f"triton kernel {fn.__name__} needs triton, which is not installed (CPU PyTorch)")

    class _Kernel:
        __name__ = getattr(fn, "__name__", "kernel")

        def __getitem__(self, grid):
            return launch

        __call__ = staticmethod(launch)

    return _Kernel()


def _import_minimal_async_ep_without_triton() -> None:
    import torch.utils._triton as torch_triton

    torch_triton.has_triton_package()  # cache "no triton" before the placeholder exists
    importlib.import_module("torch._inductor.runtime.triton_compat")
    importlib.import_module("torch.distributed._symmetric_memory")
    importlib.import_module("torchtitan.distributed")  # everything up to the kernels module, without placeholder

    def jit(fn=None, **kwargs):
        return _unavailable_kernel(fn) if fn is not None else _unavailable_kernel

    def module_getattr(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _TritonPlaceholder()

    triton = types.ModuleType("triton")
    triton.jit = jit
    triton.cdiv = lambda a, b: -(-a // b)
    triton.next_power_of_2 = lambda n: 1 << (int(n) - 1).bit_length()
    language = types.ModuleType("triton.language")
    language.__getattr__ = module_getattr
    triton.language = language
    sys.modules["triton"], sys.modules["triton.language"] = triton, language
    try:
        importlib.import_module("torchtitan.distributed.minimal_async_ep")
    finally:
        for name in ("triton", "triton.language"):
            if sys.modules.get(name) in (triton, language):
                del sys.modules[name]


# --------------------------------------------------------------------------------------------------
# Model: the superposed embedding
# --------------------------------------------------------------------------------------------------

def superpose_model_config(model_config):
    """Swap the ``tok_embeddings`` config of a TorchTitan Decoder config for the superposed embedding (in place).

    All fields are kept (``num_embeddings``, ``embedding_dim``, ``param_init``, ``sharding_config``), so the
    built module has the same parameter, init and sharding; only its class (its ``forward``) changes.
    Idempotent. Returns ``model_config`` (TorchTitan's converter contract).
    """
    classes = _classes()
    embedding_cls = sys.modules["torchtitan.models.common.embedding"].Embedding
    old = getattr(model_config, "tok_embeddings", None)
    if isinstance(old, classes.TorchTitanSuperposedEmbedding.Config):
        return model_config
    if not isinstance(old, embedding_cls.Config):
        raise TypeError(f"expected a Decoder config whose tok_embeddings is an Embedding.Config, "
                        f"got {type(old).__name__}")
    values = {f.name: getattr(old, f.name) for f in dataclasses.fields(old) if f.init}
    model_config.tok_embeddings = classes.TorchTitanSuperposedEmbedding.Config(**values)
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
    classes = _classes()
    embedding_cls = sys.modules["torchtitan.models.common.embedding"].Embedding
    if type(emb) is not embedding_cls:
        raise TypeError(f"cannot superpose a {type(emb).__name__}: expected torchtitan's Embedding or nn.Embedding")
    emb.__class__ = classes.TorchTitanSuperposedEmbedding
    return model


# --------------------------------------------------------------------------------------------------
# Config registry: ``--module tst.integrations.torchtitan --config tst_<any TorchTitan config function>``
# --------------------------------------------------------------------------------------------------

def to_tst_config(base, *, bag_size: int = 1, superposition_frac: float = 0.0, weights: str = "uniform",
                  stop_at_transition: bool = False):
    """Turn a stock ``Trainer.Config`` (e.g. ``llama3_debugmodel()``) into a :class:`TSTTrainer` config.

    The model spec gets the superposed embedding, the loss becomes the multi-hot CE (a
    ``ChunkedLossWrapper`` stays chunked: :class:`ChunkedMultiHotLossWrapper`), everything else is kept.
    """
    classes = _classes()
    loss_mod = sys.modules["torchtitan.components.loss"]
    if base.model_spec is None:
        raise ValueError("the base config has no model_spec")
    superpose_model_config(base.model_spec.model)
    loss = base.loss
    if isinstance(loss, (classes.MultiHotCrossEntropyLoss.Config, classes.ChunkedMultiHotLossWrapper.Config)):
        pass
    elif isinstance(loss, loss_mod.ChunkedLossWrapper.Config):
        inner = loss.loss_fn
        if not isinstance(inner, loss_mod.CrossEntropyLoss.Config):
            raise TypeError(f"cannot replace a chunked {type(inner).__name__} by the multi-hot CE")
        loss = classes.ChunkedMultiHotLossWrapper.Config(
            num_chunks=loss.num_chunks,
            loss_fn=classes.MultiHotCrossEntropyLoss.Config(global_vocab_size=inner.global_vocab_size,
                                                            weights=weights))
    elif isinstance(loss, loss_mod.CrossEntropyLoss.Config):
        loss = classes.MultiHotCrossEntropyLoss.Config(global_vocab_size=loss.global_vocab_size, weights=weights)
    else:
        raise TypeError(f"cannot replace a {type(loss).__name__} by the multi-hot CE")
    values = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.init}
    values["loss"] = loss
    values["tst"] = TSTConfig(bag_size=bag_size, superposition_frac=superposition_frac,
                              stop_at_transition=stop_at_transition)
    return classes.TSTTrainer.Config(**values)


def _registry_function(name: str):
    """``tst_<fn>`` → a config function wrapping TorchTitan's ``<fn>`` (e.g. ``tst_llama3_debugmodel``)."""
    base_name = name[len("tst_"):]
    try:
        tt_models = importlib.import_module("torchtitan.models")  # a light package: only the model names
    except ImportError:
        raise AttributeError(name) from None
    candidates = sorted(tt_models._supported_models, key=len, reverse=True)
    model = next((m for m in candidates if base_name == m or base_name.startswith(m + "_")), None)
    if model is None:
        raise AttributeError(name)

    def config_fn():
        import_torchtitan()
        registry = importlib.import_module(f"torchtitan.models.{model}.config_registry")
        base_fn = getattr(registry, base_name, None)
        if base_fn is None:
            raise ValueError(f"torchtitan.models.{model}.config_registry has no config function {base_name!r}")
        return to_tst_config(base_fn())

    config_fn.__name__ = config_fn.__qualname__ = name
    config_fn.__doc__ = (f"TorchTitan's {model} config {base_name!r} with TST "
                         "(set --tst.bag_size / --tst.superposition_frac).")
    return config_fn


def tst_llama3_debugmodel():
    """TorchTitan's ``llama3_debugmodel`` with TST (``--tst.bag_size 4 --tst.superposition_frac 0.3`` etc.)."""
    return _registry_function("tst_llama3_debugmodel")()


_LAZY = ("TorchTitanSuperposedEmbedding", "SuperposedEmbeddingConverter", "MultiHotCrossEntropyLoss",
         "ChunkedMultiHotLossWrapper", "TSTTrainer")


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(_classes(), name)
    if name.startswith("tst_") and not name.startswith("tst__"):
        return _registry_function(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------------
# The TorchTitan-backed classes (built once, on first use)
# --------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _classes() -> types.SimpleNamespace:
    import_torchtitan()
    from torch.distributed.tensor import DTensor
    from torchtitan.components.loss import BaseLoss, ChunkedLossWrapper, cross_entropy_loss
    from torchtitan.config import CompileConfig
    from torchtitan.models.common.embedding import Embedding
    from torchtitan.protocols.model import ModelConfigConverter
    from torchtitan.tools.logging import logger as tt_logger
    from torchtitan.trainer import Trainer

    class TorchTitanSuperposedEmbedding(SuperposedEmbedding, Embedding):
        """TorchTitan's ``Embedding`` that also takes bags: ``(B, L, s)`` → mean of the ``s`` embeddings.

        It is a :class:`tst.SuperposedEmbedding` and a TorchTitan ``Module``: the lookup goes through
        TorchTitan's ``Embedding.forward`` (DTensor weight, vocab-parallel TP path), then the bag is summed
        in float32 and cast back once, as Listing 2. 2-D input is the ordinary lookup. Same ``weight``
        parameter and state-dict key as ``Embedding``, so checkpoints, FSDP and HF conversion are unchanged.
        """

        @_dataclass(kw_only=True, slots=True)
        class Config(Embedding.Config):
            pass

        def __init__(self, config: Config):
            Embedding.__init__(self, config)

        def forward(self, input: torch.Tensor) -> torch.Tensor:  # "input": the name the sharding config uses
            if input.dim() != 3:
                return Embedding.forward(self, input)
            bag = input.shape[-1]
            if bag == 1:
                return Embedding.forward(self, input[..., 0])
            emb = Embedding.forward(self, input)  # (B, L, s, d)
            return (emb.float().sum(dim=-2) / bag).to(emb.dtype)  # (B, L, d)

    class SuperposedEmbeddingConverter(ModelConfigConverter):
        """``ModelConfigConverter``: ``model_registry(..., converters=[SuperposedEmbeddingConverter.Config()])``."""

        @_dataclass(kw_only=True, slots=True)
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

        @_dataclass(kw_only=True, slots=True)
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
                targets = labels.unflatten(1, (pred.shape[1], s)) if bagged_targets else _next_bag_targets(labels, s)
                loss = _mce_sum(pred, targets, self.weights, IGNORE_INDEX)
            if global_valid_tokens is not None:
                loss = loss / global_valid_tokens
            return loss, {}

    class ChunkedMultiHotLossWrapper(ChunkedLossWrapper):
        """``ChunkedLossWrapper`` (LM head + loss in sequence chunks) for the multi-hot CE.

        The next-bag shift crosses chunk boundaries, so the labels are turned into bag targets **before**
        chunking (the stock wrapper would drop the ``s − 1`` targets of each chunk's last position).
        """

        @_dataclass(kw_only=True, slots=True)
        class Config(ChunkedLossWrapper.Config):
            loss_fn: BaseLoss.Config = _field(default_factory=lambda: MultiHotCrossEntropyLoss.Config())

            def __post_init__(self):
                if not isinstance(self.loss_fn, MultiHotCrossEntropyLoss.Config):
                    raise TypeError("ChunkedMultiHotLossWrapper needs loss_fn=MultiHotCrossEntropyLoss.Config(...)")

        def __call__(self, pred, labels, global_valid_tokens=None, **loss_inputs):
            s = infer_bag_size(pred, labels)
            if s > 1:
                labels = _next_bag_targets(labels, s).flatten(-2)  # (B, L·s), bag-aligned for the chunking
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

        @_dataclass(kw_only=True, slots=True)
        class Config(Trainer.Config):
            tst: TSTConfig = _field(default_factory=TSTConfig)

        def __init__(self, config: Config):
            tst = config.tst
            if not isinstance(tst.bag_size, int) or tst.bag_size < 1:
                raise ValueError(f"tst.bag_size must be an integer >= 1, got {tst.bag_size!r}")
            total = config.lr_scheduler.total_steps or config.training.steps
            schedule = TSTSchedule(total, tst.bag_size, tst.superposition_frac)
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
                input_dict["input"] = _bag_inputs(inputs, s)  # (B, L, s), Listing 1
                if "positions" in input_dict:  # per-document positions of the L·s window → latent 0 … L−1
                    input_dict["positions"] = latent_positions(inputs.shape[0], seq_len, inputs.device)
                # throughput on positions: batch_generator counted labels.numel() = B·L·s for this batch
                self.metrics_processor.ntokens_since_last_log -= labels.numel() - labels.numel() // s
            return super().post_dataloading_process(input_dict, labels)

    for cls in (TorchTitanSuperposedEmbedding, SuperposedEmbeddingConverter, MultiHotCrossEntropyLoss,
                ChunkedMultiHotLossWrapper, TSTTrainer):
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__
        cls.Config.__module__ = __name__
        cls.Config.__qualname__ = f"{cls.__name__}.Config"
    return types.SimpleNamespace(
        TorchTitanSuperposedEmbedding=TorchTitanSuperposedEmbedding,
        SuperposedEmbeddingConverter=SuperposedEmbeddingConverter,
        MultiHotCrossEntropyLoss=MultiHotCrossEntropyLoss,
        ChunkedMultiHotLossWrapper=ChunkedMultiHotLossWrapper,
        TSTTrainer=TSTTrainer,
    )


def set_dataset_seq_len(dataloader, seq_len: int) -> int:
    """Set ``seq_len`` on the text dataset(s) behind a TorchTitan dataloader; returns how many were set.

    ``HuggingFaceTextDataset.__iter__`` reads ``self.seq_len`` for every sample it cuts from its token buffer,
    so the change applies from the next sample on (the buffer and the read position are kept).
    ``InterleavedDataset`` is walked into. Raises ``TypeError`` when no dataset has a ``seq_len``.
    """
    seen = 0
    stack = [getattr(dataloader, "dataset", dataloader)]
    while stack:
        ds = stack.pop()
        if hasattr(ds, "seq_len"):
            ds.seq_len = int(seq_len)
            seen += 1
        for attr in ("_datasets", "datasets"):
            stack.extend(getattr(ds, attr, None) or [])
    if not seen:
        raise TypeError(f"{type(dataloader).__name__}: no dataset with a seq_len attribute to set (TST reads "
                        "L·s-token windows in the superposition phase)")
    return seen
