"""Convolution and pooling primitives (any number of spatial dims; 1-D and
2-D are the tested, intended uses).

Layouts follow PyTorch/ONNX: x is [N, C, *spatial]; conv weights are
[O, C/groups, *k]; conv_transpose weights are [C_in, C_out/groups, *k].
Padding is an int, one int per spatial dim, or one (begin, end) pair per
spatial dim (negative values crop).

conv is im2col + one GEMM per group; its input gradient ("col2im") is one
GEMM plus a strided add per kernel offset.  conv_transpose is literally the
input-gradient of conv and vice versa, so both share the same two kernels.
Pools loop over kernel offsets with strided slices (no window copies).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._arrays import ntuple, pad_array, pad_pairs
from .tensor import _GRAD, _const, as_tensor, record

__all__ = ["conv", "conv_transpose", "max_pool", "min_pool", "avg_pool",
           "global_pool", "adaptive_avg_pool2d"]


# -- shared kernels (numpy in, numpy out) --------------------------------------

def _out_slices(offsets, dil, stride, out_sp):
    """Slices picking, for one kernel offset, the input positions it touches."""
    return tuple(slice(ki * d, ki * d + s * (o - 1) + 1, s)
                 for ki, d, s, o in zip(offsets, dil, stride, out_sp))


def _im2col(x, k, stride, dil, pads, groups, out_sp=None):
    """x [N, C, *S] -> cols [G, N*P, (C/G)*K] (a copy) and the output size.

    ``out_sp`` forces the number of output positions (conv_transpose with
    output_padding can otherwise produce one too many)."""
    N, C = x.shape[:2]
    nsp = len(k)
    xp = pad_array(x, [(0, 0), (0, 0)] + list(pads), 0)
    kext = tuple(d * (kk - 1) + 1 for d, kk in zip(dil, k))
    for i in range(nsp):
        if xp.shape[2 + i] < kext[i]:
            raise ValueError(f"kernel extent {kext} larger than padded input {xp.shape[2:]}")
    v = sliding_window_view(xp, kext, axis=tuple(range(2, 2 + nsp)))
    if out_sp is None:
        osl = tuple(slice(None, None, s) for s in stride)
    else:
        osl = tuple(slice(None, (o - 1) * s + 1, s) for o, s in zip(out_sp, stride))
    v = v[(slice(None), slice(None)) + osl + tuple(slice(None, None, d) for d in dil)]
    out_sp = v.shape[2:2 + nsp]
    G = groups
    Cg = C // G
    v = v.reshape((N, G, Cg) + v.shape[2:])
    perm = (1, 0) + tuple(range(3, 3 + nsp)) + (2,) + tuple(range(3 + nsp, 3 + 2 * nsp))
    cols = v.transpose(perm).reshape(G, N * math.prod(out_sp), Cg * math.prod(k))
    return cols, out_sp


def _col2im(colsT, xshape, k, stride, dil, pads, out_sp, groups):
    """Adjoint of _im2col: colsT [G, (C/G)*K, N*P] laid out (G, C/G, *k, N, *out)
    is scatter-added back into an [N, C, *S] array."""
    N, C = xshape[:2]
    nsp = len(k)
    G = groups
    Cg = C // G
    Sp = tuple(xshape[2 + i] + pads[i][0] + pads[i][1] for i in range(nsp))
    # accumulate in (G, Cg, N, *S) so each kernel offset adds a contiguous block
    buf = np.zeros((G, Cg, N) + Sp, dtype=colsT.dtype)
    c = colsT.reshape((G, Cg) + tuple(k) + (N,) + tuple(out_sp))
    lead = (slice(None),) * 3
    for kidx in np.ndindex(*k):
        buf[lead + _out_slices(kidx, dil, stride, out_sp)] += c[(slice(None), slice(None)) + kidx]
    gx = buf.reshape((C, N) + Sp).swapaxes(0, 1)
    gx = pad_array(gx, [(0, 0), (0, 0)] + [(-b, -a) for b, a in pads])
    return np.ascontiguousarray(gx)


def _gemm_out(cols, w2, N, out_sp):
    """cols [G, N*P, CgK] x w2 [G, Og, CgK] -> [N, G*Og, *out]."""
    G, Og = w2.shape[0], w2.shape[1]
    if G == 1:
        o = (cols[0] @ w2[0].T)[None]  # one plain GEMM
    else:
        o = np.matmul(cols, w2.transpose(0, 2, 1))
    P = math.prod(out_sp)
    o = o.reshape(G, N, P, Og).transpose(1, 0, 3, 2)
    return o.reshape((N, G * Og) + tuple(out_sp))


def _chan_major(a, G):
    """[N, G*Og, *sp] -> [G, Og, N*P] (a copy), the GEMM operand layout."""
    N, C = a.shape[:2]
    P = math.prod(a.shape[2:])
    return a.reshape(N, G, C // G, P).transpose(1, 2, 0, 3).reshape(G, C // G, N * P)


def _check_groups(C, w, groups, transposed):
    if transposed:
        if w.shape[0] != C or C % groups:
            raise ValueError(f"conv_transpose weight {w.shape} does not fit {C} input channels / {groups} groups")
    elif C != w.shape[1] * groups or w.shape[0] % groups:
        raise ValueError(f"conv weight {w.shape} does not fit {C} input channels / {groups} groups")


def conv(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """N-d convolution (cross-correlation, as in PyTorch/ONNX)."""
    x = as_tensor(x)
    w = as_tensor(w)
    xd = x.data
    wd = w.data
    nsp = xd.ndim - 2
    if nsp < 1 or wd.ndim != nsp + 2:
        raise ValueError(f"conv: x {xd.shape} and w {wd.shape} need matching [N, C, *spatial] layouts")
    stride = ntuple(stride, nsp, "stride")
    dil = ntuple(dilation, nsp, "dilation")
    pads = pad_pairs(padding, nsp)
    G = int(groups)
    _check_groups(xd.shape[1], wd, G, False)
    k = wd.shape[2:]
    N = xd.shape[0]
    O = wd.shape[0]
    cols, out_sp = _im2col(xd, k, stride, dil, pads, G)
    w2 = wd.reshape(G, O // G, -1)
    out = _gemm_out(cols, w2, N, out_sp)
    rb = False
    if b is not None:
        b = as_tensor(b)
        out += b.data.reshape((1, O) + (1,) * nsp)
        rb = b.requires_grad
    rx = x.requires_grad
    rw = w.requires_grad
    if not ((rx or rw or rb) and _GRAD[0]):
        return _const(out)
    sum_axes = (0,) + tuple(range(2, 2 + nsp))

    def vjp(g):
        gT = _chan_major(g, G)
        gx = gw = gb = None
        if rw:
            gw = np.matmul(gT, cols).reshape(wd.shape)
        if rx:
            gx = _col2im(np.matmul(w2.transpose(0, 2, 1), gT), xd.shape, k, stride, dil, pads, out_sp, G)
        if rb:
            gb = g.sum(axis=sum_axes)
        return gx, gw, gb
    return record(out, (x, w) if b is None else (x, w, b), vjp)


def conv_transpose(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """Transposed convolution (the adjoint of ``conv``), PyTorch/ONNX layout:
    w is [C_in, C_out/groups, *k].  Output size per dim:
    (in - 1)*stride - pad_begin - pad_end + dilation*(k - 1) + output_padding + 1."""
    x = as_tensor(x)
    w = as_tensor(w)
    xd = x.data
    wd = w.data
    nsp = xd.ndim - 2
    if nsp < 1 or wd.ndim != nsp + 2:
        raise ValueError(f"conv_transpose: x {xd.shape} and w {wd.shape} need matching layouts")
    stride = ntuple(stride, nsp, "stride")
    dil = ntuple(dilation, nsp, "dilation")
    opad = ntuple(output_padding, nsp, "output_padding")
    pads = pad_pairs(padding, nsp)
    G = int(groups)
    Cin = xd.shape[1]
    _check_groups(Cin, wd, G, True)
    k = wd.shape[2:]
    N = xd.shape[0]
    in_sp = xd.shape[2:]
    Cout = wd.shape[1] * G
    Sy = tuple((i - 1) * s - pb - pe + d * (kk - 1) + op + 1
               for i, s, (pb, pe), d, kk, op in zip(in_sp, stride, pads, dil, k, opad))
    if any(v <= 0 for v in Sy):
        raise ValueError(f"conv_transpose output size {Sy} is not positive")
    w2 = wd.reshape(G, Cin // G, -1)
    xT = _chan_major(xd, G)
    out = _col2im(np.matmul(w2.transpose(0, 2, 1), xT), (N, Cout) + Sy, k, stride, dil, pads, in_sp, G)
    rb = False
    if b is not None:
        b = as_tensor(b)
        out += b.data.reshape((1, Cout) + (1,) * nsp)
        rb = b.requires_grad
    rx = x.requires_grad
    rw = w.requires_grad
    if not ((rx or rw or rb) and _GRAD[0]):
        return _const(out)
    sum_axes = (0,) + tuple(range(2, 2 + nsp))

    def vjp(g):
        gx = gw = gb = None
        if rx or rw:
            cols, _ = _im2col(g, k, stride, dil, pads, G, out_sp=in_sp)
            if rx:
                gx = _gemm_out(cols, w2, N, in_sp)
            if rw:
                gw = np.matmul(xT, cols).reshape(wd.shape)
        if rb:
            gb = g.sum(axis=sum_axes)
        return gx, gw, gb
    return record(out, (x, w) if b is None else (x, w, b), vjp)


# -- pooling --------------------------------------------------------------------

def _pool_geometry(shape, kernel, stride, padding, ceil_mode):
    nsp = len(shape) - 2
    k = ntuple(kernel, nsp, "kernel")
    s = k if stride is None else ntuple(stride, nsp, "stride")
    pads = pad_pairs(padding, nsp)
    out_sp = []
    extra = []
    for S, kk, ss, (pb, pe) in zip(shape[2:], k, s, pads):
        L = S + pb + pe
        if L < kk:
            raise ValueError(f"pool kernel {k} larger than padded input {shape[2:]}")
        if ceil_mode:
            o = -(-(L - kk) // ss) + 1
            if (o - 1) * ss >= S + pb:  # last window must start inside input or left pad
                o -= 1
        else:
            o = (L - kk) // ss + 1
        out_sp.append(o)
        extra.append(max(0, (o - 1) * ss + kk - L))  # room ceil_mode windows reach past the pad
    full = [(0, 0), (0, 0)] + [(pb, pe + ex) for (pb, pe), ex in zip(pads, extra)]
    return k, s, pads, tuple(out_sp), tuple(extra), full


def _fill_value(dtype, sign):
    if dtype.kind == "f":
        return sign * np.inf
    info = np.iinfo(dtype)
    return info.max if sign > 0 else info.min


def _extreme_pool(x, kernel, stride, padding, ceil_mode, is_max):
    x = as_tensor(x)
    xd = x.data
    k, s, pads, out_sp, extra, full = _pool_geometry(xd.shape, kernel, stride, padding, ceil_mode)
    xp = pad_array(xd, full, _fill_value(xd.dtype, -1 if is_max else 1))
    op = np.maximum if is_max else np.minimum
    ones = (1,) * len(k)
    lead = (slice(None), slice(None))
    out = None
    for kidx in np.ndindex(*k):
        v = xp[lead + _out_slices(kidx, ones, s, out_sp)]
        out = v.copy() if out is None else op(out, v, out=out)
    if not (x.requires_grad and _GRAD[0]):
        return _const(out)

    def vjp(g):
        # route to the first extreme in row-major kernel order (as PyTorch)
        gxp = np.zeros(xp.shape, dtype=xd.dtype)
        free = np.ones(out.shape, dtype=bool)
        for kidx in np.ndindex(*k):
            sl = lead + _out_slices(kidx, ones, s, out_sp)
            hit = xp[sl] == out
            hit &= free
            free ^= hit
            gxp[sl] += g * hit
        return (pad_array(gxp, [(-b, -a) for b, a in full]),)
    return record(out, (x,), vjp)


def max_pool(x, kernel, stride=None, padding=0, ceil_mode=False):
    """Max pooling (stride defaults to kernel; padding counts as -inf)."""
    return _extreme_pool(x, kernel, stride, padding, ceil_mode, True)


def min_pool(x, kernel, stride=None, padding=0, ceil_mode=False):
    """Min pooling (stride defaults to kernel; padding counts as +inf)."""
    return _extreme_pool(x, kernel, stride, padding, ceil_mode, False)


def _avg_divisor(shape, k, s, pads, out_sp, count_include_pad, dtype):
    """Window sizes per output position (separable: a product over dims)."""
    div = np.ones((), dtype=dtype)
    for i, (S, kk, ss, (pb, pe), o) in enumerate(zip(shape[2:], k, s, pads, out_sp)):
        start = np.arange(o) * ss
        lo, hi = (0, S + pb + pe) if count_include_pad else (pb, pb + S)
        cnt = np.minimum(start + kk, hi) - np.maximum(start, lo)
        cnt = np.maximum(cnt, 1).astype(dtype)
        div = np.multiply.outer(div, cnt)
    return div


def avg_pool(x, kernel, stride=None, padding=0, count_include_pad=True, ceil_mode=False):
    """Average pooling with PyTorch's divisor rules for padding and ceil_mode."""
    x = as_tensor(x)
    xd = x.data
    if xd.dtype.kind != "f":
        xd = xd.astype(np.float32)
    k, s, pads, out_sp, extra, full = _pool_geometry(xd.shape, kernel, stride, padding, ceil_mode)
    xp = pad_array(xd, full, 0)
    ones = (1,) * len(k)
    lead = (slice(None), slice(None))
    acc = None
    for kidx in np.ndindex(*k):
        v = xp[lead + _out_slices(kidx, ones, s, out_sp)]
        acc = v.copy() if acc is None else np.add(acc, v, out=acc)
    div = _avg_divisor(xd.shape, k, s, pads, out_sp, count_include_pad, xd.dtype)
    acc /= div
    if not (x.requires_grad and _GRAD[0]):
        return _const(acc)

    def vjp(g):
        gd = g / div
        gxp = np.zeros(xp.shape, dtype=xd.dtype)
        for kidx in np.ndindex(*k):
            gxp[lead + _out_slices(kidx, ones, s, out_sp)] += gd
        return (pad_array(gxp, [(-b, -a) for b, a in full]),)
    return record(acc, (x,), vjp)


