"""Elementwise primitives beyond Tensor's operators: sqrt, maximum/minimum (a tie goes to the
first argument), where, clip, and the activations leaky_relu, elu, erf, gelu, silu, hardswish,
hardsigmoid, mish, softplus, softsign, log_sigmoid and prelu.

The smooth activations form their derivative in the forward pass when the call is recorded
(`_unary`), so the backward is one multiply and nothing else is kept."""
from __future__ import annotations

import math

import numpy as np

from .tensor import Tensor, _GRAD, _const, _scalar_op, _ub, _wrap, _wrap_like, record

__all__ = ['maximum', 'minimum', 'where', 'sqrt', 'leaky_relu', 'elu', 'erf_array', 'erf', 'gelu', 'clip',
           'silu', 'hardswish', 'hardsigmoid', 'mish', 'softplus', 'softsign', 'log_sigmoid', 'prelu']


def maximum(a, b):
    """Elementwise max; on ties the gradient goes to ``a``."""
    return _minmax2(a, b, np.maximum, np.greater_equal)


def minimum(a, b):
    """Elementwise min; on ties the gradient goes to ``a``."""
    return _minmax2(a, b, np.minimum, np.less_equal)


def _minmax2(a, b, op, pick_a):
    a = _wrap_like(a, b)
    b = _wrap_like(b, a)
    ad = a.data
    bd = b.data
    out = op(ad, bd)
    ra = a.requires_grad
    rb = b.requires_grad
    if (ra or rb) and _GRAD[0]:
        def vjp(g):
            # masks as 0/1 factors, not np.where: its per-element branch mispredicts on data of
            # mixed signs (~4 ns an element against ~0.4 for a multiply)
            m = pick_a(ad, bd)
            return (_ub(g * m, ad.shape) if ra else None,
                    _ub(g * ~m, bd.shape) if rb else None)
        return record(out, (a, b), vjp)
    return _const(out)


def where(cond, a, b):
    """``cond ? a : b`` with broadcasting; ``cond`` is not differentiated."""
    if isinstance(cond, Tensor):
        cond = cond.data
    cond = np.asarray(cond, dtype=bool)
    a = _wrap_like(a, b)
    b = _wrap_like(b, a)
    ad = a.data
    bd = b.data
    out = np.where(cond, ad, bd)
    ra = a.requires_grad
    rb = b.requires_grad
    if (ra or rb) and _GRAD[0]:
        def vjp(g):
            return (_ub(np.where(cond, g, 0), ad.shape) if ra else None,
                    _ub(np.where(cond, 0, g), bd.shape) if rb else None)
        return record(out, (a, b), vjp)
    return _const(out)


def sqrt(x):
    x = _wrap(x)
    out = np.sqrt(x.data)
    return _scalar_op(x, out, lambda g: (g * 0.5 / out,))


def leaky_relu(x, alpha=0.01):
    """max(x, alpha x) for alpha <= 1 (min for alpha > 1); the gradient's factor 1 or alpha is
    the mask made affine, 1 exactly where x > 0 ((1 - a) + a rounds to 1 for every a in [0, 1]).
    Branch-free: np.where's per-element branch mispredicts on data of mixed signs, ~20x slower
    on a GAN discriminator's [512, 128] activations."""
    x = _wrap(x)
    xd = x.data
    if xd.dtype.kind != "f" or not 0.0 <= alpha <= 1.0:
        out = np.where(xd > 0, xd, xd * alpha)
        return _scalar_op(x, out, lambda g: (np.where(xd > 0, g, g * alpha),))
    out = xd * alpha
    np.maximum(out, xd, out=out)

    def vjp(g):
        s = (xd > 0).astype(g.dtype)
        s *= 1.0 - alpha
        s += alpha
        s *= g
        return (s,)
    return _scalar_op(x, out, vjp)


def elu(x, alpha=1.0):
    x = _wrap(x)
    xd = x.data
    pos = xd > 0
    out = np.where(pos, xd, np.expm1(np.minimum(xd, 0)) * alpha)
    return _scalar_op(x, out, lambda g: (np.where(pos, g, g * (out + alpha)),))


# erf(x) = 1 - t exp(-z^2 + P(u)), z = |x|, t = 1/(1 + z/2), u = (t - 0.625)/0.375.
# P is a least-squares Chebyshev fit (made with math.erfc) of log(erfc(z)/t) + z^2
# on z in [0, 6]; beyond 6, erf is 1 to double precision.  Max abs error vs
# math.erf: 2.6e-11 with the float64 polynomial, 9e-8 with the short one
# (used for float32/16, whose own rounding is ~1e-7 anyway).
_ERF_P64 = (
    -0.5014367259188318, 0.5153126870663902, 0.005570761719370433,
    -0.021523644316874136, 0.0004935362406523918, 0.0020287858076668834,
    -0.00033025028227614075, -0.00019505772332058965, 8.156900790952361e-05,
    9.319744266045637e-06, -1.3775381270069172e-05, 1.6948042850174811e-06,
    1.5801979064991251e-06, -3.793473326269481e-07, -1.0164448554935511e-07,
)


