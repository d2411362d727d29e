"""Shape primitives beyond reshape/transpose/indexing: concat, stack, split (an int gives
PyTorch's chunks of that size), squeeze, expand_dims, broadcast_to, take (embedding lookups),
pad (constant, reflect, replicate), roll, tile, and resample (nearest and linear
interpolation along chosen axes, PyTorch's coordinate rules)."""
from __future__ import annotations

import builtins as _b

import numpy as np

from ._arrays import contiguous, pad_array
from .tensor import Tensor, _GRAD, _const, _scalar_op, _ub, _wrap, _take_grad, record, record_multi

__all__ = ['expand_dims', 'squeeze', 'broadcast_to', 'concat', 'stack', 'split', 'unstack', 'take', 'pad', 'roll',
           'tile', 'resample', 'resample_matrix']


def expand_dims(x, axis):
    x = _wrap(x)
    xd = x.data
    shp = xd.shape
    return _scalar_op(x, np.expand_dims(xd, axis), lambda g: (np.reshape(g, shp),))


def squeeze(x, axis=None):
    x = _wrap(x)
    xd = x.data
    shp = xd.shape
    return _scalar_op(x, np.squeeze(xd, axis), lambda g: (np.reshape(g, shp),))


def broadcast_to(x, shape):
    x = _wrap(x)
    xd = x.data
    shp = xd.shape
    return _scalar_op(x, np.broadcast_to(xd, shape), lambda g: (_ub(g, shp),))


def concat(tensors, axis=0):
    ts = [_wrap(t) for t in tensors]
    datas = [t.data for t in ts]
    out = np.concatenate(datas, axis=axis)
    if not (_GRAD[0] and _b.any(t.requires_grad for t in ts)):
        return _const(out)
    bounds = np.cumsum([d.shape[axis] for d in datas])[:-1]

    def vjp(g):
        return np.split(g, bounds, axis=axis)
    return record(out, tuple(ts), vjp)


def stack(tensors, axis=0):
    ts = [_wrap(t) for t in tensors]
    out = np.stack([t.data for t in ts], axis=axis)
    if not (_GRAD[0] and _b.any(t.requires_grad for t in ts)):
        return _const(out)

    def vjp(g):
        return list(np.moveaxis(g, axis, 0))
    return record(out, tuple(ts), vjp)


