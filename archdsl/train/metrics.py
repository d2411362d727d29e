"""Metrics reported beside the loss: each returns (sum, count) for one batch so that epoch values
are exact averages over examples, whatever the batch sizes."""
from __future__ import annotations

import numpy as np


def accuracy(output: np.ndarray, target: np.ndarray, kind: str, ignore_index: int | None = None):
    """Fraction of correct predictions.

    classes: argmax over the last axis against integer labels (or against the argmax of given
    probabilities); positions equal to ignore_index do not count.
    binary: logit > 0 against target > 0.5.
    """
    if kind == "classes":
        pred = output.argmax(axis=-1)
        if target.ndim == output.ndim:          # class probabilities
            target = target.argmax(axis=-1)
        ok = pred == target
        if ignore_index is not None:
            valid = target != ignore_index
            return float(np.count_nonzero(ok & valid)), int(np.count_nonzero(valid))
        return float(np.count_nonzero(ok)), int(ok.size)
    if kind == "binary":
        t = target.reshape(output.shape) if target.size == output.size else target
        ok = (output > 0) == (t > 0.5)
        return float(np.count_nonzero(ok)), int(ok.size)
    raise ValueError(f"accuracy needs a classification loss, not {kind}")


METRICS = {"accuracy": accuracy}
METRIC_KINDS = {"accuracy": ("classes", "binary")}
