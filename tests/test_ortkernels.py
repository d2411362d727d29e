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
