"""The TorchTitan integration's pure helpers: torch only, no TorchTitan import."""
import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F

from ...bags import IGNORE_INDEX, next_bag_targets
from ...loss import multi_hot_cross_entropy
from ...schedule import TSTConfig as CoreTSTConfig
from ...weights import resolve_weights

#: The integration's package, as TorchTitan's ``--module`` flag names it.
MODULE = "tst.integrations.torchtitan"


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
    return mce_sum(pred, next_bag_targets(labels, s, ignore_index), weights, ignore_index)


def _pair_weights(weights, s: int, device) -> torch.Tensor:
    """Bag weights rescaled to sum to ``s``: a full bag then counts as its ``s`` label tokens."""
    w = resolve_weights(weights, s, device)  # (s,)
    return w * (s / w.sum())


def mce_sum(pred: torch.Tensor, targets: torch.Tensor, weights, ignore_index: int) -> torch.Tensor:
    """Σ over valid (position, target) pairs of ``s·g(i)/Σg · CE``; targets ``(B, L, s)``."""
    w = _pair_weights(weights, targets.shape[-1], targets.device)
    return multi_hot_cross_entropy(pred, targets, weights=w, ignore_index=ignore_index, reduction="sum")


def latent_positions(batch: int, length: int, device=None) -> torch.Tensor:
    """RoPE positions ``0 … L−1`` of ``L`` latent positions, ``(B, L)`` int64 (blind bagging: one document)."""
    return torch.arange(length, dtype=torch.long, device=device).expand(batch, length)


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
    t = TSTConfig(bag_size=bag_size, superposition_frac=superposition_frac).schedule(total_steps).transition_step
    if bag_size < 2 or not 0 < t < total_steps:
        raise ValueError(f"the two-run recipe needs bag_size >= 2 and 0 < round(r·T) = {t} < T = {total_steps}")
    head = ["torchrun", f"--nproc_per_node={nproc_per_node}", "-m", "torchtitan.train"]
    common = ["--training.steps", str(total_steps), "--dump_folder", dump_folder, "--checkpoint.enable",
              *map(str, extra_args)]
    phase1 = [*head, "--module", MODULE, "--config", f"tst_{config}", "--tst.bag_size", str(bag_size),
              "--tst.superposition_frac", str(superposition_frac), "--tst.stop_at_transition", *common]
    phase2 = [*head, "--module", model_module, "--config", config, *common]
    return phase1, phase2


@dataclasses.dataclass(kw_only=True, slots=True)
class TSTConfig(CoreTSTConfig):
    """The ``tst`` section of :class:`TSTTrainer`'s config (``--tst.<field>`` on the command line): the core's
    :class:`tst.TSTConfig` (bag size, fraction, mode, weighting; off by default here) plus the two-run switch."""

    bag_size: int = 1
    """s: tokens averaged into one position in the superposition phase (1 = ordinary training)."""

    superposition_frac: float = 0.0
    """r: the first round(r·T) steps superpose; T = lr_scheduler.total_steps or training.steps."""

    stop_at_transition: bool = False
    """Phase-1 run of the two-run recipe: train round(r·T) steps with the LR schedule of T steps, save a full
    checkpoint there and stop (phase 2 resumes it with the stock TorchTitan config)."""


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
