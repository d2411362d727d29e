"""Losses for training, on the autodiff engine's fused primitives.

    cross_entropy(logits, labels)             softmax cross-entropy; class axis last, so [N, C] and
                                              [N, T, C] logits both work; integer labels ([N] / [N, T])
                                              or class probabilities (same shape as the logits);
                                              label_smoothing, ignore_index (padding), mean/sum
    binary_cross_entropy(logits, targets)     sigmoid + BCE on logits (stable); targets in [0, 1]
    mse(pred, targets)                        mean squared error ("square loss")

Each returns a 0-d Tensor; `backward(loss)` fills the parameters' gradients. The formulas:

    cross_entropy   -sum_c q_c log softmax(z)_c, q = one_hot(y) (or the given probabilities)
                    mixed with the uniform distribution by label smoothing: (1 - eps) q + eps / C
    binary          max(z, 0) - z t + log(1 + exp(-|z|))   (= -t log s(z) - (1 - t) log(1 - s(z)))
    mse             (p - t)^2

"mean" averages over every element (over non-ignored positions for ignore_index), "sum" adds.
"""
from __future__ import annotations

import numpy as np

from ..autodiff import functional as F
from ..autodiff import Tensor

REDUCTIONS = ("mean", "sum")


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def _data(x):
    return x.data if isinstance(x, Tensor) else np.asarray(x)


def cross_entropy(logits, target, label_smoothing: float = 0.0, ignore_index: int | None = None,
                  reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy over the last axis of `logits`.

    `target` holds integer class labels with the logits' shape minus the class axis, or float
    class probabilities with the logits' shape.
    """
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    t = _data(target)
    if t.dtype.kind == "f" and t.ndim == _data(logits).ndim:
        if ignore_index is not None:
            raise ValueError("ignore_index needs integer labels, not class probabilities")
    return F.softmax_cross_entropy(logits, target, axis=-1, label_smoothing=label_smoothing,
                                   ignore_index=ignore_index, reduction=reduction)


def binary_cross_entropy(logits, target, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy on logits (sigmoid folded in). A target of shape [N] goes with
    logits of shape [N, 1]."""
    _check_reduction(reduction)
    target = _match_trailing_one(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target, reduction=reduction)


def mse(pred, target, reduction: str = "mean") -> Tensor:
    """Squared error, averaged (or summed) over every element."""
    _check_reduction(reduction)
    target = _match_trailing_one(pred, target)
    return F.mse(pred, target, reduction=reduction)


def _match_trailing_one(pred, target):
    """[N] targets for [N, 1] predictions: add the unit axis instead of broadcasting to [N, N]."""
    p = _data(pred)
    if isinstance(target, Tensor):
        return target
    t = np.asarray(target)
    if t.ndim == p.ndim - 1 and p.shape[-1] == 1:
        t = t[..., None]
    if t.dtype != p.dtype:
        t = t.astype(p.dtype)
    return t


# name in a train section -> (function, kind); kind drives data checks and metrics
LOSSES = {
    "cross_entropy": (cross_entropy, "classes"),
    "softmax_cross_entropy": (cross_entropy, "classes"),
    "binary_cross_entropy": (binary_cross_entropy, "binary"),
    "bce": (binary_cross_entropy, "binary"),
    "mse": (mse, "regression"),
    "square_loss": (mse, "regression"),
}

# keyword arguments each loss accepts in a train section (besides reduction)
LOSS_KWARGS = {
    "classes": ("label_smoothing", "ignore_index", "reduction"),
    "binary": ("reduction",),
    "regression": ("reduction",),
}


def per_example_total(value: float, reduction: str, count: int) -> float:
    """Turn a batch's reduced loss back into a sum over its `count` examples (for epoch means)."""
    return value * count if reduction == "mean" else value