def split(x, sizes, axis=0):
    """Split along ``axis`` into pieces of the given sizes (a list), or into
    chunks of size ``sizes`` (an int, PyTorch semantics).  Returns a list."""
    x = _wrap(x)
    xd = x.data
    n = xd.shape[axis]
    if isinstance(sizes, (int, np.integer)):
        sizes = [int(sizes)] * (n // sizes) + ([n % sizes] if n % sizes else [])
    sizes = [int(s) for s in sizes]
    if _b.sum(sizes) != n:
        raise ValueError(f"split sizes {sizes} do not add up to dimension {n}")
    starts = [0]
    for k in sizes[:-1]:
        starts.append(starts[-1] + k)
    bounds = starts[1:]
    lead = (slice(None),) * (axis % xd.ndim)
    # contiguous pieces: the ops that follow (a gate's sigmoid) run about twice as fast on them
    # as on strided views, which more than pays for the copy (np.split itself is slow, too)
    pieces = [contiguous(xd[lead + (slice(a, a + k),)]) for a, k in zip(starts, sizes)]
    if not (x.requires_grad and _GRAD[0]):
        return [_const(p) for p in pieces]

    def vjp(gs):
        if _b.all(g is not None for g in gs):
            return (np.concatenate(gs, axis=axis),)
        gx = np.zeros(xd.shape, xd.dtype)
        for g, part in zip(gs, np.split(gx, bounds, axis=axis)):
            if g is not None:
                part[...] = g
        return (gx,)
    return record_multi(pieces, (x,), vjp, fill_zeros=False)


def unstack(x, axis=0):
    """The slices of ``x`` along ``axis`` (that axis dropped), as a list: the steps of a
    sequence, with one backward for all of them (a scan reads every step once)."""
    x = _wrap(x)
    xd = x.data
    pieces = list(np.moveaxis(xd, axis, 0))      # views, no copies
    if not (x.requires_grad and _GRAD[0]):
        return [_const(p) for p in pieces]

    def vjp(gs):
        gx = np.zeros(xd.shape, xd.dtype)
        moved = np.moveaxis(gx, axis, 0)
        for i, g in enumerate(gs):
            if g is not None:
                moved[i] = g
        return (gx,)
    return record_multi(pieces, (x,), vjp, fill_zeros=False)


def take(weight, indices, axis=0):
    """Gather ``weight`` along ``axis`` (embedding lookup); indices are not
    differentiated."""
    w = _wrap(weight)
    wd = w.data
    idx = indices.data if isinstance(indices, Tensor) else np.asarray(indices)
    axis = axis % wd.ndim
    out = np.take(wd, idx, axis=axis)
    return _scalar_op(w, out, lambda g: (_take_grad(g, idx, wd.shape, axis, wd.dtype),))


def _norm_pad_list(pads, ndim):
    pads = [tuple(int(v) for v in p) for p in pads]
    if len(pads) > ndim:
        raise ValueError(f"{len(pads)} pad pairs for a {ndim}-d tensor")
    return [(0, 0)] * (ndim - len(pads)) + pads


def pad(x, pads, value=0.0, mode="constant"):
    """Padding.  ``pads`` is a list of (before, after) pairs; if it is shorter than ``x.ndim`` it
    applies to the trailing dims.  mode 'constant' fills with ``value`` (negative amounts crop);
    'reflect' mirrors without repeating the edge, 'replicate' repeats the edge (PyTorch's
    modes; amounts >= 0, reflect's below the dim's size)."""
    x = _wrap(x)
    xd = x.data
    pads = _norm_pad_list(pads, xd.ndim)
    if mode == "constant":
        inv = [(-b, -a) for b, a in pads]
        return _scalar_op(x, pad_array(xd, pads, value), lambda g: (pad_array(g, inv, 0.0),))
    if mode not in ("reflect", "replicate"):
        raise ValueError(f"pad mode must be 'constant', 'reflect' or 'replicate', got {mode!r}")
    out = np.pad(xd, pads, mode="reflect" if mode == "reflect" else "edge")

    def vjp(g):
        # one axis at a time, last first: fold each padded border back onto the positions it copied
        for axis in range(xd.ndim - 1, -1, -1):
            b, a = pads[axis]
            if not (b or a):
                continue
            n = xd.shape[axis]
            g = np.moveaxis(g, axis, 0)
            gx = g[b:b + n].copy()
            for j in range(b):                       # border position j copies source src
                gx[(b - j) if mode == "reflect" else 0] += g[j]
            for j in range(a):
                gx[(n - 2 - j) if mode == "reflect" else n - 1] += g[b + n + j]
            g = np.moveaxis(gx, 0, axis)
        return (g,)
    return _scalar_op(x, out, vjp)


def roll(x, shifts, axes):
    """np.roll with a gradient: elements shifted by ``shifts`` along ``axes``, wrapping around."""
    x = _wrap(x)
    shifts, axes = tuple(shifts), tuple(axes)
    back = tuple(-s for s in shifts)
    return _scalar_op(x, np.roll(x.data, shifts, axes), lambda g: (np.roll(g, back, axes),))


def tile(x, reps):
    """np.tile with a gradient (``reps`` has one entry per dim of x): the copies' gradients summed."""
    x = _wrap(x)
    xd = x.data
    reps = tuple(int(r) for r in reps)
    split = tuple(v for r, d in zip(reps, xd.shape) for v in (r, d))

    def vjp(g):
        return (g.reshape(split).sum(axis=tuple(range(0, 2 * xd.ndim, 2))),)
    return _scalar_op(x, np.tile(xd, reps), vjp)


def resample_matrix(n_in: int, n_out: int, mode: str, align_corners: bool = False, scale=None,
                    dtype=np.float32) -> np.ndarray:
    """[n_in, n_out] interpolation matrix along one axis, PyTorch's rules (upsample_*): `scale`
    is the scale_factor the user gave (None when a size was given). 'nearest': source
    floor(j * in/out) (1/scale when given); 'linear': source (j + 0.5) * in/out - 0.5 clamped at
    0, or j * (in - 1)/(out - 1) with align_corners, between the two neighbours."""
    m = np.zeros((n_in, n_out), dtype=np.float64)
    j = np.arange(n_out)
    if mode == "nearest":
        r = (1.0 / scale) if scale else n_in / n_out
        src = np.minimum(np.floor(j.astype(np.float32) * np.float32(r)).astype(np.int64), n_in - 1)  # float32, as PyTorch
        m[src, j] = 1.0
        return m.astype(dtype)
    if align_corners:
        src = j * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        r = (1.0 / scale) if scale else n_in / n_out
        src = np.maximum((j + 0.5) * r - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    np.add.at(m, (i0, j), 1.0 - w1)
    np.add.at(m, (i1, j), w1)
    return m.astype(dtype)


def resample(x, mats: dict):
    """Resample x along each axis a in ``mats`` with its [in, out] matrix (resample_matrix);
    a nearest-neighbour repeat by an integer factor k (matrix[i, i*k..i*k+k-1] = 1) is np.repeat."""
    x = _wrap(x)
    steps = []
    out = x.data
    for axis, m in mats.items():
        n_in, n_out = m.shape
        k = n_out // n_in
        if n_out == k * n_in and np.array_equal(m, np.repeat(np.eye(n_in, dtype=m.dtype), k, axis=1)):
            steps.append((axis, k, None))
            out = np.repeat(out, k, axis=axis)
        else:
            m = m.astype(out.dtype, copy=False)
            steps.append((axis, 0, m))
            out = np.moveaxis(np.moveaxis(out, axis, -1) @ m, -1, axis)

    def vjp(g):
        for axis, k, m in reversed(steps):
            if m is None:
                shp = g.shape
                g = g.reshape(shp[:axis] + (shp[axis] // k, k) + shp[axis + 1:]).sum(axis=axis + 1)
            else:
                g = np.moveaxis(np.moveaxis(g, axis, -1) @ m.T, -1, axis)
        return (contiguous(g),)
    return _scalar_op(x, contiguous(out), vjp)
