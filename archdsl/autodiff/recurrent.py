"""Fused recurrent layers: one primitive per layer and direction, with hand-written BPTT.

    y, h_n, c_n = lstm_layer(x, w_ih, w_hh, b_ih, b_hh, h0, c0, p_i, p_f, p_o, reverse=False, lengths=None)
    y, h_n      = gru_layer(x, w_ih, w_hh, b_ih, b_hh, h0, reverse=False, linear_before_reset=True, lengths=None)
    y, h_n      = rnn_layer(x, w_ih, w_hh, b_ih, b_hh, h0, reverse=False, nonlinearity="tanh", lengths=None)

x is batch-first [N, T, C]; y is [N, T, H] in the original time order (also with
``reverse=True``, which runs the recurrence from t = T-1 down to 0); h_n / c_n [N, H] are the
states after the last processed step; h0 / c0 [N, H] (None = zeros). Weights are in PyTorch's
layout and gate order: w_ih [G*H, C], w_hh [G*H, H], b_ih / b_hh [G*H] (None = no bias), with
gates (i, f, g, o) for the LSTM, (r, z, n) for the GRU. Peepholes p_i, p_f, p_o [H] (None = none)
follow the lecture equations:

    i = sigma(W_i x + R_i h + p_i * c_prev + b_i)      g = tanh(W_g x + R_g h + b_g)
    f = sigma(W_f x + R_f h + p_f * c_prev + b_f)      c = f * c_prev + i * g
    o = sigma(W_o x + R_o h + p_o * c + b_o)           h = o * tanh(c)

GRU (PyTorch = ONNX linear_before_reset=1; ``linear_before_reset=False`` is ONNX's default):

    r = sigma(W_r x + b_ir + R_r h + b_hr)      z = sigma(W_z x + b_iz + R_z h + b_hz)
    n = tanh(W_n x + b_in + r * (R_n h + b_hn))          [linear_before_reset]
    n = tanh(W_n x + b_in + R_n (r * h) + b_hn)          [not linear_before_reset]
    h = (1 - z) * n + z * h_prev

Speed (DESIGN.md: "recurrent cells with the gates in one matmul"): the input projection of
all T steps is ONE matmul before the loop; each step does one recurrent matmul for all gates
and a handful of in-place ufuncs on preallocated time-major [T, N, ...] buffers, so every
step works on contiguous [N, ...] slices (measured 2-3x faster per ufunc than the strided
slices of batch-first buffers); x and y are transposed once per layer. Sigmoids are tanh's in
disguise, sigma(z) = 0.5 * tanh(z / 2) + 0.5, so the rows of the sigmoid gates are pre-scaled
by 1/2 and one tanh call covers every gate of a step. Inside, the LSTM keeps its gates in the order
(o, i, f, g) so the three sigmoid gates are contiguous, and so are the three whose gradient is
dc times a factor; parameters and gradients stay in PyTorch's order. The backward precomputes every factor that does not depend on the incoming
gradient in bulk (vectorised over T) so the per-step loop is ~8-10 ufuncs and one matmul, and
the weight gradients are single [G*H, N*T] x [N*T, C|H] matmuls after the loop.
Everything runs in the dtype of x (float64 in gradient checks).

Padded batches (``lengths``: int [N], each in 1..T; rows right-padded), ONNX's sequence_lens and
PyTorch's packed sequences: row n runs steps 0..len-1 only (``reverse``: len-1 down to 0), y is 0
from step len on, and h_n / c_n are the states after the row's last valid step. Each row is
mapped into processing order so that its valid steps are a PREFIX (the identity forwards; for
``reverse`` a per-row reversal of the first len steps, an involution, so the same gather maps
back). A prefix needs no masking inside the loop: later steps never influence earlier ones, so
the loop runs unchanged over all T steps (the padded inputs zeroed first, so garbage or NaN
padding cannot leak into anything), h_n / c_n are gathered at step len-1, y is zeroed past len;
the backward injects the gradients of h_n / c_n at step len-1 instead of T-1 and drops y's
gradient past len, so every padded step gets an exactly zero gradient. Without lengths none of
this runs: the fast path is untouched.

The LSTM goes further (bench/bench_lstm.py; 1.4x faster than the scheme above): each step is
ONE batched matmul [x_t | 1 | h_{t-1}] @ W4 (input projection, bias and recurrence of all four
gates, written straight into the step's gates, so there is no projection before the loop and no
add per step); the gates live gate-major [T, 4, N, H], so every per-step ufunc and the bulk
backward factors run on contiguous [N, H] blocks; h_t is written into the next step's input
row, and one matmul over those rows gives every weight and bias gradient.
"""
from __future__ import annotations

import numpy as np

from . import ortkernels
from ._arrays import contiguous, row_sum
from .tensor import defprim

__all__ = ["lstm_layer", "gru_layer", "rnn_layer"]


def _to_tm(a, reverse):
    """Batch-first [N, T, ...] -> time-major [T, N, ...] in processing order (a contiguous copy)."""
    a = a.transpose(1, 0, 2)
    return contiguous(a[::-1] if reverse else a)


