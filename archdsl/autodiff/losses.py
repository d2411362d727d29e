"""Losses: softmax cross-entropy (class axis from ``axis``, label smoothing, ignore_index),
binary cross-entropy on logits, and mean squared error."""
from __future__ import annotations

import numpy as np

from .tensor import Tensor, _GRAD, _const, _ub, _wrap, _wrap_like, _add_reduce, _max_reduce, record

__all__ = ['softmax_cross_entropy', 'binary_cross_entropy_with_logits', 'mse']


_ARANGES: dict = {}


def _arange(n):
    """A cached, read-only ``np.arange(n)`` (row indices for picking one entry per row)."""
    a = _ARANGES.get(n)
    if a is None:
        a = np.arange(n)
        a.flags.writeable = False
        if len(_ARANGES) < 64:
            _ARANGES[n] = a
    return a


def _reduce_loss(loss, reduction, count=None):
    """Reduce per-element losses; returns (value, cotangent-weight function)."""
    if reduction == "none":
        return loss, lambda g: g
    if reduction == "sum":
        return np.asarray(loss.sum(), dtype=loss.dtype), lambda g: g
    if reduction == "mean":
        n = loss.size if count is None else count
        total = _add_reduce(loss, axis=None)
        if n:
            val = np.asarray(total / n, dtype=loss.dtype)
        else:   # nothing to average (every position ignored): NaN, quietly
            val = np.asarray(np.nan, dtype=loss.dtype)
        return val, lambda g: g / n if n else g * np.nan
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def softmax_cross_entropy(logits, target, axis=-1, label_smoothing=0.0,
                          ignore_index=None, reduction="mean"):
    """Fused, stable ``-sum(q * log_softmax(logits))``.

    ``axis`` is the class axis (default last; ``axis=1`` handles [N, C, ...]).
    ``target`` is either integer labels with the logits' shape minus the
    class axis, or probabilities with the logits' shape (differentiable if it
    is a Tensor that requires grad).  Label smoothing mixes the target with
    the uniform distribution as in PyTorch: q = (1-eps) q + eps/C.
    ``ignore_index`` (labels only) zeroes those positions; "mean" then
    averages over the remaining ones (NaN if none remain, like PyTorch).

    The gradient wrt the logits is ``w * (softmax - q)`` (w the cotangent
    times the reduction's weight), formed in one pass from the forward's
    exponentials.
    """
    if not isinstance(logits, Tensor):
        logits = _wrap(logits)
    zd = logits.data
    nd = zd.ndim
    ax = axis % nd
    C = zd.shape[ax]
    z = np.moveaxis(zd, ax, -1) if ax != nd - 1 else zd
    lead = z.shape[:-1]
    z2 = z if nd == 2 else z.reshape(-1, C)
    M = z2.shape[0]
    eps = float(label_smoothing)

    s = z2 - _max_reduce(z2, axis=1, keepdims=True)
    e = np.exp(s)
    se = _add_reduce(e, axis=1, keepdims=True)
    lse = np.log(se)[:, 0]

    tgt_t = target if isinstance(target, Tensor) else None
    td = target.data if tgt_t is not None else np.asarray(target)
    probs = td.ndim == nd and td.dtype.kind == "f"
    rt = False
    valid = None
    count = None
    if probs:
        tq = np.moveaxis(td, ax, -1) if ax != nd - 1 else td
        q = tq.reshape(-1, C)
        if eps:
            q = q * (1.0 - eps) + eps / C
        logp = s - lse[:, None]
        loss = -_add_reduce(q * logp, axis=1)
        rt = tgt_t is not None and tgt_t.requires_grad
    else:
        if td.shape != lead:
            raise ValueError(f"label shape {td.shape} does not match logits {zd.shape} without class axis {ax}")
        y = td if td.ndim == 1 else td.reshape(-1)
        if y.dtype != np.intp:
            y = y.astype(np.intp)
        if ignore_index is not None:
            valid = y != ignore_index
            y = np.where(valid, y, 0)
        rows = _arange(M)
        loss = lse - s[rows, y]
        if eps:
            loss = loss * (1.0 - eps) + (lse - _add_reduce(s, axis=1) / C) * eps
        if valid is not None:
            loss = loss * valid
            count = int(_add_reduce(valid, axis=None))
    if loss.dtype != zd.dtype:
        loss = loss.astype(zd.dtype)
    if reduction == "none":
        loss = loss.reshape(lead)
    val, weight = _reduce_loss(loss, reduction, count)
    rz = logits.requires_grad
    if not ((rz or rt) and _GRAD[0]):
        return _const(val)
    ins = (logits, tgt_t) if rt else (logits,)

    def vjp(g):
        w = np.reshape(weight(g), -1) if reduction == "none" else weight(g)
        if valid is not None:
            w = w * valid
        w = np.asarray(w, dtype=zd.dtype)
        w_col = w[:, None] if w.ndim else w
        gz = None
        if rz:
            if probs:
                gz = e / se
                gz *= _add_reduce(q, axis=1, keepdims=True)
                gz -= q
                gz *= w_col
            else:
                # w * (softmax - q): softmax scaled by w in one pass, then q's share
                gz = e * (w_col / se)
                if eps:
                    gz -= w_col * (eps / C)
                gz[rows, y] -= w * (1.0 - eps) if w.ndim else w.item() * (1.0 - eps)
            if nd != 2:
                gz = gz.reshape(z.shape)
            if ax != nd - 1:
                gz = np.moveaxis(gz, -1, ax)
        if rt:
            gt = (logp * (-(1.0 - eps)) * w_col).reshape(tq.shape)
            if ax != nd - 1:
                gt = np.moveaxis(gt, -1, ax)
            return gz, gt
        return (gz,)
    return record(val, ins, vjp)


def binary_cross_entropy_with_logits(logits, target, reduction="mean"):
    """Stable ``max(x,0) - x t + log1p(exp(-|x|))``; target may broadcast and
    is differentiated if it is a Tensor that requires grad."""
    x = _wrap(logits)
    t = _wrap_like(target, x)
    xd = x.data
    tdat = t.data
    e = np.exp(-np.abs(xd))
    loss = np.maximum(xd, 0) - xd * tdat + np.log1p(e)
    val, weight = _reduce_loss(loss, reduction)
    rx = x.requires_grad
    rt = t.requires_grad
    if not ((rx or rt) and _GRAD[0]):
        return _const(val)

    def vjp(g):
        w = weight(g)
        gx = gt = None
        if rx:
            r = 1.0 / (1.0 + e)
            sig = np.where(xd >= 0, r, e * r)
            gx = _ub((sig - tdat) * w, xd.shape)
        if rt:
            gt = _ub(-xd * w, tdat.shape)
        return gx, gt
    return record(val, (x, t), vjp)


def mse(pred, target, reduction="mean"):
    """Squared error ``(pred - target)**2`` reduced; both sides differentiable."""
    p = _wrap(pred)
    t = _wrap_like(target, p)
    d = p.data - t.data
    val, weight = _reduce_loss(d * d, reduction)
    rp = p.requires_grad
    rt = t.requires_grad
    if not ((rp or rt) and _GRAD[0]):
        return _const(val)
    ps, ts = p.data.shape, t.data.shape

    def vjp(g):
        gd = d * (2.0 * weight(g)) if reduction != "none" else d * (2.0 * g)
        return (_ub(gd, ps) if rp else None,
                _ub(-gd, ts) if rt else None)
    return record(val, (p, t), vjp)
