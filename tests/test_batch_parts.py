"""Layers that run their batch in parts, one per BLAS thread (issue 21): the recurrent layers
(recurrent._by_batch) and the attention core (attention._core_parts). Split or whole, they give
the same outputs and gradients, and the split ones match finite differences; and the training
run's brief OpenBLAS spin (ortkernels.brief_blas_spin) sets and restores its variable."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from archdsl import autodiff as ad
from archdsl.autodiff import attention as A
from archdsl.autodiff import ortkernels as K
from archdsl.autodiff import recurrent as R


@pytest.fixture
def split(monkeypatch):
    """Every layer splits (two BLAS threads, no size floor); the fixture's list records the
    part counts that ortkernels.parallel ran."""
    calls = []
    real = K.parallel

    def spy(n, fn):
        calls.append(n)
        return real(n, fn)
    monkeypatch.setattr(K, "parallel", spy)
    monkeypatch.setattr(R, "MIN_SPLIT_MACS", 0)
    monkeypatch.setattr(R, "MIN_PART_ROWS", 1)
    monkeypatch.setattr(A, "MIN_SPLIT_MACS", 0)
    with threadpool_limits(2, user_api="blas"):
        if K.blas_threads() < 2:
            pytest.skip("threadpoolctl cannot set two BLAS threads here")
        yield calls


def _whole(monkeypatch):
    monkeypatch.setattr(R, "MIN_SPLIT_MACS", 1 << 62)
    monkeypatch.setattr(A, "MIN_SPLIT_MACS", 1 << 62)


LAYERS = {
    "lstm": (4, 2, lambda x, wi, wh, bi, bh, h0, c0, *p, **kw: R.lstm_layer(x, wi, wh, bi, bh, h0, c0, *p, **kw)),
    "gru": (3, 1, lambda x, wi, wh, bi, bh, h0, **kw: R.gru_layer(x, wi, wh, bi, bh, h0, **kw)),
    "rnn": (1, 1, lambda x, wi, wh, bi, bh, h0, **kw: R.rnn_layer(x, wi, wh, bi, bh, h0, **kw)),
}
OPTIONS = {"plain": {}, "reverse": {"reverse": True},
           "lengths": {"lengths": np.array([3, 1, 4, 2, 4])}}


def _layer_args(layer, peep, seed, N=5, T=4, C=3, H=2):
    gates, states, _ = LAYERS[layer]
    r = np.random.default_rng(seed)
    a = [r.standard_normal((N, T, C)), r.standard_normal((gates * H, C)), r.standard_normal((gates * H, H)),
         r.standard_normal(gates * H), r.standard_normal(gates * H)]
    a += [r.standard_normal((N, H)) for _ in range(states)]
    a += [r.standard_normal(H) for _ in range(3)] if peep else []
    return a


def _layer_fn(layer, peep, kw):
    fn = LAYERS[layer][2]
    if layer == "lstm" and not peep:
        return lambda *a: list(fn(*a, None, None, None, **kw))
    return lambda *a: list(fn(*a, **kw))


CASES = [("lstm", False), ("lstm", True), ("gru", False), ("rnn", False)]


@pytest.mark.parametrize("layer,peep", CASES, ids=["lstm", "lstm-peepholes", "gru", "rnn"])
@pytest.mark.parametrize("opt", OPTIONS)
def test_recurrent_parts_give_the_whole_batch_results(layer, peep, opt, split, monkeypatch):
    args = _layer_args(layer, peep, seed=1)
    fn = _layer_fn(layer, peep, OPTIONS[opt])
    res = {}
    for mode in ("split", "whole"):
        if mode == "whole":
            _whole(monkeypatch)
        ts = [ad.tensor(a, requires_grad=True) for a in args]
        outs = fn(*ts)
        u = np.random.default_rng(2)
        ad.backward(sum((o * ad.tensor(u.standard_normal(o.shape))).sum() for o in outs))
        res[mode] = [o.data for o in outs] + [t.grad for t in ts]
        if mode == "split":
            assert split == [2, 2]        # forward and backward, two parts each
    for got, ref in zip(res["split"], res["whole"]):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer,peep", CASES, ids=["lstm", "lstm-peepholes", "gru", "rnn"])
def test_recurrent_parts_gradients(layer, peep, split):
    ad.check_grads(_layer_fn(layer, peep, OPTIONS["lengths"]), _layer_args(layer, peep, seed=3), full=True)
    assert split and set(split) == {2}


def test_small_layers_run_whole():
    """Below MIN_SPLIT_MACS, or with rows for one part only, the layer runs as one."""
    calls = []
    real = K.parallel
    K.parallel = lambda n, fn: calls.append(n) or real(n, fn)
    try:
        with threadpool_limits(2, user_api="blas"):
            R.lstm_layer(*_layer_args("lstm", False, seed=0, N=64, T=3, C=4, H=8), None, None, None)
            R.lstm_layer(*_layer_args("lstm", False, seed=0, N=8, T=64, C=512, H=512), None, None, None)
    finally:
        K.parallel = real
    assert calls == []


def _mha_args(seed, cross, n=3, t=5, s=4, d=8):
    r = np.random.default_rng(seed)
    a = [r.standard_normal((n, t, d)), r.standard_normal((n, s, d)) if cross else None]
    a += [r.standard_normal((d, d)) * 0.5 for _ in range(3)] + [r.standard_normal(d) * 0.1 for _ in range(3)]
    a += [r.standard_normal((d, d)) * 0.5, r.standard_normal(d) * 0.1]
    return a


def _mha_fn(cross, causal, t=5, s=4):
    block = A._causal_block(t, t) if causal else None

    def fn(xq, *rest):
        if cross:
            xk, *w = rest
        else:
            xk, w = None, rest
        return A.mha(xq, xk, None, *w, heads=2, block=block)
    return fn


ATTN = {"self": (False, False), "self-causal": (False, True), "cross": (True, False)}


@pytest.mark.parametrize("case", ATTN)
def test_attention_core_parts_give_the_whole_batch_results(case, split, monkeypatch):
    cross, causal = ATTN[case]
    args = [a for a in _mha_args(4, cross) if a is not None]
    res = {}
    for mode in ("split", "whole"):
        if mode == "whole":
            _whole(monkeypatch)
        ts = [ad.tensor(a, requires_grad=True) for a in args]
        y = _mha_fn(cross, causal)(*ts)
        ad.backward((y * ad.tensor(np.random.default_rng(5).standard_normal(y.shape))).sum())
        res[mode] = [y.data] + [t.grad for t in ts]
        if mode == "split":
            assert split == [2, 2]
    for got, ref in zip(res["split"], res["whole"]):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ATTN)
def test_attention_core_parts_gradients(case, split):
    cross, causal = ATTN[case]
    ad.check_grads(_mha_fn(cross, causal), [a for a in _mha_args(6, cross) if a is not None], full=True)
    assert split and set(split) == {2}


def test_padding_masks_keep_the_core_whole(split):
    """A per-row mask [N, 1, 1, S] would need cutting too: the core then runs as one."""
    args = [ad.tensor(a) for a in _mha_args(7, False) if a is not None]
    keep = np.ones((3, 5), bool)
    keep[1, 3:] = False
    block, _ = A.mask_arrays(keep, False, 5, 5)
    A.mha(args[0], None, None, *args[1:], heads=2, block=block)
    assert split == []


# -- OpenBLAS's idle spin during a training run --------------------------------------------------

KEY = "OPENBLAS_THREAD_TIMEOUT"


def _openblas():
    K.blas_threads()
    ctl = K.state.get("blas")
    if ctl is None or ctl.internal_api != "openblas" or ctl.threading_layer != "pthreads":
        pytest.skip("NumPy's BLAS is not a pthreads OpenBLAS")


def test_brief_spin_sets_and_restores_openblas_timeout(monkeypatch):
    _openblas()
    monkeypatch.delenv(KEY, raising=False)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((300, 200)), rng.standard_normal((200, 100))
    ref = a @ b
    with threadpool_limits(2, user_api="blas"):
        with K.brief_blas_spin(16):
            assert os.environ[KEY] == "16"
            np.testing.assert_allclose(a @ b, ref, rtol=1e-12)     # threads restarted, same product
        assert KEY not in os.environ
        np.testing.assert_allclose(a @ b, ref, rtol=1e-12)


def test_brief_spin_leaves_a_users_setting(monkeypatch):
    _openblas()
    monkeypatch.setenv(KEY, "25")
    with K.brief_blas_spin(16):
        assert os.environ[KEY] == "25"
    assert os.environ[KEY] == "25"


def test_brief_spin_off_the_main_thread_does_nothing(monkeypatch):
    _openblas()
    monkeypatch.delenv(KEY, raising=False)
    seen = []

    def work():
        with K.brief_blas_spin(16):
            seen.append(os.environ.get(KEY))
    th = threading.Thread(target=work)
    th.start()
    th.join()
    assert seen == [None]


def test_training_runs_spin_briefly(monkeypatch):
    _openblas()
    monkeypatch.delenv(KEY, raising=False)
    from archdsl.train.run import training_run

    class Run:
        threads = None
        stop_requested = False
    with training_run(Run()):
        assert os.environ[KEY] == str(K.BLAS_SPIN_EXPONENT)
    assert KEY not in os.environ
