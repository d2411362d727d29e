"""Peak memory of a training step: the backward frees each operation's saved arrays once it has
passed it, and the NumPy executor releases a value's array after its last consumer when no
backward closure needs it (issue 21)."""
from __future__ import annotations

import weakref

import numpy as np

from archdsl import autodiff as ad
from archdsl.autodiff import functional as F
from archdsl.backends.numpy import executor as ex_mod
from archdsl.backends.numpy.executor import NumpyExecutor


def test_backward_frees_what_it_has_passed():
    seen = {}

    @ad.defprim
    def probe(x):
        def vjp(g):                       # runs last: everything after it is already processed
            seen["alive"] = [r() is not None for r in refs]
            return (g,)
        return x.copy(), vjp

    x = ad.tensor(np.ones((64, 64), np.float32), requires_grad=True)
    p = probe(x)
    a = F.relu(p * 2.0)
    b = a * 3.0
    refs = [weakref.ref(a), weakref.ref(b)]
    loss = b.sum()
    del p, a, b
    ad.backward(loss)
    assert seen["alive"] == [False, False]
    assert np.all(x.grad == 6.0)


def test_backward_failure_leaves_no_pending_gradients():
    @ad.defprim
    def broken(x):
        def vjp(g):
            raise RuntimeError("boom")
        return x * 1.0, vjp

    x = ad.tensor(np.ones(3, np.float32), requires_grad=True)
    y = broken(x) * 2.0
    try:
        ad.backward(y.sum())
    except RuntimeError:
        pass
    assert x._g is None and ad.tape_size() == 0


SPEC = """
model M {
  input x: f32[N, 128]
  output y = x -> Linear(256) -> ReLU -> Linear(256) -> ReLU -> Linear(4)
}
"""


def _run(monkeypatch, release_bytes):
    import archdsl
    monkeypatch.setattr(ex_mod, "_RELEASE_BYTES", release_bytes)
    model = archdsl.compile(SPEC).model("M")
    ex = NumpyExecutor(model.ir, model.init_weights(0))
    x = np.random.default_rng(0).standard_normal((128, 128)).astype(np.float32)
    with ad.Tape() as tape:
        y = ex.forward({"x": x}, training=True)["y"]
        released = [out for out, _, _ in tape.entries if out.data is None]
        loss = (y * y).sum()
        ad.backward(loss)
    return released, {k: t.grad.copy() for k, t in ex.trainable().items()}


def test_executor_releases_values_no_backward_needs(monkeypatch):
    released, grads = _run(monkeypatch, 1 << 16)
    # the two hidden Linear outputs (128 x 256 floats) are read by the ReLUs only, which keep
    # their own outputs for the mask; the ReLU outputs are kept (the next Linear's weight
    # gradient needs them)
    assert len(released) == 2 and all(r._op for r in released)
    kept, ref = _run(monkeypatch, 1 << 60)
    assert kept == []
    for k in grads:
        np.testing.assert_array_equal(grads[k], ref[k])


def test_executor_keeps_outputs_and_unrecorded_values(monkeypatch):
    import archdsl
    model = archdsl.compile(SPEC).model("M")
    ex = NumpyExecutor(model.ir, model.init_weights(0))
    x = np.random.default_rng(1).standard_normal((128, 128)).astype(np.float32)
    with ad.no_grad():
        a = ex.forward({"x": x})["y"].data
    with ad.Tape():
        b = ex.forward({"x": x}, training=True)["y"]
        assert b.data is not None
        ad.clear_tape()
    np.testing.assert_array_equal(a, b.data)