def _from_tm(a, reverse):
    """Time-major [T, N, ...] in processing order -> batch-first [N, T, ...], original order."""
    a = a.transpose(1, 0, 2)
    return contiguous(a[:, ::-1] if reverse else a)


class _Padded:
    """Right-padded rows in processing order (see the module docstring): `to_tm` / `from_tm`
    replace _to_tm / _from_tm, zeroing every step at or past a row's length."""

    def __init__(self, lengths, N, T, reverse):
        L = np.asarray(lengths).astype(np.int64, copy=False).reshape(-1)
        if L.shape != (N,) or (N and (L.min() < 1 or L.max() > T)):
            raise ValueError(f"lengths must be {N} values in 1..{T}, got {L.tolist()}")
        t = np.arange(T)[:, None]
        self.pad = t >= L                                 # [T, N], the same in both orders
        self.rows = np.arange(N)
        self.last = L - 1                                 # processing step of h_n / c_n
        # reverse: processing step t of row n reads time len-1-t (t < len); padding stays put
        self.src = np.where(self.pad, t, L - 1 - t) if reverse else None

    def perm(self, a_tm):
        """[T, N, ...] in one order -> a fresh copy in the other (src is an involution), padded
        steps zeroed."""
        a = a_tm[self.src, self.rows] if self.src is not None else np.array(a_tm)
        a[self.pad] = 0.0
        return a

    def to_tm(self, a):
        return self.perm(a.transpose(1, 0, 2))

    def from_tm(self, a):
        return contiguous(self.perm(a).transpose(1, 0, 2))

    def final(self, S):
        """The state after each row's last valid step, from per-step states S [T, N, H]."""
        return S[self.last, self.rows]

    def inject(self, dY, g):
        """Add the gradient g [N, H] of a final state at each row's last valid step of dY."""
        dY[self.last, self.rows] += g


def _state(s, N, H, dt):
    return np.zeros((N, H), dt) if s is None else np.asarray(s, dt)


def _grads_in(gy, ghn, pad, reverse, dt):
    """(dY time-major in processing order, the dh carried into the last step) for the backward
    loop; with lengths, h_n's gradient enters at each row's last valid step instead."""
    if pad is None:
        return _to_tm(gy, reverse), np.array(ghn, dt)
    dY = pad.to_tm(np.asarray(gy, dt))
    pad.inject(dY, ghn)
    return dY, np.zeros_like(ghn, dt)


def _prev(s0, S):
    """States before each processed step, [s0, S[0], ..., S[T-2]], time-major [T, N, H]."""
    out = np.empty_like(S)
    if len(S):
        out[0] = s0
        out[1:] = S[:-1]
    return out


# =============================================================================
# LSTM
# =============================================================================

def _lstm_perm(H):
    """Internal gate order (o, i, f, g) as row indices into PyTorch's (i, f, g, o): the sigmoid
    gates o, i, f are contiguous (one affine pass after the shared tanh), and so are the gates
    i, f, g whose gradients are dc times a factor (one multiply per backward step)."""
    return np.r_[3 * H:4 * H, 0:2 * H, 2 * H:3 * H]


_CHUNK = 8      # backward steps whose factors are formed together (G, A chunks stay in L2)
_FOLD_C = 128   # inputs narrower than this are folded into each step's matmul (see _lstm_cols)
_COLS_MIN_H = 256   # hidden sizes from which the LSTM runs transposed (see lstm_layer)


def _from_tm_t(a, reverse, pad):
    """[T, F, N] (features by batch) in processing order -> batch-first [N, T, F]."""
    a = a.transpose(0, 2, 1)
    return _from_tm(a, reverse) if pad is None else pad.from_tm(a)


