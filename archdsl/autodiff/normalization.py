"""Normalisation and dropout primitives with fused backward passes."""

from __future__ import annotations

import numpy as np

from . import jit
from ._arrays import col_sum, row_sum
from .tensor import Tensor, _GRAD, _NOGRAD, _const, as_tensor, record, unbroadcast

__all__ = ["batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm", "local_response_norm", "dropout",
           "spectral_norm"]


def _grad_flags(x, g_t, b_t):
    """(whether the call is recorded, and which of x, gamma, beta need gradients)."""
    rx = x.requires_grad
    rg = g_t is not None and g_t.requires_grad
    rb = b_t is not None and b_t.requires_grad
    return (rx or rg or rb) and _GRAD[0], rx, rg, rb


def _data(t):
    return t.data if isinstance(t, Tensor) else t


def _chan_dot(a, b, nd):
    """sum(a * b) over every axis but 1, without materialising a * b."""
    if nd == 2:
        return np.einsum("ij,ij->j", a, b)
    s = "abcdefghijklmnop"[:nd]
    return np.einsum(f"{s},{s}->{s[1]}", a, b)


def batch_norm(x, gamma, beta, running_mean, running_var, training,
               momentum=0.1, eps=1e-5):
    """Batch normalisation over all axes but 1, for [N, C] and [N, C, *].

    training: normalise with batch statistics (biased variance) and update
    ``running_mean``/``running_var`` in place (ndarrays or Tensors; None
    skips) with PyTorch's rule ``r = (1-momentum) r + momentum * stat`` where
    the variance statistic is the unbiased one.  Otherwise use the running
    statistics (batch statistics if there are none).  ``gamma``/``beta`` may
    be None (no affine).
    """
    x = as_tensor(x)
    xd = x.data
    nd = xd.ndim
    C = xd.shape[1]
    axes = (0,) + tuple(range(2, nd))
    bshape = (1, C) + (1,) * (nd - 2)
    n = xd.size // C
    dt = xd.dtype
    g_t = as_tensor(gamma) if gamma is not None else None
    b_t = as_tensor(beta) if beta is not None else None
    gam = g_t.data if g_t is not None else None
    rm = _data(running_mean)
    rv = _data(running_var)
    use_batch = training or rm is None or rv is None  # no running stats: always batch stats
    jk = _bn_kernels(xd)
    x3 = xd.reshape(xd.shape[0], C, -1) if jk is not None else None
    if use_batch:
        if n <= 1:
            raise ValueError(f"batch_norm in training needs more than one value per channel, got {xd.shape}")
        if jk is not None:
            mean, var = np.empty(C), np.empty(C)
            jit.split(C, lambda lo, hi: jk.bn_stats(x3, mean, var, lo, hi), 2 * n)
            mean = mean.astype(dt)
            var = var.astype(dt)
            xc = None
        else:
            mean = xd.mean(axis=axes)
            xc = xd - mean.reshape(bshape)
            var = _chan_dot(xc, xc, nd) / n
            var = var.astype(dt, copy=False)
        if training and rm is not None:
            rm *= 1.0 - momentum
            rm += momentum * mean
        if training and rv is not None:
            rv *= 1.0 - momentum
            rv += (momentum * n / (n - 1)) * var
    else:
        mean = np.asarray(rm, dtype=dt)
        var = np.asarray(rv, dtype=dt)
        xc = None
    inv = 1.0 / np.sqrt(var + eps)
    scale = inv if gam is None else gam.reshape(-1) * inv
    if jk is not None:
        out = np.empty_like(xd)
        out3 = out.reshape(x3.shape)
        scale_d = scale.astype(dt, copy=False)
        shift = b_t.data.reshape(-1).astype(dt, copy=False) if b_t is not None else np.zeros(C, dt)
        jit.split(x3.shape[0] * C, lambda lo, hi: jk.bn_apply(x3, mean, scale_d, shift, out3, lo, hi),
                  2 * x3.shape[2])
    elif use_batch:
        # the centred copy becomes the output: the backward recomputes x - mean from x (alive on
        # the tape anyway) rather than keeping a second activation-sized array
        out = xc
        xc = None
        out *= scale.reshape(bshape)
        if b_t is not None:
            out += b_t.data.reshape(bshape)
    else:
        shift = -mean * scale
        if b_t is not None:
            shift = shift + b_t.data.reshape(-1)
        out = xd * scale.reshape(bshape) + shift.reshape(bshape)
    recorded, rx, rg, rb = _grad_flags(x, g_t, b_t)
    if not recorded:
        return _const(out)

    def vjp(g):
        if jk is not None and g.dtype == dt and g.flags.c_contiguous:
            return _bn_grad_kernels(jk, g, x3, mean, inv, scale, use_batch, n, rx, rg, rb, gam, b_t)
        sum_g = g.sum(axis=axes) if (rb or (rx and use_batch)) else None
        sum_gxhat = c = None
        if rg or (rx and use_batch):
            c = xd - mean.reshape(bshape)
            sum_gxhat = _chan_dot(g, c, nd) * inv  # sum(g * xhat) without forming xhat
        gx = None
        if rx:
            gx = g * scale.reshape(bshape)
            if use_batch:
                # scale * (g - mean(g) - xhat * mean(g * xhat)), folded per channel
                c *= (scale * inv * sum_gxhat / n).reshape(bshape)
                gx -= c
                gx -= (scale * sum_g / n).reshape(bshape)
        ggam = sum_gxhat.reshape(gam.shape) if rg else None
        gbet = sum_g.reshape(b_t.data.shape) if rb else None
        return gx, ggam, gbet
    return record(out, (x, g_t if g_t is not None else _NOGRAD, b_t if b_t is not None else _NOGRAD), vjp)


