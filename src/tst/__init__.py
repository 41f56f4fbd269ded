"""Token Superposition Training (TST, arXiv 2605.06546) as a small torch-only library.

Phase 1 (the first ``r`` of the steps): bags of ``s`` tokens enter the model as the mean of their
embeddings and each position predicts the next bag with the multi-hot cross-entropy (MCE).
Phase 2: ordinary next-token training from the same weights. See README.md for usage.
"""
from .bags import IGNORE_INDEX, bag_inputs, next_bag_targets, window_targets
from .embedding import SuperposedEmbedding, superpose
from .flops import decoder_matmul_params, mfu, training_flops_per_position
from .loss import (fused_linear_multi_hot_cross_entropy, multi_hot_cross_entropy, multi_hot_weight_sum,
                   resolve_weights)
from .schedule import MODES, Phase, TSTSchedule

__version__ = "0.1.0"

__all__ = [
    "IGNORE_INDEX", "MODES", "Phase", "SuperposedEmbedding", "TSTSchedule", "bag_inputs",
    "decoder_matmul_params", "fused_linear_multi_hot_cross_entropy", "mfu", "multi_hot_cross_entropy",
    "multi_hot_weight_sum", "next_bag_targets", "resolve_weights", "superpose", "training_flops_per_position",
    "window_targets",
]
