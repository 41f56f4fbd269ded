"""Token Superposition Training in TorchTitan 0.3.0 (the framework the paper ran on, with FSDP).

Importing this package does **not** import torchtitan: the TorchTitan-backed classes live in
``tst.integrations.torchtitan.classes``, imported on first access (``tst.integrations.torchtitan.TSTTrainer``
etc.); the pure helpers here need torch only. ``import
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
import importlib

from ._triton_stub import SUPPORTED_TORCHTITAN, import_torchtitan
from .helpers import (MODULE, TSTConfig, infer_bag_size, latent_positions, mce_sum, phase1_throughput,
                      set_dataset_seq_len, tst_cross_entropy_loss, two_run_commands)

__all__ = [
    "MODULE", "SUPPORTED_TORCHTITAN", "TSTConfig", "import_torchtitan", "infer_bag_size", "latent_positions", "mce_sum",
    "phase1_throughput", "set_dataset_seq_len", "tst_cross_entropy_loss", "two_run_commands",
    # in tst.integrations.torchtitan.classes (imports torchtitan on first access):
    "TorchTitanSuperposedEmbedding", "SuperposedEmbeddingConverter", "MultiHotCrossEntropyLoss",
    "ChunkedMultiHotLossWrapper", "TSTTrainer", "superpose_model_config", "superpose_embedding_module",
    "to_tst_config",
]


# --------------------------------------------------------------------------------------------------
# Config registry: ``--module tst.integrations.torchtitan --config tst_<any TorchTitan config function>``
# --------------------------------------------------------------------------------------------------

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
        from .classes import to_tst_config
        return to_tst_config(base_fn())

    config_fn.__name__ = config_fn.__qualname__ = name
    config_fn.__doc__ = (f"TorchTitan's {model} config {base_name!r} with TST "
                         "(set --tst.bag_size / --tst.superposition_frac).")
    return config_fn


def tst_llama3_debugmodel():
    """TorchTitan's ``llama3_debugmodel`` with TST (``--tst.bag_size 4 --tst.superposition_frac 0.3`` etc.)."""
    return _registry_function("tst_llama3_debugmodel")()


_LAZY = ("TorchTitanSuperposedEmbedding", "SuperposedEmbeddingConverter", "MultiHotCrossEntropyLoss",
         "ChunkedMultiHotLossWrapper", "TSTTrainer", "superpose_model_config", "superpose_embedding_module",
         "to_tst_config")


def __getattr__(name: str):
    if name in _LAZY:
        from . import classes
        return getattr(classes, name)
    if name.startswith("tst_") and not name.startswith("tst__"):
        return _registry_function(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
