"""The dense layer's primitive: y = x W^T + b, with its gradients as BLAS calls.

`deferred_weight_grads(params)` makes the `linear` calls inside it on those parameters leave
their weight and bias gradients for later: each call's backward gives its input's gradient
only and keeps its output gradient, and one GEMM per weight sums them all at the end
(dW = [g_1; ...; g_T]^T [x_1; ...; x_T]). A scanned cell applies the same layer to a small
batch at every step; one GEMM with a long reduction dim is far faster than T short ones and T
additions of a whole weight gradient.
"""
from __future__ import annotations

import numpy as np

from ._arrays import col_sum
from .tensor import Tensor, _GRAD, _const, _wrap, record

__all__ = ['linear', 'deferred_weight_grads']

_DEFER: list = [None]       # the active DeferredWeightGrads, if any
_PENDING: list = []


def linear(x, w, b=None):
    """``x @ w.T + b`` with ``w`` of shape [out, in] and x of shape [..., in];
    leading dims are folded into one GEMM."""
    if not isinstance(x, Tensor):
        x = _wrap(x)
    if not isinstance(w, Tensor):
        w = _wrap(w)
    xd = x.data
    wd = w.data
    if xd.ndim == 2:
        x2 = xd
        out = xd @ wd.T
    else:
        x2 = xd.reshape(-1, xd.shape[-1])
        out = (x2 @ wd.T).reshape(xd.shape[:-1] + (wd.shape[0],))
    rx = x.requires_grad
    rw = w.requires_grad
    rb = False
    if b is not None:
        if not isinstance(b, Tensor):
            b = _wrap(b)
        out += b.data
        rb = b.requires_grad
    if not ((rx or rw or rb) and _GRAD[0]):
        return _const(out)
    nout = wd.shape[0]
    acc = _DEFER[0]
    if acc is not None and acc.takes(w, b):
        return acc.call(out, x, x2, w, b, rx)

    def vjp(g):
        g2 = g if g.ndim == 2 else g.reshape(-1, nout)
        gx = None
        if rx:
            gx = g2 @ wd
            if xd.ndim != 2:
                gx = gx.reshape(xd.shape)
        return (gx,
                g2.T @ x2 if rw else None,
                col_sum(g2) if rb else None)        # bias: gemv, not a ufunc reduce
    return record(out, (x, w) if b is None else (x, w, b), vjp)


class DeferredWeightGrads:
    """The weight gradients of the `linear` calls on some parameters, summed at the end (see
    the module docstring). Its tape entry is recorded first, so backward reaches it after every
    call it collects from."""

    def __init__(self, params):
        self.params = tuple(p for p in params if isinstance(p, Tensor) and p.requires_grad)
        self.ids = {id(p) for p in self.params}
        self.calls: list = []           # per call: (weight, bias, x2); the gradient lands in grads
        self.grads: dict = {}           # call index -> output gradient (2-D)
        self.entry = record(np.empty(0), self.params, self._vjp) if self.params else None

    def takes(self, w, b) -> bool:
        return self.entry is not None and id(w) in self.ids and (b is None or id(b) in self.ids)

    def call(self, out, x, x2, w, b, rx):
        k = len(self.calls)
        self.calls.append((w, b, x2))
        wd = w.data
        nout = wd.shape[0]
        xshape = x.data.shape
        grads, entry = self.grads, self.entry

        def vjp(g):
            g2 = g if g.ndim == 2 else g.reshape(-1, nout)
            grads[k] = g2
            entry._g = _PENDING         # (a list: backward hands it to _vjp without publishing it)
            if not rx:
                return (None,)
            gx = g2 @ wd
            return (gx if len(xshape) == 2 else gx.reshape(xshape),)
        return record(out, (x,), vjp)

    def _vjp(self, _pending):
        grads = self.grads
        by_weight: dict = {}
        for k, (w, b, x2) in enumerate(self.calls):
            if k in grads:
                by_weight.setdefault((id(w), id(b) if b is not None else None), []).append((grads[k], x2))
        out = {}
        for (wid, bid), pairs in by_weight.items():
            G = pairs[0][0] if len(pairs) == 1 else np.concatenate([g for g, _ in pairs])
            X = pairs[0][1] if len(pairs) == 1 else np.concatenate([x for _, x in pairs])
            gw = G.T @ X
            out[wid] = gw if wid not in out else out[wid] + gw
            if bid is not None:
                gb = col_sum(G)
                out[bid] = gb if bid not in out else out[bid] + gb
        self.calls, self.grads = [], {}
        return tuple(out.get(id(p)) for p in self.params)


class deferred_weight_grads:
    """Context manager: inside it, `linear` calls on `params` defer their weight gradients."""

    def __init__(self, params):
        self.params = params

    def __enter__(self):
        self.prev = _DEFER[0]
        _DEFER[0] = DeferredWeightGrads(self.params) if _GRAD[0] else None
        return _DEFER[0]

    def __exit__(self, *exc):
        _DEFER[0] = self.prev
        return False