_ERF_P32 = (
    -0.5014367381861795, 0.515312777072431, 0.005571474960888055,
    -0.021525005901456944, 0.0004870505709060058, 0.0020343994687073356,
    -0.00030973506820428115, -0.00020408864242665297, 5.459941285566322e-05,
    1.535739813192702e-05,
)


def erf_array(x):
    """Vectorised erf on ndarrays (numpy has none); abs error < 1e-10 in float64."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    coef = _ERF_P64 if x.dtype.itemsize >= 8 else _ERF_P32
    z = np.minimum(np.abs(x), 6.0)
    t = 1.0 / (1.0 + 0.5 * z)
    u = (t - 0.625) * (1.0 / 0.375)
    acc = np.full_like(u, coef[-1])
    for c in coef[-2::-1]:
        acc *= u
        acc += c
    acc -= z * z
    np.exp(acc, out=acc)
    acc *= t
    np.subtract(1.0, acc, out=acc)
    return np.copysign(acc, x, out=acc)


_TWO_OVER_SQRTPI = 2.0 / math.sqrt(math.pi)


_INV_SQRT2 = 1.0 / math.sqrt(2.0)


_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def erf(x):
    x = _wrap(x)
    xd = x.data
    return _scalar_op(x, erf_array(xd), lambda g: (g * (_TWO_OVER_SQRTPI * np.exp(-xd * xd)),))


def gelu(x, approximate="none"):
    """GELU; ``approximate="tanh"`` is the tanh formula, "none" the exact erf one.

    Written for few temporaries (each fresh array costs page faults at transformer sizes): the
    work happens in place in two or three buffers, and when the call is recorded the derivative
    is formed in the forward pass from those buffers, so the backward is one multiply and the
    tape keeps one array besides the output."""
    x = _wrap(x)
    xd = x.data
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu approximate must be 'none' or 'tanh', got {approximate!r}")
    grad = x.requires_grad and _GRAD[0]
    if xd.dtype.kind != "f":
        xd = xd.astype(np.float64)
    if approximate == "none":
        cdf = np.multiply(xd, _INV_SQRT2)
        cdf = erf_array(cdf)
        cdf += 1.0
        cdf *= 0.5                                      # Phi(x)
        out = np.multiply(xd, cdf)
        if not grad:
            return _const(out)
        d = np.multiply(xd, xd)                         # Phi(x) + x phi(x)
        d *= -0.5
        np.exp(d, out=d)
        d *= _INV_SQRT_2PI
        d *= xd
        d += cdf
        del cdf
    else:
        # u = sqrt(2/pi) (x + c x^3) = sqrt(2/pi) x (1 + c x^2);  out = x (1 + tanh u) / 2
        c = 0.044715
        th = np.multiply(xd, xd)
        if grad:
            du = np.multiply(th, 3.0 * c)               # 1 + 3 c x^2 (du/dx / sqrt(2/pi))
            du += 1.0
        th *= c
        th += 1.0
        th *= xd
        th *= _SQRT_2_OVER_PI
        np.tanh(th, out=th)
        if not grad:
            out = th + 1.0
            out *= xd
            out *= 0.5
            return _const(out)
        # with h = (1 + tanh u)/2 (so 1 - tanh^2 u = 4 h (1 - h)):
        # d = h + x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 c x^2) / 2 = h (1 + 2 sqrt(2/pi) x (1 + 3 c x^2) (1 - h))
        h = th
        h += 1.0
        h *= 0.5
        out = np.multiply(h, xd)
        d = du
        d *= xd
        d *= 2.0 * _SQRT_2_OVER_PI
        np.subtract(1.0, h, out=h)                      # 1 - h
        d *= h
        d += 1.0
        np.subtract(1.0, h, out=h)                      # h again
        d *= h
        del th, h

    def vjp(g):
        return (g * d,)
    return record(out, (x,), vjp)


def clip(x, lo=None, hi=None):
    """Clamp to [lo, hi]; the gradient passes where lo <= x <= hi."""
    x = _wrap(x)
    xd = x.data
    lo = lo.data if isinstance(lo, Tensor) else lo
    hi = hi.data if isinstance(hi, Tensor) else hi
    out = np.clip(xd, lo, hi)

    def vjp(g):
        m = True
        if lo is not None:
            m = xd >= lo
        if hi is not None:
            m = m & (xd <= hi)
        return (g * m,)
    return _scalar_op(x, out, vjp)


# -- activations with their derivative formed in the forward pass ------------------------------

def _unary(x, fn):
    """fn(xd, grad) -> (out, derivative or None): a recorded call keeps only the derivative."""
    x = _wrap(x)
    grad = x.requires_grad and _GRAD[0]
    out, d = fn(x.data, grad)
    if not grad:
        return _const(out)
    return record(out, (x,), lambda g: (g * d,))


def _sigmoid_array(z):
    """1 / (1 + exp(-z)) as 0.5 + 0.5 tanh(z / 2): no overflow for large |z|."""
    s = np.tanh(z * 0.5)
    s *= 0.5
    s += 0.5
    return s


def _softplus_array(z):
    """log(1 + exp(z)) without overflow: max(z, 0) + log1p(exp(-|z|))."""
    out = np.negative(np.abs(z))
    np.exp(out, out=out)
    np.log1p(out, out=out)
    out += np.maximum(z, 0)
    return out


def silu(x):
    """x * sigmoid(x) (SiLU, Swish); derivative s (1 + x (1 - s))."""
    def fn(xd, grad):
        s = _sigmoid_array(xd)
        out = xd * s
        if not grad:
            return out, None
        d = out - out * s           # x s (1 - s)
        d += s
        return out, d
    return _unary(x, fn)


def hardswish(x):
    """x * relu6(x + 3) / 6, with PyTorch's derivative: 0 below -3, (2x + 3)/6 up to 3, then 1."""
    def fn(xd, grad):
        out = np.clip(xd + 3.0, 0.0, 6.0)
        out *= xd
        out *= 1.0 / 6.0
        if not grad:
            return out, None
        d = np.where(xd < -3.0, 0.0, np.where(xd <= 3.0, xd * (1.0 / 3.0) + 0.5, 1.0)).astype(xd.dtype, copy=False)
        return out, d
    return _unary(x, fn)


