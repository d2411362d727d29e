"""numba kernels, by theme; imported only through jit.kernels() (numba present and allowed).

Each kernel is one pass over its arrays (two for a reduction that needs its mean first),
parallel over rows or channels with prange. Reductions accumulate in float64 within one thread
per channel, so a result does not depend on the thread count. Elementwise kernels do the
NumPy path's float32 operations in its order, so their results are the NumPy path's bit for bit
(no fastmath: no contraction into FMAs); only reductions may reassociate.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

_REDUCE = {"reassoc", "nsz"}     # vectorised sums: float64 accumulators, order free


@njit(cache=True, parallel=True)
def _warm(x):
    for i in prange(x.shape[0]):
        x[i] += 1.0


def warm():
    """Compile (or load) one tiny parallel kernel: selects numba's threading layer."""
    _warm(np.zeros(2))


# -- normalization: batch norm over [N, C, P] (P = the spatial positions, flattened) -----------

@njit(cache=True, parallel=True, fastmath=_REDUCE)
def bn_stats(x):
    """Per-channel mean and biased variance of x [N, C, P], float64 (two passes, centred)."""
    N, C, P = x.shape
    mean = np.empty(C)
    var = np.empty(C)
    for c in prange(C):
        s = 0.0
        for i in range(N):
            for p in range(P):
                s += x[i, c, p]
        m = s / (N * P)
        q = 0.0
        for i in range(N):
            for p in range(P):
                d = x[i, c, p] - m
                q += d * d
        mean[c] = m
        var[c] = q / (N * P)
    return mean, var


@njit(cache=True, parallel=True)
def bn_apply(x, mean, scale, shift, out):
    """out = (x - mean) * scale + shift per channel, all float32 [C] but x, out [N, C, P]."""
    N, C, P = x.shape
    for r in prange(N * C):
        i = r // C
        c = r - i * C
        m = mean[c]
        a = scale[c]
        b = shift[c]
        for p in range(P):
            out[i, c, p] = (x[i, c, p] - m) * a + b


@njit(cache=True, parallel=True, fastmath=_REDUCE)
def bn_grad_sums(g, x, mean):
    """Per channel, float64: sum(g) and sum(g * (x - mean)) over [N, C, P]."""
    N, C, P = x.shape
    sg = np.empty(C)
    sgx = np.empty(C)
    for c in prange(C):
        m = mean[c]
        a = 0.0
        b = 0.0
        for i in range(N):
            for p in range(P):
                gi = g[i, c, p]
                a += gi
                b += gi * (x[i, c, p] - m)
        sg[c] = a
        sgx[c] = b
    return sg, sgx


@njit(cache=True, parallel=True)
def bn_grad_input(g, x, mean, scale, k2, k3, gx):
    """gx = g * scale - (x - mean) * k2 - k3 per channel (float32 [C] coefficients)."""
    N, C, P = x.shape
    for r in prange(N * C):
        i = r // C
        c = r - i * C
        m = mean[c]
        a = scale[c]
        b = k2[c]
        d = k3[c]
        for p in range(P):
            gx[i, c, p] = g[i, c, p] * a - (x[i, c, p] - m) * b - d


# -- activations ----------------------------------------------------------------------------------
# Flat kernels run blocks of _BLOCK elements as parallel tasks, each through slices indexed from
# 0: LLVM vectorises that loop, not one indexed from the block's start (2x slower measured).

_BLOCK = 1 << 14


@njit(cache=True, parallel=True)
def relu(x, out):
    """out = max(x, 0) over flat arrays (NaN stays NaN, as np.maximum keeps it)."""
    n = x.size
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        lo = b * _BLOCK
        xs = x[lo:min(n, lo + _BLOCK)]
        os = out[lo:lo + xs.size]
        for k in range(xs.size):
            v = xs[k]
            os[k] = np.float32(0.0) if v < 0 else v      # one compare and select

@njit(cache=True, parallel=True)
def relu_grad(g, out, gx):
    """gx = g * (out > 0) over flat arrays."""
    n = g.size
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        lo = b * _BLOCK
        gs = g[lo:min(n, lo + _BLOCK)]
        os = out[lo:lo + gs.size]
        xs = gx[lo:lo + gs.size]
        for k in range(gs.size):
            xs[k] = gs[k] * np.float32(os[k] > 0)


# -- optimizers ----------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def adam(p, g, m, v, b1, c1, b2, c2, wd, step_size, inv_bc2_sqrt, eps, decay, flush, tiny, out, inplace):
    """One Adam(W) step over flat float32 arrays, with optim.Adam._direction's operations in
    its order: m and v in place, and p too when `inplace` (p * decay - step), else the step
    into `out`. Float32 scalars, c1 and c2 being 1 - b1 and 1 - b2 rounded from float64 as
    NumPy's path has them; wd != 0 adds the L2 term (reading p); flush zeroes subnormal m, v."""
    n = p.size
    zero = np.float32(0.0)
    for blk in prange((n + _BLOCK - 1) // _BLOCK):
        lo = blk * _BLOCK
        ps = p[lo:min(n, lo + _BLOCK)]
        gs = g[lo:lo + ps.size]
        ms = m[lo:lo + ps.size]
        vs = v[lo:lo + ps.size]
        os = out[lo:lo + ps.size]
        for k in range(ps.size):
            gk = gs[k]
            pk = ps[k]
            if wd != zero:
                gk = gk + pk * wd
            mk = ms[k] * b1 + gk * c1
            vk = vs[k] * b2 + (gk * gk) * c2
            if flush:
                mk = zero if abs(mk) < tiny else mk
                vk = zero if abs(vk) < tiny else vk
            ms[k] = mk
            vs[k] = vk
            step = (mk / (np.sqrt(vk) * inv_bc2_sqrt + eps)) * step_size
            if inplace:
                ps[k] = pk * decay - step
            else:
                os[k] = step
