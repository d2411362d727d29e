"""archdsl.autodiff: a small, fast tape-based reverse-mode autodiff on NumPy.

Usage::

    from archdsl import autodiff as ad

    w = ad.tensor(np.random.randn(10, 4).astype(np.float32), requires_grad=True)
    x = ad.tensor(batch)                       # constant
    loss = ad.softmax_cross_entropy(ad.linear(x, w), labels)
    ad.backward(loss)                          # fills w.grad, clears the tape
    ad.zero_grad([w])

    with ad.no_grad():                         # nothing is recorded
        logits = ad.linear(x, w)

Working precision is float32 (Python floats become float32); gradient checks
run in float64 (``archdsl.autodiff.gradcheck.check_grads``).  Every operation
whose inputs require grad appends one entry to a global tape; ``backward``
walks it in reverse and then clears it, so one forward supports one backward.
An evaluation pass outside ``no_grad`` leaves entries behind until the next
``backward`` or ``clear_tape()``.  ``with Tape():`` gives a run a tape of its own
(training runs and each model of a GAN use one); grad mode is process-global (not
thread-safe).

Defining a primitive
--------------------
Write the forward on numpy arrays and return ``(out, vjp)``; ``vjp(g)``
returns one gradient (or None) per positional argument, each shaped like that
argument (use ``unbroadcast`` after broadcasting), without modifying ``g``::

    from archdsl.autodiff import defprim, unbroadcast

    @defprim
    def scaled_tanh(x, a, *, scale=1.0):      # x, a: arrays; scale: static
        t = np.tanh(a * x)
        def vjp(g):
            d = g * scale * (1.0 - t * t)
            return unbroadcast(d * a, x.shape), unbroadcast(d * x, a.shape)
        return scale * t, vjp

    y = scaled_tanh(x_tensor, a_tensor, scale=2.0)   # -> Tensor

Positional arguments that are not Tensors are passed through unchanged and
get no gradient.  A forward that returns a tuple of outputs makes a
multi-output primitive: the wrapper returns a tuple of Tensors and ``vjp``
gets a tuple of cotangents (zeros for unused outputs) — e.g. an LSTM cell
returning (h, c).  Keep backward-only work inside ``vjp``: the forward also
runs under ``no_grad``.  For the last bit of speed, write the primitive like
the built-ins in ``tensor.py`` (check ``requires_grad`` yourself and call
``record(out, inputs, vjp)``).

Modules: ``tensor`` (Tensor with its operators, Tape, backward, defprim), then the
primitives by theme: ``elementwise``, ``linear``, ``reductions``, ``losses``, ``shapes``,
and the fused kernels with hand-written gradients ``convolution`` (conv, pooling),
``normalization`` (batch/layer norm, dropout), ``recurrent`` (RNN/LSTM/GRU BPTT),
``attention``; ``functional`` gathers all primitives in one namespace; ``gradcheck``
(check_grads), ``bench`` (``OPENBLAS_NUM_THREADS=1 python -m archdsl.autodiff.bench``).
"""

from . import functional
from .functional import *  # noqa: F401,F403
from .functional import __all__ as _functional_all
from .gradcheck import check_grads
from .tensor import (
    Tape, Tensor, as_tensor, backward, clear_tape, defprim, enable_grad, is_grad_enabled,
    no_grad, record, record_multi, tape_size, tensor, unbroadcast, zero_grad,
)

F = functional

__all__ = [
    "Tensor", "tensor", "as_tensor", "backward", "zero_grad", "no_grad", "enable_grad",
    "is_grad_enabled", "defprim", "record", "record_multi", "unbroadcast",
    "clear_tape", "tape_size", "Tape", "check_grads", "functional", "F",
] + list(_functional_all)