def hardsigmoid(x):
    """relu6(x + 3) / 6; derivative 1/6 strictly between -3 and 3 (PyTorch's)."""
    def fn(xd, grad):
        out = np.clip(xd + 3.0, 0.0, 6.0)
        out *= 1.0 / 6.0
        if not grad:
            return out, None
        return out, ((xd > -3.0) & (xd < 3.0)) * np.asarray(1.0 / 6.0, xd.dtype)
    return _unary(x, fn)


def mish(x):
    """x * tanh(softplus(x)); derivative t + x sigmoid(x) (1 - t^2), t = tanh(softplus(x))."""
    def fn(xd, grad):
        t = np.tanh(_softplus_array(xd))
        out = xd * t
        if not grad:
            return out, None
        d = 1.0 - t * t
        d *= xd
        d *= _sigmoid_array(xd)
        d += t
        return out, d
    return _unary(x, fn)


def softplus(x, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (PyTorch's rule);
    derivative sigmoid(beta x) (1 above the threshold)."""
    def fn(xd, grad):
        z = xd * beta if beta != 1.0 else xd
        lin = z > threshold
        out = _softplus_array(z)
        if beta != 1.0:
            out *= 1.0 / beta
        np.copyto(out, xd, where=lin)
        if not grad:
            return out, None
        d = _sigmoid_array(z)
        d[lin] = 1.0
        return out, d
    return _unary(x, fn)


def softsign(x):
    """x / (1 + |x|); derivative 1 / (1 + |x|)^2."""
    def fn(xd, grad):
        den = np.abs(xd)
        den += 1.0
        out = xd / den
        if not grad:
            return out, None
        np.multiply(den, den, out=den)
        np.divide(1.0, den, out=den)
        return out, den
    return _unary(x, fn)


def log_sigmoid(x):
    """log(sigmoid(x)) = -softplus(-x), stably; derivative sigmoid(-x)."""
    def fn(xd, grad):
        out = -_softplus_array(-xd)
        return out, (_sigmoid_array(-xd) if grad else None)
    return _unary(x, fn)


def prelu(x, w):
    """x where x > 0, else w x, with w [C] (or [1]) along the channel dim 1 (dim 0 of a 1-D x)."""
    x, w = _wrap(x), _wrap(w)
    xd, wd = x.data, w.data
    axis = 1 if xd.ndim >= 2 else 0
    wb = wd.reshape((-1,) + (1,) * (xd.ndim - axis - 1)) if wd.size > 1 else wd.reshape(())
    pos = xd > 0
    out = np.where(pos, xd, xd * wb)
    rx, rw = x.requires_grad, w.requires_grad
    if not ((rx or rw) and _GRAD[0]):
        return _const(out)

    def vjp(g):
        gx = np.where(pos, g, g * wb) if rx else None
        gw = None
        if rw:
            neg = np.where(pos, 0.0, g * xd)
            if wd.size > 1:
                gw = np.moveaxis(neg, axis, 0).reshape(wd.size, -1).sum(axis=1).reshape(wd.shape)
            else:
                gw = np.asarray(neg.sum(), dtype=wd.dtype).reshape(wd.shape)
        return gx, gw
    return record(out, (x, w), vjp)
