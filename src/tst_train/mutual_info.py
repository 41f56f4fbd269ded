"""Bag weights fitted to the corpus: the mutual information between tokens ``d`` apart, and a power law.

The paper (§5.2) weights the bag's offsets by a power law fitted to the token mutual information of
its corpus, ``I(d) ≈ C0 + a·d^k`` (``k ≈ −1.25`` on DCLM), and found it "slightly better" than ``1/i``,
with no numbers. Here: ``I(d)`` is the plug-in estimate over the first ``sample_tokens`` training tokens
with the Miller–Madow bias correction ``−(K_xy − K_x − K_y + 1) / (2N)`` (``K`` = occupied cells), ``C0, a``
are fitted by least squares for each ``k`` on a grid and the best ``k`` is kept; the weight of offset
``i`` is the decaying part ``a·i^k`` (``C0`` is the floor every offset shares), normalised to sum to 1.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .errors import UserError

MAX_DISTANCE = 32
SAMPLE_TOKENS = 1_000_000


def mutual_information(tokens: np.ndarray, distances, vocab_size: int) -> list[float]:
    """Bias-corrected plug-in ``I(x_t; x_{t+d})`` in nats for each ``d`` in ``distances``."""
    x = np.asarray(tokens, dtype=np.int64)
    out = []
    for d in distances:
        a, b = x[:-d], x[d:]
        n = a.size
        pair, counts = np.unique(a * vocab_size + b, return_counts=True)
        pa = np.bincount(a, minlength=vocab_size)
        pb = np.bincount(b, minlength=vocab_size)
        ia, ib = pair // vocab_size, pair % vocab_size
        mi = float(np.sum(counts / n * np.log(counts * n / (pa[ia] * pb[ib]))))
        bias = (pair.size - np.count_nonzero(pa) - np.count_nonzero(pb) + 1) / (2 * n)
        out.append(mi - bias)
    return out


def fit_power_law(distances, values, ks=None) -> dict:
    """Least squares ``values ≈ C0 + a·d^k`` over a grid of ``k`` (``C0, a`` linear for each ``k``)."""
    d = np.asarray(distances, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    best = None
    for k in (np.linspace(-3.0, -0.05, 296) if ks is None else ks):
        A = np.stack([np.ones_like(d), d ** k], axis=1)
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        err = float(np.sum((A @ coef - y) ** 2))
        if best is None or err < best["sse"]:
            best = {"c0": float(coef[0]), "a": float(coef[1]), "k": float(k), "sse": err}
    return best


@functools.lru_cache(maxsize=8)
def fitted_weights(data_dir: str, bag_size: int, sample_tokens: int = SAMPLE_TOKENS) -> dict:
    """The fit on a prepared data directory and the bag weights ``(bag_size,)`` it gives."""
    from .data.loader import check_data_dir, load_split
    meta = check_data_dir(data_dir)
    tokens = np.asarray(load_split(data_dir, "train")[:sample_tokens])
    distances = list(range(1, MAX_DISTANCE + 1))
    if tokens.size < 10 * MAX_DISTANCE:
        raise UserError(f"{data_dir}: too few training tokens to fit bag weights to their mutual information")
    mi = mutual_information(tokens, distances, meta["vocab_size"])
    fit = fit_power_law(distances, mi)
    if not (fit["a"] > 0 and math.isfinite(fit["k"])):
        raise UserError(f"{data_dir}: the token mutual information does not decay with distance "
                        f"(fit a={fit['a']:.3g}, k={fit['k']:.3g}); use another --tst.weights")
    g = fit["a"] * np.arange(1, bag_size + 1, dtype=np.float64) ** fit["k"]
    return {"weights": torch.tensor(g / g.sum(), dtype=torch.float32), "fit": fit, "mutual_information": mi,
            "sample_tokens": int(tokens.size)}