def _bn_kernels(xd):
    """The compiled kernels for a batch norm of xd, or None for the NumPy path: float32 or
    float64 C-contiguous [N, C, *] with at least jit.MIN_ELEMENTS values and MIN_POSITIONS
    positions per channel and image (a [N, C] batch norm reads its channels strided)."""
    if xd.ndim < 3 or xd.size < jit.MIN_ELEMENTS or xd.size // (xd.shape[0] * xd.shape[1]) < MIN_POSITIONS:
        return None
    return jit.for_array(xd)


# positions per channel and image below which the batch norm kernels' rows are too short to pay
MIN_POSITIONS = 4


def _bn_grad_kernels(jk, g, x3, mean, inv, scale, use_batch, n, rx, rg, rb, gam, b_t):
    """batch_norm's vjp on the compiled kernels: one pass for the per-channel sums, one for the
    input gradient (the NumPy path's formula, folded per channel the same way)."""
    dt = x3.dtype
    N, C, P = x3.shape
    g3 = g.reshape(x3.shape)
    sum_g = sum_gxhat = gx = None
    if rb or rg or (rx and use_batch):
        sg, sgx = np.empty(C), np.empty(C)
        jit.split(C, lambda lo, hi: jk.bn_grad_sums(g3, x3, mean, sg, sgx, lo, hi), 2 * N * P)
        sum_g = sg.astype(dt)
        sum_gxhat = sgx.astype(dt) * inv
    if rx:
        gx = np.empty_like(g)
        gx3 = gx.reshape(x3.shape)
        if use_batch:
            k2 = scale * inv * sum_gxhat / n
            k3 = scale * sum_g / n
        else:
            k2 = k3 = np.zeros_like(scale)
        a, b, d = (k.astype(dt, copy=False) for k in (scale, k2, k3))
        jit.split(N * C, lambda lo, hi: jk.bn_grad_input(g3, x3, mean, a, b, d, gx3, lo, hi), 3 * P)
    ggam = sum_gxhat.reshape(gam.shape) if rg else None
    gbet = sum_g.reshape(b_t.data.shape) if rb else None
    return gx, ggam, gbet


