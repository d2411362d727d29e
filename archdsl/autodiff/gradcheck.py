"""Finite-difference gradient checking in float64."""

from __future__ import annotations

import numpy as np

from .tensor import Tensor, backward, no_grad

__all__ = ["check_grads"]


def _outputs(res):
    if isinstance(res, Tensor):
        return [res]
    if isinstance(res, (list, tuple)) and all(isinstance(r, Tensor) for r in res):
        return list(res)
    raise TypeError(f"check_grads: fn must return a Tensor or a list of Tensors, got {type(res)}")


def check_grads(fn, inputs, eps=1e-6, rtol=1e-5, atol=1e-7, full=None, seed=0):
    """Check reverse-mode gradients of ``fn`` against central differences.

    ``fn`` takes one Tensor per entry of ``inputs`` (converted to float64
    Tensors that require grad) and returns a Tensor or a list of Tensors.
    A random cotangent ``u`` is backpropagated and compared with:

    * the directional derivative ``<u, J v>`` for a random direction ``v``
      (always; this is autograd's ``check_vjp``), and
    * every entry of the numerical gradient of ``<u, fn(x)>`` when the
      inputs have at most 300 elements in total (or ``full=True``).

    Non-differentiable arguments (indices, flags) belong in ``fn``'s closure.
    Raises AssertionError describing the worst mismatch; returns the
    analytic gradients.
    """
    rng = np.random.default_rng(seed)
    xs = [np.array(x, dtype=np.float64) for x in inputs]
    ts = [Tensor(x, requires_grad=True) for x in xs]
    outs = _outputs(fn(*ts))
    for o in outs:
        if o.data.dtype != np.float64:
            raise AssertionError(f"check_grads: fn returned {o.data.dtype}, expected float64")
    us = [rng.standard_normal(o.data.shape) for o in outs]
    if len(outs) == 1:
        backward(outs[0], us[0])
    else:
        from . import functional as F
        total = None
        for o, u in zip(outs, us):
            term = F.sum(F.mul(o, u))
            total = term if total is None else F.add(total, term)
        backward(total)
    grads = [t.grad if t.grad is not None else np.zeros_like(t.data) for t in ts]

    def f(vals):
        with no_grad():
            res = _outputs(fn(*[Tensor(v) for v in vals]))
        return sum(float(np.sum(np.asarray(r.data, dtype=np.float64) * u)) for r, u in zip(res, us))

    if full is None:
        full = sum(x.size for x in xs) <= 300
    if full:
        for i, x in enumerate(xs):
            ng = np.zeros_like(x)
            for j in range(x.size):
                args = list(xs)
                xp = x.copy()
                xp.flat[j] += eps
                args[i] = xp
                fp = f(args)
                xp.flat[j] -= 2 * eps
                fm = f(args)
                ng.flat[j] = (fp - fm) / (2 * eps)
            bad = ~(np.abs(grads[i] - ng) <= atol + rtol * np.abs(ng))
            if bad.any():
                err = np.abs(grads[i] - ng)
                j = np.unravel_index(np.argmax(np.where(bad, err, -1)), x.shape)
                raise AssertionError(
                    f"check_grads: gradient of input {i} (shape {x.shape}) wrong at {j}: "
                    f"reverse-mode {grads[i][j]!r} vs numerical {ng[j]!r}; "
                    f"{int(bad.sum())} of {x.size} entries off, max abs err {err.max():.3e}")
    # directional check
    vs = [rng.standard_normal(x.shape) for x in xs]
    num = (f([x + eps * v for x, v in zip(xs, vs)]) - f([x - eps * v for x, v in zip(xs, vs)])) / (2 * eps)
    ana = sum(float(np.sum(g * v)) for g, v in zip(grads, vs))
    if not abs(ana - num) <= atol + rtol * abs(num):
        raise AssertionError(
            f"check_grads: directional derivative mismatch: reverse-mode {ana!r} vs "
            f"numerical {num!r} (abs err {abs(ana - num):.3e}, rel err "
            f"{abs(ana - num) / max(abs(num), 1e-300):.3e})")

    return grads