def _bptt(G, TC, CC, dY, dZ, step_matmul, dh, dc_next, DC, peeps, dy_transposed):
    """The LSTM's backward recurrence, for either layout: gates G [T, 4, a, b] (o, i, f, g),
    tanh(c) TC and states CC [T(+1), a, b]; writes the pre-activation gradients into dZ
    [T, 4, a, b] (views) and leaves dh, dc_next (updated in place) as the gradients of h0, c0.
    step_matmul(t) sets dh from dZ[t]; dY [T, N, H] (added transposed when dy_transposed), DC
    (None, or the final-state gradients per step), peeps (None or (p_i, p_f, p_o) shaped to
    broadcast over [a, b]).

    dz_o = dh * A_o, dz_{i,f,g} = dc * A_{i,f,g}, dc = dh * B + dc_next, with the factors
      A_o = o(1-o) tanh(c), A_i = i(1-i) g, A_f = f(1-f) c_prev, A_g = (1-g^2) i,
      B = o (1 - tanh(c)^2).
    They do not depend on the incoming gradient, so they are formed in bulk, but chunk by chunk
    of _CHUNK steps just before the loop needs them: each pass then works on data in L2 instead
    of streaming the whole [T, 4, a, b] arrays from memory (~2x faster)."""
    T = G.shape[0]
    shape, dt = dh.shape, dh.dtype
    mul, sub = np.multiply, np.subtract
    CH = min(_CHUNK, T) or 1
    Ac = np.empty((CH, 4) + shape, dt)
    Bc = np.empty((CH,) + shape, dt)
    dc = np.empty(shape, dt)
    tmp = np.empty(shape, dt)
    lo = T
    for t in range(T - 1, -1, -1):
        if t < lo:
            lo = max(t + 1 - CH, 0)
            n = t + 1 - lo
            Gk, A, B = G[lo:t + 1], Ac[:n], Bc[:n]
            S, SA = Gk[:, :3], A[:, :3]
            mul(S, S, out=SA)
            sub(S, SA, out=SA)                           # sigma' = s (1 - s) for o, i, f
            A[:, 0] *= TC[lo:t + 1]
            A[:, 1] *= Gk[:, 3]
            A[:, 2] *= CC[lo:t + 1]
            GA = A[:, 3]
            mul(Gk[:, 3], Gk[:, 3], out=GA)
            sub(1.0, GA, out=GA)
            GA *= Gk[:, 1]
            mul(TC[lo:t + 1], TC[lo:t + 1], out=B)
            sub(1.0, B, out=B)
            B *= Gk[:, 0]
        k = t - lo
        dh += dY[t].T if dy_transposed else dY[t]
        mul(dh, Bc[k], out=dc)
        dc += dc_next
        if DC is not None:
            dc += DC[t]
        dz4 = dZ[t]
        At = Ac[k]
        if peeps is not None:
            p_i, p_f, p_o = peeps
            mul(dh, At[0], out=dz4[0])
            mul(dz4[0], p_o, out=tmp)
            dc += tmp
            mul(At[1:], dc, out=dz4[1:])
            mul(dc, G[t, 2], out=dc_next)
            mul(dz4[1], p_i, out=tmp)
            dc_next += tmp
            mul(dz4[2], p_f, out=tmp)
            dc_next += tmp
        else:
            mul(At[1:], dc, out=dz4[1:])
            mul(dh, At[0], out=dz4[0])
            mul(dc, G[t, 2], out=dc_next)
        step_matmul(t)


@defprim
def lstm_layer(x, w_ih, w_hh, b_ih, b_hh, h0, c0, p_i, p_f, p_o, *, reverse=False, lengths=None):
    # Two layouts of one algorithm. Batch-major (state [N, H], gates [T, 4, N, H]; input,
    # bias and recurrence in one matmul per step; no transposes anywhere) is the faster one for
    # small hidden sizes, where per-call and copy overheads decide; features-by-batch (state
    # [H, N]) for large ones, where the per-step GEMM's shape decides (bench/bench_midsize.py:
    # hidden 512, ~10% faster forward; bench/bench_lstm.py: hidden 128, ~15% slower).
    kernel = _lstm_cols if w_hh.shape[1] >= _COLS_MIN_H else _lstm_rows
    return _by_batch(lambda x, h0, c0, lengths: kernel(x, w_ih, w_hh, b_ih, b_hh, h0, c0, p_i, p_f, p_o,
                                                       reverse, lengths),
                     x, (h0, c0), lengths, w_ih.shape[0] * (x.shape[2] + w_hh.shape[1]))


# A layer whose steps do at least this many multiply-accumulates in all (T * N * G*H * (C + H))
# runs its batch in parts, one per BLAS thread (see _by_batch); each part has at least
# MIN_PART_ROWS rows.
MIN_SPLIT_MACS = 1 << 27
MIN_PART_ROWS = 8