def global_pool(x, kind="avg"):
    """Reduce all spatial dims, keeping them as size 1: [N, C, 1, ...]."""
    from .functional import max as _max, mean as _mean, min as _min
    x = as_tensor(x)
    axes = tuple(range(2, x.data.ndim))
    if kind == "avg":
        return _mean(x, axis=axes, keepdims=True)
    if kind == "max":
        return _max(x, axis=axes, keepdims=True)
    if kind == "min":
        return _min(x, axis=axes, keepdims=True)
    raise ValueError(f"global_pool kind must be 'avg', 'max' or 'min', got {kind!r}")


def _adaptive_matrix(n_in, n_out, dtype):
    """Averaging matrix [n_out, n_in] for PyTorch's adaptive bins
    [floor(i*n_in/n_out), ceil((i+1)*n_in/n_out))."""
    A = np.zeros((n_out, n_in), dtype=dtype)
    for i in range(n_out):
        lo = (i * n_in) // n_out
        hi = -(-((i + 1) * n_in) // n_out)
        A[i, lo:hi] = 1.0 / (hi - lo)
    return A


def adaptive_avg_pool2d(x, out_hw):
    """Adaptive average pooling over the last two dims (None keeps a size)."""
    x = as_tensor(x)
    xd = x.data
    H, W = xd.shape[-2:]
    oh, ow = (out_hw, out_hw) if isinstance(out_hw, (int, np.integer)) else tuple(out_hw)
    oh = H if oh is None else int(oh)
    ow = W if ow is None else int(ow)
    if H % oh == 0 and W % ow == 0 and xd.ndim == 4:
        # equal bins: plain average pooling (also covers global pooling)
        return avg_pool(x, (H // oh, W // ow))
    dtype = xd.dtype if xd.dtype.kind == "f" else np.float32
    Ah = _adaptive_matrix(H, oh, dtype)
    Aw = _adaptive_matrix(W, ow, dtype)
    out = Ah @ xd @ Aw.T
    if not (x.requires_grad and _GRAD[0]):
        return _const(out)
    return record(out, (x,), lambda g: (Ah.T @ g @ Aw,))
