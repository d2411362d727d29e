"""Attention kernels with hand-written gradients: multi-head attention (projections packed into
one matmul, batched matmuls on [N, H, T, dk] views, in-place masked softmax), scaled dot-product
attention, Bahdanau's additive attention and rotary position embeddings. Each is one fused
primitive, so an attention layer is one tape entry. Without dropout, returned weights or
fully-masked rows, the core is the faster one (_core_fwd_t / _core_bwd_t: transposed scores,
normalisation folded into the value matmul).

Beyond the plain case (`mha` keeps its original path for it), `_attend` runs the core on
grouped views: grouped-query attention (query head i reads key/value head i // (H/KV)) as
[N, KV, H/KV, T, d] against [N, KV, 1, S, d] (matmul broadcasting; no copies of k or v), with an
additive float bias (`_Bias`: relative positions, ALiBi, window masks; broadcast against
[N, H, T, S], or periodic over the batch) whose gradient is the scores' gradient summed down.
Rotary embeddings (`rope_tables`, `_rope`) rotate query and key pairs (i, i + d/2) (Hugging
Face's Llama convention; `interleaved`: pairs (2i, 2i + 1)) by position * theta^(-2i/d).

Masks: `keep_from` turns a padding mask or sequence lengths into an [N, S] keep mask;
`mask_arrays` combines it with a causal mask into `block` (True = masked out) and `dead` (query
rows with every key masked: zero output and zero weights, ONNX Attention's rule).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ..errors import ArchError
from . import ortkernels
from ._arrays import col_sum
from .tensor import Tensor, defprim, unbroadcast

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


def _core_fwd(qs, k, v, block, dead, dmask, bias=None):
    """qs (already scaled) [.., T, dk], k [.., S, dk], v [.., S, dv] -> (o, p, pd); `bias` (a
    _Bias) is added to the scores before masking."""
    scores = qs @ np.swapaxes(k, -1, -2)
    if bias is not None:
        bias.add_(scores, transposed=False)
    p = _masked_softmax_(scores, block, dead)
    pd = p * dmask if dmask is not None else p
    return pd @ v, p, pd


def _core_bwd(do, gp, qs, k, v, p, pd, dmask, want_ds=False):
    """Gradients of (qs, k, v) from d(o) and d(p) (and of the scores, with want_ds)."""
    dv = np.swapaxes(pd, -1, -2) @ do
    dp = do @ np.swapaxes(v, -1, -2)
    if dmask is not None:
        dp *= dmask
    if gp is not None:
        dp += gp
    ds = _softmax_vjp(p, dp)
    out = ds @ k, np.swapaxes(ds, -1, -2) @ qs, dv
    return out + (ds,) if want_ds else out


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


def _core_fwd_t(qs, k, v, block, out=None, bias=None):
    """Fast core for the common case (no dropout, weights not returned, no fully-masked row):
    (o, e, r, va). e = exp(scores - max) is kept transposed [.., S, T] (max over keys is then a
    cheap reduction across rows) and unnormalised; r = 1 / sum(e) [.., T, 1] comes out of the
    same batched matmul as e^T v through the column of ones appended to v in va, so the softmax
    needs no sum or divide pass over the scores (p = e^T r is never formed). o is written into
    ``out`` (any [.., T, dv] view, e.g. of the heads-merged layout) when given; `bias` (a _Bias)
    is added to the scores before masking."""
    st = k @ np.swapaxes(qs, -1, -2)                     # [.., S, T]
    if bias is not None:
        bias.add_(st, transposed=True)
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


def _core_bwd_t(do, qs, k, e, o, r, va, want_ds=False, outs=(None, None, None)):
    """Gradients of (qs, k, v) for _core_fwd_t. With p = e^T r and dp = do v^T, the softmax
    vjp's row dot sum(dp * p) is do . o per query (FlashAttention's D), so
    ds^T = e * (v (do r)^T - r D): one matmul of va = [v, 1] with [do r, -r D], then * e.
    With want_ds, ds^T ([.., S, T]) is returned too. The three gradients are written into `outs`
    where given (strided views are fine: BLAS writes them in place of a copy afterwards)."""
    dv = va.shape[-1] - 1
    dor = np.empty(do.shape[:-1] + (dv + 1,), do.dtype)
    np.multiply(do, r, out=dor[..., :dv])
    rd = np.einsum("...td,...td->...t", do, o)
    rd *= r[..., 0]
    np.negative(rd, out=dor[..., dv])
    dst = va @ np.swapaxes(dor, -1, -2)                  # [.., S, T]
    dst *= e
    out = (np.matmul(np.swapaxes(dst, -1, -2), k, out=outs[0]), np.matmul(dst, qs, out=outs[1]),
           np.matmul(e, dor[..., :dv], out=outs[2]))
    return out + (dst,) if want_ds else out


# A core of at least this many multiply-accumulates (N*H*T*S*(dk + dv)) runs in parts of the
# batch, one per BLAS thread (_core_parts): below it the hand-offs to the worker threads (17-46
# us each way here, bench/README.md) and the parts' smaller matmuls cost what the split saves.
MIN_SPLIT_MACS = 1 << 25


def _core_parts(qs, k, v, block, out):
    """_core_fwd_t on [N, H, T, d] arrays (o into `out`), in parts of the batch, one per BLAS
    thread, each with a one-thread BLAS (ortkernels.parallel), when there are several threads
    and the work pays for it: its small per-head matmuls and the softmax between them split
    cleanly by rows, where OpenBLAS's threads would meet per matmul and leave the softmax on one
    core. Returns [(rows, (o, e, r, va))], one per part, for _core_bwd_parts."""
    n, h, t, dk = qs.shape
    s, dv = k.shape[2], v.shape[3]
    parts = min(ortkernels.blas_threads(), n) if block is None or block.ndim == 2 else 1
    if parts < 2 or n * h * t * s * (dk + dv) < MIN_SPLIT_MACS or not ortkernels.enabled():
        return [(slice(None), _core_fwd_t(qs, k, v, block, out=out))]
    rows = ortkernels.row_parts(n, parts)
    done = ortkernels.parallel(parts, lambda i: _core_fwd_t(qs[rows[i]], k[rows[i]], v[rows[i]], block,
                                                            out=out[rows[i]]))
    return list(zip(rows, done))


def _core_bwd_parts(parts, do, qs, k, v, outs=None):
    """(dqs, dk, dv) of the cores of _core_parts, each part on the thread count it ran with
    (written into `outs`, three [N, H, T, d] views, when given)."""
    if len(parts) == 1:
        o, e, r, va = parts[0][1]
        return _core_bwd_t(do, qs, k, e, o, r, va, outs=outs or (None, None, None))
    grads = outs or (np.empty(qs.shape, qs.dtype), np.empty(k.shape, k.dtype), np.empty(v.shape, v.dtype))

    def part(i):
        rows, (o, e, r, va) = parts[i]
        _core_bwd_t(do[rows], qs[rows], k[rows], e, o, r, va, outs=tuple(g[rows] for g in grads))
    ortkernels.parallel(len(parts), part)
    return grads


class _Bias:
    """An additive attention bias, broadcast against the scores of `_attend` ([N, KV, G, T, S],
    G = H/KV query heads per key/value head): the bias has up to 4 dims, broadcastable to
    [N, H, T, S] ([H, T, S] relative positions, [T, S] a mask), or with `period` P its first
    dim P repeats every P rows of the batch (Swin's shifted-window masks: windows of one image
    are P consecutive rows)."""

    def __init__(self, b, n: int, h: int, kvh: int, period: int | None):
        self.shape = b.shape
        b4 = b.reshape((1,) * (4 - b.ndim) + b.shape)
        lead, hb, tb, sb = b4.shape
        heads = (kvh, h // kvh) if hb == h else (1, 1)
        if period:
            if n % period:
                raise ArchError(f"the attention bias repeats every {period} rows of the batch, but the batch "
                                f"has {n} rows (not a multiple of {period})")
            self.lead = (n // period, period)
            self.view = b4.reshape((1, period) + heads + (tb, sb))
        else:
            self.lead = (n,)
            self.view = b4.reshape((lead,) + heads + (tb, sb))

    def add_(self, scores, transposed: bool):
        """scores (a fresh, contiguous [N, KV, G, T, S], or [.., S, T] transposed) += bias."""
        sv = scores.reshape(self.lead + scores.shape[1:])
        sv += np.swapaxes(self.view, -1, -2) if transposed else self.view

    def grad(self, ds, transposed: bool):
        """The bias's gradient from the scores' (laid out as in add_)."""
        d = ds.reshape(self.lead + ds.shape[1:])
        if transposed:
            d = np.swapaxes(d, -1, -2)
        return unbroadcast(d, self.view.shape).reshape(self.shape)


def _to5(a):
    """A 4-D mask [N, 1|H, T|1, S|1] as 5-D for grouped scores (2-D causal masks broadcast as is)."""
    return a[:, :, None] if a is not None and a.ndim == 4 else a


def _attend(qs, k, v, bias=None, *, period=None, block=None, dead=None, dmask=None, need_weights=False,
            out=None):
    """The attention core on heads-first arrays: qs [N, H, T, dk] (scaled), k [N, KV, S, dk],
    v [N, KV, S, dv], H a multiple of KV; `bias` (an array, see _Bias) is added to the scores.
    `out` is a [N, KV, H/KV, T, dv] view to write o into (fast path). Returns
    (o [N, H, T, dv] or its 5-D view, p [N, H, T, S] or None, backward(do, gp) -> (dqs, dk, dv, dbias))."""
    n, h, t, dk = qs.shape
    kvh, s, dv_ = k.shape[1], k.shape[2], v.shape[3]
    g = h // kvh
    q5, k5, v5 = qs.reshape(n, kvh, g, t, dk), k[:, :, None], v[:, :, None]
    bv = _Bias(bias, n, h, kvh, period) if bias is not None else None
    block5, dead5 = _to5(block), _to5(dead)
    dm5 = dmask.reshape(n, kvh, g, t, s) if dmask is not None else None
    fast = dm5 is None and dead5 is None and not need_weights and s > 0
    if fast:
        o5, e, r, va = _core_fwd_t(q5, k5, v5, block5, out=out, bias=bv)
        p = None
    else:
        o5, p5, pd = _core_fwd(q5, k5, v5, block5, dead5, dm5, bias=bv)
        p = p5.reshape(n, h, t, s)

    def backward(do, gp):
        do5 = do.reshape(n, kvh, g, t, dv_)
        if fast:
            grads = _core_bwd_t(do5, q5, k5, e, o5, r, va, want_ds=bv is not None)
        else:
            gp5 = gp.reshape(n, kvh, g, t, s) if gp is not None else None
            grads = _core_bwd(do5, gp5, q5, k5, v5, p5, pd, dm5, want_ds=bv is not None)
        dq5, dk5, dv5 = grads[:3]
        dbias = bv.grad(grads[3], transposed=fast) if bv is not None else None
        return dq5.reshape(n, h, t, dk), dk5.sum(axis=2), dv5.sum(axis=2), dbias

    return (o5 if out is not None else o5.reshape(n, h, t, dv_)), p, backward


@functools.lru_cache(maxsize=32)
def rope_tables(length: int, dim: int, theta: float, dtype) -> tuple:
    """(cos, sin) [length, dim/2] of the rotary angles position * theta^(-2i/dim) (read-only)."""
    inv = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    ang = np.arange(length, dtype=np.float64)[:, None] * inv[None, :]
    out = np.cos(ang).astype(dtype), np.sin(ang).astype(dtype)
    for a in out:
        a.setflags(write=False)
    return out


def _rope(x, cos, sin, interleaved=False):
    """x [.., L, d] rotated by the first L rows of the tables: pairs (i, i + d/2) (or (2i, 2i + 1)
    interleaved) turn by their angle. The transpose is the rotation by -angle (sin negated)."""
    n = x.shape[-2]
    c, s_ = cos[:n], sin[:n]
    if interleaved:
        x1, x2 = x[..., 0::2], x[..., 1::2]
    else:
        h = x.shape[-1] // 2
        x1, x2 = x[..., :h], x[..., h:]
    out = np.empty(x.shape, x.dtype)
    o1, o2 = (out[..., 0::2], out[..., 1::2]) if interleaved else (out[..., :h], out[..., h:])
    np.multiply(x1, c, out=o1)
    o1 -= x2 * s_
    np.multiply(x2, c, out=o2)
    o2 += x1 * s_
    return out


@defprim
def rotary(x, *, theta=10000.0, interleaved=False):
    """Rotary position embedding of x [.., T, d] (positions 0..T-1 along the second-last dim)."""
    cos, sin = rope_tables(x.shape[-2], x.shape[-1], float(theta), x.dtype)
    return _rope(x, cos, sin, interleaved), lambda g: (_rope(g, cos, -sin, interleaved),)


def _heads(y, n, t, h, dh):
    """[N*T, H*dh] -> [N, H, T, dh] (a view)."""
    return y.reshape(n, t, h, dh).transpose(0, 2, 1, 3)


def _unheads(o):
    """[N, H, T, dh] -> [N*T, H*dh] (a copy)."""
    n, h, t, dh = o.shape
    return o.transpose(0, 2, 1, 3).reshape(n * t, h * dh)


@defprim
def mha(xq, xk, xv, wq, wk, wv, bq, bk, bv, wo, bo, bias=None, *, heads, kv_heads=None, scale=None, rope=None,
        period=None, block=None, dead=None, dmask=None, need_weights=False):
    """Fused multi-head attention on [N, T, d] queries.

    xk None: self-attention on xq; xv None (xk given): keys and values both from xk (memory);
    biases may be None. kv_heads (default heads) key/value heads of d/heads features each
    (grouped-query; 1: multi-query); scale (default 1/sqrt(d/heads)) multiplies the scores;
    rope: (cos, sin) tables (rope_tables) to rotate queries and keys by position; bias: an
    additive float bias of the scores (see _Bias). Returns y [N, T, d] (and the weights
    [N, H, T, S] with need_weights).
    """
    n, t, d = xq.shape
    h = heads
    kvh = kv_heads or h
    dh = d // h
    dkv = kvh * dh
    scale = 1.0 / math.sqrt(dh) if scale is None else scale
    xq2 = xq.reshape(n * t, d)
    has_b = bq is not None
    packed = xk is None and kvh == h                      # self-attention, one [3d, d] projection
    if xk is None:
        s = t
        w_all = np.concatenate([wq * scale, wk, wv], axis=0)          # [d + 2 dkv, d]
        y = xq2 @ w_all.T
        if has_b:
            y += np.concatenate([bq * scale, bk, bv])
        if packed:
            y5 = y.reshape(n, t, 3, h, dh)
            qs, k, v = (y5[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
        else:
            qs, k, v = _heads(y[:, :d], n, t, h, dh), _heads(y[:, d:d + dkv], n, t, kvh, dh), \
                _heads(y[:, d + dkv:], n, t, kvh, dh)
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
            k, v = _heads(ykv[:, :dkv], n, s, kvh, dh), _heads(ykv[:, dkv:], n, s, kvh, dh)
        else:
            xv2 = xv.reshape(n * s, xv.shape[-1])
            yk = xk2 @ wk.T
            yv = xv2 @ wv.T
            if has_b:
                yk += bk
                yv += bv
            k, v = _heads(yk, n, s, kvh, dh), _heads(yv, n, s, kvh, dh)
    if rope is not None:
        qs, k = _rope(qs, *rope), _rope(k, *rope)
    plain = kvh == h and bias is None                      # the original core, on [N, H, T, dh]
    fast = dmask is None and dead is None and not need_weights and s > 0
    o2 = np.empty((n, t, h, dh), xq.dtype) if fast else None
    if plain and fast:                                    # o straight into the merged-heads layout
        parts = _core_parts(qs, k, v, block, o2.transpose(0, 2, 1, 3))
        o2 = o2.reshape(n * t, d)
    elif plain:
        o, p, pd = _core_fwd(qs, k, v, block, dead, dmask)
        o2 = _unheads(o)
    else:
        out5 = o2.reshape(n, t, kvh, h // kvh, dh).transpose(0, 2, 3, 1, 4) if fast else None
        o, p, core_back = _attend(qs, k, v, bias, period=period, block=block, dead=dead, dmask=dmask,
                                  need_weights=need_weights, out=out5)
        o2 = o2.reshape(n * t, d) if fast else _unheads(o)
    out = (o2 @ wo.T).reshape(n, t, d)
    if bo is not None:
        out += bo

    def vjp(g):
        g, gp = g if need_weights else (g, None)
        g2 = g.reshape(n * t, d)
        dwo = g2.T @ o2
        dbo = col_sum(g2) if bo is not None else None
        do = _heads(g2 @ wo, n, t, h, dh)
        dbias = None
        # the packed projection's gradient dy [N, T, 3, H, dh]; the fast core writes its three
        # products straight into its per-head views, the other paths' results are copied there
        dy = np.empty((n, t, 3, h, dh), dtype=xq.dtype) if packed else None
        dy_heads = tuple(dy[:, :, i].transpose(0, 2, 1, 3) for i in range(3)) if packed else None
        if not plain:
            dqs, dk, dv, dbias = core_back(do, gp)
        elif fast:
            dqs, dk, dv = _core_bwd_parts(parts, do, qs, k, v, outs=dy_heads)
        else:
            dqs, dk, dv = _core_bwd(do, gp, qs, k, v, p, pd, dmask)
        if rope is not None:
            cos, sin = rope
            dqs, dk = _rope(dqs, cos, -sin), _rope(dk, cos, -sin)
        if packed:
            for view, gi in zip(dy_heads, (dqs, dk, dv)):
                if gi is not view:
                    view[...] = gi
            dy2 = dy.reshape(n * t, 3 * d)
        elif xk is None:
            dy2 = np.concatenate([_unheads(dqs), _unheads(dk), _unheads(dv)], axis=1)
        if xk is None:
            dx = (dy2 @ w_all).reshape(xq.shape)
            dw = dy2.T @ xq2
            dwq, dwk, dwv = dw[:d] * scale, dw[d:d + dkv], dw[d + dkv:]
            db = col_sum(dy2) if has_b else None
            dbq, dbk, dbv = (db[:d] * scale, db[d:d + dkv], db[d + dkv:]) if has_b else (None, None, None)
            return dx, None, None, dwq, dwk, dwv, dbq, dbk, dbv, dwo, dbo, dbias
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
            return dxq, dxk, None, dwq, dwk, dwv, dbq, dbk, dbv, dwo, dbo, dbias
        dwv = dyv.T @ xv2
        return (dxq, (dyk @ wk).reshape(xk.shape), (dyv @ wv).reshape(xv.shape),
                dwq, dwk, dwv, dbq, dbk, dbv, dwo, dbo, dbias)

    return ((out, p) if need_weights else out), vjp


@defprim
def sdpa(q, k, v, bias=None, *, scale, period=None, block=None, dead=None, dmask=None, need_weights=False):
    """Scaled dot-product attention on q [N, H, T, dk], k [N, KV, S, dk], v [N, KV, S, dv] (KV
    divides H: grouped-query), with an optional additive bias of the scores (see _Bias)."""
    qs = q * scale
    o, p, back = _attend(qs, k, v, bias, period=period, block=block, dead=dead, dmask=dmask,
                         need_weights=need_weights)

    def vjp(g):
        g, gp = g if need_weights else (g, None)
        dqs, dk, dv, dbias = back(g, gp)
        dqs *= scale
        return dqs, dk, dv, dbias

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
