"""numba kernels, by theme; imported only through jit.kernels() (numba present and allowed).

Each kernel is one pass over its part of the arrays (two for a reduction that needs its mean
first), compiled without the GIL: jit.split runs the parts of a launch on the engine's worker
threads (numba's own threading layers are not used: GNU OpenMP's, the only thread-safe one in
numba's wheels, shares its pool with PyTorch's when both are loaded and spins between
launches). A part is a range of channels, rows or elements, given as (lo, hi).

Reductions accumulate in float64 within one part per channel, so a result does not depend on
the thread count. Elementwise kernels do the NumPy path's float32 operations in its order, so
their results are the NumPy path's bit for bit (no fastmath: no contraction into FMAs); only
reductions may reassociate.
"""
from __future__ import annotations

import numpy as np
from numba import njit

_REDUCE = {"reassoc", "nsz"}     # vectorised sums: float64 accumulators, order free


# -- normalization: batch norm over [N, C, P] (P = the spatial positions, flattened) -----------

# The per-channel sums run over blocks of channels whose data fits in L2 (_BN_BLOCK floats), image
# by image: one image's rows of a block lie together, so the reads stream through memory where
# one channel's rows alone are short and far apart (P = 64 floats, 64 KiB apart, in a ResNet's
# third stage: ResNet-18's batch norm sums 3-4x slower in a training step than warm in cache).
_BN_BLOCK = 1 << 16