def layer_norm(x, gamma=None, beta=None, axes=None, eps=1e-5):
    """Layer normalisation over trailing axes.

    ``axes``: None -> the last ``gamma.ndim`` dims (last dim without gamma);
    an int a -> dims a..end (ONNX LayerNormalization ``axis``; -1 = last dim);
    a tuple -> those dims, which must be the trailing ones.
    ``gamma``/``beta`` broadcast against the normalised dims.
    """
    x = as_tensor(x)
    xd = x.data
    nd = xd.ndim
    g_t = as_tensor(gamma) if gamma is not None else None
    b_t = as_tensor(beta) if beta is not None else None
    if axes is None:
        k = g_t.data.ndim if g_t is not None else 1
        axes = tuple(range(nd - k, nd))
    elif isinstance(axes, (int, np.integer)):
        axes = tuple(range(int(axes) % nd, nd))
    else:
        axes = tuple(sorted(int(a) % nd for a in axes))
        if axes != tuple(range(nd - len(axes), nd)):
            raise ValueError(f"layer_norm axes {axes} must be the trailing dims of a {nd}-d input")
    gd = g_t.data if g_t is not None else None
    bd = b_t.data if b_t is not None else None
    k = len(axes)
    m = 1
    for s_ in xd.shape[:nd - k]:
        m *= s_
    dn = xd.size // m if m else 0
    tail = xd.shape[nd - k:]
    if (xd.dtype.kind == "f" and k and dn and _same_tail(gd, tail) and _same_tail(bd, tail)):
        return _layer_norm_rows(x, g_t, b_t, xd.reshape(m, dn), eps)
    mean = xd.mean(axis=axes, keepdims=True)
    xc = xd - mean
    var = np.mean(xc * xc, axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(var + eps)
    xhat = xc * inv
    out = xhat * g_t.data if g_t is not None else xhat
    if b_t is not None:
        out = out + b_t.data
    recorded, rx, rg, rb = _grad_flags(x, g_t, b_t)
    if not recorded:
        return _const(out)

    def vjp(g):
        gx = None
        if rx:
            gh = g * g_t.data if g_t is not None else g
            gx = gh - gh.mean(axis=axes, keepdims=True)
            gx -= xhat * np.mean(gh * xhat, axis=axes, keepdims=True)
            gx *= inv
        ggam = unbroadcast(g * xhat, g_t.data.shape) if rg else None
        gbet = unbroadcast(g, b_t.data.shape) if rb else None
        return gx, ggam, gbet
    return record(out, (x, g_t if g_t is not None else _NOGRAD, b_t if b_t is not None else _NOGRAD), vjp)


def _same_tail(p, tail):
    """p is None, or has the trailing dims' shape (possibly without some leading ones)."""
    return p is None or (p.ndim <= len(tail) and p.shape == tail[len(tail) - p.ndim:])


def _layer_norm_rows(x, g_t, b_t, x2, eps):
    """layer_norm on float data seen as rows x2 [M, D] (gamma/beta with D elements), on the
    compiled kernels when they may run, else as NumPy passes."""
    shape = x.data.shape
    m, dn = x2.shape
    gam = g_t.data.reshape(dn) if g_t is not None else None
    bet = b_t.data.reshape(dn) if b_t is not None else None
    jk = jit.for_array(x2)
    out, backward = (_ln_compiled(jk, x2, gam, bet, eps) if jk is not None else _ln_numpy(x2, gam, bet, eps))
    out = out.reshape(shape)
    recorded, rx, rg, rb = _grad_flags(x, g_t, b_t)
    if not recorded:
        return _const(out)

    def vjp(g):
        gx, ggam, gbet = backward(g.reshape(m, dn), rx, rg, rb)
        return (gx.reshape(shape) if rx else None, ggam.reshape(g_t.data.shape) if rg else None,
                gbet.reshape(b_t.data.shape) if rb else None)
    return record(out, (x, g_t if g_t is not None else _NOGRAD, b_t if b_t is not None else _NOGRAD), vjp)


def _ln_numpy(x2, gam, bet, eps):
    """(out, backward) of a layer norm over rows x2 [M, D] in NumPy: row and column sums are
    BLAS gemvs (np.mean over short rows is several times slower), the centred rows are
    normalised in place, and no [M, D] temporary outlives its use. backward(g2, rx, rg, rb)
    gives the gradients of x2, gamma and beta (those asked for)."""
    dn = x2.shape[1]
    inv_d = 1.0 / dn
    xhat = x2 - (row_sum(x2) * inv_d)[:, None]
    var = np.einsum("ij,ij->i", xhat, xhat)              # row dot without a temporary
    var *= inv_d
    var += eps
    inv = np.sqrt(var, out=var)
    np.divide(1.0, inv, out=inv)
    xhat *= inv[:, None]
    if gam is not None:
        out = xhat * gam
        if bet is not None:
            out += bet
    else:
        out = xhat + bet if bet is not None else xhat.copy()

    def backward(g2, rx, rg, rb):
        gxh = g2 * xhat
        ggam = col_sum(gxh) if rg else None
        gbet = col_sum(g2) if rb else None
        gx = None
        if rx:
            # gx = inv * (gh - mean(gh) - xhat * mean(gh * xhat)), gh = g * gamma; both means are
            # gemvs with gamma: mean(gh) = g @ gamma / D, mean(gh * xhat) = (g * xhat) @ gamma / D
            if gam is not None:
                a = gxh @ gam
                b = g2 @ gam
                gx = g2 * gam
            else:
                a = row_sum(gxh)
                b = row_sum(g2)
                gx = g2.copy()
            a *= inv_d
            b *= inv_d
            gx -= b[:, None]
            gx -= np.multiply(xhat, a[:, None], out=gxh)
            gx *= inv[:, None]
        return gx, ggam, gbet
    return out, backward


# the layer norm backward sums gamma's and beta's gradients per block of rows (at least _LN_ROWS,
# at most about _LN_BLOCKS blocks), then over the blocks: the same sums however it is split
_LN_ROWS = 64
_LN_BLOCKS = 64


def _ln_compiled(jk, x2, gam, bet, eps):
    """_ln_numpy on the compiled kernels: one pass over each row forward (statistics from the
    row in cache, then xhat and the output), one backward (the row dot products and gamma's
    and beta's column sums), instead of about eight NumPy passes each way."""
    m, dn = x2.shape
    dt = x2.dtype
    gam_k = np.ones(dn, dt) if gam is None else gam.astype(dt, copy=False)
    bet_k = np.zeros(dn, dt) if bet is None else bet.astype(dt, copy=False)
    xhat = np.empty_like(x2)
    out = np.empty_like(x2)
    inv = np.empty(m, dt)
    jit.split(m, lambda lo, hi: jk.ln_forward(x2, gam_k, bet_k, xhat, out, inv, eps, lo, hi), 3 * dn)

    def backward(g2, rx, rg, rb):
        if g2.dtype != dt or not g2.flags.c_contiguous:
            g2 = np.ascontiguousarray(g2, dtype=dt)
        gx = np.empty_like(g2)
        rows = max(_LN_ROWS, -(-m // _LN_BLOCKS))
        blocks = -(-m // rows)
        acc = np.zeros((blocks, 2, dn))
        jit.split(blocks, lambda b0, b1: jk.ln_backward(g2, xhat, gam_k, inv, gx, acc, rows, b0, b1), 4 * dn * rows)
        acc = acc.sum(axis=0)
        return gx, acc[0].astype(dt), acc[1].astype(dt)
    return out, backward


def _affine_channels(y, gamma, beta):
    """y [N, C, *] * gamma[C] + beta[C] (each may be None), broadcast along the channel dim."""
    bshape = (1, -1) + (1,) * (y.data.ndim - 2)
    if gamma is not None:
        y = y * as_tensor(gamma).reshape(bshape)
    if beta is not None:
        y = y + as_tensor(beta).reshape(bshape)
    return y


def group_norm(x, groups, gamma=None, beta=None, eps=1e-5):
    """Group normalisation of [N, C, *]: each sample's channels split into `groups` groups, each
    normalised over its channels and positions (biased variance), then scaled and shifted per
    channel. The statistics run on rows [N*G, C/G * positions] through layer_norm's fused row
    kernel; the affine is an ordinary broadcast multiply-add."""
    x = as_tensor(x)
    shape = x.data.shape
    rows = layer_norm(x.reshape(shape[0] * groups, -1), None, None, -1, eps)
    return _affine_channels(rows.reshape(shape), gamma, beta)


def instance_norm(x, gamma=None, beta=None, running_mean=None, running_var=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5):
    """Instance normalisation of [N, C, *]: each (sample, channel) normalised over its positions.
    With running statistics (ndarrays or Tensors) and use_input_stats, they are updated in place
    as PyTorch does (the per-instance statistics averaged over the batch, unbiased variance);
    without use_input_stats the running statistics normalise (batch_norm's inference)."""
    x = as_tensor(x)
    if not use_input_stats:
        return batch_norm(x, gamma, beta, running_mean, running_var, False, momentum, eps)
    xd = x.data
    n, c = xd.shape[:2]
    rm, rv = _data(running_mean), _data(running_var)
    if rm is not None or rv is not None:
        flat = xd.reshape(n, c, -1)
        count = flat.shape[-1]
        if count <= 1:
            raise ValueError(f"instance_norm with running statistics needs more than one value per channel, "
                             f"got {xd.shape}")
        if rm is not None:
            rm *= 1.0 - momentum
            rm += momentum * flat.mean(axis=2).mean(axis=0)
        if rv is not None:
            rv *= 1.0 - momentum
            rv += momentum * flat.var(axis=2, ddof=1).mean(axis=0)
    return group_norm(x, c, gamma, beta, eps)


def rms_norm(x, gamma=None, k=1, eps=1e-6):
    """RMS normalisation over the last k dims (T5, Llama): x / sqrt(mean(x^2) + eps) * gamma,
    gamma shaped like those dims (or None). Fused on rows [M, D]: the mean square is a row dot,
    the backward two gemvs with gamma, as layer_norm's row kernel."""
    x = as_tensor(x)
    xd = x.data
    g_t = as_tensor(gamma) if gamma is not None else None
    shape = xd.shape
    dn = 1
    for s_ in shape[len(shape) - k:]:
        dn *= s_
    x2 = xd.reshape(-1, dn)
    inv_d = 1.0 / dn
    ms = np.einsum("ij,ij->i", x2, x2)
    ms *= inv_d
    ms += eps
    r = np.sqrt(ms, out=ms)
    np.divide(1.0, r, out=r)
    xhat = x2 * r[:, None]
    gam = g_t.data.reshape(dn) if g_t is not None else None
    out = (xhat * gam if gam is not None else xhat).reshape(shape)
    recorded, rx, rg, _ = _grad_flags(x, g_t, None)
    if not recorded:
        return _const(out)

    def vjp(g):
        g2 = g.reshape(-1, dn)
        gxh = g2 * xhat
        ggam = col_sum(gxh).reshape(g_t.data.shape) if rg else None
        gx = None
        if rx:
            # gx = r (gh - xhat mean(gh xhat)), gh = g gamma; mean(gh xhat) = (g xhat) @ gamma / D
            if gam is not None:
                a = gxh @ gam
                gx = g2 * gam
            else:
                a = row_sum(gxh)
                gx = g2.copy()
            a *= inv_d
            gx -= np.multiply(xhat, a[:, None], out=gxh)
            gx *= r[:, None]
            gx = gx.reshape(shape)
        return gx, ggam
    return record(out, (x, g_t if g_t is not None else _NOGRAD), vjp)


def _window_sum(a, before: int, after: int):
    """Sum over channel windows [c - before, c + after] of a [N, C, *] (zeros beyond the ends)."""
    c = a.shape[1]
    cs = np.zeros((a.shape[0], c + before + after + 1) + a.shape[2:], dtype=a.dtype)
    np.cumsum(a, axis=1, out=cs[:, before + 1:before + 1 + c])
    cs[:, before + 1 + c:] = cs[:, before + c:before + 1 + c]
    return cs[:, before + after + 1:] - cs[:, :c]


def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """PyTorch's local response normalisation of [N, C, *] (AlexNet):
    y = x / (k + alpha/size * sum of x^2 over channels c - size//2 .. c + (size-1)//2)^beta."""
    x = as_tensor(x)
    xd = x.data
    front, back = size // 2, (size - 1) // 2
    den = _window_sum(xd * xd, front, back)
    den *= alpha / size
    den += k
    dpow = np.power(den, -beta)
    out = xd * dpow
    if not (x.requires_grad and _GRAD[0]):
        return _const(out)

    def vjp(g):
        # dy_c/dx_j = [c = j] D_c^-beta - 2 alpha beta / size x_c D_c^(-beta-1) x_j  (j in c's window);
        # the sum over the c whose window holds j is the window transposed: (back, front)
        t = g * out / den
        gx = g * dpow
        gx -= (2.0 * alpha * beta / size) * xd * _window_sum(t, back, front)
        return (gx,)
    return record(out, (x,), vjp)


def _unit(a, eps):
    """a / max(|a|, eps): PyTorch's F.normalize of a vector."""
    return a / max(float(np.linalg.norm(a)), eps)


def spectral_norm(w, u, v, training, dim=0, eps=1e-12):
    """The weight divided by its spectral norm, W / sigma (Miyato et al. 2018; PyTorch's
    parametrizations.spectral_norm with one power iteration). W is seen as the matrix
    [W.shape[dim], rest]; sigma = u^T W v, where u [rows] and v [rest] are persistent estimates
    of its first singular vectors (ndarrays or Tensors, buffers updated in place).

    training: one power iteration first, in PyTorch's order (u = normalize(W v), then
    v = normalize(W^T u)); otherwise the stored u, v as they are. The gradient treats u and v as
    constants, as PyTorch does: dW = g / sigma - (sum(g * W) / sigma^2) u v^T.
    """
    w = as_tensor(w)
    wd = w.data
    moved = np.moveaxis(wd, dim, 0)
    wm = moved.reshape(moved.shape[0], -1)
    ud, vd = _data(u), _data(v)
    if training:
        ud[...] = _unit(wm @ vd.astype(wm.dtype, copy=False), eps)
        vd[...] = _unit(wm.T @ ud.astype(wm.dtype, copy=False), eps)
    uc, vc = ud.astype(wd.dtype, copy=False), vd.astype(wd.dtype, copy=False)
    sigma = uc @ (wm @ vc)
    out = wd / sigma
    if not (w.requires_grad and _GRAD[0]):
        return _const(out)

    def vjp(g):
        outer = np.moveaxis(np.outer(uc, vc).reshape(moved.shape), 0, dim)
        return (g / sigma - (float(np.vdot(g, wd)) / (sigma * sigma)) * outer,)
    return record(out, (w,), vjp)


def dropout(x, p, training, rng=None):
    """Inverted dropout: zero with probability p, scale the rest by 1/(1-p).
    Identity (the same Tensor) when not training or p == 0."""
    x = as_tensor(x)
    if not training or p == 0:
        return x
    xd = x.data
    if rng is None:
        rng = np.random.default_rng()
    if p >= 1:
        m = np.zeros(xd.shape, dtype=xd.dtype)
    else:
        rdt = np.float64 if xd.dtype == np.float64 else np.float32
        m = (rng.random(xd.shape, dtype=rdt) >= p).astype(xd.dtype)
        m *= 1.0 / (1.0 - p)
    out = xd * m
    if not (x.requires_grad and _GRAD[0]):
        return _const(out)
    return record(out, (x,), lambda g: (g * m,))
