"""Core of the autodiff engine: the Tensor type with its operators, the tape and `backward`.

Design (all choices are about per-op Python overhead, which dominates small nets):

* A primitive computes its forward on plain numpy arrays.  Only when some input
  requires grad *and* grad mode is on does it append one tuple
  ``(out_tensor, input_tensors, vjp)`` to the current tape.  Creation
  order is a valid topological order, so ``backward`` simply walks the tape in
  reverse: no DFS, no per-node objects besides the tuple and the vjp closure.
* The tape belongs to a run: ``with Tape():`` records on a tape of its own until the
  block ends (a training run, each step of a GAN's two models); outside any, operations
  go on the process's default tape.
* The primitives behind Tensor's operators and methods (arithmetic, matmul, reductions,
  indexing, reshapes, the common activations) are defined here, with the class; the
  other primitives live in modules by theme (elementwise, linear, reductions, losses,
  shapes, convolution, normalization, recurrent, attention); ``functional`` gathers them.
* During ``backward`` the gradient flowing into a tensor lives in its private
  ``_g`` slot; at the end it is added to ``.grad``.  This keeps leaf gradients
  accumulating across calls while intermediates only see this pass.
* vjp functions must never modify their incoming gradient in place (it may be
  shared or a read-only broadcast view); ``backward`` copies a gradient before
  storing it in ``.grad`` whenever it could alias another array.
"""

from __future__ import annotations

import builtins as _b
import functools
import math

import numpy as np

from . import jit

__all__ = [
    "Tensor", "Tape", "tensor", "as_tensor", "backward", "zero_grad", "no_grad", "enable_grad",
    "is_grad_enabled", "unbroadcast", "defprim", "record", "record_multi",
    "clear_tape", "tape_size", "materialize",
    "add", "sub", "mul", "div", "neg", "exp", "log", "pow", "abs", "tanh", "sigmoid", "relu",
    "astype", "matmul", "sum", "mean", "max", "min", "reshape", "transpose", "flatten", "getitem",
]

# The current tape: tuples (out, inputs, vjp) in creation order.  Cleared by backward().
_TAPE: list = []
_append = _TAPE.append
# Grad mode lives in a one-element list so other modules read it with one
# subscript instead of a module attribute lookup.
_GRAD = [True]
_new = object.__new__
_ndarray = np.ndarray
_asarray = np.asarray


def _to_array(data, dtype=None):
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        return np.asarray(data, dtype=dtype)
    if isinstance(data, (np.ndarray, np.generic)):
        return np.asarray(data)
    arr = np.asarray(data)
    # Python floats default to float32: that is the engine's working precision.
    return arr.astype(np.float32) if arr.dtype == np.float64 else arr


def as_tensor(x):
    """Return ``x`` if it is a Tensor, else wrap it as a constant (keeps its dtype)."""
    return x if isinstance(x, Tensor) else _const(np.asarray(x))


