"""Attention: MultiHeadAttention, ScaledDotProductAttention and AdditiveAttention (Bahdanau).

Input conventions (the attributes decide what the inputs are; a mismatch is a shape error that
says which inputs were expected):

    MultiHeadAttention(d_model, heads, cross=false, mask='none')
      self-attention   x: f32[N, T, d_model]                      x -> MultiHeadAttention(d, h)
      cross-attention  (query [N, T, d_model], memory [N, S, m])  (q, mem) -> MultiHeadAttention(d, h, cross=true)
                       or (query, key [N, S, kdim], value [N, S, vdim]) with separate key and value
      + mask='padding' one more input LAST: keep: bool[N, S], true = attend to that key (a real
                       token), false = padding. NOTE: the opposite of PyTorch's key_padding_mask
                       (true = ignore); this is ONNX Attention's boolean-mask convention.
      + mask='lengths' one more input LAST: lengths: i32/i64[N], keys 0..lengths[n]-1 are real.
    ScaledDotProductAttention: (q [N, H, T, dk], k [N, H, S, dk], v [N, H, S, dv]) plus the same
      optional last mask input; no parameters.
    AdditiveAttention(units): (query [N, T, dq], keys [N, S, dk]) plus the same optional mask
      input -> context [N, T, dk]; the keys are also the values (Bahdanau).

`causal=true` lets query i attend keys j <= i (top-left aligned when T != S, as PyTorch's
`is_causal` and ONNX Attention without a cache). `need_weights=true` adds a second output with
the attention weights (after softmax, before dropout): [N, heads, T, S] for the dot-product
ops, [N, T, S] for AdditiveAttention. A query row with no key left to attend to (every key
padded, or causal + padding masking every earlier key) gives a zero output row and zero
weights, not NaN: ONNX Attention's rule, used by every path here.

Parameters of MultiHeadAttention follow PyTorch's nn.MultiheadAttention, with its packed
in_proj_weight [3d, d] kept as three matrices: q_weight [d, d], k_weight [d, kdim], v_weight
[d, vdim], q_bias/k_bias/v_bias [d], out_weight [d, d], out_bias [d] (no biases with
bias=false). Counts therefore match nn.MultiheadAttention, BERT and GPT-2
(4 d^2 + 4 d with biases). Initialisation as PyTorch: Xavier-uniform over the packed
projection, zero biases, out_weight U(+-1/sqrt(d)).

ONNX: at opset >= 23 the attention core lowers to the native `Attention` op (3-D inputs with
q_num_heads for MultiHeadAttention, 4-D for ScaledDotProductAttention); below 23 to MatMul /
Softmax. Findings with ONNX Runtime 1.31 (CPU), each covered by a parity test:
  * a boolean attn_mask must have the full query length in its second-last dim (ORT rejects
    [N, 1, 1, S] although the spec allows broadcasting), so the padding mask is Expand-ed to
    [N, 1, T, S];
  * `nonpad_kv_seqlen` (opset >= 24) is used for mask='lengths' without causal masking; with
    is_causal it switches the causal mask to "bottom-right, offset = length - T" (the KV-cache
    meaning), not what a padded batch means, so causal + lengths lowers the lengths to a
    boolean mask instead (so does opset 23, which has no nonpad_kv_seqlen);
  * qk_matmul_output_mode=3 gives the post-softmax weights (need_weights), but ONNX's shape
    inference types that output with a key length of 0 when the key length is symbolic, and ORT
    warns about the mismatch on every run: need_weights with a dynamic key length therefore
    lowers to the decomposition (a static key length keeps the native op);
  * fully-masked query rows come out as zeros, as the spec says.
The decomposition folds the 1/sqrt(dk) scale into the exported query projection, fills masked
scores with the most negative float (Where, not Add: no overflow), and zeroes fully-masked
rows after Softmax, so it agrees with the native op.

NumPy: one fused primitive per op with a hand-written VJP (projections with the three weight
matrices packed into one matmul, batched matmuls on [N, H, T, dk] views, in-place masked
softmax), so an attention layer is one tape entry. Without dropout, returned weights or fully-masked
rows, MultiHeadAttention takes a faster core (_core_fwd_t / _core_bwd_t: transposed scores,
normalisation folded into the value matmul).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ..autodiff import Tensor, defprim
from ..autodiff._arrays import col_sum
from ..errors import ArchError
from ..ir.graph import ParamSpec
from ..ir.types import INT_DTYPES, TensorType, is_static
from .base import Arg, Op

MASK_MODES = ("none", "padding", "lengths")


# =================================================================================================
# NumPy core (shared by the three ops)
# =================================================================================================

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


def _dropout_mask(ctx, p: float, shape, dtype):
    if not ctx.training or p == 0.0:
        return None
    m = (ctx.rng.random(shape, dtype=np.float64 if dtype == np.float64 else np.float32) >= p).astype(dtype)
    m *= 1.0 / (1.0 - p)
    return m


# =================================================================================================
# ONNX helpers
# =================================================================================================

def _dim(b, x, axis: int, keep_1d: bool = False) -> str:
    """The runtime size of dim `axis` of x: a scalar (or a 1-element 1-D tensor)."""
    idx = b.ints([axis] if keep_1d else axis, hint=f"dim{axis}")
    return b.op("Gather", [b.op("Shape", [x]), idx], axis=0)


def _range(b, n_scalar: str) -> str:
    zero = b.const(np.asarray(0, np.int64), hint="zero")
    one = b.const(np.asarray(1, np.int64), hint="one")
    return b.op("Range", [zero, n_scalar, one])


def _keep_from_lengths(b, lengths: str, dtype: str, key_src: str, key_axis: int) -> str:
    """[N, S] bool from lengths [N]: arange(S) < lengths[:, None]."""
    if dtype != "i64":
        lengths = b.op("Cast", [lengths], to=7)
    rs = b.op("Unsqueeze", [_range(b, _dim(b, key_src, key_axis)), b.ints([0], "axes")])
    return b.op("Less", [rs, b.op("Unsqueeze", [lengths, b.ints([1], "axes")])])


def _causal_allow(b, q_src: str, q_axis: int, k_src: str, k_axis: int) -> str:
    """[T, S] bool: key j <= query i."""
    rt = b.op("Unsqueeze", [_range(b, _dim(b, q_src, q_axis)), b.ints([1], "axes")])
    rs = b.op("Unsqueeze", [_range(b, _dim(b, k_src, k_axis)), b.ints([0], "axes")])
    return b.op("GreaterOrEqual", [rt, rs])


def use_native(b, need_weights: bool, key_type: TensorType) -> bool:
    """Native Attention from opset 23. ONNX's shape inference gives qk_matmul_output a last dim
    of 0 when the key length is symbolic (it reads dim_value of a dim_param) and ORT then warns on
    every run: with a dynamic key length, need_weights lowers to the decomposition instead, which
    yields the weights anyway."""
    return b.opset >= 23 and not (need_weights and not is_static(key_type.shape[-2]))


def _lower_core(b, *, native, q, k, v, q_src, k_src, layout, heads, t_axis, s_axis, causal, mask_mode,
                mask, mask_dtype, need_weights, scale=None, np_dtype=np.float32):
    """The attention core. layout '3d': q [N, T, H*dk], k/v [N, S, H*d*] (q already scaled on
    the decomposition path); '4d': [N, H, T, dk] etc. Returns (y, weights or None) with y in the
    same layout as q."""
    keep = None
    nonpad = ""
    if mask_mode == "lengths":
        if native and b.opset >= 24 and not causal:
            nonpad = mask if mask_dtype == "i64" else b.op("Cast", [mask], to=7)
        else:
            keep = _keep_from_lengths(b, mask, mask_dtype, k_src, s_axis)
    elif mask_mode == "padding":
        keep = mask
    if native:
        attn_mask = ""
        if keep is not None:    # ORT wants the query length in the mask: [N, 1, T, S]
            k4 = b.op("Unsqueeze", [keep, b.ints([1, 2], "axes")])
            shape = b.op("Concat", [b.ints([1, 1], "ones"), _dim(b, q_src, t_axis, keep_1d=True),
                                    b.ints([1], "one")], axis=0)
            attn_mask = b.op("Expand", [k4, shape])
        ins = [q, k, v, attn_mask, "", "", nonpad]
        while ins and ins[-1] == "":
            ins.pop()
        attrs = {"is_causal": 1 if causal else None}
        if layout == "3d":
            attrs.update(q_num_heads=heads, kv_num_heads=heads)
        if scale is not None:
            attrs["scale"] = float(scale)
        if need_weights:
            base = b.fresh(f"{b._prefix()}/Attention")
            y, w = b.fresh(f"{base}:0"), b.fresh(f"{base}:3")
            b.op("Attention", ins, n_out=4, outputs=[y, "", "", w], qk_matmul_output_mode=3, **attrs)
            return y, w
        return b.op("Attention", ins, **attrs), None

    # ---- decomposition: MatMul / Softmax ----
    if layout == "3d":
        qh = b.op("Transpose", [b.op("Reshape", [q, b.ints([0, 0, heads, -1])])], perm=[0, 2, 1, 3])
        kt = b.op("Transpose", [b.op("Reshape", [k, b.ints([0, 0, heads, -1])])], perm=[0, 2, 3, 1])
        vh = b.op("Transpose", [b.op("Reshape", [v, b.ints([0, 0, heads, -1])])], perm=[0, 2, 1, 3])
    else:
        qh = q if scale is None or scale == 1.0 else \
            b.op("Mul", [q, b.const(np.asarray(scale, np_dtype), hint="scale")])
        kt = b.op("Transpose", [k], perm=[0, 1, 3, 2])
        vh = v
    scores = b.op("MatMul", [qh, kt])                                        # [N, H, T, S]
    allow = None
    if causal:
        allow = _causal_allow(b, q_src, t_axis, k_src, s_axis)              # [T, S]
    if keep is not None:
        k4 = b.op("Unsqueeze", [keep, b.ints([1, 2], "axes")])              # [N, 1, 1, S]
        allow = k4 if allow is None else b.op("And", [k4, allow])
    if allow is not None:
        neg = b.const(np.asarray(np.finfo(np_dtype).min, np_dtype), hint="neg")
        scores = b.op("Where", [allow, scores, neg])
    p = b.op("Softmax", [scores], axis=-1)
    if keep is not None:     # rows with every key masked: zero (as ONNX Attention), not uniform
        p = b.op("Where", [allow, p, b.const(np.asarray(0.0, np_dtype), hint="zero_f")])
    o = b.op("MatMul", [p, vh])
    if layout == "3d":
        o = b.op("Reshape", [b.op("Transpose", [o], perm=[0, 2, 1, 3]), b.ints([0, 0, -1])])
    return o, (p if need_weights else None)


# =================================================================================================
# Ops
# =================================================================================================

class _MaskedAttention(Op):
    """Shared input-convention logic: float inputs first, then the optional mask input."""
    family = "attention"

    def _mask_type_check(self, attrs, mt: TensorType, key: TensorType, what_key: str):
        mode = attrs["mask"]
        if mode == "padding":
            if mt.dtype != "bool" or mt.rank != 2:
                raise self.fail(f"mask='padding' expects its last input to be a keep mask bool[N, S], got {mt}",
                                "true marks a real key (attend), false a padded one; for sequence lengths "
                                "use mask='lengths'" if mt.dtype in INT_DTYPES else
                                "true marks a real key (attend), false a padded one")
            _same(self, mt.shape[0], key.shape[0], f"the mask's batch dim ({mt})", f"the {what_key}'s ({key})")
            _same(self, mt.shape[1], key.shape[-2], f"the mask's length dim ({mt})",
                  f"the {what_key}'s sequence dim ({key})")
        elif mode == "lengths":
            if mt.dtype not in INT_DTYPES or mt.rank != 1:
                raise self.fail(f"mask='lengths' expects its last input to be lengths i64[N] (or i32), got {mt}",
                                "for a boolean keep mask use mask='padding'" if mt.dtype == "bool" else None)
            _same(self, mt.shape[0], key.shape[0], f"the lengths' batch dim ({mt})", f"the {what_key}'s ({key})")

    def _count_hint(self, attrs, in_types, n_float_expected):
        extra = in_types[n_float_expected:] if len(in_types) > n_float_expected else []
        if attrs["mask"] == "none" and extra:
            last = extra[-1]
            if last.dtype == "bool":
                return "for a key padding mask (true = keep) add mask='padding'"
            if last.dtype in INT_DTYPES:
                return "for sequence lengths add mask='lengths'"
        return None


def _same(op, a, b, what_a, what_b):
    if a != b and (is_static(a) == is_static(b)):
        raise op.fail(f"{what_a} does not match {what_b}: {a} vs {b}")


class MultiHeadAttention(_MaskedAttention):
    """Multi-head attention as nn.MultiheadAttention (batch first); see the module docstring for
    the inputs. `kdim`/`vdim` are the feature sizes of the key and value inputs (default: the
    memory's, d_model for self-attention); the heads split d_model."""
    name = "MultiHeadAttention"
    args = (Arg("d_model", "int"), Arg("heads", "int"), Arg("kdim", "int", None), Arg("vdim", "int", None),
            Arg("cross", "bool", False), Arg("causal", "bool", False),
            Arg("mask", "str", "none", choices=MASK_MODES), Arg("dropout", "float", 0.0),
            Arg("bias", "bool", True), Arg("need_weights", "bool", False))
    n_inputs = (1, 4)

    # -- the input convention --------------------------------------------------------------
    def layout(self, attrs, n_in: int) -> tuple[str, bool]:
        """('self' | 'memory' | 'kv', has_mask) for n_in inputs, or a clear error."""
        has_mask = attrs["mask"] != "none"
        n_float = n_in - has_mask
        mask_name = {"padding": ", keep: bool[N, S]", "lengths": ", lengths: i64[N]"}.get(attrs["mask"], "")
        if not attrs["cross"]:
            if n_float == 1:
                return "self", has_mask
            want = f"(x: [N, T, d_model]{mask_name.replace('S]', 'T]')})"
        else:
            if n_float in (2, 3):
                return ("memory" if n_float == 2 else "kv"), has_mask
            want = f"(query, memory{mask_name}) or (query, key, value{mask_name})"
        raise self.fail(f"with cross={'true' if attrs['cross'] else 'false'}, mask='{attrs['mask']}' it takes "
                        f"{want}, got {n_in} input{'s' if n_in != 1 else ''}", None)

    def infer(self, attrs, in_types):
        try:
            kind, has_mask = self.layout(attrs, len(in_types))
        except Exception as e:
            hint = self._count_hint(attrs, in_types, 1 if not attrs["cross"] else 2)
            if hint is None and not attrs["cross"] and len(in_types) >= 2 and in_types[1].is_float:
                hint = "for cross-attention on (query, memory) add cross=true"
            if hint is None and attrs["cross"] and len(in_types) == 1:
                hint = "pipe a tuple: (query, memory) -> MultiHeadAttention(..., cross=true)"
            if hint:
                e.hint = hint
            raise
        d, h = attrs["d_model"], attrs["heads"]
        if d <= 0 or h <= 0:
            raise self.fail(f"d_model and heads must be positive, got {d} and {h}")
        if d % h:
            raise self.fail(f"d_model {d} is not divisible by heads {h}",
                            f"choose heads among {', '.join(str(i) for i in range(1, d + 1) if d % i == 0)}"
                            if d <= 1024 else None)
        if not 0.0 <= attrs["dropout"] < 1.0:
            raise self.fail(f"dropout must be in [0, 1), got {attrs['dropout']}")
        floats = in_types[:len(in_types) - has_mask]
        q = floats[0]
        names = {"self": ["x"], "memory": ["query", "memory"], "kv": ["query", "key", "value"]}[kind]
        for nm, t in zip(names, floats):
            if t.rank != 3:
                raise self.fail(f"expects {nm} as [N, T, features], got {t}")
            self.expect_float(t, nm)
            if t.dtype != q.dtype:
                raise self.fail(f"{nm} has dtype {t.dtype} but the query has {q.dtype}")
            if not is_static(t.shape[-1]):
                raise self.fail(f"the feature dim of {nm} must be concrete, got {t}")
        if q.shape[-1] != d:
            raise self.fail(f"the {names[0]} has {q.shape[-1]} features but d_model is {d} ({q})",
                            f"use MultiHeadAttention({q.shape[-1]}, ...) or project the input with Linear({d})")
        for t, nm in zip(floats[1:], names[1:]):
            _same(self, t.shape[0], q.shape[0], f"the batch dim of {nm} ({t})", f"the query's ({q})")
        if kind == "kv":
            _same(self, floats[1].shape[1], floats[2].shape[1], f"the key's length ({floats[1]})",
                  f"the value's ({floats[2]})")
        key = floats[1] if kind != "self" else q
        val = floats[2] if kind == "kv" else key
        for a, t, nm in (("kdim", key, "key"), ("vdim", val, "value")):
            if attrs[a] is not None and attrs[a] != t.shape[-1]:
                raise self.fail(f"{a}={attrs[a]} but the {nm} input has {t.shape[-1]} features ({t})")
        if has_mask:
            self._mask_type_check(attrs, in_types[-1], key, "key" if kind != "memory" else "memory")
        out = [q]
        if attrs["need_weights"]:
            out.append(TensorType(q.dtype, (q.shape[0], h, q.shape[1], key.shape[1])))
        return out

    def _dims(self, attrs, in_types):
        kind, has_mask = self.layout(attrs, len(in_types))
        floats = in_types[:len(in_types) - has_mask]
        d = attrs["d_model"]
        kdim = d if kind == "self" else int(floats[1].shape[-1])
        vdim = d if kind == "self" else int(floats[-1].shape[-1])
        return d, kdim, vdim

    def params(self, attrs, in_types):
        d, kdim, vdim = self._dims(attrs, in_types)
        if kdim == d and vdim == d:     # PyTorch: xavier_uniform over the packed [3d, d] in_proj_weight
            packed = math.sqrt(6.0 / (d + 3 * d))
            p = {n: ParamSpec((d, d), "uniform", bound=packed, fan_in=d, fan_out=d)
                 for n in ("q_weight", "k_weight", "v_weight")}
        else:
            p = {n: ParamSpec((d, f), "xavier_uniform", fan_in=f, fan_out=d)
                 for n, f in (("q_weight", d), ("k_weight", kdim), ("v_weight", vdim))}
        p["out_weight"] = ParamSpec((d, d), "uniform", bound=1.0 / math.sqrt(d), fan_in=d, fan_out=d)
        if attrs["bias"]:
            for n in ("q_bias", "k_bias", "v_bias", "out_bias"):
                p[n] = ParamSpec((d,), "zeros")
        return p

    def macs(self, attrs, in_shapes, out_shapes):
        kind, has_mask = self.layout(attrs, len(in_shapes))
        floats = in_shapes[:len(in_shapes) - has_mask]
        n, t, d = floats[0]
        key = floats[1] if kind != "self" else floats[0]
        val = floats[-1] if kind != "self" else floats[0]
        s = key[1]
        proj = n * t * d * d + n * s * d * key[2] + n * s * d * val[2] + n * t * d * d
        return proj + 2 * n * t * s * d

    def explain(self, attrs, in_types, out_types):
        from .base import explain_params, explain_shape
        d, h = attrs["d_model"], attrs["heads"]
        kind, _ = self.layout(attrs, len(in_types))
        src = {"self": "x", "memory": "the memory", "kv": "key and value"}[kind]
        return [explain_shape(self, in_types, out_types),
                f"{h} heads of {d} / {h} = {d // h} features: q from the query, k and v from {src}; "
                f"softmax(q k^T / sqrt({d // h})) v per head, heads concatenated, then out_weight"
                ] + explain_params(self.params(attrs, in_types))

    # -- NumPy ------------------------------------------------------------------------------
    def forward(self, node, ctx, inputs, params):
        a = node.attrs
        kind, has_mask = self.layout(a, len(inputs))
        floats = inputs[:len(inputs) - has_mask]
        xq = floats[0]
        xk = floats[1] if kind != "self" else None
        xv = floats[2] if kind == "kv" else None
        n, t = xq.shape[0], xq.shape[1]
        s = t if xk is None else xk.shape[1]
        keep = keep_from(a["mask"], inputs[-1] if has_mask else None, s)
        block, dead = mask_arrays(keep, a["causal"], t, s)
        dmask = _dropout_mask(ctx, a["dropout"], (n, a["heads"], t, s), xq.dtype)
        g = params.get
        out = mha(xq, xk, xv, params["q_weight"], params["k_weight"], params["v_weight"], g("q_bias"),
                  g("k_bias"), g("v_bias"), params["out_weight"], g("out_bias"), heads=a["heads"],
                  block=block, dead=dead, dmask=dmask, need_weights=a["need_weights"])
        return list(out) if a["need_weights"] else [out]

    # -- ONNX -------------------------------------------------------------------------------
    def lower(self, node, b, inputs):
        a = node.attrs
        kind, has_mask = self.layout(a, len(inputs))
        d, h = a["d_model"], a["heads"]
        dh = d // h
        dt = node.inputs[0].type.np_dtype
        native = use_native(b, a["need_weights"], node.inputs[0 if kind == "self" else 1].type)
        qscale = 1.0 if native else 1.0 / math.sqrt(dh)     # folded into the query projection
        bias = a["bias"]
        W = {n: b.param_value(f"{n}_weight") for n in ("q", "k", "v")}
        B = {n: b.param_value(f"{n}_bias") for n in ("q", "k", "v")} if bias else None
        scaled = {"q": qscale, "k": 1.0, "v": 1.0}

        def project(x, which: list[str]):
            """x @ [W_which]^T (+ b): one MatMul for the packed projections, then Split."""
            wt = np.concatenate([W[n] * scaled[n] for n in which], axis=0).T.astype(dt)
            y = b.op("MatMul", [x, b.const(np.ascontiguousarray(wt), hint="_".join(which) + "_weight_T")])
            if bias:
                bb = np.concatenate([B[n] * scaled[n] for n in which]).astype(dt)
                y = b.op("Add", [y, b.const(bb, hint="_".join(which) + "_bias")])
            if len(which) == 1:
                return [y]
            return b.op("Split", [y, b.ints([d] * len(which), "split")], n_out=len(which), axis=2)

        x = inputs[0]
        if kind == "self":
            q, k, v = project(x, ["q", "k", "v"])
            k_src = x
        elif kind == "memory":
            (q,) = project(x, ["q"])
            k, v = project(inputs[1], ["k", "v"])
            k_src = inputs[1]
        else:
            (q,) = project(x, ["q"])
            (k,) = project(inputs[1], ["k"])
            (v,) = project(inputs[2], ["v"])
            k_src = inputs[1]
        mask = inputs[-1] if has_mask else None
        y, w = _lower_core(b, q=q, k=k, v=v, q_src=x, k_src=k_src, native=native, layout="3d", heads=h, t_axis=1, s_axis=1,
                           causal=a["causal"], mask_mode=a["mask"], mask=mask,
                           mask_dtype=node.inputs[-1].type.dtype if has_mask else None,
                           need_weights=a["need_weights"], np_dtype=dt)
        out = b.op("MatMul", [y, b.derived("out_weight", lambda w_: w_.T, "T")])
        if bias:
            out = b.op("Add", [out, b.param("out_bias")])
        return [out, w] if a["need_weights"] else [out]


class ScaledDotProductAttention(_MaskedAttention):
    """softmax(q k^T * scale + mask) v on (q [N, H, T, dk], k [N, H, S, dk], v [N, H, S, dv]);
    scale 0 means 1/sqrt(dk). No parameters."""
    name = "ScaledDotProductAttention"
    args = (Arg("causal", "bool", False), Arg("mask", "str", "none", choices=MASK_MODES),
            Arg("scale", "float", 0.0), Arg("dropout", "float", 0.0), Arg("need_weights", "bool", False))
    n_inputs = (3, 4)

    def infer(self, attrs, in_types):
        has_mask = attrs["mask"] != "none"
        if len(in_types) != 3 + has_mask:
            raise self.fail(f"with mask='{attrs['mask']}' it takes (q, k, v{', mask' if has_mask else ''}), "
                            f"got {len(in_types)} inputs", self._count_hint(attrs, in_types, 3))
        q, k, v = in_types[:3]
        for nm, t in (("q", q), ("k", k), ("v", v)):
            if t.rank != 4:
                raise self.fail(f"expects {nm} as [N, heads, length, dim], got {t}")
            self.expect_float(t, nm)
            if t.dtype != q.dtype:
                raise self.fail(f"{nm} has dtype {t.dtype} but q has {q.dtype}")
        for i, what in ((0, "batch"), (1, "heads")):
            for nm, t in (("k", k), ("v", v)):
                _same(self, t.shape[i], q.shape[i], f"the {what} dim of {nm} ({t})", f"q's ({q})")
        _same(self, k.shape[3], q.shape[3], f"k's feature dim ({k})", f"q's ({q})")
        _same(self, k.shape[2], v.shape[2], f"k's length ({k})", f"v's ({v})")
        if not 0.0 <= attrs["dropout"] < 1.0:
            raise self.fail(f"dropout must be in [0, 1), got {attrs['dropout']}")
        if attrs["scale"] < 0:
            raise self.fail(f"scale must be positive (0 = 1/sqrt(dk)), got {attrs['scale']}")
        if attrs["scale"] == 0 and not is_static(q.shape[3]):
            raise self.fail(f"the feature dim of q must be concrete for the default scale, got {q}")
        if has_mask:
            self._mask_type_check(attrs, in_types[3], k, "key")
        out = [q.with_shape(q.shape[:3] + (v.shape[3],))]
        if attrs["need_weights"]:
            out.append(q.with_shape(q.shape[:3] + (k.shape[2],)))
        return out

    @staticmethod
    def _scale(attrs, dk) -> float:
        return attrs["scale"] or 1.0 / math.sqrt(dk)

    def macs(self, attrs, in_shapes, out_shapes):
        n, h, t, dk = in_shapes[0]
        s, dv = in_shapes[2][2], in_shapes[2][3]
        return n * h * t * s * (dk + dv)

    def forward(self, node, ctx, inputs, params):
        a = node.attrs
        q, k, v = inputs[:3]
        n, h, t, dk = q.shape
        s = k.shape[2]
        keep = keep_from(a["mask"], inputs[3] if len(inputs) > 3 else None, s)
        block, dead = mask_arrays(keep, a["causal"], t, s)
        dmask = _dropout_mask(ctx, a["dropout"], (n, h, t, s), q.dtype)
        out = sdpa(q, k, v, scale=self._scale(a, dk), block=block, dead=dead, dmask=dmask,
                   need_weights=a["need_weights"])
        return list(out) if a["need_weights"] else [out]

    def lower(self, node, b, inputs):
        a = node.attrs
        has_mask = a["mask"] != "none"
        q, k, v = inputs[:3]
        dk = int(node.inputs[0].type.shape[3])
        y, w = _lower_core(b, q=q, k=k, v=v, q_src=q, k_src=k, layout="4d",
                           native=use_native(b, a["need_weights"], node.inputs[1].type), heads=None, t_axis=2, s_axis=2,
                           causal=a["causal"], mask_mode=a["mask"], mask=inputs[3] if has_mask else None,
                           mask_dtype=node.inputs[3].type.dtype if has_mask else None,
                           need_weights=a["need_weights"], scale=self._scale(a, dk),
                           np_dtype=node.inputs[0].type.np_dtype)
        return [y, w] if a["need_weights"] else [y]


class AdditiveAttention(_MaskedAttention):
    """Bahdanau attention: (query [N, T, dq], keys [N, S, dk]) -> context [N, T, dk].

    score[n, t, s] = v . tanh(W_q q[n, t] + W_k k[n, s] + b), weights = softmax over s,
    context = sum_s weights * k[n, s]. Parameters: query_weight [units, dq], key_weight
    [units, dk], bias [units] (one bias: a second one would be redundant), v [units].
    """
    name = "AdditiveAttention"
    args = (Arg("units", "int"), Arg("mask", "str", "none", choices=MASK_MODES),
            Arg("need_weights", "bool", False))
    n_inputs = (2, 3)

    def infer(self, attrs, in_types):
        has_mask = attrs["mask"] != "none"
        if len(in_types) != 2 + has_mask:
            raise self.fail(f"with mask='{attrs['mask']}' it takes (query, keys{', mask' if has_mask else ''}), "
                            f"got {len(in_types)} input{'s' if len(in_types) != 1 else ''}",
                            self._count_hint(attrs, in_types, 2)
                            or ("pipe a tuple: (decoder_states, encoder_states) -> AdditiveAttention(units)"
                                if len(in_types) == 1 else None))
        q, k = in_types[:2]
        for nm, t in (("query", q), ("keys", k)):
            if t.rank != 3:
                raise self.fail(f"expects {nm} as [N, length, features], got {t}")
            self.expect_float(t, nm)
            if not is_static(t.shape[-1]):
                raise self.fail(f"the feature dim of {nm} must be concrete, got {t}")
        if k.dtype != q.dtype:
            raise self.fail(f"keys have dtype {k.dtype} but the query has {q.dtype}")
        _same(self, k.shape[0], q.shape[0], f"the batch dim of the keys ({k})", f"the query's ({q})")
        if attrs["units"] <= 0:
            raise self.fail(f"units must be positive, got {attrs['units']}")
        if has_mask:
            self._mask_type_check(attrs, in_types[2], k, "keys")
        out = [q.with_shape(q.shape[:2] + (k.shape[2],))]
        if attrs["need_weights"]:
            out.append(q.with_shape(q.shape[:2] + (k.shape[1],)))
        return out

    def params(self, attrs, in_types):
        u = attrs["units"]
        dq, dk = int(in_types[0].shape[-1]), int(in_types[1].shape[-1])
        return {"query_weight": ParamSpec((u, dq), "uniform", bound=1 / math.sqrt(dq), fan_in=dq, fan_out=u),
                "key_weight": ParamSpec((u, dk), "uniform", bound=1 / math.sqrt(dk), fan_in=dk, fan_out=u),
                "bias": ParamSpec((u,), "zeros"),
                "v": ParamSpec((u,), "uniform", bound=1 / math.sqrt(u), fan_in=u, fan_out=1)}

    def macs(self, attrs, in_shapes, out_shapes):
        n, t, dq = in_shapes[0]
        s, dk = in_shapes[1][1], in_shapes[1][2]
        u = attrs["units"]
        return n * t * u * dq + n * s * u * dk + n * t * s * (u + dk)

    def forward(self, node, ctx, inputs, params):
        a = node.attrs
        q, k = inputs[:2]
        keep = keep_from(a["mask"], inputs[2] if len(inputs) > 2 else None, k.shape[1])
        block, dead = mask_arrays(keep, False, q.shape[1], k.shape[1], rank=3)
        out = additive_attention(q, k, params["query_weight"], params["key_weight"], params["bias"], params["v"],
                                 block=block, dead=dead, need_weights=a["need_weights"])
        return list(out) if a["need_weights"] else [out]

    def lower(self, node, b, inputs):
        a = node.attrs
        q, k = inputs[:2]
        dt = node.inputs[0].type.np_dtype
        qp = b.op("MatMul", [q, b.derived("query_weight", lambda w: w.T, "T")])             # [N, T, u]
        kp = b.op("Add", [b.op("MatMul", [k, b.derived("key_weight", lambda w: w.T, "T")]), b.param("bias")])
        e = b.op("Tanh", [b.op("Add", [b.op("Unsqueeze", [qp, b.ints([2], "axes")]),
                                       b.op("Unsqueeze", [kp, b.ints([1], "axes")])])])  # [N, T, S, u]
        scores = b.op("MatMul", [e, b.param("v")])                                         # [N, T, S]
        allow = None
        if a["mask"] != "none":
            m = inputs[2]
            keep = m if a["mask"] == "padding" else _keep_from_lengths(b, m, node.inputs[2].type.dtype, k, 1)
            allow = b.op("Unsqueeze", [keep, b.ints([1], "axes")])                          # [N, 1, S]
            scores = b.op("Where", [allow, scores, b.const(np.asarray(np.finfo(dt).min, dt), hint="neg")])
        p = b.op("Softmax", [scores], axis=-1)
        if allow is not None:
            p = b.op("Where", [allow, p, b.const(np.asarray(0.0, dt), hint="zero_f")])
        ctx = b.op("MatMul", [p, k])
        return [ctx, p] if a["need_weights"] else [ctx]