@njit(cache=True, nogil=True, inline="always")
def _bn_blocks(N, P, lo, hi, a, b):
    """The channel blocks of lo:hi, as a range of block starts and the block width; zeroes the
    float64 sums a, b [C] of those channels."""
    for c in range(lo, hi):
        a[c] = 0.0
        b[c] = 0.0
    cb = max(1, _BN_BLOCK // (N * P))
    return range(lo, hi, cb), cb


@njit(cache=True, nogil=True, fastmath=_REDUCE)
def bn_stats(x, mean, var, lo, hi):
    """Per-channel mean and biased variance of x [N, C, P] into float64 mean, var [C], for
    channels lo:hi (two passes, centred; the second finds the block in cache)."""
    N, _, P = x.shape
    starts, cb = _bn_blocks(N, P, lo, hi, mean, var)
    for c0 in starts:
        c1 = min(hi, c0 + cb)
        for i in range(N):
            for c in range(c0, c1):
                row = x[i, c]
                s = 0.0
                for p in range(P):
                    s += row[p]
                mean[c] += s
        for c in range(c0, c1):
            mean[c] /= N * P
        for i in range(N):
            for c in range(c0, c1):
                row = x[i, c]
                m = mean[c]
                q = 0.0
                for p in range(P):
                    d = row[p] - m
                    q += d * d
                var[c] += q
        for c in range(c0, c1):
            var[c] /= N * P


@njit(cache=True, nogil=True)
def bn_apply(x, mean, scale, shift, out, lo, hi):
    """out = (x - mean) * scale + shift per channel for rows lo:hi of the N*C rows of x, out
    [N, C, P] (mean, scale, shift: [C] in x's dtype)."""
    C = x.shape[1]
    for r in range(lo, hi):
        i = r // C
        c = r - i * C
        m = mean[c]
        a = scale[c]
        b = shift[c]
        xr = x[i, c]
        orow = out[i, c]
        for p in range(xr.size):
            orow[p] = (xr[p] - m) * a + b


@njit(cache=True, nogil=True, fastmath=_REDUCE)
def bn_grad_sums(g, x, mean, sg, sgx, lo, hi):
    """Per channel lo:hi, float64: sg = sum(g) and sgx = sum(g * (x - mean)) over [N, C, P]."""
    N, _, P = x.shape
    starts, cb = _bn_blocks(N, P, lo, hi, sg, sgx)
    for c0 in starts:
        c1 = min(hi, c0 + cb)
        for i in range(N):
            for c in range(c0, c1):
                gr = g[i, c]
                xr = x[i, c]
                m = mean[c]
                a = 0.0
                b = 0.0
                for p in range(P):
                    gi = gr[p]
                    a += gi
                    b += gi * (xr[p] - m)
                sg[c] += a
                sgx[c] += b


@njit(cache=True, nogil=True)
def bn_grad_input(g, x, mean, scale, k2, k3, gx, lo, hi):
    """gx = g * scale - (x - mean) * k2 - k3 per channel, for rows lo:hi of the N*C rows."""
    C = x.shape[1]
    for r in range(lo, hi):
        i = r // C
        c = r - i * C
        m = mean[c]
        a = scale[c]
        b = k2[c]
        d = k3[c]
        gr = g[i, c]
        xr = x[i, c]
        out = gx[i, c]
        for p in range(xr.size):
            out[p] = gr[p] * a - (xr[p] - m) * b - d


# -- normalization: layer norm over rows [M, D] -------------------------------------------------

@njit(cache=True, nogil=True, fastmath=_REDUCE)
def ln_forward(x, gam, bet, xhat, out, inv, eps, lo, hi):
    """Rows lo:hi of x [M, D]: xhat = (x - mean) / sqrt(var + eps) (biased variance, float64
    sums), out = xhat * gam + bet, inv[row] = 1 / sqrt(var + eps)."""
    D = x.shape[1]
    for r in range(lo, hi):
        xr = x[r]
        s = 0.0
        for j in range(D):
            s += xr[j]
        m = s / D
        q = 0.0
        for j in range(D):
            d = xr[j] - m
            q += d * d
        iv = 1.0 / np.sqrt(q / D + eps)
        inv[r] = iv
        hr = xhat[r]
        orow = out[r]
        for j in range(D):
            h = (xr[j] - m) * iv
            hr[j] = h
            orow[j] = h * gam[j] + bet[j]


@njit(cache=True, nogil=True, fastmath=_REDUCE)
def ln_backward(g, xhat, gam, inv, gx, acc, rows, b0, b1):
    """Blocks b0:b1 of `rows` rows each: gx = inv * (g*gam - mean(g*gam) - xhat *
    mean(g*gam*xhat)); acc[block] [2, D] (float64) gets the block's column sums of g * xhat
    (gamma's gradient) and of g (beta's). Fixed blocks, whatever the split: the same sums at
    any thread count."""
    M, D = g.shape
    for blk in range(b0, b1):
        ab = acc[blk]
        for r in range(blk * rows, min(M, (blk + 1) * rows)):
            gr = g[r]
            hr = xhat[r]
            a = 0.0
            b = 0.0
            for j in range(D):
                gg = gr[j] * gam[j]
                a += gg * hr[j]
                b += gg
                ab[0, j] += gr[j] * hr[j]
                ab[1, j] += gr[j]
            a /= D
            b /= D
            iv = inv[r]
            out = gx[r]
            for j in range(D):
                out[j] = (gr[j] * gam[j] - b - hr[j] * a) * iv


# -- activations ----------------------------------------------------------------------------------
# Flat kernels index their slices from 0: LLVM vectorises that loop, not one indexed from the
# part's start (2x slower measured).

@njit(cache=True, nogil=True)
def relu(x, out, lo, hi):
    """out = max(x, 0) over elements lo:hi of flat arrays (NaN stays NaN, as in np.maximum)."""
    xs = x[lo:hi]
    os = out[lo:hi]
    zero = xs.dtype.type(0)
    for k in range(xs.size):
        v = xs[k]
        os[k] = zero if v < 0 else v      # one compare and select


@njit(cache=True, nogil=True)
def relu_grad(g, out, gx, lo, hi):
    """gx = g * (out > 0) over elements lo:hi of flat arrays."""
    gs = g[lo:hi]
    os = out[lo:hi]
    xs = gx[lo:hi]
    one = gs.dtype.type(1)
    zero = gs.dtype.type(0)
    for k in range(gs.size):
        xs[k] = gs[k] * (one if os[k] > 0 else zero)


# -- optimizers ----------------------------------------------------------------------------------

@njit(cache=True, nogil=True)
def adam(p, g, m, v, b1, c1, b2, c2, wd, step_size, inv_bc2_sqrt, eps, decay, flush, tiny, out, inplace,
         lo, hi):
    """One Adam(W) step over elements lo:hi of flat float32 arrays, with
    optim.Adam._direction's operations in its order: m and v in place, and p too when
    `inplace` (p * decay - step), else the step into `out`. Float32 scalars, c1 and c2 being
    1 - b1 and 1 - b2 rounded from float64 as NumPy's path has them; wd != 0 adds the L2 term
    (reading p); flush zeroes subnormal m and v."""
    zero = np.float32(0.0)
    ps = p[lo:hi]
    gs = g[lo:hi]
    ms = m[lo:hi]
    vs = v[lo:hi]
    os = out[lo:hi]
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


# -- convolution: the weight gradient of a 3x3 stride-1 convolution by Winograd F(3x3, 2x2) ------
# Each kernel is a few short loops of one or two loads and a store, so LLVM vectorises them (one
# loop over all 16 outputs of a tile measured ~15x slower: too many pointers to check for overlap).

@njit(cache=True, nogil=True, inline="always")
def _sub(a, b, out):
    for k in range(out.size):
        out[k] = a[k] - b[k]


@njit(cache=True, nogil=True, inline="always")
def _add(a, b, out):
    for k in range(out.size):
        out[k] = a[k] + b[k]


@njit(cache=True, nogil=True)
def winograd_input(xp, V, e, TY, TX):
    """V[16, m*TY*TX, C] = B^T d B for the 4x4 tile d at rows and columns 2*ty, 2*tx of each image
    of xp [m, 2TY+2, 2TX+2, C] (channels last, padded), B^T = [[1,0,-1,0], [0,1,1,0], [0,-1,1,0],
    [0,-1,0,1]]: first on whole rows into e [4, 2TX+2, C], then on columns; tiles in (image,
    ty, tx) order, the 16 values in (row, column) order."""
    m, _, Wp, C = xp.shape
    e0, e1, e2, e3 = e[0].reshape(Wp * C), e[1].reshape(Wp * C), e[2].reshape(Wp * C), e[3].reshape(Wp * C)
    for n in range(m):
        for ty in range(TY):
            r0 = xp[n, 2 * ty].reshape(Wp * C)
            r1 = xp[n, 2 * ty + 1].reshape(Wp * C)
            r2 = xp[n, 2 * ty + 2].reshape(Wp * C)
            r3 = xp[n, 2 * ty + 3].reshape(Wp * C)
            _sub(r0, r2, e0)
            _add(r1, r2, e1)
            _sub(r2, r1, e2)
            _sub(r3, r1, e3)
            base = (n * TY + ty) * TX
            for a in range(4):
                ea = e[a]
                for tx in range(TX):
                    t = base + tx
                    c1, c2 = ea[2 * tx + 1], ea[2 * tx + 2]
                    _sub(ea[2 * tx], c2, V[4 * a, t])
                    _add(c1, c2, V[4 * a + 1, t])
                    _sub(c2, c1, V[4 * a + 2, t])
                    _sub(ea[2 * tx + 3], c1, V[4 * a + 3, t])


@njit(cache=True, nogil=True)
def winograd_grad(g, U, s, TY, TX):
    """U[16, O, m*TY*TX] = G y G^T for the 2x2 tile y at rows and columns 2*ty, 2*tx of each map of
    g [m, O, 2TY, 2TX] (zero-padded to even sizes), G = [[1,0], [1/2,1/2], [1/2,-1/2], [0,1]]:
    a whole map's rows into s [4, TY, 2TX], then its columns (loops as long as the map)."""
    m, O = g.shape[:2]
    h = g.dtype.type(0.5)
    L = TY * TX
    s0, s1, s2 = s[0].reshape(2 * L), s[1].reshape(2 * L), s[2].reshape(2 * L)
    for n in range(m):
        base = n * L
        for o in range(O):
            gm = g[n, o]
            for ty in range(TY):
                r0 = gm[2 * ty]
                r1 = gm[2 * ty + 1]
                row = 2 * TX * ty
                for k in range(2 * TX):
                    s0[row + k] = r0[k]
                    s1[row + k] = h * (r0[k] + r1[k])
                    s2[row + k] = h * (r0[k] - r1[k])
                    s[3, ty, k] = r1[k]
            for a in range(4):
                sa = s[a].reshape(2 * L)
                u0 = U[4 * a, o, base:base + L]
                u1 = U[4 * a + 1, o, base:base + L]
                u2 = U[4 * a + 2, o, base:base + L]
                u3 = U[4 * a + 3, o, base:base + L]
                for t in range(L):
                    p = sa[2 * t]
                    q = sa[2 * t + 1]
                    u0[t] = p
                    u1[t] = h * (p + q)
                    u2[t] = h * (p - q)
                    u3[t] = q
