"""Shape primitives beyond reshape/transpose/indexing: concat, stack, split (an int gives
PyTorch's chunks of that size), squeeze, expand_dims, broadcast_to, take (embedding lookups)
and pad."""
from __future__ import annotations

import builtins as _b

import numpy as np

from ._arrays import pad_array
from .tensor import Tensor, _GRAD, _const, _scalar_op, _ub, _wrap, _take_grad, record, record_multi

__all__ = ['expand_dims', 'squeeze', 'broadcast_to', 'concat', 'stack', 'split', 'take', 'pad']


def expand_dims(x, axis):
    x = _wrap(x)
    xd = x.data
    shp = xd.shape
    return _scalar_op(x, np.expand_dims(xd, axis), lambda g: (np.reshape(g, shp),))


def squeeze(x, axis=None):
    x = _wrap(x)
    xd = x.data
    shp = xd.shape
    return _scalar_op(x, np.squeeze(xd, axis), lambda g: (np.reshape(g, shp),))


def broadcast_to(x, shape):
    x = _wrap(x)
    xd = x.data
    shp = xd.shape
    return _scalar_op(x, np.broadcast_to(xd, shape), lambda g: (_ub(g, shp),))


def concat(tensors, axis=0):
    ts = [_wrap(t) for t in tensors]
    datas = [t.data for t in ts]
    out = np.concatenate(datas, axis=axis)
    if not (_GRAD[0] and _b.any(t.requires_grad for t in ts)):
        return _const(out)
    bounds = np.cumsum([d.shape[axis] for d in datas])[:-1]

    def vjp(g):
        return np.split(g, bounds, axis=axis)
    return record(out, tuple(ts), vjp)


def stack(tensors, axis=0):
    ts = [_wrap(t) for t in tensors]
    out = np.stack([t.data for t in ts], axis=axis)
    if not (_GRAD[0] and _b.any(t.requires_grad for t in ts)):
        return _const(out)

    def vjp(g):
        return list(np.moveaxis(g, axis, 0))
    return record(out, tuple(ts), vjp)


def split(x, sizes, axis=0):
    """Split along ``axis`` into pieces of the given sizes (a list), or into
    chunks of size ``sizes`` (an int, PyTorch semantics).  Returns a list."""
    x = _wrap(x)
    xd = x.data
    n = xd.shape[axis]
    if isinstance(sizes, (int, np.integer)):
        sizes = [int(sizes)] * (n // sizes) + ([n % sizes] if n % sizes else [])
    sizes = [int(s) for s in sizes]
    if _b.sum(sizes) != n:
        raise ValueError(f"split sizes {sizes} do not add up to dimension {n}")
    bounds = np.cumsum(sizes)[:-1]
    pieces = np.split(xd, bounds, axis=axis)
    if not (x.requires_grad and _GRAD[0]):
        return [_const(p) for p in pieces]

    def vjp(gs):
        if _b.all(g is not None for g in gs):
            return (np.concatenate(gs, axis=axis),)
        gx = np.zeros(xd.shape, xd.dtype)
        for g, part in zip(gs, np.split(gx, bounds, axis=axis)):
            if g is not None:
                part[...] = g
        return (gx,)
    return record_multi(pieces, (x,), vjp, fill_zeros=False)


def take(weight, indices, axis=0):
    """Gather ``weight`` along ``axis`` (embedding lookup); indices are not
    differentiated."""
    w = _wrap(weight)
    wd = w.data
    idx = indices.data if isinstance(indices, Tensor) else np.asarray(indices)
    axis = axis % wd.ndim
    out = np.take(wd, idx, axis=axis)
    return _scalar_op(w, out, lambda g: (_take_grad(g, idx, wd.shape, axis, wd.dtype),))


def _norm_pad_list(pads, ndim):
    pads = [tuple(int(v) for v in p) for p in pads]
    if len(pads) > ndim:
        raise ValueError(f"{len(pads)} pad pairs for a {ndim}-d tensor")
    return [(0, 0)] * (ndim - len(pads)) + pads


def pad(x, pads, value=0.0):
    """Constant padding.  ``pads`` is a list of (before, after) pairs; if it
    is shorter than ``x.ndim`` it applies to the trailing dims.  Negative
    amounts crop."""
    x = _wrap(x)
    xd = x.data
    pads = _norm_pad_list(pads, xd.ndim)
    inv = [(-b, -a) for b, a in pads]
    return _scalar_op(x, pad_array(xd, pads, value), lambda g: (pad_array(g, inv, 0.0),))
