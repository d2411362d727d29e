"""Core of the autodiff engine: the Tensor type, the global tape and `backward`.

Design (all choices are about per-op Python overhead, which dominates small nets):

* A primitive computes its forward on plain numpy arrays.  Only when some input
  requires grad *and* grad mode is on does it append one tuple
  ``(out_tensor, input_tensors, vjp)`` to the global list ``_TAPE``.  Creation
  order is a valid topological order, so ``backward`` simply walks the tape in
  reverse: no DFS, no per-node objects besides the tuple and the vjp closure.
* During ``backward`` the gradient flowing into a tensor lives in its private
  ``_g`` slot; at the end it is added to ``.grad``.  This keeps leaf gradients
  accumulating across calls while intermediates only see this pass.
* vjp functions must never modify their incoming gradient in place (it may be
  shared or a read-only broadcast view); ``backward`` copies a gradient before
  storing it in ``.grad`` whenever it could alias another array.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = [
    "Tensor", "tensor", "as_tensor", "backward", "zero_grad", "no_grad", "enable_grad",
    "is_grad_enabled", "unbroadcast", "defprim", "record", "record_multi",
    "clear_tape", "tape_size", "take_tape", "put_back_tape", "materialize",
]

# The tape: tuples (out, inputs, vjp) in creation order.  Cleared by backward().
_TAPE: list = []
_append = _TAPE.append
# Grad mode lives in a one-element list so other modules read it with one
# subscript instead of a module attribute lookup.
_GRAD = [True]
_new = object.__new__
_ndarray = np.ndarray
_asarray = np.asarray


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

    # Operator overloads and the reshape/sum/... methods are attached by
    # archdsl.autodiff.functional (it defines the primitives they call).


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
# Placeholder input for non-Tensor positional arguments of defprim primitives.
_NOGRAD = _const(_EMPTY)


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


def take_tape() -> list:
    """Remove what the tape holds and return it, so that a ``backward`` run now (which walks
    and clears the whole tape) leaves those operations alone; ``put_back_tape`` restores
    them for a later ``backward``.  The GAN loop keeps the generator's forward pass this
    way while the discriminator trains on its output."""
    entries = list(_TAPE)
    _TAPE.clear()
    return entries


def put_back_tape(entries: list) -> None:
    """Restore entries from ``take_tape`` before anything recorded since (they were recorded
    first, and ``backward`` relies on creation order)."""
    _TAPE[:0] = entries


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
    touched = []
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
        touched.append(loss)
        push = touched.append
        seen = set()
        remember = seen.add
        for out, inputs, vjp in reversed(tape):
            g = out._g
            if g is None:
                continue
            # out is an intermediate and its gradient is complete (creation order
            # is topological): publish it without a copy, then propagate.
            out._g = None
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
                    push(t)
                else:
                    t._g = tg + gi
        if loss._op and loss._g is not None:
            raise RuntimeError("backward: the loss's operations are no longer on the tape "
                               "(backward already ran on this graph, or clear_tape() was called)")
        # what is left in touched with a pending _g are leaves (and the loss if
        # it is one): give them owned arrays of their own dtype.
        for t in touched:
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
        for t in touched:
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