def tensor(data, requires_grad=False, dtype=None):
    """Make a Tensor.  ndarrays keep their dtype; Python floats become float32."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


# -- fast constructors used by every primitive --------------------------------

def _const(data):
    """Wrap an array result that needs no gradient (no tape entry)."""
    if type(data) is not _ndarray:
        data = _asarray(data)
    t = _new(Tensor)
    t.data = data
    t.grad = None
    t.requires_grad = False
    t._g = None
    t._op = False
    return t


def record(data, inputs, vjp):
    """Create the output Tensor of a primitive and put it on the tape.

    ``inputs`` is a tuple of Tensors; ``vjp(g)`` must return a sequence with
    one gradient (ndarray, same shape as the input) or None per input.
    The caller is responsible for checking that recording is wanted.
    """
    if type(data) is not _ndarray:
        data = _asarray(data)
    t = _new(Tensor)
    t.data = data
    t.grad = None
    t.requires_grad = True
    t._g = None
    t._op = True
    _append((t, inputs, vjp))
    return t


_NONE1 = (None,)


def record_multi(datas, inputs, vjp, fill_zeros=True):
    """Record a primitive with several outputs.

    ``vjp(grads)`` receives a tuple with one cotangent per output (zeros for
    outputs that got no gradient when ``fill_zeros``, else None) and returns
    one gradient per input.  Implemented with a hidden tensor recorded before
    the outputs: each output's tape entry parks its gradient in the hidden
    tensor, whose own entry (processed after all of them) calls ``vjp`` once.
    """
    n = len(datas)
    hidden = _new(Tensor)
    hidden.data = _EMPTY
    hidden.grad = None
    hidden.requires_grad = True
    hidden._g = None
    hidden._op = True
    datas = [d if type(d) is _ndarray else _asarray(d) for d in datas]

    def joint_vjp(slots):
        hidden._g = None
        if fill_zeros:
            slots = [np.zeros_like(d) if s is None else s for s, d in zip(slots, datas)]
        return vjp(tuple(slots))

    _append((hidden, inputs, joint_vjp))
    hin = (hidden,)
    outs = []
    for i, d in enumerate(datas):
        def park(g, i=i):
            slots = hidden._g
            if slots is None:
                slots = hidden._g = [None] * n
            slots[i] = g
            return _NONE1
        outs.append(record(d, hin, park))
    return outs


_EMPTY = np.empty(0)


# -- grad mode ----------------------------------------------------------------

def is_grad_enabled():
    return _GRAD[0]


class no_grad:
    """Context manager (and decorator) that disables recording."""

    __slots__ = ("_prev",)
    _mode = False

    def __enter__(self):
        self._prev = _GRAD[0]
        _GRAD[0] = self._mode

    def __exit__(self, *exc):
        _GRAD[0] = self._prev
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.__class__():
                return fn(*args, **kwargs)
        return wrapper


class enable_grad(no_grad):
    """Re-enable recording inside a ``no_grad`` block."""

    __slots__ = ()
    _mode = True


def clear_tape():
    """Drop all recorded operations (e.g. after an evaluation pass that
    forgot ``no_grad``).  ``backward`` does this automatically."""
    _TAPE.clear()


def tape_size():
    return len(_TAPE)


class Tape:
    """The operations recorded for one run. Inside ``with tape:`` primitives record on this
    tape (and ``backward``/``clear_tape`` work on it); the previous tape comes back at the
    end. A tape can be entered again to go on recording where it stopped (a GAN keeps its
    generator's forward on one tape while the discriminator trains on another)."""

    __slots__ = ("entries", "_saved")

    def __init__(self):
        self.entries: list = []
        self._saved: list = []

    def __enter__(self):
        global _TAPE, _append
        self._saved.append((_TAPE, _append))
        _TAPE, _append = self.entries, self.entries.append
        return self

    def __exit__(self, *exc):
        global _TAPE, _append
        _TAPE, _append = self._saved.pop()
        return False

    def __len__(self):
        return len(self.entries)


# -- backward -----------------------------------------------------------------

def unbroadcast(g, shape):
    """Sum ``g`` down to ``shape`` (the inverse of numpy broadcasting)."""
    gshape = g.shape
    if gshape == shape:
        return g
    lead = len(gshape) - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g


def materialize(a, shape, dtype):
    """A fresh C-contiguous array of ``shape`` holding ``a`` broadcast.
    (``np.broadcast_to(a, shape).copy()`` is several times slower.)"""
    out = np.empty(shape, dtype)
    np.copyto(out, a, casting="unsafe")
    return out


def backward(loss, grad=None):
    """Backpropagate from ``loss``; accumulate ``.grad`` of every tensor with
    ``requires_grad`` that ``loss`` depends on (leaves and intermediates).

    ``grad`` is the cotangent of ``loss`` (default: ones, i.e. d sum(loss)).
    The tape is cleared afterwards, so each forward supports one backward.
    """
    if not isinstance(loss, Tensor):
        raise TypeError("backward() expects a Tensor")
    tape = _TAPE
    # tensors whose gradient is pending, by id: leaves, and outputs of operations on another tape
    # (a GAN's generator seen from the discriminator's tape); an intermediate leaves it when its
    # own entry is reached
    pending = {}
    prev_mode = _GRAD[0]
    _GRAD[0] = False  # vjps built from Tensor ops must not grow the tape we walk
    try:
        if not loss.requires_grad:
            raise RuntimeError("backward: the loss does not require grad (no input requires grad, "
                               "or it was computed under no_grad)")
        ldata = loss.data
        if grad is None:
            # (np.ones goes through Python; a 0-d loss is the common case)
            seed = np.array(1, ldata.dtype) if ldata.ndim == 0 else np.ones(ldata.shape, ldata.dtype)
        else:
            if isinstance(grad, Tensor):
                grad = grad.data
            seed = materialize(grad, ldata.shape, ldata.dtype)
        loss._g = seed
        pending[id(loss)] = loss
        settle = pending.pop
        seen = set()
        remember = seen.add
        pop = tape.pop
        # Entries leave the tape as they are processed, so each operation's saved arrays (its vjp
        # closure) and its output (with the output's gradient) are freed as soon as the backward
        # has passed it, instead of all of them living until the end (peak memory).
        while tape:
            out, inputs, vjp = pop()
            g = out._g
            if g is None:
                continue
            # out is an intermediate and its gradient is complete (creation order
            # is topological): publish it without a copy, then propagate.
            out._g = None
            settle(id(out), None)
            if type(g) is _ndarray:
                remember(id(g))
                out.grad = g if out.grad is None else out.grad + g
            elif type(g) is not list:  # list: parked slots of a multi-output node
                out.grad = np.asarray(g) if out.grad is None else out.grad + g
            grads = vjp(g)
            for t, gi in zip(inputs, grads):
                if gi is None or not t.requires_grad:
                    continue
                tg = t._g
                if tg is None:
                    t._g = gi
                    pending[id(t)] = t
                else:
                    t._g = tg + gi
            del out, inputs, vjp, g, grads
        if loss._op and loss._g is not None:
            raise RuntimeError("backward: the loss's operations are no longer on the tape "
                               "(backward already ran on this graph, or clear_tape() was called)")
        # what is left pending are leaves (and the loss if it is one): give them owned arrays
        # of their own dtype.
        for t in pending.values():
            g = t._g
            if g is None:
                continue
            t._g = None
            d = t.data
            # a gradient may be a view, a numpy scalar, or the very same object
            # handed to another tensor (e.g. both inputs of add)
            if (type(g) is not _ndarray or g.base is not None or id(g) in seen
                    or (g.dtype is not d.dtype and g.dtype != d.dtype)):
                g = np.array(g, dtype=d.dtype)
            if g.shape != d.shape:
                raise RuntimeError(
                    f"gradient of shape {g.shape} for tensor of shape {d.shape}: "
                    "a vjp returned a wrongly shaped gradient")
            remember(id(g))
            t.grad = g if t.grad is None else t.grad + g
    finally:
        for t in pending.values():
            t._g = None
        for out, inputs, _ in tape:       # what an error left unprocessed
            out._g = None
            for t in inputs:
                t._g = None
        tape.clear()
        _GRAD[0] = prev_mode


def zero_grad(tensors):
    """Reset ``.grad`` to None for each tensor."""
    for t in tensors:
        t.grad = None


# -- user-defined primitives --------------------------------------------------

def defprim(fwd):
    """Turn ``fwd(*arrays, **params) -> (out, vjp)`` into a Tensor primitive.

    Positional arguments that are Tensors are differentiable inputs; every
    other positional argument (arrays, scalars, None) is passed through as is.
    Keyword arguments are static parameters.  ``vjp(g)`` must return one
    gradient or None per positional argument, each with that argument's shape
    (use ``unbroadcast``), and must not modify ``g`` in place.

    If ``out`` is a tuple/list the primitive has several outputs: the wrapper
    returns a tuple of Tensors and ``vjp`` receives a tuple of cotangents
    (zeros for outputs that did not influence the loss).

    The forward runs even in ``no_grad`` mode, so keep work that only the
    backward needs inside ``vjp``.
    """
    @functools.wraps(fwd)
    def prim(*args, **kwargs):
        arrays = [a.data if isinstance(a, Tensor) else a for a in args]
        out, vjp = fwd(*arrays, **kwargs)
        need = False
        if _GRAD[0]:
            for a in args:
                if isinstance(a, Tensor) and a.requires_grad:
                    need = True
                    break
        multi = isinstance(out, (tuple, list))
        if not need:
            return tuple(_const(o) for o in out) if multi else _const(out)
        inputs = tuple(a if isinstance(a, Tensor) else _NOGRAD for a in args)
        if multi:
            return tuple(record_multi(out, inputs, vjp))
        return record(out, inputs, vjp)

    prim.forward = fwd
    return prim


# =============================================================================
# The primitives behind Tensor's operators and methods
# =============================================================================
#
# Each computes its forward on ``.data``; if an input requires grad and grad mode is on it
# records ``(out, inputs, vjp)``, else it wraps the result as a constant. Work only the
# backward needs (masks, argmaxes, ...) is done inside the vjp closure so inference pays
# nothing for it. Constants are Python floats (never ``np.float64``) so float32 data stays
# float32 under NEP 50. Reductions ``max``/``min`` split the gradient evenly between ties.

_ndarray = np.ndarray


_ub = unbroadcast


# ufunc reductions called directly: ``a.sum()`` / ``a.max()`` go through a Python wrapper
_add_reduce = np.add.reduce


_max_reduce = np.maximum.reduce


_wrap = as_tensor


def _other(b):
    """Classify a non-Tensor operand of a binary op.

    Returns (python_scalar, None) for scalars, which keep the Tensor's dtype
    (NEP 50 weak scalars), or (None, constant_tensor) for array-likes.
    """
    if isinstance(b, (int, float, np.generic)) and not isinstance(b, np.ndarray):
        return (b.item() if isinstance(b, np.generic) else b), None
    return None, _const(np.asarray(b))


def _scalar_op(x, out, vjp):
    if x.requires_grad and _GRAD[0]:
        return record(out, (x,), vjp)
    return _const(out)


def add(a, b):
    if not isinstance(b, Tensor):
        s, b = _other(b)
        if b is None:
            a = _wrap(a)
            return _scalar_op(a, a.data + s, _identity_vjp)
    if not isinstance(a, Tensor):
        s, a = _other(a)
        if a is None:
            return _scalar_op(b, b.data + s, _identity_vjp)
    ad = a.data
    bd = b.data
    out = ad + bd
    ra = a.requires_grad
    rb = b.requires_grad
    if (ra or rb) and _GRAD[0]:
        sa, sb = ad.shape, bd.shape      # shapes only: the arrays need not outlive the forward

        def vjp(g):
            gs = g.shape
            return ((g if sa == gs else _ub(g, sa)) if ra else None,
                    (g if sb == gs else _ub(g, sb)) if rb else None)
        return record(out, (a, b), vjp)
    return _const(out)


def _identity_vjp(g):
    return (g,)


def _neg_vjp(g):
    return (-g,)


def sub(a, b):
    if not isinstance(b, Tensor):
        s, b = _other(b)
        if b is None:
            a = _wrap(a)
            return _scalar_op(a, a.data - s, _identity_vjp)
    if not isinstance(a, Tensor):
        s, a = _other(a)
        if a is None:
            return _scalar_op(b, s - b.data, _neg_vjp)
    ad = a.data
    bd = b.data
    out = ad - bd
    ra = a.requires_grad
    rb = b.requires_grad
    if (ra or rb) and _GRAD[0]:
        sa, sb = ad.shape, bd.shape

        def vjp(g):
            gs = g.shape
            return ((g if sa == gs else _ub(g, sa)) if ra else None,
                    (-(g if sb == gs else _ub(g, sb))) if rb else None)
        return record(out, (a, b), vjp)
    return _const(out)


def mul(a, b):
    if not isinstance(b, Tensor):
        s, b = _other(b)
        if b is None:
            a = _wrap(a)
            return _scalar_op(a, a.data * s, lambda g: (g * s,))
    if not isinstance(a, Tensor):
        s, a = _other(a)
        if a is None:
            return _scalar_op(b, b.data * s, lambda g: (g * s,))
    ad = a.data
    bd = b.data
    out = ad * bd
    ra = a.requires_grad
    rb = b.requires_grad
    if (ra or rb) and _GRAD[0]:
        def vjp(g):
            ga = gb = None
            if ra:
                ga = g * bd
                if ad.shape != ga.shape:
                    ga = _ub(ga, ad.shape)
            if rb:
                gb = g * ad
                if bd.shape != gb.shape:
                    gb = _ub(gb, bd.shape)
            return ga, gb
        return record(out, (a, b), vjp)
    return _const(out)


def div(a, b):
    if not isinstance(b, Tensor):
        s, b = _other(b)
        if b is None:
            a = _wrap(a)
            return _scalar_op(a, a.data / s, lambda g: (g / s,))
    if not isinstance(a, Tensor):
        s, a = _other(a)
        if a is None:
            bd = b.data
            out = s / bd
            return _scalar_op(b, out, lambda g: (-(g * out) / bd,))
    ad = a.data
    bd = b.data
    out = ad / bd
    ra = a.requires_grad
    rb = b.requires_grad
    if (ra or rb) and _GRAD[0]:
        def vjp(g):
            ga = gb = None
            gq = g / bd
            if ra:
                ga = gq if ad.shape == gq.shape else _ub(gq, ad.shape)
            if rb:
                gb = -(gq * out)
                if bd.shape != gb.shape:
                    gb = _ub(gb, bd.shape)
            return ga, gb
        return record(out, (a, b), vjp)
    return _const(out)


def _wrap_like(x, other):
    """Wrap a scalar with the dtype of the other operand (if it is a Tensor)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(other, Tensor) and np.ndim(x) == 0 and not isinstance(x, np.ndarray):
        return _const(np.asarray(x, dtype=other.data.dtype))
    return _const(np.asarray(x))


def pow(x, p):
    """``x ** p``.  ``p`` is normally a Python scalar; a Tensor exponent is
    also differentiated (d/dp = x**p * log x, taken as 0 where x <= 0)."""
    if isinstance(p, Tensor) or (isinstance(p, np.ndarray) and p.ndim > 0):
        return _pow_tensor(_wrap(x), _wrap(p))
    x = _wrap(x)
    p = p.item() if isinstance(p, np.generic) else p
    xd = x.data
    if p == 2:
        out = xd * xd
        return _scalar_op(x, out, lambda g: (g * (2.0 * xd),))
    out = xd ** p
    if p == 0.5:
        return _scalar_op(x, out, lambda g: (g * 0.5 / out,))
    return _scalar_op(x, out, lambda g: (g * (p * xd ** (p - 1)),))


def _pow_tensor(x, p):
    xd = x.data
    pd = p.data
    out = xd ** pd
    rx = x.requires_grad
    rp = p.requires_grad
    if (rx or rp) and _GRAD[0]:
        def vjp(g):
            gx = gp = None
            if rx:
                gx = _ub(g * pd * xd ** (pd - 1), xd.shape)
            if rp:
                pos = xd > 0
                gp = _ub(g * out * np.log(np.where(pos, xd, 1)) * pos, pd.shape)
            return gx, gp
        return record(out, (x, p), vjp)
    return _const(out)


def _rsub(a, b):
    return sub(b, a)


def _rdiv(a, b):
    return div(b, a)


def _rpow(a, b):
    return pow(_wrap_like(b, a), a)


def _rmatmul(a, b):
    return matmul(b, a)


def neg(x):
    x = _wrap(x)
    return _scalar_op(x, -x.data, _neg_vjp)


def exp(x):
    x = _wrap(x)
    out = np.exp(x.data)
    return _scalar_op(x, out, lambda g: (g * out,))


def log(x):
    x = _wrap(x)
    xd = x.data
    return _scalar_op(x, np.log(xd), lambda g: (g / xd,))


def abs(x):
    x = _wrap(x)
    xd = x.data
    return _scalar_op(x, np.abs(xd), lambda g: (g * np.sign(xd),))


def tanh(x):
    x = _wrap(x)
    out = np.tanh(x.data)
    return _scalar_op(x, out, lambda g: (g * (1.0 - out * out),))


def sigmoid(x):
    x = _wrap(x)
    # 0.5 + 0.5 tanh(x/2): one transcendental, no overflow for large |x|.
    out = np.tanh(x.data * 0.5)
    out *= 0.5
    out += 0.5
    return _scalar_op(x, out, lambda g: (g * (out * (1.0 - out)),))


def relu(x):
    if not isinstance(x, Tensor):
        x = _wrap(x)
    xd = x.data
    if xd.size >= jit.MIN_ELEMENTS:             # (small arrays: no further checks, NumPy's pass)
        jk = jit.for_array(xd)
        if jk is not None:
            return _relu_compiled(x, xd, jk)
    out = np.maximum(xd, 0)
    if x.requires_grad and _GRAD[0]:
        # the mask from the output, so the input's array is not kept for the backward
        return record(out, (x,), lambda g: (g * (out > 0),))
    return _const(out)


def _relu_compiled(x, xd, jk):
    """relu on the compiled kernels: one pass forward, one backward (g * (out > 0) in NumPy is
    a mask pass, a conversion and a product)."""
    out = np.empty_like(xd)
    xf, of = xd.reshape(-1), out.reshape(-1)
    jit.split(xf.size, lambda lo, hi: jk.relu(xf, of, lo, hi), 2)
    if not (x.requires_grad and _GRAD[0]):
        return _const(out)

    def vjp(g):
        if g.dtype != out.dtype or g.shape != out.shape or not g.flags.c_contiguous:
            return (g * (out > 0),)
        gx = np.empty_like(g)
        gf, xf = g.reshape(-1), gx.reshape(-1)
        jit.split(gf.size, lambda lo, hi: jk.relu_grad(gf, of, xf, lo, hi), 3)
        return (gx,)
    return record(out, (x,), vjp)


def astype(x, dtype):
    """Differentiable dtype cast (the gradient is cast back)."""
    x = _wrap(x)
    src = x.data.dtype
    return _scalar_op(x, x.data.astype(dtype), lambda g: (g.astype(src),))


def matmul(a, b):
    """numpy ``matmul`` semantics: batched with broadcasting, 1-D operands promoted."""
    if not isinstance(a, Tensor):
        a = _wrap(a)
    if not isinstance(b, Tensor):
        b = _wrap(b)
    ad = a.data
    bd = b.data
    out = ad @ bd
    ra = a.requires_grad
    rb = b.requires_grad
    if not ((ra or rb) and _GRAD[0]):
        return _const(out)
    if ad.ndim == 2 and bd.ndim == 2:
        def vjp(g):
            return (g @ bd.T if ra else None, ad.T @ g if rb else None)
        return record(out, (a, b), vjp)

    a2 = ad[None, :] if ad.ndim == 1 else ad
    b2 = bd[:, None] if bd.ndim == 1 else bd
    oshape2 = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) + (a2.shape[-2], b2.shape[-1])

    def vjp(g):
        g2 = g.reshape(oshape2)
        ga = gb = None
        if ra:
            ga = _ub(g2 @ np.swapaxes(b2, -1, -2), a2.shape).reshape(ad.shape)
        if rb:
            if b2.ndim == 2 and a2.ndim > 2:
                # weight shared over the batch: one GEMM instead of a batch + sum
                k = a2.shape[-1]
                gb = a2.reshape(-1, k).T @ g2.reshape(-1, g2.shape[-1])
            else:
                gb = _ub(np.swapaxes(a2, -1, -2) @ g2, b2.shape)
            gb = gb.reshape(bd.shape)
        return ga, gb
    return record(out, (a, b), vjp)


def _norm_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    out = []
    for a in axis:
        a = int(a)
        if not -ndim <= a < _b.max(ndim, 1):
            raise np.exceptions.AxisError(a, ndim)
        out.append(a % ndim if ndim else 0)
    return tuple(sorted(set(out)))


def g_dtype(x):
    """Gradient dtype for an input array (floats keep theirs)."""
    return x.dtype if x.dtype.kind in "fc" else np.float64


def _keep_shape(shape, axes):
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def sum(x, axis=None, keepdims=False):
    if type(axis) is list:
        axis = tuple(axis)
    x = _wrap(x)
    xd = x.data
    out = np.sum(xd, axis=axis, keepdims=keepdims)
    if not (x.requires_grad and _GRAD[0]):
        return _const(out)
    shape = xd.shape
    dtype = g_dtype(xd)
    kshape = _keep_shape(shape, _norm_axes(axis, xd.ndim))

    def vjp(g):
        # materialise: a broadcast view (zero strides) would push later GEMMs off BLAS
        return (materialize(np.reshape(g, kshape), shape, dtype),)
    return record(out, (x,), vjp)


def mean(x, axis=None, keepdims=False):
    if type(axis) is list:
        axis = tuple(axis)
    x = _wrap(x)
    xd = x.data
    out = np.mean(xd, axis=axis, keepdims=keepdims)
    if xd.dtype.kind == "f" and out.dtype != xd.dtype:
        out = out.astype(xd.dtype)
    if not (x.requires_grad and _GRAD[0]):
        return _const(out)
    shape = xd.shape
    dtype = g_dtype(xd)
    axes = _norm_axes(axis, xd.ndim)
    kshape = _keep_shape(shape, axes)
    scale = 1.0 / _b.max(1, math.prod(shape[i] for i in axes))

    def vjp(g):
        return (materialize(np.reshape(g * scale, kshape), shape, dtype),)
    return record(out, (x,), vjp)


def _reduce_extreme(x, axis, keepdims, op):
    if type(axis) is list:
        axis = tuple(axis)
    x = _wrap(x)
    xd = x.data
    outk = op(xd, axis=axis, keepdims=True)
    out = outk if keepdims else np.reshape(outk, _drop_axes(xd.shape, _norm_axes(axis, xd.ndim)))
    if not (x.requires_grad and _GRAD[0]):
        return _const(out)
    kshape = outk.shape

    def vjp(g):
        # ties share the gradient evenly
        mask = xd == outk
        cnt = mask.sum(axis=axis, keepdims=True, dtype=xd.dtype)
        return (mask * (np.reshape(g, kshape) / cnt),)
    return record(out, (x,), vjp)


def _drop_axes(shape, axes):
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def max(x, axis=None, keepdims=False):
    """Max reduction; tied maxima share the gradient evenly."""
    return _reduce_extreme(x, axis, keepdims, np.max)


def min(x, axis=None, keepdims=False):
    """Min reduction; tied minima share the gradient evenly."""
    return _reduce_extreme(x, axis, keepdims, np.min)


def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return shape


def reshape(x, shape):
    x = _wrap(x)
    xd = x.data
    shp = xd.shape
    return _scalar_op(x, xd.reshape(shape), lambda g: (np.reshape(g, shp),))


def transpose(x, perm=None):
    x = _wrap(x)
    xd = x.data
    nd = xd.ndim
    perm = tuple(range(nd - 1, -1, -1)) if perm is None else tuple(int(p) % nd for p in perm)
    inv = tuple(np.argsort(perm))
    return _scalar_op(x, xd.transpose(perm), lambda g: (np.transpose(g, inv),))


def flatten(x, start_axis=1, end_axis=-1):
    x = _wrap(x)
    shp = x.data.shape
    nd = len(shp)
    s = start_axis % nd if nd else 0
    e = end_axis % nd if nd else 0
    return reshape(x, shp[:s] + (-1,) + shp[e + 1:])


def _index_kind(idx):
    """'basic' (views, unique positions), 'mask' (boolean: unique positions),
    'take0' (one integer array: embedding-style gather) or 'adv' (general)."""
    if isinstance(idx, np.ndarray):
        return "mask" if idx.dtype == bool else "take0"
    if isinstance(idx, tuple):
        kind = "basic"
        for i in idx:
            if isinstance(i, np.ndarray):
                if i.dtype != bool:
                    return "adv"
                kind = "mask"
        return kind
    return "basic"


def _clean_index(idx):
    if isinstance(idx, Tensor):
        return idx.data
    if isinstance(idx, list):
        return np.asarray(idx)
    if isinstance(idx, tuple):
        return tuple(i.data if isinstance(i, Tensor) else (np.asarray(i) if isinstance(i, list) else i)
                     for i in idx)
    return idx


def _take_grad(g, idx, wshape, axis, dtype):
    """Scatter-add ``g`` back into a zero array of ``wshape`` along ``axis``.

    Uses ``np.add.at`` on the flattened array: measured several times faster
    than the 2-D ``np.add.at`` or sort+reduceat for embedding-sized inputs.
    """
    V = wshape[axis]
    pre = math.prod(wshape[:axis])
    post = math.prod(wshape[axis + 1:])
    i = np.asarray(idx, dtype=np.intp).reshape(-1)
    i = np.where(i < 0, i + V, i)
    flat = i[:, None] * post + np.arange(post)
    if pre > 1:
        flat = (np.arange(pre)[:, None, None] * (V * post) + flat[None]).reshape(-1)
    gw = np.zeros(pre * V * post, dtype)
    np.add.at(gw, flat.reshape(-1), np.reshape(g, -1))
    return gw.reshape(wshape)


def getitem(x, idx):
    """``x[idx]`` for basic (int/slice/None/...) and integer/boolean array indexing."""
    x = _wrap(x)
    xd = x.data
    idx = _clean_index(idx)
    out = xd[idx]
    if not (x.requires_grad and _GRAD[0]):
        return _const(out)
    kind = _index_kind(idx)

    def vjp(g):
        if kind == "take0":
            return (_take_grad(g, idx, xd.shape, 0, xd.dtype),)
        gx = np.zeros(xd.shape, xd.dtype)
        if kind == "adv":
            np.add.at(gx, idx, g)
        else:
            gx[idx] = g
        return (gx,)
    return record(out, (x,), vjp)


class Tensor:
    """An n-d array plus gradient bookkeeping.  ``data`` is always an ndarray."""

    # _g: gradient being accumulated during backward; _op: made by a recorded op
    __slots__ = ("data", "grad", "requires_grad", "_g", "_op", "__weakref__")
    # Make ``ndarray <op> Tensor`` defer to Tensor's reflected operators
    # instead of numpy turning the Tensor into an object array.
    __array_ufunc__ = None

    def __init__(self, data, requires_grad=False, dtype=None):
        arr = _to_array(data, dtype)
        if requires_grad and arr.dtype.kind not in "fc":
            raise TypeError(f"only floating tensors can require grad, got {arr.dtype}")
        self.data = arr
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._g = None
        self._op = False

    # -- array-like metadata ------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    def __len__(self):
        return len(self.data)

    def numpy(self):
        return self.data

    def item(self):
        return self.data.item()

    def __float__(self):
        return float(self.data)

    def __bool__(self):
        return bool(self.data)

    def detach(self):
        return _const(self.data)

    def backward(self, grad=None):
        backward(self, grad)

    def __repr__(self):
        rg = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, threshold=20)}, dtype={self.data.dtype}{rg})"

    # -- operators and methods: the primitives above ------------------------
    __add__ = __radd__ = add
    __sub__ = sub
    __rsub__ = _rsub
    __mul__ = __rmul__ = mul
    __truediv__ = div
    __rtruediv__ = _rdiv
    __matmul__ = matmul
    __rmatmul__ = _rmatmul
    __pow__ = pow
    __rpow__ = _rpow
    __neg__ = neg
    __abs__ = abs
    __getitem__ = getitem
    sum = sum
    mean = mean
    max = max
    min = min
    astype = astype
    flatten = flatten
    exp = exp
    log = log
    tanh = tanh
    relu = relu
    sigmoid = sigmoid

    def reshape(self, *shape):
        return reshape(self, _shape_arg(shape))

    def transpose(self, *perm):
        perm = _shape_arg(perm)
        return transpose(self, perm if perm else None)

    @property
    def T(self):
        return transpose(self)


# Placeholder input for non-Tensor positional arguments of defprim primitives.
_NOGRAD = _const(_EMPTY)
