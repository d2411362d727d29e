"""Convolution and pooling primitives (any number of spatial dims; 1-D and
2-D are the tested, intended uses).

Layouts follow PyTorch/ONNX: x is [N, C, *spatial]; conv weights are
[O, C/groups, *k]; conv_transpose weights are [C_in, C_out/groups, *k].
Padding is an int, one int per spatial dim, or one (begin, end) pair per
spatial dim (negative values crop).

conv is im2col + one GEMM per group (im2col.py).  Its input gradient is, for stride 1,
another im2col + GEMM (a conv of the output gradient with the flipped
kernel) and otherwise one GEMM plus a strided add per kernel offset
(col2im).  conv_transpose is literally the input gradient of conv and vice
versa, so both share the same kernels.
Pools loop over kernel offsets with strided slices (no window copies).
"""

from __future__ import annotations

import math

import numpy as np

from . import convkernels
from .im2col import _out_slices, _im2col, _cols_times_w, _gT_times_cols, _wmat, _wmat_back, _input_grad, _chan_major
from ._arrays import ntuple, pad_array, pad_pairs
from .tensor import _GRAD, _const, as_tensor, record
from .tensor import max as _max
from .tensor import mean as _mean
from .tensor import min as _min

__all__ = ["conv", "conv_transpose", "max_pool", "min_pool", "avg_pool",
           "global_pool", "adaptive_avg_pool2d"]


def _conv_args(name, x, w, stride, padding, dilation, groups, transposed):
    """Tensors and normalised arguments of conv / conv_transpose:
    (x, w, spatial dims, stride, dilation, pad pairs, groups)."""
    x, w = as_tensor(x), as_tensor(w)
    nsp = x.data.ndim - 2
    if nsp < 1 or w.data.ndim != nsp + 2:
        raise ValueError(f"{name}: x {x.data.shape} and w {w.data.shape} need matching [N, C, *spatial] layouts")
    G = int(groups)
    _check_groups(x.data.shape[1], w.data, G, transposed)
    return (x, w, nsp, ntuple(stride, nsp, "stride"), ntuple(dilation, nsp, "dilation"),
            pad_pairs(padding, nsp), G)


def _add_bias(out, b, nsp):
    """out [N, C, *S] += b [C] in place. Returns b as a Tensor (or None) and whether it needs a
    gradient."""
    if b is None:
        return None, False
    b = as_tensor(b)
    out += b.data.reshape((1, -1) + (1,) * nsp)
    return b, b.requires_grad


def _check_groups(C, w, groups, transposed):
    if transposed:
        if w.shape[0] != C or C % groups:
            raise ValueError(f"conv_transpose weight {w.shape} does not fit {C} input channels / {groups} groups")
    elif C != w.shape[1] * groups or w.shape[0] % groups:
        raise ValueError(f"conv weight {w.shape} does not fit {C} input channels / {groups} groups")


