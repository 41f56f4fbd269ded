"""Token Superposition Training (TST, arXiv 2605.06546) as a small torch-only library.

Phase 1 (the first ``r`` of the steps): bags of ``s`` tokens enter the model as the mean of their
embeddings and each position predicts the next bag with the multi-hot cross-entropy (MCE).
Phase 2: ordinary next-token training from the same weights. See README.md for usage.

The public API is the names below; the building blocks behind them (``tst.bags``, ``tst.weights``,
``tst.flops``, ``tst.loss``, ``tst.fused``) stay importable for hosts that need them.
"""
from .embedding import SuperposedEmbedding, superpose
from .flops import flops_per_position
from .fused import fused_linear_multi_hot_cross_entropy
from .loss import multi_hot_cross_entropy, multi_hot_weight_sum
from .schedule import BagTargets, Phase, TSTConfig, TSTSchedule

__version__ = "0.1.0"

__all__ = [
    "BagTargets", "Phase", "SuperposedEmbedding", "TSTConfig", "TSTSchedule", "flops_per_position",
    "fused_linear_multi_hot_cross_entropy", "multi_hot_cross_entropy", "multi_hot_weight_sum", "superpose",
]