def _by_batch(layer, x, states, lengths, macs_per_row_step):
    """layer(x, *states, lengths) -> (outputs, vjp), run on the whole batch, or, with n >= 2 BLAS
    threads and enough work, on n parts of the batch at once (ortkernels.parallel: one thread
    each, one BLAS thread each). The rows of a recurrent layer are independent, so the parts
    need no meeting per step, unlike a split of each step's GEMM: OpenBLAS's two threads meet
    64 times a sequence and the gate arithmetic between the meetings runs on one core (LSTM LM
    of bench/bench_midsize.py at two threads: see bench/README.md). Outputs and the gradients of
    x and the states are the parts' joined along the batch, the weights' gradients their sums."""
    N, T = x.shape[:2]
    n = min(ortkernels.blas_threads(), N // MIN_PART_ROWS)
    if n < 2 or N * T * macs_per_row_step < MIN_SPLIT_MACS or not ortkernels.enabled():
        return layer(x, *states, lengths)
    parts = ortkernels.row_parts(N, n)

    def cut(a, i):
        return a[parts[i]] if isinstance(a, np.ndarray) and a.ndim and a.shape[0] == N else a

    runs = ortkernels.parallel(n, lambda i: layer(x[parts[i]], *(cut(s, i) for s in states),
                                                  None if lengths is None else lengths[parts[i]]))
    outs = tuple(np.concatenate(o, axis=0) for o in zip(*(r[0] for r in runs)))
    batch_args = {0} | {5 + k for k in range(len(states))}    # x, then the states after 4 weights

    def vjp(grads):
        gs = ortkernels.parallel(n, lambda i: runs[i][1](tuple(cut(g, i) for g in grads)))
        out = []
        for k, col in enumerate(zip(*gs)):
            if col[0] is None:
                out.append(None)
            elif k in batch_args:
                out.append(np.concatenate(col, axis=0))
            else:
                total = col[0]
                for g in col[1:]:
                    total += g
                out.append(total)
        return tuple(out)

    return outs, vjp


def _lstm_step(z4, c, cn, tc, tmp, peep, out) -> None:
    """One LSTM step's gate arithmetic, in place, shared by both layouts: z4 holds the gate-major
    pre-activations (o, i, f, g), the sigmoid gates' scaled by 1/2 (sigma(z) = (tanh(z/2) + 1)/2,
    one tanh for all four gates); c is c_{t-1}. Writes c_t into cn, tanh(c_t) into tc and h_t into
    out. peep: (p_i/2, p_f/2, p_o/2), or None."""
    mul, tanh = np.multiply, np.tanh
    o, i, f, g = z4
    if peep is not None:
        pis, pfs, pos = peep
        mul(c, pis, out=tmp)
        i += tmp
        mul(c, pfs, out=tmp)
        f += tmp
        s = z4[1:3]
        tanh(s, out=s)
        s *= 0.5
        s += 0.5
        tanh(g, out=g)
    else:
        tanh(z4, out=z4)
        s = z4[:3]
        s *= 0.5
        s += 0.5
    mul(f, c, out=cn)
    mul(i, g, out=tmp)
    cn += tmp
    if peep is not None:
        mul(cn, pos, out=tmp)
        o += tmp
        tanh(o, out=o)
        o *= 0.5
        o += 0.5
    tanh(cn, out=tc)
    mul(o, tc, out=out)


def _lstm_rows(x, w_ih, w_hh, b_ih, b_hh, h0, c0, p_i, p_f, p_o, reverse, lengths):
    """The LSTM with batch-major state [N, H]: see lstm_layer."""
    N, T, C = x.shape
    pad = None if lengths is None else _Padded(lengths, N, T, reverse)
    H = w_hh.shape[1]
    H4 = 4 * H
    K = C + 1 + H
    dt = np.result_type(x.dtype, w_ih.dtype)
    perm = _lstm_perm(H)
    Wi = w_ih[perm].astype(dt, copy=False)               # [4H, C], internal order (o, i, f, g)
    Wh = w_hh[perm].astype(dt, copy=False)               # [4H, H]
    # XH[t] = [x_t | 1 | h_{t-1}] (time-major, processing order), and per gate k the stacked
    # weights W4[k] = [W_ik; b_k; W_hk]^T [K, H] scaled by 1/2 for the sigmoid gates: each step is
    # ONE batched matmul XH[t] @ W4 straight into the gate-major pre-activations G[t] [4, N, H]
    # (input projection and bias included), and the backward gets every weight and bias gradient
    # from ONE matmul over XH. Step t writes h_t into XH[t + 1].
    XH = np.empty((T + 1, N, K), dt)
    if pad is None:
        xt = x.transpose(1, 0, 2)
        XH[:T, :, :C] = xt[::-1] if reverse else xt
    else:
        XH[:T, :, :C] = pad.to_tm(x)
    XH[T, :, :C] = 0.0
    XH[:, :, C] = 1.0
    XH[0, :, C + 1:] = 0.0 if h0 is None else h0
    scale = np.full((4, 1, 1), 0.5, dt)
    scale[3] = 1.0                                       # sigmoid gates: sigma(z) = (tanh(z/2) + 1)/2
    W4 = np.empty((4, K, H), dt)
    W4[:, :C] = Wi.reshape(4, H, C).transpose(0, 2, 1)
    W4[:, C] = 0.0 if b_ih is None else (b_ih + b_hh)[perm].reshape(4, H)
    W4[:, C + 1:] = Wh.reshape(4, H, H).transpose(0, 2, 1)
    W4 *= scale
    # Gate-major [T, 4, N, H]: every gate of a step is one contiguous [N, H] block, so the per-step
    # ufuncs run on contiguous memory (~1.4x faster than the strided gate slices of [N, 4H] rows).
    G = np.empty((T, 4, N, H), dt)                       # pre-activations, then the gates
    peep = None if p_i is None else (0.5 * p_i, 0.5 * p_f, 0.5 * p_o)
    CC = np.empty((T + 1, N, H), dt)     # CC[t + 1] = c_t, CC[0] = c0
    CC[0] = 0.0 if c0 is None else c0
    TC = np.empty((T, N, H), dt)         # tanh(c_t)
    tmp = np.empty((N, H), dt)
    matmul = np.matmul
    for t in range(T):
        z = G[t]
        c = CC[t]
        matmul(XH[t, None], W4, out=z)
        _lstm_step(z, c, CC[t + 1], TC[t], tmp, peep, XH[t + 1, :, C + 1:])
    Y = XH[1:, :, C + 1:]
    if pad is None:
        h_n, c_n = np.array(Y[-1]), np.array(CC[T])
    else:
        h_n, c_n = pad.final(Y), pad.final(CC[1:])

    def vjp(grads):
        gy, ghn, gcn = grads
        DC = None
        dh = np.empty((N, H), dt)
        dc_next = np.empty((N, H), dt)
        if pad is None:
            dY = _to_tm(gy, reverse)
            dh[...] = ghn
            dc_next[...] = gcn
        else:       # the final states' gradients enter at each row's last valid step
            dY = pad.to_tm(np.asarray(gy, dt))
            pad.inject(dY, ghn)
            DC = np.zeros((T, N, H), dt)
            pad.inject(DC, gcn)
            dh[...] = 0.0
            dc_next[...] = 0.0
        # dZ row-major [T, N, 4H] (written through gate-major views): one [N, 4H] x [4H, H]
        # matmul per step for dh, and the weight gradients need no transposing copy.
        dZ = np.empty((T, N, H4), dt)
        dZ4 = dZ.reshape(T, N, 4, H).transpose(0, 2, 1, 3)
        _bptt(G, TC, CC, dY, dZ4, lambda t: matmul(dZ[t], Wh, out=dh), dh, dc_next, DC,
              (p_i, p_f, p_o) if peep else None, False)
        dZ2 = dZ.reshape(T * N, H4)
        # [K, 4H] = XH^T dZ: every weight and bias gradient (transposed: as XH^T @ dZ the GEMM is
        # ~12% faster than dZ^T @ XH on these shapes)
        dWt = XH[:T].reshape(T * N, K).T @ dZ2
        dw_ih = np.empty_like(Wi)
        dw_ih[perm] = dWt[:C].T
        dw_hh = np.empty_like(Wh)
        dw_hh[perm] = dWt[C + 1:].T
        dX = (dZ2 @ Wi).reshape(T, N, C)
        dx = _from_tm(dX, reverse) if pad is None else pad.from_tm(dX)
        db_ih = db_hh = None
        if b_ih is not None:
            db_ih = np.empty(H4, dt)
            db_ih[perm] = dWt[C]
            db_hh = db_ih.copy()
        dp = (None, None, None)
        if peep:
            dZg = dZ.reshape(T, N, 4, H)
            dp = ((dZg[:, :, 1] * CC[:T]).sum(axis=(0, 1)), (dZg[:, :, 2] * CC[:T]).sum(axis=(0, 1)),
                  (dZg[:, :, 0] * CC[1:]).sum(axis=(0, 1)))
        return (dx, dw_ih, dw_hh, db_ih, db_hh,
                dh if h0 is not None else None, dc_next if c0 is not None else None) + dp

    return (_from_tm(Y, reverse) if pad is None else pad.from_tm(Y), h_n, c_n), vjp


def _lstm_cols(x, w_ih, w_hh, b_ih, b_hh, h0, c0, p_i, p_f, p_o, reverse, lengths):
    """The LSTM with transposed state [H, N]: see lstm_layer."""
    N, T, C = x.shape
    pad = None if lengths is None else _Padded(lengths, N, T, reverse)
    H = w_hh.shape[1]
    H4 = 4 * H
    dt = np.result_type(x.dtype, w_ih.dtype)
    perm = _lstm_perm(H)
    Wi = w_ih[perm].astype(dt, copy=False)               # [4H, C], internal order (o, i, f, g)
    Wh = w_hh[perm].astype(dt, copy=False)               # [4H, H]
    # The recurrence runs transposed, features by batch: z_t [4H, N] = Wh h_{t-1} + (Wi x_t + b),
    # so each step's matmul is [4H, H] x [H, N] (OpenBLAS runs this shape ~20% faster than
    # [N, H] x [H, 4H] for a small batch, and MLAS twice as fast at one thread: ortkernels) and
    # each gate is a contiguous [H, N] block of rows.
    # Rows of the sigmoid gates are scaled by 1/2: sigma(z) = (tanh(z/2) + 1)/2, so one tanh
    # covers every gate. Wide inputs (C >= _FOLD_C, on OpenBLAS) get their projection for all T
    # steps from one large GEMM before the loop, added per step; others are folded into the
    # step's matmul,
    # [Wi | b | Wh] x [x_t; 1; h_{t-1}] (a projection, its copy and an add per step cost more
    # there than the few extra columns).
    scale = np.full((H4, 1), 0.5, dt)
    scale[3 * H:] = 1.0
    X2 = (_to_tm(x, reverse) if pad is None else pad.to_tm(x)).reshape(T * N, C)   # [(t, n), C]
    bias = None if b_ih is None else (b_ih + b_hh)[perm].astype(dt, copy=False) * scale[:, 0]
    Whs = Wh * scale
    # Folded when the step's product runs on MLAS too (one BLAS thread): there a wider step
    # product costs what the projection would, and the projection's copy and adds are saved
    # (LSTM LM of bench_midsize, one thread: 209-214 ms a step folded, 215-217 projected); with
    # OpenBLAS threads the large projection GEMM splits better (two: 170-177 ms projected, 192-194
    # folded).
    fold = C < _FOLD_C or ortkernels.thin(H4, C + 1 + H, N, dt)
    if fold:
        K = C + 1 + H
        XH = np.empty((T + 1, K, N), dt)                 # [x_t; 1; h_{t-1}] per step, transposed
        XH[:T, :C] = X2.reshape(T, N, C).transpose(0, 2, 1)
        XH[T, :C] = 0.0
        XH[:, C] = 1.0
        W4 = np.empty((H4, K), dt)
        W4[:, :C] = Wi * scale
        W4[:, C] = 0.0 if bias is None else bias
        W4[:, C + 1:] = Whs
        HH = XH[:, C + 1:]                               # HH[t + 1] = h_t (transposed), HH[0] = h0
        G = np.empty((T, H4, N), dt)                     # pre-activations, then the gates
    else:
        XP = (Wi * scale) @ X2.T                         # [4H, T*N]
        if bias is not None:
            XP += bias[:, None]
        # G[t] [4H, N]: step t's input projection, then its pre-activations, then its gates
        G = contiguous(XP.reshape(H4, T, N).transpose(1, 0, 2))
        del XP
        zh = np.empty((H4, N), dt)
        HH = np.empty((T + 1, H, N), dt)
    HH[0] = 0.0 if h0 is None else np.asarray(h0).T
    CC = np.empty((T + 1, H, N), dt)                     # CC[t + 1] = c_t, CC[0] = c0
    CC[0] = 0.0 if c0 is None else np.asarray(c0).T
    TC = np.empty((T, H, N), dt)                         # tanh(c_t)
    tmp = np.empty((H, N), dt)
    peep = None if p_i is None else tuple(0.5 * p[:, None].astype(dt) for p in (p_i, p_f, p_o))
    matmul = ortkernels.matmul      # [4H, K] x [K, N]: MLAS's shape (see ortkernels)
    for t in range(T):
        z = G[t]
        c = CC[t]
        if fold:
            matmul(W4, XH[t], out=z)
        else:
            matmul(Whs, HH[t], out=zh)
            z += zh
        z4 = z.reshape(4, H, N)
        _lstm_step(z4, c, CC[t + 1], TC[t], tmp, peep, HH[t + 1])
    if pad is None:
        h_n, c_n = np.array(HH[T].T), np.array(CC[T].T)
    else:
        h_n = pad.final(HH[1:].transpose(0, 2, 1))
        c_n = pad.final(CC[1:].transpose(0, 2, 1))

    def vjp(grads):
        gy, ghn, gcn = grads
        DC = None
        # dY [T, N, H] in processing order; each step adds its block transposed (no full copy)
        if pad is None:
            dY = np.asarray(gy, dt).transpose(1, 0, 2)
            if reverse:
                dY = dY[::-1]
            dh = np.array(np.asarray(ghn, dt).T)
            dc_next = np.array(np.asarray(gcn, dt).T)
        else:       # the final states' gradients enter at each row's last valid step
            dY = pad.to_tm(np.asarray(gy, dt))
            pad.inject(dY, ghn)
            DC = np.zeros((T, N, H), dt)
            pad.inject(DC, gcn)
            DC = DC.transpose(0, 2, 1)
            dh = np.zeros((H, N), dt)
            dc_next = np.zeros((H, N), dt)
        dZ = np.empty((T, H4, N), dt)
        WhT = contiguous(Wh.T)                           # [H, 4H]
        _bptt(G.reshape(T, 4, H, N), TC, CC, dY, dZ.reshape(T, 4, H, N), lambda t: matmul(WhT, dZ[t], out=dh),
              dh, dc_next, DC, tuple(p[:, None] for p in (p_i, p_f, p_o)) if peep else None, True)
        # every weight and bias gradient from [4H, T*N] (one transposing copy), both weights'
        # from one GEMM against [x_t | h_{t-1}] rows (a wider product runs closer to peak)
        dZ2 = contiguous(dZ.transpose(1, 0, 2)).reshape(H4, T * N)
        XHp = np.empty((T, N, C + H), dt)
        XHp[..., :C] = X2.reshape(T, N, C)
        for t in range(T):
            XHp[t, :, C:] = HH[t].T
        dW = dZ2 @ XHp.reshape(T * N, C + H)
        dw_ih = np.empty_like(Wi)
        dw_ih[perm] = dW[:, :C]
        dw_hh = np.empty_like(Wh)
        dw_hh[perm] = dW[:, C:]
        del dW, XHp
        dX = (dZ2.T @ Wi).reshape(T, N, C)
        dx = _from_tm(dX, reverse) if pad is None else pad.from_tm(dX)
        db_ih = db_hh = None
        if b_ih is not None:
            db_ih = np.empty(H4, dt)
            db_ih[perm] = row_sum(dZ2)
            db_hh = db_ih.copy()
        dp = (None, None, None)
        if peep:
            dZg = dZ.reshape(T, 4, H, N)
            dp = ((dZg[:, 1] * CC[:T]).sum(axis=(0, 2)), (dZg[:, 2] * CC[:T]).sum(axis=(0, 2)),
                  (dZg[:, 0] * CC[1:]).sum(axis=(0, 2)))
        return (dx, dw_ih, dw_hh, db_ih, db_hh,
                np.array(dh.T) if h0 is not None else None,
                np.array(dc_next.T) if c0 is not None else None) + dp

    return (_from_tm_t(HH[1:], reverse, pad), h_n, c_n), vjp


# =============================================================================
# GRU
# =============================================================================

@defprim
def gru_layer(x, w_ih, w_hh, b_ih, b_hh, h0, *, reverse=False, linear_before_reset=True, lengths=None):
    return _by_batch(lambda x, h0, lengths: _gru(x, w_ih, w_hh, b_ih, b_hh, h0, reverse, linear_before_reset,
                                                 lengths),
                     x, (h0,), lengths, w_ih.shape[0] * (x.shape[2] + w_hh.shape[1]))


def _gru(x, w_ih, w_hh, b_ih, b_hh, h0, reverse, linear_before_reset, lengths):
    N, T, C = x.shape
    pad = None if lengths is None else _Padded(lengths, N, T, reverse)
    H = w_hh.shape[1]
    H2, H3 = 2 * H, 3 * H
    dt = np.result_type(x.dtype, w_ih.dtype)
    Wi = w_ih.astype(dt, copy=False)
    Wh = w_hh.astype(dt, copy=False)
    scale = np.ones(H3, dt)
    scale[:H2] = 0.5
    X2 = (_to_tm(x, reverse) if pad is None else pad.to_tm(x)).reshape(T * N, C)
    G = (X2 @ (Wi * scale[:, None]).T).reshape(T, N, H3)  # becomes the activated r, z, n
    lbr = linear_before_reset
    bhn = None
    if b_ih is not None:
        if lbr:          # b_hn stays inside r * (R_n h + b_hn)
            G += b_ih * scale
            G[..., :H2] += 0.5 * b_hh[:H2]
            bhn = b_hh[H2:]
        else:
            G += (b_ih + b_hh) * scale
    Y = np.empty((T, N, H), dt)
    S = np.empty((T, N, H), dt)          # lbr: R_n h + b_hn; else: r * h_prev
    h = h0_ = _state(h0, N, H, dt)
    mul, add, sub, tanh = np.multiply, np.add, np.subtract, np.tanh
    # the step's h [N, H] x Wh^T: wide products that ortkernels.matmul runs transposed on MLAS
    # (at one BLAS thread), so the weights are passed as transposed views of C-contiguous arrays
    matmul = ortkernels.matmul
    if lbr:
        WhT = (Wh * scale[:, None]).T                 # [H, 3H]
        hw = np.empty((N, H3), dt)
        tmp = np.empty((N, H), dt)
    else:
        WhT = (0.5 * Wh[:H2]).T                       # [H, 2H]
        WhT_n = Wh[H2:].T                             # [H, H]
        hw = np.empty((N, H2), dt)
        tmp = np.empty((N, H), dt)
    for t in range(T):
        g = G[t]
        rz = g[:, :H2]
        n = g[:, H2:]
        s = S[t]
        matmul(h, WhT, out=hw)
        rz += hw[:, :H2]
        tanh(rz, out=rz)
        rz *= 0.5
        rz += 0.5
        if lbr:
            if bhn is not None:
                add(hw[:, H2:], bhn, out=s)
            else:
                s[...] = hw[:, H2:]
            mul(g[:, :H], s, out=tmp)
            n += tmp
        else:
            mul(g[:, :H], h, out=s)
            matmul(s, WhT_n, out=tmp)
            n += tmp
        tanh(n, out=n)
        hn = Y[t]
        sub(h, n, out=hn)
        hn *= g[:, H:H2]
        hn += n
        h = hn
    h_n = np.array(h) if pad is None else pad.final(Y)

    def vjp(grads):
        gy, ghn = grads
        dY, dh_next = _grads_in(gy, ghn, pad, reverse, dt)
        R, Z, Nn = G[..., :H], G[..., H:H2], G[..., H2:]
        Hprev = _prev(h0_, Y)
        dn_fac = (1.0 - Z) * (1.0 - Nn * Nn)            # dzn = dh * dn_fac
        dz_fac = (Hprev - Nn) * Z * (1.0 - Z)           # dz_z = dh * dz_fac
        D = np.empty((T, N, H3), dt)
        WhF = contiguous(Wh.T).T                      # Wh [3H, H] as a transposed view (see above)
        if lbr:
            dr_fac = S * R * (1.0 - R)                  # dz_r = dzn * dr_fac
            DZN = np.empty((T, N, H), dt)               # D[..., 2H:] holds dzn * r (for R_n)
            for t in range(T - 1, -1, -1):
                dh = dh_next
                dh += dY[t]
                dzn = DZN[t]
                mul(dh, dn_fac[t], out=dzn)
                d = D[t]
                mul(dzn, dr_fac[t], out=d[:, :H])
                mul(dh, dz_fac[t], out=d[:, H:H2])
                mul(dzn, R[t], out=d[:, H2:])
                dh_next = matmul(d, WhF)
                dh *= Z[t]
                dh_next += dh
            D2 = D.reshape(T * N, H3)
            DZN2 = DZN.reshape(T * N, H)
            dw_hh = D2.T @ Hprev.reshape(T * N, H)
            dw_ih = np.empty_like(Wi)
            dw_ih[:H2] = D2[:, :H2].T @ X2
            dw_ih[H2:] = DZN2.T @ X2
            dx = D2[:, :H2] @ Wi[:H2]
            dx += DZN2 @ Wi[H2:]
            db_ih = db_hh = None
            if b_ih is not None:
                db_hh = D2.sum(axis=0)
                db_ih = np.concatenate([db_hh[:H2], DZN2.sum(axis=0)])
        else:
            dsr = R * (1.0 - R) * Hprev                 # dz_r = d(r*h) * dsr
            Wh_rz, Wh_n = WhF[:H2], WhF[H2:]
            for t in range(T - 1, -1, -1):
                dh = dh_next
                dh += dY[t]
                d = D[t]
                dzn = d[:, H2:]
                mul(dh, dn_fac[t], out=dzn)
                drh = matmul(dzn, Wh_n)
                mul(drh, dsr[t], out=d[:, :H])
                mul(dh, dz_fac[t], out=d[:, H:H2])
                dh_next = matmul(d[:, :H2], Wh_rz)
                dh *= Z[t]
                dh_next += dh
                drh *= R[t]
                dh_next += drh
            D2 = D.reshape(T * N, H3)
            dw_ih = D2.T @ X2
            dw_hh = np.empty_like(Wh)
            dw_hh[:H2] = D2[:, :H2].T @ Hprev.reshape(T * N, H)
            dw_hh[H2:] = D2[:, H2:].T @ S.reshape(T * N, H)
            dx = D2 @ Wi
            db_ih = db_hh = None
            if b_ih is not None:
                db_ih = D2.sum(axis=0)
                db_hh = db_ih.copy()
        dx = _from_tm(dx.reshape(T, N, C), reverse) if pad is None else pad.from_tm(dx.reshape(T, N, C))
        return dx, dw_ih, dw_hh, db_ih, db_hh, dh_next if h0 is not None else None

    return (_from_tm(Y, reverse) if pad is None else pad.from_tm(Y), h_n), vjp


# =============================================================================
# Elman RNN
# =============================================================================

@defprim
def rnn_layer(x, w_ih, w_hh, b_ih, b_hh, h0, *, reverse=False, nonlinearity="tanh", lengths=None):
    return _by_batch(lambda x, h0, lengths: _rnn(x, w_ih, w_hh, b_ih, b_hh, h0, reverse, nonlinearity, lengths),
                     x, (h0,), lengths, w_ih.shape[0] * (x.shape[2] + w_hh.shape[1]))


def _rnn(x, w_ih, w_hh, b_ih, b_hh, h0, reverse, nonlinearity, lengths):
    N, T, C = x.shape
    pad = None if lengths is None else _Padded(lengths, N, T, reverse)
    H = w_hh.shape[1]
    dt = np.result_type(x.dtype, w_ih.dtype)
    Wi = w_ih.astype(dt, copy=False)
    Wh = w_hh.astype(dt, copy=False)
    X2 = (_to_tm(x, reverse) if pad is None else pad.to_tm(x)).reshape(T * N, C)
    Y = (X2 @ Wi.T).reshape(T, N, H)                     # input projections, then h_t in place
    if b_ih is not None:
        Y += b_ih + b_hh
    WhT = Wh.T              # a transposed view: ortkernels.matmul may run h @ Wh^T on MLAS
    matmul = ortkernels.matmul
    relu = nonlinearity == "relu"
    h = h0_ = _state(h0, N, H, dt)
    buf = np.empty((N, H), dt)
    for t in range(T):
        hn = Y[t]
        matmul(h, WhT, out=buf)
        hn += buf
        if relu:
            np.maximum(hn, 0.0, out=hn)
        else:
            np.tanh(hn, out=hn)
        h = hn
    h_n = np.array(h) if pad is None else pad.final(Y)

    def vjp(grads):
        gy, ghn = grads
        dY, dh_next = _grads_in(gy, ghn, pad, reverse, dt)
        DZ = (Y > 0).astype(dt) if relu else 1.0 - Y * Y   # act', then the pre-activation grads
        WhF = contiguous(WhT).T
        for t in range(T - 1, -1, -1):
            dh_next += dY[t]
            dz = DZ[t]
            dz *= dh_next
            dh_next = matmul(dz, WhF)
        DZ2 = DZ.reshape(T * N, H)
        dw_ih = DZ2.T @ X2
        dw_hh = DZ2.T @ _prev(h0_, Y).reshape(T * N, H)
        dX = (DZ2 @ Wi).reshape(T, N, C)
        dx = _from_tm(dX, reverse) if pad is None else pad.from_tm(dX)
        db_ih = db_hh = None
        if b_ih is not None:
            db_ih = DZ2.sum(axis=0)
            db_hh = db_ih.copy()
        return dx, dw_ih, dw_hh, db_ih, db_hh, dh_next if h0 is not None else None

    return (_from_tm(Y, reverse) if pad is None else pad.from_tm(Y), h_n), vjp
