"""Normalising reductions: logsumexp, softmax and log_softmax along an axis."""
from __future__ import annotations

import numpy as np

from .tensor import _GRAD, _const, _scalar_op, _wrap, _norm_axes, _drop_axes, record

__all__ = ['logsumexp', 'softmax', 'log_softmax']


def logsumexp(x, axis=None, keepdims=False):
    if type(axis) is list:
        axis = tuple(axis)
    x = _wrap(x)
    xd = x.data
    m = np.max(xd, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)  # all -inf rows give -inf, not nan
    with np.errstate(divide="ignore"):
        outk = np.log(np.sum(np.exp(xd - m), axis=axis, keepdims=True)) + m
    out = outk if keepdims else np.reshape(outk, _drop_axes(xd.shape, _norm_axes(axis, xd.ndim)))
    if not (x.requires_grad and _GRAD[0]):
        return _const(out)
    kshape = outk.shape

    def vjp(g):
        return (np.reshape(g, kshape) * np.exp(xd - outk),)
    return record(out, (x,), vjp)


def softmax(x, axis=-1):
    x = _wrap(x)
    xd = x.data
    out = xd - np.max(xd, axis=axis, keepdims=True)
    np.exp(out, out=out)
    out /= np.sum(out, axis=axis, keepdims=True)

    def vjp(g):
        gy = g * out
        return (gy - out * np.sum(gy, axis=axis, keepdims=True),)
    return _scalar_op(x, out, vjp)


def log_softmax(x, axis=-1):
    x = _wrap(x)
    xd = x.data
    out = xd - np.max(xd, axis=axis, keepdims=True)
    out -= np.log(np.sum(np.exp(out), axis=axis, keepdims=True))

    def vjp(g):
        return (g - np.exp(out) * np.sum(g, axis=axis, keepdims=True),)
    return _scalar_op(x, out, vjp)
