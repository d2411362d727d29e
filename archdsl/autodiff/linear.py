"""The dense layer's primitive: y = x W^T + b, with its gradients as BLAS calls."""
from __future__ import annotations

from ._arrays import col_sum
from .tensor import Tensor, _GRAD, _const, _wrap, record

__all__ = ['linear']


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
