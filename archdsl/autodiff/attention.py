"""Attention kernels with hand-written gradients: multi-head attention (projections packed into
one matmul, batched matmuls on [N, H, T, dk] views, in-place masked softmax), scaled dot-product
attention and Bahdanau's additive attention. Each is one fused primitive, so an attention layer
is one tape entry. Without dropout, returned weights or fully-masked rows, `mha` takes a faster
core (_core_fwd_t / _core_bwd_t: transposed scores, normalisation folded into the value matmul).

Masks: `keep_from` turns a padding mask or sequence lengths into an [N, S] keep mask;
`mask_arrays` combines it with a causal mask into `block` (True = masked out) and `dead` (query
rows with every key masked: zero output and zero weights, ONNX Attention's rule).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ..errors import ArchError
from ._arrays import col_sum
from .tensor import Tensor, defprim

MASK_MODES = ("none", "padding", "lengths")


@functools.lru_cache(maxsize=64)
def _causal_block(t: int, s: int) -> np.ndarray:
    """[T, S] bool, True where query i may NOT attend key j (j > i)."""
    b = np.triu(np.ones((t, s), dtype=bool), 1)
    b.setflags(write=False)
    return b


def keep_from(mask_mode: str, m, s: int):
    """The [N, S] keep mask (True = attend) from a mask input, or None."""
    if mask_mode == "none" or m is None:
        return None
    a = m.data if isinstance(m, Tensor) else np.asarray(m)
    if mask_mode == "lengths":
        a = a.astype(np.int64).reshape(-1)
        if a.size and (a.min() < 0 or a.max() > s):
            raise ArchError(f"sequence lengths must be in 0..{s} (the key length), got {a.tolist()}")
        return np.arange(s)[None, :] < a[:, None]
    return a.astype(bool, copy=False)


def mask_arrays(keep, causal: bool, t: int, s: int, rank: int = 4):
    """(block, dead): block broadcasts against scores [N, (H,) T, S], True = masked out;
    dead marks query rows with every key masked (None when there are none)."""
    block = _causal_block(t, s) if causal else None
    dead = None
    if keep is not None:
        kb = ~keep.reshape(keep.shape[0], *([1] * (rank - 2)), s)
        block = kb if block is None else (kb | block)
        dead = block.all(axis=-1, keepdims=True)
        if not dead.any():
            dead = None
    return block, dead


def _masked_softmax_(scores, block, dead):
    """Softmax over the last axis, in place; masked scores get exactly zero weight."""
    if block is not None:
        np.copyto(scores, np.finfo(scores.dtype).min, where=block)
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    if dead is not None:
        scores *= ~dead
    return scores


def _softmax_vjp(p, dp):
    """d(scores) from d(p), for p = softmax(scores); modifies dp (a fresh array)."""
    dp -= np.einsum("...s,...s->...", dp, p)[..., None]      # row dot without a temporary
    dp *= p
    return dp


def _core_fwd(qs, k, v, block, dead, dmask):
    """qs (already scaled) [.., T, dk], k [.., S, dk], v [.., S, dv] -> (o, p, pd)."""
    p = _masked_softmax_(qs @ np.swapaxes(k, -1, -2), block, dead)
    pd = p * dmask if dmask is not None else p
    return pd @ v, p, pd


def _core_bwd(do, gp, qs, k, v, p, pd, dmask):
    """Gradients of (qs, k, v) from d(o) and d(p)."""
    dv = np.swapaxes(pd, -1, -2) @ do
    dp = do @ np.swapaxes(v, -1, -2)
    if dmask is not None:
        dp *= dmask
    if gp is not None:
        dp += gp
    ds = _softmax_vjp(p, dp)
    return ds @ k, np.swapaxes(ds, -1, -2) @ qs, dv


@functools.lru_cache(maxsize=64)
def _causal_add_t(t: int, s: int, dtype) -> np.ndarray:
    """[S * T] flat additive mask for transposed scores [S, T]: -inf where key j > query i.
    Flat so that adding it to [B, S * T] runs one long inner loop (a broadcast [S, T] mask, or
    copyto with where=, is several times slower)."""
    a = np.where(_causal_block(t, s).T, -np.inf, 0.0).astype(dtype).reshape(-1)
    a.setflags(write=False)
    return a


def _max_over_keys(st):
    """max over axis -2 of [.., S, T] scores, keepdims, as a halving tree of elementwise maxima
    on long contiguous runs (np.max over the 64-long rows of the usual layout is ~3x slower)."""
    n = st.shape[-2]
    h = n // 2
    if h == 0:
        return st.copy()
    m = np.maximum(st[..., :h, :], st[..., h:2 * h, :])
    if n % 2:
        np.maximum(m[..., :1, :], st[..., 2 * h:, :], out=m[..., :1, :])
    while m.shape[-2] > 1:
        n = m.shape[-2]
        h = n // 2
        np.maximum(m[..., :h, :], m[..., h:2 * h, :], out=m[..., :h, :])
        if n % 2:
            np.maximum(m[..., :1, :], m[..., 2 * h:n, :], out=m[..., :1, :])
        m = m[..., :h, :]
    return m


def _core_fwd_t(qs, k, v, block, out=None):
    """Fast core for the common case (no dropout, weights not returned, no fully-masked row):
    (o, e, r, va). e = exp(scores - max) is kept transposed [.., S, T] (max over keys is then a
    cheap reduction across rows) and unnormalised; r = 1 / sum(e) [.., T, 1] comes out of the
    same batched matmul as e^T v through the column of ones appended to v in va, so the softmax
    needs no sum or divide pass over the scores (p = e^T r is never formed). o is written into
    ``out`` (any [.., T, dv] view, e.g. of the heads-merged layout) when given."""
    st = k @ np.swapaxes(qs, -1, -2)                     # [.., S, T]
    if block is not None:
        s_, t_ = st.shape[-2], st.shape[-1]
        if block.ndim == 2 and st.flags.c_contiguous:     # causal only
            flat = st.reshape(-1, s_ * t_)
            np.add(flat, _causal_add_t(t_, s_, st.dtype), out=flat)
        else:
            np.copyto(st, np.finfo(st.dtype).min, where=np.swapaxes(block, -1, -2))
    st -= _max_over_keys(st)
    np.exp(st, out=st)
    dv = v.shape[-1]
    va = np.empty(v.shape[:-1] + (dv + 1,), v.dtype)
    va[..., :dv] = v
    va[..., dv] = 1.0
    oa = np.swapaxes(st, -1, -2) @ va                    # [.., T, dv + 1]
    den = oa[..., dv:]
    o = np.divide(oa[..., :dv], den, out=out)
    return o, st, np.divide(1.0, den), va


def _core_bwd_t(do, qs, k, e, o, r, va):
    """Gradients of (qs, k, v) for _core_fwd_t. With p = e^T r and dp = do v^T, the softmax
    vjp's row dot sum(dp * p) is do . o per query (FlashAttention's D), so
    ds^T = e * (v (do r)^T - r D): one matmul of va = [v, 1] with [do r, -r D], then * e."""
    dv = va.shape[-1] - 1
    dor = np.empty(do.shape[:-1] + (dv + 1,), do.dtype)
    np.multiply(do, r, out=dor[..., :dv])
    rd = np.einsum("...td,...td->...t", do, o)
    rd *= r[..., 0]
    np.negative(rd, out=dor[..., dv])
    dst = va @ np.swapaxes(dor, -1, -2)                  # [.., S, T]
    dst *= e
    return np.swapaxes(dst, -1, -2) @ k, dst @ qs, e @ dor[..., :dv]


def _heads(y, n, t, h, dh):
    """[N*T, H*dh] -> [N, H, T, dh] (a view)."""
    return y.reshape(n, t, h, dh).transpose(0, 2, 1, 3)


def _unheads(o):
    """[N, H, T, dh] -> [N*T, H*dh] (a copy)."""
    n, h, t, dh = o.shape
    return o.transpose(0, 2, 1, 3).reshape(n * t, h * dh)


@defprim
def mha(xq, xk, xv, wq, wk, wv, bq, bk, bv, wo, bo, *, heads, block=None, dead=None, dmask=None,
        need_weights=False):
    """Fused multi-head attention on [N, T, d] queries.

    xk None: self-attention on xq; xv None (xk given): keys and values both from xk (memory);
    biases may be None. Returns y [N, T, d] (and the weights [N, H, T, S] with need_weights).
    """
    n, t, d = xq.shape
    h = heads
    dh = d // h
    scale = 1.0 / math.sqrt(dh)
    xq2 = xq.reshape(n * t, d)
    has_b = bq is not None
    if xk is None:                                        # self: one packed projection
        s = t
        w_all = np.concatenate([wq * scale, wk, wv], axis=0)          # [3d, d]
        y = xq2 @ w_all.T
        if has_b:
            y += np.concatenate([bq * scale, bk, bv])
        y5 = y.reshape(n, t, 3, h, dh)
        qs, k, v = (y5[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    else:
        s = xk.shape[1]
        yq = xq2 @ (wq * scale).T
        if has_b:
            yq += bq * scale
        qs = _heads(yq, n, t, h, dh)
        xk2 = xk.reshape(n * s, xk.shape[-1])
        if xv is None:                                    # memory: packed key/value projection
            w_kv = np.concatenate([wk, wv], axis=0)
            ykv = xk2 @ w_kv.T
            if has_b:
                ykv += np.concatenate([bk, bv])
            y5 = ykv.reshape(n, s, 2, h, dh)
            k, v = (y5[:, :, i].transpose(0, 2, 1, 3) for i in range(2))
        else:
            xv2 = xv.reshape(n * s, xv.shape[-1])
            yk = xk2 @ wk.T
            yv = xv2 @ wv.T
            if has_b:
                yk += bk
                yv += bv
            k, v = _heads(yk, n, s, h, dh), _heads(yv, n, s, h, dh)
    fast = dmask is None and dead is None and not need_weights and s > 0
    if fast:                                              # o straight into the merged-heads layout
        o2 = np.empty((n, t, h, dh), xq.dtype)
        o, e, r, va = _core_fwd_t(qs, k, v, block, out=o2.transpose(0, 2, 1, 3))
        o2 = o2.reshape(n * t, d)
    else:
        o, p, pd = _core_fwd(qs, k, v, block, dead, dmask)
        o2 = _unheads(o)
    out = (o2 @ wo.T).reshape(n, t, d)
    if bo is not None:
        out += bo

    def vjp(g):
        g, gp = g if need_weights else (g, None)
        g2 = g.reshape(n * t, d)
        dwo = g2.T @ o2
        dbo = col_sum(g2) if bo is not None else None
        do = _heads(g2 @ wo, n, t, h, dh)
        if fast:
            dqs, dk, dv = _core_bwd_t(do, qs, k, e, o, r, va)
        else:
            dqs, dk, dv = _core_bwd(do, gp, qs, k, v, p, pd, dmask)
        if xk is None:
            dy = np.empty((n, t, 3, h, dh), dtype=xq.dtype)
            for i, gi in enumerate((dqs, dk, dv)):
                dy[:, :, i] = gi.transpose(0, 2, 1, 3)
            dy2 = dy.reshape(n * t, 3 * d)
            dx = (dy2 @ w_all).reshape(xq.shape)
            dw = dy2.T @ xq2
            dwq, dwk, dwv = dw[:d] * scale, dw[d:2 * d], dw[2 * d:]
            db = col_sum(dy2) if has_b else None
            dbq, dbk, dbv = (db[:d] * scale, db[d:2 * d], db[2 * d:]) if has_b else (None, None, None)
            return dx, None, None, dwq, dwk, dwv, dbq, dbk, dbv, dwo, dbo
        dyq = _unheads(dqs)
        dxq = (dyq @ (wq * scale)).reshape(xq.shape)
        dwq = (dyq.T @ xq2) * scale
        dbq = dyq.sum(axis=0) * scale if has_b else None
        dyk, dyv = _unheads(dk), _unheads(dv)
        dwk = dyk.T @ xk2
        dbk = dyk.sum(axis=0) if has_b else None
        dbv = dyv.sum(axis=0) if has_b else None
        if xv is None:
            dxk = (dyk @ wk + dyv @ wv).reshape(xk.shape)
            dwv = dyv.T @ xk2
            return dxq, dxk, None, dwq, dwk, dwv, dbq, dbk, dbv, dwo, dbo
        dwv = dyv.T @ xv2
        return (dxq, (dyk @ wk).reshape(xk.shape), (dyv @ wv).reshape(xv.shape),
                dwq, dwk, dwv, dbq, dbk, dbv, dwo, dbo)

    return ((out, p) if need_weights else out), vjp


@defprim
def sdpa(q, k, v, *, scale, block=None, dead=None, dmask=None, need_weights=False):
    """Scaled dot-product attention on [N, H, T, dk] / [N, H, S, dk] / [N, H, S, dv]."""
    qs = q * scale
    o, p, pd = _core_fwd(qs, k, v, block, dead, dmask)

    def vjp(g):
        g, gp = g if need_weights else (g, None)
        dqs, dk, dv = _core_bwd(g, gp, qs, k, v, p, pd, dmask)
        dqs *= scale
        return dqs, dk, dv

    return ((o, p) if need_weights else o), vjp


@defprim
def additive_attention(q, k, wq, wk, b, v, *, block=None, dead=None, need_weights=False):
    """Bahdanau attention: score[n,t,s] = v . tanh(Wq q[n,t] + Wk k[n,s] + b); context = p @ k."""
    n, t, dq = q.shape
    s, dk = k.shape[1], k.shape[2]
    u = v.shape[0]
    q2 = q.reshape(n * t, dq)
    k2 = k.reshape(n * s, dk)
    qp = (q2 @ wq.T).reshape(n, t, 1, u)
    kp = (k2 @ wk.T + b).reshape(n, 1, s, u)
    e = np.tanh(qp + kp)                                    # [N, T, S, u]
    p = _masked_softmax_(e @ v, block, dead)                # [N, T, S]
    ctx = p @ k

    def vjp(g):
        g, gp = g if need_weights else (g, None)
        dp = g @ np.swapaxes(k, -1, -2)
        if gp is not None:
            dp += gp
        ds = _softmax_vjp(p, dp)                            # [N, T, S]
        dv = ds.reshape(-1) @ e.reshape(-1, u)
        dpre = ds[..., None] * v
        dpre *= 1.0 - e * e                                 # [N, T, S, u]
        dqp = dpre.sum(axis=2).reshape(n * t, u)
        dkp = dpre.sum(axis=1).reshape(n * s, u)
        dq_ = (dqp @ wq).reshape(q.shape)
        dk_ = np.swapaxes(p, -1, -2) @ g + (dkp @ wk).reshape(k.shape)
        return dq_, dk_, dqp.T @ q2, dkp.T @ k2, dkp.sum(axis=0), dv

    return ((ctx, p) if need_weights else ctx), vjp



def dropout_mask(rng, p: float, shape, dtype):
    """The inverted-dropout multiplier for attention weights (0 or 1/(1-p)), or None at p = 0."""
    if p == 0.0:
        return None
    m = (rng.random(shape, dtype=np.float64 if dtype == np.float64 else np.float32) >= p).astype(dtype)
    m *= 1.0 / (1.0 - p)
    return m
