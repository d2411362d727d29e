"""Metrics reported beside the loss: each returns (sum, count) for one batch so that epoch values
are exact averages over examples, whatever the batch sizes; METRIC_FINISH maps a metric whose
reported value is a function of that average (perplexity: exp of the mean NLL)."""
from __future__ import annotations

import math

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


def perplexity(output: np.ndarray, target: np.ndarray, kind: str, ignore_index: int | None = None):
    """exp of the mean negative log-likelihood of the integer labels per position (token), from
    the logits; positions equal to ignore_index do not count. Unlike the loss it ignores label
    smoothing: it is the model's perplexity. (Returns the NLL sum; METRIC_FINISH takes exp.)"""
    if target.ndim == output.ndim:
        raise ValueError("perplexity needs integer labels, not class probabilities")
    z = output.reshape(-1, output.shape[-1]).astype(np.float64)
    t = target.reshape(-1)
    valid = t != ignore_index if ignore_index is not None else None
    if valid is not None:
        z, t = z[valid], t[valid]
    zmax = z.max(axis=1)
    lse = np.log(np.exp(z - zmax[:, None]).sum(axis=1)) + zmax
    nll = lse - z[np.arange(len(t)), t]
    return float(nll.sum()), int(len(t))


METRICS = {"accuracy": accuracy, "perplexity": perplexity}
METRIC_KINDS = {"accuracy": ("classes", "binary"), "perplexity": ("classes",)}
METRIC_FINISH = {"perplexity": math.exp}
