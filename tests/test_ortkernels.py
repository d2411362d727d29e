"""archdsl/autodiff/ortkernels.py: `matmul` sends tall thin float32 products to MLAS and
everything else to NumPy, with the same values either way; and _arrays.contiguous, the blocked
transposing copy, copies exactly."""
from __future__ import annotations

import numpy as np
import pytest

from archdsl.autodiff import ortkernels as K


@pytest.fixture(autouse=True)
def one_blas_thread():
    """MLAS takes thin products at one BLAS thread only (see ortkernels.thin_matmul)."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1, user_api="blas"):
        yield


def _pair(M, Kd, N, dtype=np.float32, seed=0):
    r = np.random.default_rng(seed)
    return r.standard_normal((M, Kd)).astype(dtype), r.standard_normal((Kd, N)).astype(dtype)


@pytest.mark.parametrize("shape", [(2048, 512, 32), (512, 2048, 16), (300, 7000, 1)])
def test_thin_products_run_on_mlas_and_agree(shape):
    a, b = _pair(*shape)
    assert K.thin_matmul(a, b)
    K.sessions.clear()
    out = np.full((shape[0], shape[2]), np.nan, np.float32)
    got = K.matmul(a, b, out=out)
    assert got is out
    assert any(key[0] == "matmul" for key in K.sessions)          # it ran there
    ref = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    fresh = K.matmul(a, b)                                          # without out
    np.testing.assert_array_equal(fresh, got)


@pytest.mark.parametrize("case", ["float64", "wide", "short", "small", "strided", "out-strided"])
def test_other_products_stay_on_numpy(case):
    a, b = _pair(2048, 512, 32, np.float64 if case == "float64" else np.float32)
    out = None
    if case == "wide":                  # [32, 512] x [512, 2048]: MLAS is no faster there
        a, b = _pair(32, 512, 2048)
    elif case == "short":
        a, b = _pair(128, 4096, 32)
    elif case == "small":
        a, b = _pair(256, 16, 16)
    elif case == "strided":
        b = np.asfortranarray(b)
    elif case == "out-strided":
        out = np.empty((32, 2048), np.float32).T
    K.sessions.clear()
    got = K.matmul(a, b, out=out)
    assert not any(key[0] == "matmul" for key in K.sessions)
    np.testing.assert_array_equal(got, np.matmul(a, b))


def test_more_blas_threads_keep_thin_products_on_numpy():
    from threadpoolctl import threadpool_limits
    a, b = _pair(2048, 512, 32)
    with threadpool_limits(2, user_api="blas"):
        assert K.blas_threads() == 2
        assert not K.thin_matmul(a, b)


def test_turned_off_by_the_environment(monkeypatch):
    a, b = _pair(2048, 512, 32)
    monkeypatch.setitem(K.state, "ok", False)
    assert not K.thin_matmul(a, b)
    monkeypatch.setitem(K.state, "ok", True)
    monkeypatch.setenv("ARCHDSL_CONV", "numpy")
    assert K.thin_matmul(a, b) and not K.enabled("conv")


@pytest.mark.parametrize("shape,axes", [((2048, 512), (1, 0)), ((64, 2048, 32), (1, 0, 2)),
                                        ((40, 300, 70), (2, 0, 1)), ((3, 64, 700), (0, 2, 1)),
                                        ((5, 7), (1, 0))])
def test_blocked_contiguous_copies_are_exact(shape, axes, monkeypatch):
    from archdsl.autodiff import _arrays
    monkeypatch.setattr(_arrays, "_COPY_BLOCK", 4096)       # many blocks, ragged last one
    a = np.random.default_rng(0).standard_normal(shape).astype(np.float32).transpose(axes)
    got = _arrays.contiguous(a)
    assert got.flags.c_contiguous and got.dtype == a.dtype
    np.testing.assert_array_equal(got, a)
    b = np.ascontiguousarray(a)
    assert _arrays.contiguous(b) is b                         # no copy of a contiguous array


def test_wide_products_with_a_transposed_weight_run_transposed_on_mlas():
    """[M, K] x [K, N] with M <= THIN_N and b a transposed view: (b.T @ a.T).T on MLAS."""
    h, w = _pair(32, 512, 1536)
    wt = np.ascontiguousarray(w.T).T                    # b.T C-contiguous, as the GRU passes it
    K.sessions.clear()
    out = np.empty((32, 1536), np.float32)
    got = K.matmul(h, wt, out=out)
    assert got is out and ("matmul", 1536, 512, 32, 1) in K.sessions
    ref = h.astype(np.float64) @ w.astype(np.float64)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_array_equal(K.matmul(h, wt), got)
    K.sessions.clear()
    K.matmul(h, np.ascontiguousarray(wt))                # b C-contiguous: NumPy's
    assert not K.sessions


@pytest.mark.parametrize("layer", ["gru", "gru-reset-after", "rnn"])
def test_recurrent_steps_on_mlas_match_float64(layer):
    """GRU and Elman steps at sizes where their wide step products run on MLAS (transposed):
    float32 outputs and gradients equal float64's."""
    from archdsl import autodiff as ad
    from archdsl.autodiff import recurrent as R
    G, N, H = (1, 16, 1024) if layer == "rnn" else (3, 32, 512)
    r = np.random.default_rng(3)
    a = [r.standard_normal(s) * 0.05 for s in [(N, 3, 8), (G * H, 8), (G * H, H), (G * H,), (G * H,), (N, H)]]
    kw = {} if layer == "rnn" else {"linear_before_reset": layer == "gru"}
    fn = R.rnn_layer if layer == "rnn" else R.gru_layer
    res = {}
    K.sessions.clear()
    for dt in (np.float32, np.float64):
        args = [ad.tensor(x.astype(dt), requires_grad=True) for x in a]
        y, hn = fn(*args, reverse=True, **kw)
        u = ad.tensor(np.random.default_rng(7).standard_normal(y.shape).astype(dt))
        ad.backward((y * u).sum() + hn.sum())
        res[dt] = [y.data, hn.data] + [x.grad for x in args]
    assert any(key[0] == "matmul" for key in K.sessions)
    for got, ref in zip(res[np.float32], res[np.float64]):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())


def test_parallel_workers_share_a_session_safely():
    """ortkernels.parallel runs fn on worker threads with one BLAS thread each; workers running
    one session (same shapes) at once each bind their own arrays and get their own results."""
    from threadpoolctl import threadpool_limits
    pairs = [_pair(2048, 512, 32, seed=s) for s in range(4)]
    K.sessions.clear()
    with threadpool_limits(2, user_api="blas"):
        K.blas_threads()
        got = K.parallel(4, lambda i: [K.mlas_matmul(*pairs[i]) for _ in range(5)])
        assert K.blas_threads() == 2                            # restored
    for (a, b), outs in zip(pairs, got):
        ref = a @ b
        for o in outs:
            np.testing.assert_allclose(o, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_session_cache_evicts_the_least_recently_used(monkeypatch):
    monkeypatch.setattr(K, "_CACHE_SIZE", 3)
    K.sessions.clear()
    pairs = {n: _pair(256, 64, n) for n in (1, 2, 3, 4)}
    for n in (1, 2, 3):
        K.mlas_matmul(*pairs[n])
    K.mlas_matmul(*pairs[1])                 # used again: now the most recent
    K.mlas_matmul(*pairs[4])                 # evicts 2, the least recently used
    assert [key[3] for key in K.sessions] == [3, 1, 4]