def conv(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """N-d convolution (cross-correlation, as in PyTorch/ONNX)."""
    x, w, nsp, stride, dil, pads, G = _conv_args("conv", x, w, stride, padding, dilation, groups, False)
    xd, wd = x.data, w.data
    fast = convkernels.plan(xd.shape, wd.shape, np.result_type(xd, wd), stride, dil, pads, G)
    if fast is not None:                    # large 2-D float32: ONNX Runtime's kernels
        return convkernels.conv(x, w, None if b is None else as_tensor(b), stride, dil, pads, G, fast)
    k = wd.shape[2:]
    N = xd.shape[0]
    cols, colsT, out_sp = _im2col(xd, k, stride, dil, pads, G)
    w2 = _wmat(wd, G)
    out = _cols_times_w(cols, colsT, w2, N, out_sp)
    b, rb = _add_bias(out, b, nsp)
    rx, rw = x.requires_grad, w.requires_grad
    if not ((rx or rw or rb) and _GRAD[0]):
        return _const(out)
    sum_axes = (0,) + tuple(range(2, 2 + nsp))

    def vjp(g):
        gx = gw = gb = None
        if rw:
            gw = _wmat_back(_gT_times_cols(_chan_major(g, G), cols, colsT), wd.shape)
        if rx:
            gx = _input_grad(g, wd, w2, xd.shape, stride, dil, pads, G)
        if rb:
            gb = g.sum(axis=sum_axes)
        return gx, gw, gb
    return record(out, (x, w) if b is None else (x, w, b), vjp)


def conv_transpose(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """Transposed convolution (the adjoint of ``conv``), PyTorch/ONNX layout:
    w is [C_in, C_out/groups, *k].  Output size per dim:
    (in - 1)*stride - pad_begin - pad_end + dilation*(k - 1) + output_padding + 1."""
    x, w, nsp, stride, dil, pads, G = _conv_args("conv_transpose", x, w, stride, padding, dilation, groups, True)
    xd, wd = x.data, w.data
    opad = ntuple(output_padding, nsp, "output_padding")
    k = wd.shape[2:]
    N = xd.shape[0]
    in_sp = xd.shape[2:]
    Cout = wd.shape[1] * G
    Sy = tuple((i - 1) * s - pb - pe + d * (kk - 1) + op + 1
               for i, s, (pb, pe), d, kk, op in zip(in_sp, stride, pads, dil, k, opad))
    if any(v <= 0 for v in Sy):
        raise ValueError(f"conv_transpose output size {Sy} is not positive")
    if convkernels.plan((N, Cout) + Sy, wd.shape, np.result_type(xd, wd), stride, dil, pads, G) == in_sp:
        return convkernels.conv_transpose(x, w, None if b is None else as_tensor(b), stride, dil, pads, G,
                                          (N, Cout) + Sy)
    w2 = _wmat(wd, G)
    out = _input_grad(xd, wd, w2, (N, Cout) + Sy, stride, dil, pads, G)
    b, rb = _add_bias(out, b, nsp)
    rx, rw = x.requires_grad, w.requires_grad
    if not ((rx or rw or rb) and _GRAD[0]):
        return _const(out)
    sum_axes = (0,) + tuple(range(2, 2 + nsp))

    def vjp(g):
        gx = gw = gb = None
        if rx or rw:
            cols, colsT, _ = _im2col(g, k, stride, dil, pads, G, out_sp=in_sp)
            if rx:
                gx = _cols_times_w(cols, colsT, w2, N, in_sp)
            if rw:
                gw = _wmat_back(_gT_times_cols(_chan_major(xd, G), cols, colsT), wd.shape)
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
    if s == k and not any(b or a for b, a in full) and all(
            o * kk == n for o, kk, n in zip(out_sp, k, xd.shape[2:])):
        return _tiled_extreme_pool(x, xd, k, out_sp, is_max)
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


def _split_taps(a, k, B):
    """C-contiguous ``a`` viewed as [A, k, B] -> a contiguous [k, A, B] copy (tap-major).

    Each run of B elements moves as one opaque item, so this is numpy's fast 2-D transposing
    copy; a plain transpose of [A, k, B] with a short B is many times slower."""
    item = np.dtype((np.void, B * a.itemsize))
    t = a.reshape(-1, k * B).view(item).T.copy()
    return t.view(a.dtype).reshape(k, -1, B)


def _merge_taps(t):
    """Inverse of _split_taps: contiguous [k, A, B] -> contiguous [A, k, B]."""
    k, A, B = t.shape
    item = np.dtype((np.void, B * t.itemsize))
    return t.reshape(k, A * B).view(item).T.copy().view(t.dtype).reshape(A, k, B)


def _tiled_extreme_pool(x, xd, k, out_sp, is_max):
    """Max/min pooling whose windows tile the input exactly (stride == kernel, no padding).

    Separable, one spatial axis at a time from the last to the first: a stage splits the array
    into its k taps along that axis (one transposing copy, see _split_taps) and combines them
    with whole-array ufunc calls on contiguous data (strided views of small feature maps run
    several times slower).  In the backward, each stage sends a tie to its first tap; with the
    innermost axis pooled first, that picks the first extreme of the window in row-major
    kernel order (as PyTorch and the general path do)."""
    op = np.maximum if is_max else np.minimum
    better = np.greater if is_max else np.less
    nsp = len(k)
    # work in the input's memory order: channels first, or channels last (what conv's GEMM
    # produces), so that no transposing copy is needed
    perm = (0,) + tuple(range(2, 2 + nsp)) + (1,)
    if not xd.flags.c_contiguous and xd.transpose(perm).flags.c_contiguous:
        cur = xd.transpose(perm)
        first = 1                                   # position of the first spatial axis
    else:
        perm = None
        cur = np.ascontiguousarray(xd)
        first = 2
    lshape = cur.shape
    shape = list(lshape)
    stages = []
    for d in range(nsp - 1, -1, -1):
        kk = k[d]
        if kk == 1:
            continue
        taps = _split_taps(cur, kk, math.prod(shape[first + d + 1:]))
        red = op(taps[0], taps[1])
        for j in range(2, kk):
            op(red, taps[j], out=red)
        stages.append((taps, red))
        shape[first + d] = out_sp[d]
        cur = red
    out = cur.reshape(shape)
    if not stages:
        out = out.copy()
    if perm is not None:
        inv = tuple(int(i) for i in np.argsort(perm))
        out = out.transpose(inv)
    if not (x.requires_grad and _GRAD[0]):
        return _const(out)

    def vjp(g):
        gc = g.transpose(perm) if perm is not None else g
        for taps, red in reversed(stages):
            kk, A, B = taps.shape
            if B == 1:
                # write each tap's share straight into its strided place: 1-D loops, long
                taps = taps.reshape(kk, A)
                red = red.reshape(A)
                gc = gc.reshape(A)
                gin = np.empty((A, kk), dtype=g.dtype)
                dst = gin.T
            else:
                gc = gc.reshape(A, B)
                gin = dst = np.empty(taps.shape, dtype=g.dtype)
            if kk == 2:
                sel = better(taps[1], taps[0])      # strictly better: a tie stays with tap 0
                np.multiply(gc, sel, out=dst[1])
                np.subtract(gc, dst[1], out=dst[0])
            else:
                free = np.ones(red.shape, dtype=bool)
                for j in range(kk):
                    hit = taps[j] == red
                    hit &= free
                    free ^= hit
                    np.multiply(gc, hit, out=dst[j])
            gc = gin if B == 1 else _merge_taps(gin)
        gx = np.reshape(gc, lshape)
        return (gx.transpose(inv) if perm is not None else gx,)
    return record(out, (x,), vjp)


def max_pool(x, kernel, stride=None, padding=0, count_include_pad=True, ceil_mode=False):
    """Max pooling (stride defaults to kernel; padding counts as -inf).
    ``count_include_pad`` is accepted for a signature shared with avg_pool
    and ignored.  The gradient goes to the first maximum of each window."""
    return _extreme_pool(x, kernel, stride, padding, ceil_mode, True)


def min_pool(x, kernel, stride=None, padding=0, count_include_pad=True, ceil_mode=False):
    """Min pooling (stride defaults to kernel; padding counts as +inf);
    see max_pool."""
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
