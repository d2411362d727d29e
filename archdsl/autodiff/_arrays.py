"""Small numpy helpers shared by the primitive modules."""

import functools

import numpy as np


def pad_array(x, pads, value=0.0):
    """Constant-pad ndarray ``x``; ``pads`` has one (before, after) pair per
    dim (negative entries crop).  Shared by pad and the conv/pool code."""
    if not any(b or a for b, a in pads):
        return x
    crop = tuple(slice(-b if b < 0 else 0, (a if a < 0 else None)) for b, a in pads)
    x = x[crop]
    if not any(b > 0 or a > 0 for b, a in pads):
        return x
    pos = [(b if b > 0 else 0, a if a > 0 else 0) for b, a in pads]
    shape = tuple(s + b + a for s, (b, a) in zip(x.shape, pos))
    out = np.full(shape, value, dtype=x.dtype)
    out[tuple(slice(b, b + s) for s, (b, _) in zip(x.shape, pos))] = x
    return out


def ntuple(v, n, name):
    """An int or a length-n sequence of ints -> tuple of n ints."""
    if isinstance(v, (int, np.integer)):
        return (int(v),) * n
    v = tuple(int(a) for a in v)
    if len(v) != n:
        raise ValueError(f"{name} needs {n} values, got {v}")
    return v


def pad_pairs(p, n):
    """Padding spec -> tuple of n (begin, end) pairs.

    Accepts an int (all sides), n ints (symmetric per dim) or n pairs."""
    if isinstance(p, (int, np.integer)):
        return ((int(p), int(p)),) * n
    p = list(p)
    if len(p) != n:
        raise ValueError(f"padding needs {n} entries (one per spatial dim), got {p}")
    out = []
    for e in p:
        if isinstance(e, (int, np.integer)):
            out.append((int(e), int(e)))
        else:
            b, a = e
            out.append((int(b), int(a)))
    return tuple(out)


@functools.lru_cache(maxsize=64)
def _ones(n, dtype):
    o = np.ones(n, dtype)
    o.setflags(write=False)
    return o


def col_sum(a2):
    """Sum of a 2-D float array over axis 0 as a BLAS gemv (``ones @ a``): a few times faster
    than ``np.add.reduce(axis=0)`` at the sizes of bias gradients and layer-norm statistics;
    the result differs only by float rounding. Other dtypes take the ufunc reduction."""
    if a2.dtype.kind != "f":
        return np.add.reduce(a2, axis=0)
    return _ones(a2.shape[0], a2.dtype) @ a2


def row_sum(a2):
    """Sum of a 2-D float array over its last axis as a gemv (``a @ ones``)."""
    if a2.dtype.kind != "f":
        return np.add.reduce(a2, axis=-1)
    return a2 @ _ones(a2.shape[1], a2.dtype)


# Source bytes per block of a transposing copy: small enough that a block's cache lines and
# pages stay in L2 and the TLB while it is written out in the destination's order.
_COPY_BLOCK = 128 << 10


def contiguous(a):
    """np.ascontiguousarray(a), in blocks when `a` is a large transposed (strided) view.

    NumPy copies a view in the order of the destination; for a transposed view that reads each
    source row once per destination row it touches, streaming the whole source from memory (and
    missing the TLB) over and over: a [2048, 512] float32 transpose takes ~7 ms. Copied in slabs
    along the source's outermost axis (its largest stride), each slab's source stays in cache,
    and the same copy takes ~1 ms."""
    a = np.asarray(a)
    if a.flags.c_contiguous or a.nbytes <= _COPY_BLOCK or a.ndim < 2 or a.strides[-1] == a.itemsize:
        # (when the last axis stays contiguous NumPy copies whole runs of it, in any order)
        return np.ascontiguousarray(a)
    k = int(np.argmax(np.abs(a.strides)))
    item = a.nbytes // a.shape[k]
    if k == 0:
        if item <= _COPY_BLOCK:     # each outer item is small: NumPy's order is cache-friendly
            return np.ascontiguousarray(a)
        out = np.empty(a.shape, a.dtype)
        for i in range(a.shape[0]):
            out[i] = contiguous(a[i])
        return out
    out = np.empty(a.shape, a.dtype)
    step = max(1, _COPY_BLOCK // max(item, 1))
    pre = (slice(None),) * k
    for i in range(0, a.shape[k], step):
        idx = pre + (slice(i, i + step),)
        out[idx] = a[idx]
    return out
