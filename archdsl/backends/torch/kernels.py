"""PyTorch kernels the ops' `torch_forward` methods share: what takes more than one torch call
(attention with archdsl's masks, recurrent stacks with peepholes and padded batches, rotary and
sinusoidal positions, indexing with negative steps, reflect/replicate padding of any dim).

They are written as a standalone PyTorch file would be (`torch`, `F` = torch.nn.functional,
`math`), because `archdsl export --format torch` copies the ones a model uses into the module it
writes. Each is a `leaf`: torch.fx records a call to it as one node (its Python control flow on
shapes stays inside), so the exported forward reads as one line per layer.

Randomness is not drawn here for the engine (its context draws, from a seeded stream: context.py);
`dropout_mask` and `noise_like` are how an exported module draws, from PyTorch's global generator.
"""
from __future__ import annotations

import functools
import math

from .lazy import TF as F
from .lazy import torch


def leaf(fn):
    """Mark a kernel that torch.fx records as one call instead of tracing through it."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        proxy = _proxy_in((args, kwargs))
        if proxy is not None:
            return proxy.tracer.create_proxy("call_function", fn, args, kwargs)
        return fn(*args, **kwargs)
    call.__leaf__ = fn
    return call


def _proxy_in(value):
    """A torch.fx Proxy among the arguments (in lists, tuples and dicts), or None."""
    from torch.fx import Proxy
    if isinstance(value, Proxy):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    for v in items:
        found = _proxy_in(v)
        if found is not None:
            return found
    return None


# -- attention -----------------------------------------------------------------------------------

@leaf
def relative_position_bias(table, wh, ww):
    """Swin's relative position bias [heads, M², M²] (M² = wh·ww): for tokens i, j of a window,
    the row of table [(2wh-1)(2ww-1), heads] holding their offset (torchvision's index)."""
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")).reshape(2, -1)
    rel = coords[:, :, None] - coords[:, None, :]
    index = (rel[0] + wh - 1) * (2 * ww - 1) + (rel[1] + ww - 1)
    return table[index.to(table.device)].permute(2, 0, 1)


@leaf
def shifted_window_mask(like, h, w, wh, ww, sh, sw, value):
    """Swin's mask [windows, 1, M², M²] for a map h x w rolled by -(sh, sw): `value` between
    tokens of a window that were not neighbours before the roll, 0 elsewhere (torchvision's)."""
    region = torch.zeros(h, w, dtype=torch.int64)
    count = 0
    for hs in ((0, -wh), (-wh, -sh), (-sh, None)) if sh else ((0, None),):
        for ws in ((0, -ww), (-ww, -sw), (-sw, None)) if sw else ((0, None),):
            region[slice(*hs), slice(*ws)] = count
            count += 1
    ids = region.reshape(h // wh, wh, w // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)
    mask = torch.where(ids[:, None, :] != ids[:, :, None], value, 0.0)
    return mask[:, None].to(like.device, like.dtype)


@leaf
def keep_mask(mask, mode, length):
    """The [N, S] keep mask (True = attend) from a padding mask or sequence lengths (mode
    'padding' or 'lengths'), for keys of `length`."""
    if mode == "lengths":
        return torch.arange(length, device=mask.device)[None, :] < mask.to(torch.int64)[:, None]
    return mask.to(torch.bool)


@leaf
def attention(q, k, v, bias=None, keep=None, causal=False, scale=1.0, period=None, drop=None,
              need_weights=False):
    """softmax(q k^T * scale + bias) v on heads-first q [N, H, T, d], k [N, KV, S, d], v [N, KV,
    S, dv] (KV divides H: query head i reads key/value head i // (H/KV)).

    bias broadcasts against the scores [N, H, T, S] (a first dim `period` repeats every period
    rows of the batch); keep [N, S] masks padded keys, causal lets query i see keys j <= i; a
    query row with no key left gives zeros. drop: a dropout multiplier of the weights (or None).
    Returns the output [N, H, T, dv], and the weights (before dropout) with need_weights."""
    n, h, t = q.shape[0], q.shape[1], q.shape[2]
    s = k.shape[2]
    if k.shape[1] != h:
        k = k.repeat_interleave(h // k.shape[1], dim=1)
        v = v.repeat_interleave(h // v.shape[1], dim=1)
    if keep is None and drop is None and not need_weights and period is None:
        mask = bias
        if causal and bias is not None:
            block = torch.ones(t, s, dtype=torch.bool, device=q.device).triu(1)
            mask = bias + torch.zeros(t, s, dtype=q.dtype, device=q.device).masked_fill(block, -math.inf)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and bias is None,
                                              scale=scale)
    scores = (q * scale) @ k.transpose(-1, -2)
    if bias is not None:
        if period is not None:
            scores = (scores.reshape(n // period, period, h, t, s) + bias).reshape(n, h, t, s)
        else:
            scores = scores + bias
    block = torch.ones(t, s, dtype=torch.bool, device=q.device).triu(1) if causal else None
    if keep is not None:
        padded = ~keep[:, None, None, :]
        block = padded if block is None else padded | block
    if block is not None:
        scores = scores.masked_fill(block, torch.finfo(scores.dtype).min)
    p = torch.softmax(scores, dim=-1)
    if keep is not None:
        p = p.masked_fill(block.all(dim=-1, keepdim=True), 0.0)
    out = (p if drop is None else p * drop) @ v
    return (out, p) if need_weights else out


@leaf
def rotary(x, theta=10000.0, interleaved=False):
    """Rotary position embedding of x [..., L, d]: feature pairs (i, i + d/2) (interleaved:
    (2i, 2i + 1)) turned by position * theta^(-2i/d), positions 0..L-1 (angles in float64)."""
    length, d = x.shape[-2], x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64, device=x.device) / d)
    angle = torch.arange(length, dtype=torch.float64, device=x.device)[:, None] * inv[None, :]
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    if interleaved:
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
    x1, x2 = x[..., :d // 2], x[..., d // 2:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


@leaf
def additive_attention(q, k, wq, wk, b, v, keep=None, need_weights=False):
    """Bahdanau attention: score[n, t, s] = v . tanh(Wq q[n, t] + Wk k[n, s] + b), softmax over
    the keys s (masked by keep [N, S]), context = weights @ k."""
    e = torch.tanh((q @ wq.T)[:, :, None, :] + (k @ wk.T + b)[:, None, :, :])
    scores = e @ v
    if keep is not None:
        padded = ~keep[:, None, :]
        scores = scores.masked_fill(padded, torch.finfo(scores.dtype).min)
    p = torch.softmax(scores, dim=-1)
    if keep is not None:
        p = p.masked_fill(padded.all(dim=-1, keepdim=True), 0.0)
    out = p @ k
    return (out, p) if need_weights else out


# -- positions -----------------------------------------------------------------------------------

@leaf
def sinusoid(length, d, like):
    """Rows 0..length-1 of the sinusoidal position table (Vaswani et al.): pe[t, 2i] =
    sin(t / 10000^(2i/d)), pe[t, 2i+1] = cos(...), computed in float64, in like's dtype."""
    pos = torch.arange(length, dtype=torch.float64, device=like.device)[:, None]
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float64, device=like.device) * (-math.log(10000.0) / d))
    pe = torch.zeros(length, d, dtype=torch.float64, device=like.device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[:d // 2])
    return pe.to(like.dtype)


# -- shapes --------------------------------------------------------------------------------------

@leaf
def index(x, items):
    """x[items] with Python's rules, negative slice steps included (which torch's indexing
    lacks): items holds per axis an int or a slice."""
    out, axis = x, 0
    for it in items:
        if isinstance(it, slice) and it.step is not None and it.step < 0:
            pos = torch.tensor(list(range(out.shape[axis]))[it], dtype=torch.int64, device=x.device)
            out = out.index_select(axis, pos)
        else:
            out = out[(slice(None),) * axis + (it,)]
        axis += not isinstance(it, int)
    return out


@leaf
def pad(x, pairs, mode="constant", value=0.0):
    """Pad every dim of x by its (before, after) pair: 'constant' (value), 'reflect' (mirrored,
    the edge not repeated) or 'replicate' (the edge repeated), on any dim."""
    if mode == "constant":
        return F.pad(x, [v for b, e in reversed(pairs) for v in (b, e)], value=value)
    for axis, (b, e) in enumerate(pairs):
        if b or e:
            n = x.shape[axis]
            pos = torch.arange(-b, n + e, device=x.device)
            if mode == "replicate":
                pos = pos.clamp(0, n - 1)
            else:
                pos = (n - 1) - ((n - 1) - pos.abs()).abs()
            x = x.index_select(axis, pos)
    return x


# -- recurrent layers ----------------------------------------------------------------------------

@leaf
def recurrent(mode, x, lengths, states, weights, num_layers=1, bidirectional=False, reverse=False,
              return_sequences=True, nonlinearity="tanh", linear_before_reset=True):
    """A stack of RNN / LSTM / GRU layers (mode) over the batch-first sequence x [N, T, C].

    weights: per layer, per direction (forward first), [w_ih, w_hh, b_ih, b_hh] (the biases
    None without bias) and, for an LSTM with peepholes, [p_i, p_f, p_o] after them. states: []
    or [h0] or [h0, c0], each [layers * directions, N, hidden]. lengths: None, or the valid
    steps [N] of each right-padded row. Returns [every step [N, T, D*H] or the last [N, D*H],
    h_n, (c_n)], PyTorch's gate orders (LSTM i, f, g, o; GRU r, z, n)."""
    dirs = 2 if bidirectional else 1
    hidden = weights[0][1].shape[1]
    plain = (lengths is None and not reverse and all(len(w) == 4 for w in weights)
             and (mode != "GRU" or linear_before_reset))
    n_states = 2 if mode == "LSTM" else 1
    zeros = x.new_zeros(num_layers * dirs, x.shape[0], hidden)
    init = list(states) + [zeros] * (n_states - len(states))
    if plain:            # one fused call: PyTorch's own recurrent kernels
        flat = [p for w in weights for p in (w if w[2] is not None else w[:2])]
        has_bias = weights[0][2] is not None
        if mode == "LSTM":
            seq, h_n, c_n = torch.lstm(x, init, flat, has_bias, num_layers, 0.0, False, bidirectional, True)
            finals = [h_n, c_n]
        else:
            fn = torch.gru if mode == "GRU" else torch.rnn_relu if nonlinearity == "relu" else torch.rnn_tanh
            seq, h_n = fn(x, init[0], flat, has_bias, num_layers, 0.0, False, bidirectional, True)
            finals = [h_n]
    else:
        keep = None
        if lengths is not None:
            keep = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(torch.int64)[:, None]
        finals = [[] for _ in range(n_states)]
        seq = x
        for layer in range(num_layers):
            outs = []
            for d in range(dirs):
                row = layer * dirs + d
                out, last = _layer(mode, seq, weights[row], [s[row] for s in init], reverse or d == 1, keep,
                                   nonlinearity, linear_before_reset)
                outs.append(out)
                for f, v in zip(finals, last):
                    f.append(v)
            seq = outs[0] if dirs == 1 else torch.cat(outs, dim=2)
        finals = [torch.stack(f, dim=0) for f in finals]
    last = finals[0][-1] if dirs == 1 else torch.cat([finals[0][-2], finals[0][-1]], dim=1)
    return [seq if return_sequences else last] + finals


def _layer(mode, x, w, state, backward, keep, nonlinearity, linear_before_reset):
    """One direction of one layer, step by step: (outputs [N, T, H], final states)."""
    w_ih, w_hh, b_ih, b_hh = w[:4]
    peep = w[4:]
    gx = x @ w_ih.T
    if b_ih is not None:
        gx = gx + b_ih
    steps = range(x.shape[1] - 1, -1, -1) if backward else range(x.shape[1])
    h = state[0]
    c = state[1] if mode == "LSTM" else None
    outs = [None] * x.shape[1]
    for t in steps:
        if mode == "GRU" and not linear_before_reset:
            rz = gx[:, t, :2 * h.shape[1]] + h @ w_hh[:2 * h.shape[1]].T
            if b_hh is not None:
                rz = rz + b_hh[:2 * h.shape[1]]
            r, z = torch.sigmoid(rz).chunk(2, dim=1)
            hn = (r * h) @ w_hh[2 * h.shape[1]:].T
            if b_hh is not None:
                hn = hn + b_hh[2 * h.shape[1]:]
            h_new = (1 - z) * torch.tanh(gx[:, t, 2 * h.shape[1]:] + hn) + z * h
        else:
            gh = h @ w_hh.T
            if b_hh is not None:
                gh = gh + b_hh
            if mode == "RNN":
                pre = gx[:, t] + gh
                h_new = torch.relu(pre) if nonlinearity == "relu" else torch.tanh(pre)
            elif mode == "GRU":
                xr, xz, xn = gx[:, t].chunk(3, dim=1)
                hr, hz, hn = gh.chunk(3, dim=1)
                r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                h_new = (1 - z) * torch.tanh(xn + r * hn) + z * h
            else:
                gi, gf, gg, go = (gx[:, t] + gh).chunk(4, dim=1)
                if peep:
                    gi, gf = gi + peep[0] * c, gf + peep[1] * c
                c_new = torch.sigmoid(gf) * c + torch.sigmoid(gi) * torch.tanh(gg)
                if peep:
                    go = go + peep[2] * c_new
                h_new = torch.sigmoid(go) * torch.tanh(c_new)
        if keep is not None:
            m = keep[:, t, None]
            outs[t] = h_new * m
            h = torch.where(m, h_new, h)
            if c is not None:
                c = torch.where(m, c_new, c)
        else:
            outs[t], h = h_new, h_new
            if c is not None:
                c = c_new
    return torch.stack(outs, dim=1), ([h, c] if c is not None else [h])


# -- spectral normalisation -----------------------------------------------------------------------

@leaf
def spectral_norm(w, u, v, training, dim=0, eps=1e-12):
    """W / sigma (Miyato et al. 2018; PyTorch's parametrizations.spectral_norm, one power
    iteration): W seen as [W.shape[dim], rest], sigma = u^T W v with u, v the persistent buffers.
    In training, one power iteration updates u and v in place first (u = normalize(W v), then
    v = normalize(W^T u)); gradients treat u and v as constants."""
    wm = w.movedim(dim, 0).reshape(w.shape[dim], -1)
    if training:
        with torch.no_grad():
            u.copy_(F.normalize(wm.detach() @ v.to(wm.dtype), dim=0, eps=eps).to(u.dtype))
            v.copy_(F.normalize(wm.detach().t() @ u.to(wm.dtype), dim=0, eps=eps).to(v.dtype))
    return w / (u.to(w.dtype) @ (wm @ v.to(w.dtype)))


# -- randomness, as an exported module draws it --------------------------------------------------

@leaf
def dropout_mask(like, shape, p, training):
    """The inverted-dropout multiplier of attention weights (0 or 1/(1-p)), or None when not
    training (or p = 0)."""
    if not training or p == 0:
        return None
    return (torch.rand(shape, dtype=like.dtype, device=like.device) >= p).to(like.dtype) * (1.0 / (1.0 - p))


def branch_keep(u, p, like):
    """Stochastic depth's multiplier from uniform draws u, one per row: 0, or 1/(1-p) for a kept
    row (p = 1 keeps none), shaped to broadcast over `like`."""
    keep = (u >= p).to(like.dtype)
    if p < 1.0:
        keep = keep * (1.0 / (1.0 - p))
    return keep.reshape((u.shape[0],) + (1,) * (like.dim() - 1))


@leaf
def drop_branch(x, p, per_row, training):
    """Stochastic depth with PyTorch's generator: x times branch_keep in training, else x."""
    if not training or p == 0:
        return x
    return x * branch_keep(torch.rand(x.shape[0] if per_row else 1, dtype=torch.float64, device=x.device), p, x)


@leaf
def noise_like(x, kind, a, b, draw):
    """Noise shaped like x: 'normal' N(a, b^2), 'uniform' U(a, b) or 'bernoulli' (1 with
    probability a), drawn when `draw`, else its mean."""
    if not draw:
        return torch.full_like(x, (a + b) / 2 if kind == "uniform" else a)
    if kind == "normal":
        return torch.randn_like(x) * b + a
    if kind == "uniform":
        return a + (b - a) * torch.rand_like(x)
    return (torch.rand_like(x) < a).to(x.dtype)
