"""The im2col + GEMM kernels of convolution (NumPy in, NumPy out), shared by convolution.py's
primitives and convkernels.py's small-map paths: conv is im2col + one GEMM per group; its input
gradient is, for stride 1, another im2col + GEMM (a conv of the output gradient with the flipped
kernel) and otherwise one GEMM plus a strided add per kernel offset (col2im)."""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._arrays import pad_array

# Channel-group width from which im2col uses the sliding-window copy (see _im2col).
_WIDE_CG = 8


def _out_slices(offsets, dil, stride, out_sp):
    """Slices picking, for one kernel offset, the input positions it touches."""
    return tuple(slice(ki * d, ki * d + s * (o - 1) + 1, s)
                 for ki, d, s, o in zip(offsets, dil, stride, out_sp))


def _group_view(x, G):
    """[N, C, *S] -> [N, G, C/G, *S]; a view for one group whatever x's memory order (conv
    outputs and their gradients are often channels-last views: reshape would copy them)."""
    return x[:, None] if G == 1 else x.reshape((x.shape[0], G, x.shape[1] // G) + x.shape[2:])


def _padded_layout(x, G, pads, channels_last):
    """Zero-pad x [N, C, *S] and regroup it in one copy, as
    [G, N, *S_padded, C/G] (channels_last) or [G, C/G, N, *S_padded]."""
    N, C = x.shape[:2]
    nsp = x.ndim - 2
    x = pad_array(x, [(0, 0), (0, 0)] + [(min(b, 0), min(a, 0)) for b, a in pads])  # crops only
    pos = [(max(b, 0), max(a, 0)) for b, a in pads]
    S = x.shape[2:]
    Sp = tuple(s + b + a for s, (b, a) in zip(S, pos))
    Cg = C // G
    sp_axes = tuple(range(3, 3 + nsp))
    interior = tuple(slice(b, b + s) for s, (b, _) in zip(S, pos))
    if channels_last:
        perm, shape, dst = (1, 0) + sp_axes + (2,), (G, N) + Sp + (Cg,), (slice(None),) * 2 + interior
    else:
        perm, shape, dst = (1, 2, 0) + sp_axes, (G, Cg, N) + Sp, (slice(None),) * 3 + interior
    src = _group_view(x, G).transpose(perm)
    if not any(b or a for b, a in pos):
        return np.ascontiguousarray(src)
    out = np.zeros(shape, dtype=x.dtype)
    out[dst] = src
    return out


def _im2col(x, k, stride, dil, pads, groups, out_sp=None):
    """Gather the conv windows of x [N, C, *S].

    Returns (mat, transposed, out_sp): mat is [G, N*P, K*Cg] or, when
    ``transposed``, [G, K*Cg, N*P]; the inner order is always (kernel offset,
    channel).  Wide groups use a sliding-window view copied with the channel
    run innermost; narrow groups (depthwise, Cg < 8) copy one kernel offset at
    a time (the window copy would run with an inner length of Cg).
    ``out_sp`` forces the number of output positions (conv_transpose with
    output_padding can otherwise produce one too many)."""
    N, C = x.shape[:2]
    nsp = len(k)
    G = groups
    Cg = C // G
    K = math.prod(k)
    kext = tuple(d * (kk - 1) + 1 for d, kk in zip(dil, k))
    Sp = tuple(x.shape[2 + i] + pads[i][0] + pads[i][1] for i in range(nsp))
    for i in range(nsp):
        if Sp[i] < kext[i]:
            raise ValueError(f"kernel extent {kext} larger than padded input {Sp}")
    if out_sp is None:
        out_sp = tuple((Sp[i] - kext[i]) // stride[i] + 1 for i in range(nsp))
    P = math.prod(out_sp)
    if Cg >= _WIDE_CG:
        xt = _padded_layout(x, G, pads, True)  # [G, N, *Sp, Cg]
        v = sliding_window_view(xt, kext, axis=tuple(range(2, 2 + nsp)))  # [G, N, *L, Cg, *kext]
        osl = tuple(slice(None, (o - 1) * s + 1, s) for o, s in zip(out_sp, stride))
        v = v[(slice(None), slice(None)) + osl + (slice(None),) + tuple(slice(None, None, d) for d in dil)]
        perm = (0, 1) + tuple(range(2, 2 + nsp)) + tuple(range(3 + nsp, 3 + 2 * nsp)) + (2 + nsp,)
        return v.transpose(perm).reshape(G, N * P, K * Cg), False, out_sp
    xg = _padded_layout(x, G, pads, False)  # [G, Cg, N, *Sp]
    cols = np.empty((G, K, Cg, N) + out_sp, dtype=x.dtype)
    lead = (slice(None),) * 3
    for j, kidx in enumerate(np.ndindex(*k)):
        cols[:, j] = xg[lead + _out_slices(kidx, dil, stride, out_sp)]
    return cols.reshape(G, K * Cg, N * P), True, out_sp


def _cols_times_w(mat, transposed, w2, N, out_sp):
    """im2col matrix x w2 [G, Og, K*Cg] -> output [N, G*Og, *out]."""
    G, Og = w2.shape[0], w2.shape[1]
    P = math.prod(out_sp)
    if transposed:
        o = np.matmul(w2, mat)  # [G, Og, N*P]
        o = o.reshape(G, Og, N, P).transpose(2, 0, 1, 3)
    else:
        o = (mat[0] @ w2[0].T)[None] if G == 1 else np.matmul(mat, w2.transpose(0, 2, 1))
        o = o.reshape(G, N, P, Og).transpose(1, 0, 3, 2)
    return o.reshape((N, G * Og) + tuple(out_sp))


def _gT_times_cols(gT, mat, transposed):
    """[G, Og, N*P] x im2col matrix -> [G, Og, K*Cg] (weight-gradient GEMM)."""
    return np.matmul(gT, mat.transpose(0, 2, 1) if transposed else mat)


def _col2im(colsT, xshape, k, stride, dil, pads, out_sp, groups):
    """Adjoint of _im2col: colsT [G, K*(C/G), N*P] laid out (G, *k, C/G, N, *out)
    is scatter-added back into an [N, C, *S] array."""
    N, C = xshape[:2]
    nsp = len(k)
    G = groups
    Cg = C // G
    Sp = tuple(xshape[2 + i] + pads[i][0] + pads[i][1] for i in range(nsp))
    # accumulate in (G, Cg, N, *S): each kernel offset adds one contiguous block
    buf = np.zeros((G, Cg, N) + Sp, dtype=colsT.dtype)
    c = colsT.reshape((G,) + tuple(k) + (Cg, N) + tuple(out_sp))
    lead = (slice(None),) * 3
    for kidx in np.ndindex(*k):
        buf[lead + _out_slices(kidx, dil, stride, out_sp)] += c[(slice(None),) + kidx]
    gx = buf.reshape((C, N) + Sp).swapaxes(0, 1)
    gx = pad_array(gx, [(0, 0), (0, 0)] + [(-b, -a) for b, a in pads])
    return np.ascontiguousarray(gx)


def _wmat(w, G):
    """Weight [O, Cg, *k] -> [G, O/G, K*Cg] in the im2col inner order (k, c)."""
    O, Cg = w.shape[:2]
    K = math.prod(w.shape[2:])
    return w.reshape(G, O // G, Cg, K).transpose(0, 1, 3, 2).reshape(G, O // G, K * Cg)


def _wmat_back(gw2, wshape):
    """Inverse of _wmat for the weight gradient."""
    O, Cg = wshape[:2]
    K = math.prod(wshape[2:])
    return gw2.reshape(O, K, Cg).transpose(0, 2, 1).reshape(wshape)


def _flip_weight(w, G):
    """conv weight [O, Cg, *k] -> the weight [C, Og, *k] of the stride-1 conv
    that computes conv's input gradient: swap in/out within each group and
    flip the kernel."""
    O, Cg = w.shape[:2]
    k = w.shape[2:]
    wf = w.reshape((G, O // G, Cg) + k).swapaxes(1, 2)
    wf = wf[(Ellipsis,) + (slice(None, None, -1),) * len(k)]
    return wf.reshape((G * Cg, O // G) + k)


def _input_grad(g, wd, w2, xshape, stride, dil, pads, G):
    """Adjoint of conv wrt its input (= transposed conv of g) -> [N, C, *S].

    Stride 1: a plain conv of g with the flipped weight (im2col + GEMM, no
    scatter).  Otherwise: GEMM to columns (w2 = _wmat(wd, G), made here when
    None), then col2im's strided adds."""
    k = wd.shape[2:]
    out_sp = g.shape[2:]
    N = g.shape[0]
    if all(s == 1 for s in stride):
        q = tuple((d * (kk - 1) - pb, S - o + pb)
                  for d, kk, (pb, _), S, o in zip(dil, k, pads, xshape[2:], out_sp))
        wf = _flip_weight(wd, G)
        cols, transposed, _ = _im2col(g, k, stride, dil, q, G, out_sp=tuple(xshape[2:]))
        return _cols_times_w(cols, transposed, _wmat(wf, G), N, tuple(xshape[2:]))
    gT = _chan_major(g, G)
    if w2 is None:
        w2 = _wmat(wd, G)
    w2T = w2.transpose(0, 2, 1)
    colsT = w2T * gT if w2.shape[1] == 1 else np.matmul(w2T, gT)  # Og == 1: outer product
    return _col2im(colsT, xshape, k, stride, dil, pads, out_sp, G)


def _chan_major(a, G):
    """[N, G*Og, *sp] -> [G, Og, N*P] (a copy), the GEMM operand layout."""
    N, C = a.shape[:2]
    P = math.prod(a.shape[2:])
    return _group_view(a, G).reshape(N, G, C // G, P).transpose(1, 2, 0, 3).reshape(G, C // G, N * P)
