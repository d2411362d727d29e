"""The LSTM primitive's two layouts (archdsl/autodiff/recurrent.py): batch-major for small hidden
sizes, features-by-batch for large ones (with the input folded into each step's matmul or
projected before the loop). Each layout, forced on small sizes, gives the same outputs as the
others and gradients that match finite differences (float64), with every option: peepholes,
initial states, reverse, padded lengths."""
from __future__ import annotations

import numpy as np
import pytest

from archdsl import autodiff as ad
from archdsl.autodiff import recurrent as R

LAYOUTS = {"rows": (10 ** 9, 0), "cols-fold": (1, 10 ** 9), "cols-projected": (1, 0)}


def _use(monkeypatch, layout):
    cols_min_h, fold_c = LAYOUTS[layout]
    monkeypatch.setattr(R, "_COLS_MIN_H", cols_min_h)
    monkeypatch.setattr(R, "_FOLD_C", fold_c)


def _args(peep, states, seed=0, N=3, T=4, C=3, H=2):
    r = np.random.default_rng(seed)
    a = [r.standard_normal((N, T, C)), r.standard_normal((4 * H, C)), r.standard_normal((4 * H, H)),
         r.standard_normal(4 * H), r.standard_normal(4 * H)]
    a += [r.standard_normal((N, H)), r.standard_normal((N, H))] if states else []
    a += [r.standard_normal(H) for _ in range(3)] if peep else []
    return a


def _fn(peep, states, **kw):
    def f(x, wi, wh, bi, bh, *rest):
        h0, c0 = rest[:2] if states else (None, None)
        ps = rest[-3:] if peep else (None, None, None)
        return list(R.lstm_layer(x, wi, wh, bi, bh, h0, c0, *ps, **kw))
    return f


OPTIONS = [dict(), dict(reverse=True), dict(lengths=np.array([4, 1, 3])),
           dict(reverse=True, lengths=np.array([2, 4, 1]))]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("peep", [False, True])
@pytest.mark.parametrize("kw", OPTIONS, ids=["plain", "reverse", "lengths", "reverse-lengths"])
def test_gradients(layout, peep, kw, monkeypatch):
    _use(monkeypatch, layout)
    ad.check_grads(_fn(peep, True, **kw), _args(peep, True), full=True)


@pytest.mark.parametrize("peep", [False, True])
@pytest.mark.parametrize("kw", OPTIONS, ids=["plain", "reverse", "lengths", "reverse-lengths"])
def test_layouts_agree(peep, kw, monkeypatch):
    args = [ad.tensor(a.astype(np.float32)) for a in _args(peep, False, seed=3, N=3, T=6, C=4, H=8)]
    outs = {}
    for layout in LAYOUTS:
        _use(monkeypatch, layout)
        outs[layout] = [o.data for o in _fn(peep, False, **kw)(*args)]
    for layout, got in outs.items():
        for a, b in zip(got, outs["rows"]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=layout)


def test_the_benchmark_sizes_pick_their_layout():
    assert 128 < R._COLS_MIN_H <= 512          # bench_lstm's hidden 128: rows; bench_midsize's 512: cols


@pytest.mark.parametrize("peep", [False, True])
def test_float32_steps_on_mlas_match_float64(peep):
    """At a size where each step's [4H, H] x [H, N] product runs on MLAS (ortkernels, one BLAS
    thread), the float32 layer gives the float64 layer's outputs and gradients."""
    from threadpoolctl import threadpool_limits

    from archdsl.autodiff import ortkernels
    a = _args(peep, True, seed=5, N=32, T=3, C=16, H=256)
    a[2] *= 0.1                                         # keep the recurrence well conditioned
    res = {}
    with threadpool_limits(1, user_api="blas"):
        assert ortkernels.thin_matmul(a[2].astype(np.float32), np.zeros((256, 32), np.float32))
        ortkernels.sessions.clear()
        for dt in (np.float32, np.float64):
            args = [ad.tensor(x.astype(dt), requires_grad=True) for x in a]
            outs = _fn(peep, True, reverse=True)(*args)
            r = np.random.default_rng(0)
            ad.backward(sum((o * ad.tensor(r.standard_normal(o.shape).astype(dt))).sum() for o in outs))
            res[dt] = [o.data for o in outs] + [x.grad for x in args]
    assert any(key[0] == "matmul" for key in ortkernels.sessions)
    for got, ref in zip(res[np.float32], res[np.float64]):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())
