"""archdsl/autodiff/convkernels.py: large float32 2-D convolutions on ONNX Runtime's kernels (and
NumPy GEMMs for the weight gradient) give the same values and gradients as the NumPy
kernels, on every path: the NCHWc kernel, the plain Conv node (groups, odd channel counts),
ConvTranspose for strided input gradients, and the GEMM path for small feature maps.

float32 runs cannot be finite-differenced precisely, so each case is checked two ways: against
the float64 NumPy kernels (whose gradients tests/test_autodiff.py checks against finite
differences) with the same cotangent, and by the adjoint identities that make a vjp exact for a
bilinear operation: <conv(v, w), u> = <v, dx(u)> and <conv(x, v), u> = <v, dw(u)>."""
from __future__ import annotations

import numpy as np
import pytest

from archdsl import autodiff as ad
from archdsl.autodiff import convkernels as K
from archdsl.autodiff import ortkernels
from archdsl.autodiff import functional as F
from archdsl.ir.build import single_op_model
from archdsl.ir.types import TensorType
from harness import check_parity


@pytest.fixture
def fast(monkeypatch):
    """Every float32 2-D convolution through convkernels; returns the session kinds used."""
    monkeypatch.setattr(K, "MIN_MACS", 0)
    monkeypatch.setattr(K, "MIN_POSITIONS", 1)
    ortkernels.sessions.clear()

    def kinds():
        return {key[0] for key in ortkernels.sessions}
    return kinds


def _grads(fn, x, w, b, u, **kw):
    xt, wt, bt = (ad.tensor(a, requires_grad=True) for a in (x, w, b))
    y = fn(xt, wt, bt, **kw)
    ad.backward(y, u)
    return y.data, xt.grad, wt.grad, bt.grad


def _check(fn, x, w, b, **kw):
    """The float32 fast path against the float64 NumPy path, and the adjoint identities."""
    r = np.random.default_rng(1)
    y32 = fn(x, w, b, **kw).data
    u = r.standard_normal(y32.shape).astype(np.float32)
    got = _grads(fn, x, w, b, u, **kw)
    ref = _grads(fn, *(a.astype(np.float64) for a in (x, w, b, u)), **kw)
    assert all(g.dtype == np.float32 for g in got)
    for name, a, e in zip(("y", "dx", "dw", "db"), got, ref):
        assert a.shape == e.shape, name
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4 * np.abs(e).max(), err_msg=name)
    # adjoint identities, in float64 from the float32 results
    _, gx, gw, _ = got
    v = r.standard_normal(x.shape).astype(np.float32)
    lhs = np.sum(fn(v, w, None, **kw).data.astype(np.float64) * u)
    assert lhs == pytest.approx(np.sum(v.astype(np.float64) * gx), rel=1e-4)
    vw = r.standard_normal(w.shape).astype(np.float32)
    lhs = np.sum(fn(x, vw, None, **kw).data.astype(np.float64) * u)
    assert lhs == pytest.approx(np.sum(vw.astype(np.float64) * gw), rel=1e-4)


CONV_CASES = [
    # x shape, O, k, stride, padding, dilation, groups, session kinds used
    ((2, 16, 9, 9), 32, 3, 1, 1, 1, 1, {"nchwc"}),                  # blocked channels
    ((2, 3, 10, 9), 20, 3, 1, 1, 1, 1, {"nchwc", "conv"}),          # 3 channels: unblocked input
    ((2, 32, 10, 10), 16, 3, 2, 1, 1, 1, {"nchwc", "convT"}),       # stride 2: ConvTranspose dx
    ((2, 32, 10, 10), 32, 1, 2, 0, 1, 1, {"nchwc", "convT"}),       # 1x1, stride 2
    ((2, 16, 11, 10), 24, 3, 1, 2, 2, 1, {"nchwc", "conv"}),        # dilated; dx of 24 channels
    ((2, 16, 12, 12), 32, 5, 2, ((1, 2), (0, 3)), 1, 1, {"nchwc", "convT"}),   # asymmetric
    ((2, 32, 9, 9), 32, 3, 1, 1, 1, 2, {"conv"}),                   # groups: the plain Conv node
    ((2, 32, 9, 9), 48, 3, 2, 1, 1, 4, {"conv", "convT"}),          # 8 channels per group
    ((3, 20, 9, 9), 24, (3, 1), (1, 2), (1, 0), (2, 1), 1, {"conv", "convT"}),  # 20 % 16 != 0
    ((1, 16, 8, 8), 16, 3, 1, 3, 1, 1, {"nchwc", "convT"}),         # padding past the kernel
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_matches_numpy_kernels(case, fast):
    shape, O, k, s, p, d, g, kinds = case
    r = np.random.default_rng(0)
    kk = (k, k) if isinstance(k, int) else k
    x = r.standard_normal(shape).astype(np.float32)
    w = r.standard_normal((O, shape[1] // g) + kk).astype(np.float32)
    b = r.standard_normal(O).astype(np.float32)
    _check(F.conv, x, w, b, stride=s, padding=p, dilation=d, groups=g)
    assert fast() == kinds


@pytest.mark.parametrize("case", CONV_CASES[:6] + CONV_CASES[7:8])
def test_conv_transpose_matches_numpy_kernels(case, fast):
    shape, cout, k, s, p, d, g, _ = case
    r = np.random.default_rng(2)
    x = r.standard_normal(shape).astype(np.float32)
    w = r.standard_normal((shape[1], cout // g, k, k)).astype(np.float32)
    b = r.standard_normal(cout).astype(np.float32)
    _check(F.conv_transpose, x, w, b, stride=s, padding=p, dilation=d, groups=g)
    assert fast(), "the fast path was not taken"


def _check_case(case, seed):
    """_check of F.conv on one CONV_CASES entry, with random data from `seed`."""
    shape, O, k, s, p, d, g, _ = case
    r = np.random.default_rng(seed)
    x = r.standard_normal(shape).astype(np.float32)
    w = r.standard_normal((O, shape[1] // g, k, k)).astype(np.float32)
    b = r.standard_normal(O).astype(np.float32)
    _check(F.conv, x, w, b, stride=s, padding=p, dilation=d, groups=g)


def _spy_shifted(monkeypatch, kernel="_weight_grad_shifted"):
    """A list that gets an entry per call of a weight-gradient kernel (the shifted one)."""
    calls = []
    real = getattr(K, kernel)
    monkeypatch.setattr(K, kernel, lambda *a: calls.append(1) or real(*a))
    return calls


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[2], CONV_CASES[7]])
def test_small_feature_maps_take_the_gemm_path(case, fast, monkeypatch):
    monkeypatch.setattr(K, "MIN_POSITIONS", 10 ** 9)      # every map counts as small
    _check_case(case, seed=3)
    assert fast() == set()                                  # no ONNX Runtime session at all


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[2], CONV_CASES[7]])
def test_small_feature_maps_split_between_threads(case, fast, monkeypatch):
    """With two BLAS threads the GEMM path's forward and input gradient run in two parts of the
    batch on the workers: the same values as one thread."""
    from threadpoolctl import threadpool_limits
    import threading
    monkeypatch.setattr(K, "MIN_POSITIONS", 10 ** 9)
    monkeypatch.setitem(ortkernels.state, "pool", None)
    on_workers = []
    for name in ("_windows", "_input_grad"):        # the forward's im2col, the input gradient
        def spy(*a, _real=getattr(K, name), _name=name, **kw):
            if threading.current_thread() is not threading.main_thread() and "buf" not in kw and len(a) < 10:
                on_workers.append(_name)
            return _real(*a, **kw)
        monkeypatch.setattr(K, name, spy)
    shape, O, k, s, p, d, g, _ = case
    r = np.random.default_rng(18)
    x = r.standard_normal((3,) + shape[1:]).astype(np.float32)       # 3 images: parts of 1 and 2
    w = r.standard_normal((O, shape[1] // g, k, k)).astype(np.float32)
    u = None
    runs = []
    for n in (1, 2):
        with threadpool_limits(n, user_api="blas"):
            if K._blas_threads() != n:
                pytest.skip(f"this BLAS cannot run {n} threads here")
            y = F.conv(ad.tensor(x), ad.tensor(w), None, stride=s, padding=p, dilation=d, groups=g).data
            u = r.standard_normal(y.shape).astype(np.float32) if u is None else u
            runs.append(_grads(lambda a, b, c: F.conv(a, b, c, stride=s, padding=p, dilation=d, groups=g),
                               x, w, np.zeros(O, np.float32), u))
    assert ortkernels.state["pool"]._max_workers == 2
    assert on_workers.count("_input_grad") == 2 and on_workers.count("_windows") >= 2    # in parts
    for name, a, b in zip(("y", "dx", "dw", "db"), *runs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max(), err_msg=name)


def test_weight_gradient_blocks_of_images(fast, monkeypatch):
    """The weight gradient accumulated over blocks of one image equals the one-block result."""
    r = np.random.default_rng(4)
    x = r.standard_normal((5, 16, 9, 9)).astype(np.float32)
    g = r.standard_normal((5, 24, 5, 5)).astype(np.float32)
    args = ((24, 16, 3, 3), (2, 2), (1, 1), ((1, 1), (1, 1)), 1)
    whole = K.conv_weight_grad(x, g, *args)
    monkeypatch.setattr(K, "_IM2COL_BYTES", 1)
    monkeypatch.setattr(K, "_IM2COL_ROWS", 1)
    np.testing.assert_allclose(K.conv_weight_grad(x, g, *args), whole, rtol=1e-5, atol=1e-4)


def test_which_calls_come_here():
    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    big = ((8, 64, 32, 32), (64, 64, 3, 3))
    pads = ((1, 1), (1, 1))
    assert K.plan(*big[:1], big[1], f32, (1, 1), (1, 1), pads, 1) == (32, 32)
    assert K.plan(*big[:1], big[1], f64, (1, 1), (1, 1), pads, 1) is None        # gradient checks
    assert K.plan((64, 16, 8, 8), (32, 16, 3, 3), f32, (1, 1), (1, 1), pads, 1) is None   # digits CNN
    assert K.plan((8, 64, 32, 32), (64, 1, 3, 3), f32, (1, 1), (1, 1), pads, 64) is None  # depthwise
    assert K.plan((8, 64, 32, 32, 4), (64, 64, 3, 3, 3), f32, (1,) * 3, (1,) * 3, pads + ((1, 1),), 1) is None
    assert K.plan(*big[:1], big[1], f32, (1, 1), (1, 1), ((-1, 0), (1, 1)), 1) is None  # cropping


def test_default_thresholds_run_a_large_conv_through_onnx_runtime():
    ortkernels.sessions.clear()
    r = np.random.default_rng(5)
    x = ad.tensor(r.standard_normal((4, 32, 24, 24)).astype(np.float32), requires_grad=True)
    w = ad.tensor(r.standard_normal((32, 32, 3, 3)).astype(np.float32), requires_grad=True)
    F.conv(x, w, padding=1)
    ad.clear_tape()
    assert {key[0] for key in ortkernels.sessions} == {"nchwc"}


def test_onnx_parity_on_the_fast_path():
    """The exported model on ONNX Runtime and the NumPy engine agree where the engine's
    convolutions themselves run on ONNX Runtime's kernels."""
    model = single_op_model("Conv2d", [TensorType("f32", (4, 32, 24, 24))], 32, 3, padding=1)
    x = np.random.default_rng(6).standard_normal((4, 32, 24, 24)).astype(np.float32)
    ortkernels.sessions.clear()
    check_parity(model, {model.inputs[0].name: x})
    assert ortkernels.sessions, "the engine did not take the fast path"


def test_sessions_follow_the_blas_thread_count(fast):
    from threadpoolctl import threadpool_limits
    r = np.random.default_rng(7)
    x = r.standard_normal((2, 16, 9, 9)).astype(np.float32)
    w = r.standard_normal((16, 16, 3, 3)).astype(np.float32)
    outs = []
    for n in (1, 2):
        with threadpool_limits(n, user_api="blas"):
            outs.append(F.conv(x, w, padding=1).data)
    assert {key[-1] for key in ortkernels.sessions} == {1, 2}
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5)


def test_inputs_are_not_kept_alive_by_sessions(fast):
    import sys
    r = np.random.default_rng(8)
    x = r.standard_normal((2, 16, 9, 9)).astype(np.float32)
    w = r.standard_normal((16, 16, 3, 3)).astype(np.float32)
    before = sys.getrefcount(x)
    F.conv(x, w, padding=1)
    assert sys.getrefcount(x) == before


def _weight_grad_reference(x, g, k, pads, stride=(1, 1)):
    """dL/dw of a convolution in float64, straight from the definition."""
    kh, kw = k
    sh, sw = stride
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0)) + tuple(pads))
    H, W = g.shape[2:]
    return np.stack([np.stack([np.einsum("nohw,nchw->oc", g, x[:, :, i:i + sh * (H - 1) + 1:sh,
                                                                  j:j + sw * (W - 1) + 1:sw])
                               for j in range(kw)], -1) for i in range(kh)], -2)


@pytest.mark.parametrize("kernel", ["im2col", "shifted", "winograd"])
@pytest.mark.parametrize("threads, images", [(2, 7), (3, 2)])
def test_weight_gradient_split_between_threads(monkeypatch, threads, images, kernel):
    """With n BLAS threads the images are split between workers (one-thread BLAS each): the same
    sums as one thread and as the definition, and the BLAS thread count is restored afterwards,
    also when there are fewer blocks of images than threads."""
    from threadpoolctl import threadpool_limits
    if kernel == "winograd":
        _need_winograd()
    monkeypatch.setattr(K, "_IM2COL_ROWS", 1)
    monkeypatch.setattr(K, "_IM2COL_BYTES", 1)      # one image per block
    monkeypatch.setattr(K, "_SHIFTED_BYTES", 1)
    monkeypatch.setattr(K, "_WINOGRAD_TILES", 1)
    monkeypatch.setattr(K, "SHIFTED_POSITIONS", 10 ** 9 if kernel == "im2col" else 1)
    monkeypatch.setattr(K, "WINOGRAD", kernel == "winograd")
    calls = _spy_shifted(monkeypatch, f"_weight_grad_{kernel}")
    monkeypatch.setitem(ortkernels.state, "pool", None)
    r = np.random.default_rng(9)
    x = r.standard_normal((images, 16, 9, 9)).astype(np.float32)
    g = r.standard_normal((images, 24, 9, 9)).astype(np.float32)
    args = ((24, 16, 3, 3), (1, 1), (1, 1), ((1, 1), (1, 1)), 1)
    with threadpool_limits(1, user_api="blas"):
        one = K.conv_weight_grad(x, g, *args)
    with threadpool_limits(threads, user_api="blas"):
        if K._blas_threads() != threads:
            pytest.skip(f"this BLAS cannot run {threads} threads here")
        split = K.conv_weight_grad(x, g, *args)
        assert K._blas_threads() == threads
    assert ortkernels.state["pool"]._max_workers == min(threads, images)     # the split ran
    assert len(calls) == 1 + min(threads, images)
    np.testing.assert_allclose(split, one, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(split, _weight_grad_reference(x, g, (3, 3), ((1, 1), (1, 1))), rtol=1e-4, atol=1e-3)


SHIFTED_CASES = [
    # x shape, O, kernel, padding; stride 1, no dilation, one group
    ((3, 16, 9, 9), 24, (3, 3), ((1, 1), (1, 1))),
    ((2, 16, 7, 8), 8, (3, 3), ((0, 2), (2, 0))),          # asymmetric
    ((2, 16, 6, 7), 16, (1, 1), ((0, 0), (0, 0))),         # 1x1: one GEMM
    ((3, 16, 8, 6), 16, (5, 3), ((2, 2), (1, 2))),         # rectangular kernel, tall padding
    ((2, 16, 6, 6), 16, (3, 3), ((0, 0), (0, 0))),         # valid convolution: no zero columns
]


@pytest.mark.parametrize("block", [1, 1 << 30])
@pytest.mark.parametrize("case", SHIFTED_CASES)
def test_weight_gradient_by_shifted_gemms(case, block, monkeypatch):
    """The shifted-slice GEMMs give the weight gradient of the definition, one image per block
    (the zeros between images stand for the padding) or all in one."""
    from threadpoolctl import threadpool_limits
    shape, O, k, pads = case
    monkeypatch.setattr(K, "SHIFTED_POSITIONS", 1)
    monkeypatch.setattr(K, "_SHIFTED_BYTES", block)
    monkeypatch.setattr(K, "WINOGRAD", False)
    calls = _spy_shifted(monkeypatch)
    r = np.random.default_rng(10)
    x = r.standard_normal(shape).astype(np.float32)
    H, W = (S + b + a - kk + 1 for S, (b, a), kk in zip(shape[2:], pads, k))
    g = r.standard_normal((shape[0], O, H, W)).astype(np.float32)
    with threadpool_limits(1, user_api="blas"):
        got = K.conv_weight_grad(x, g, (O, shape[1]) + k, (1, 1), (1, 1), pads, 1)
    assert calls, "the shifted path was not taken"
    np.testing.assert_allclose(got, _weight_grad_reference(x, g, k, pads), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[1], CONV_CASES[5], CONV_CASES[9]])
def test_conv_with_shifted_weight_gradient(case, fast, monkeypatch):
    """Through F.conv: stride-1 convolutions take the shifted weight gradient, the others (and
    padding past the kernel) keep im2col; values and adjoints as for every path."""
    monkeypatch.setattr(K, "SHIFTED_POSITIONS", 1)
    monkeypatch.setattr(K, "WINOGRAD", False)
    calls = _spy_shifted(monkeypatch)
    _check_case(case, seed=11)
    shape, O, k, s, p = case[:5]
    stride_one_within_kernel = s == 1 and p < k and shape[1] >= K.SHIFTED_CHANNELS
    assert bool(calls) == stride_one_within_kernel


def _need_winograd():
    if K._winograd_kernels() is None:
        pytest.skip("the Winograd weight gradient needs the compiled kernels (numba)")


WINOGRAD_CASES = [
    # x shape, O, padding; 3x3 kernel, stride 1, no dilation, one group
    ((3, 16, 9, 9), 24, ((1, 1), (1, 1))),          # odd map: a half tile of zeros
    ((2, 16, 8, 8), 8, ((1, 1), (1, 1))),           # even
    ((2, 16, 7, 8), 8, ((0, 2), (2, 0))),           # asymmetric
    ((2, 32, 6, 7), 16, ((0, 0), (0, 0))),          # valid convolution
    ((1, 16, 5, 6), 16, ((3, 4), (2, 3))),          # padding past the kernel
]


@pytest.mark.parametrize("block", [1, 1 << 30])
@pytest.mark.parametrize("case", WINOGRAD_CASES)
def test_weight_gradient_by_winograd(case, block, monkeypatch):
    """Winograd F(3x3, 2x2) gives the weight gradient of the definition, blocks of one image
    (at least one 2x2 tile) or all images in one."""
    from threadpoolctl import threadpool_limits
    _need_winograd()
    shape, O, pads = case
    monkeypatch.setattr(K, "SHIFTED_POSITIONS", 1)
    monkeypatch.setattr(K, "_WINOGRAD_TILES", block)
    calls = _spy_shifted(monkeypatch, "_weight_grad_winograd")
    r = np.random.default_rng(15)
    x = r.standard_normal(shape).astype(np.float32)
    H, W = (S + b + a - 2 for S, (b, a) in zip(shape[2:], pads))
    g = r.standard_normal((shape[0], O, H, W)).astype(np.float32)
    with threadpool_limits(1, user_api="blas"):
        got = K.conv_weight_grad(x, g, (O, shape[1], 3, 3), (1, 1), (1, 1), pads, 1)
    assert calls, "the Winograd path was not taken"
    assert got.shape == (O, shape[1], 3, 3) and got.flags.c_contiguous
    np.testing.assert_allclose(got, _weight_grad_reference(x, g, (3, 3), pads), rtol=1e-4, atol=1e-3)


def test_winograd_takes_only_what_it_fits(monkeypatch):
    """Winograd takes 3x3 stride-1 kernels with the compiled kernels present; for an image whose
    transforms exceed its budget, or without numba, the shifted GEMMs do."""
    from archdsl.autodiff import jit
    _need_winograd()
    monkeypatch.setattr(K, "_blas_threads", lambda: 1)       # one block: one call per gradient
    monkeypatch.setattr(K, "SHIFTED_POSITIONS", 1)
    wino, shifted = _spy_shifted(monkeypatch, "_weight_grad_winograd"), _spy_shifted(monkeypatch)
    r = np.random.default_rng(16)
    x = r.standard_normal((2, 16, 8, 8)).astype(np.float32)
    g = r.standard_normal((2, 16, 8, 8)).astype(np.float32)
    args = ((16, 16, 3, 3), (1, 1), (1, 1), ((1, 1), (1, 1)), 1)
    ref = _weight_grad_reference(x, g, (3, 3), ((1, 1), (1, 1)))
    np.testing.assert_allclose(K.conv_weight_grad(x, g, *args), ref, rtol=1e-4, atol=1e-3)
    assert (len(wino), len(shifted)) == (1, 0)
    monkeypatch.setattr(K, "_WINOGRAD_BYTES", 64 * 16 * 32 - 1)      # an image: 16 tiles, O + C = 32
    np.testing.assert_allclose(K.conv_weight_grad(x, g, *args), ref, rtol=1e-4, atol=1e-3)
    assert (len(wino), len(shifted)) == (1, 1)
    monkeypatch.setattr(K, "_WINOGRAD_BYTES", 8 << 20)
    monkeypatch.setitem(jit.state, "mod", None)                        # as without numba
    np.testing.assert_allclose(K.conv_weight_grad(x, g, *args), ref, rtol=1e-4, atol=1e-3)
    assert (len(wino), len(shifted)) == (1, 2)


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[9]])
def test_conv_with_winograd_weight_gradient(case, fast, monkeypatch):
    """Through F.conv: 3x3 stride-1 convolutions (also with padding past the kernel) take the
    Winograd weight gradient; values and adjoints as on every path."""
    _need_winograd()
    monkeypatch.setattr(K, "SHIFTED_POSITIONS", 1)
    calls = _spy_shifted(monkeypatch, "_weight_grad_winograd")
    _check_case(case, seed=17)
    assert calls


PHASE_CASES = [
    # x shape, O, kernel, stride, padding, the kernel that takes it
    ((3, 16, 9, 9), 24, (1, 1), (2, 2), ((0, 0), (0, 0)), "_weight_grad_phases"),   # a downsample
    ((2, 16, 10, 7), 8, (1, 1), (3, 2), ((1, 0), (0, 2)), "_weight_grad_phases"),   # odd strides, pads
    ((3, 3, 9, 9), 16, (3, 3), (1, 1), ((1, 1), (1, 1)), "_weight_grad_rows"),      # a CIFAR stem
    ((2, 3, 15, 13), 8, (7, 7), (2, 2), ((3, 3), (3, 3)), "_weight_grad_rows"),     # an ImageNet stem
    ((2, 2, 11, 9), 8, (5, 3), (2, 1), ((0, 2), (2, 0)), "_weight_grad_rows"),      # asymmetric
    ((2, 4, 12, 8), 8, (4, 4), (4, 4), ((0, 0), (0, 0)), "_weight_grad_rows"),      # patches
    ((1, 3, 6, 6), 8, (3, 3), (1, 1), ((4, 4), (4, 4)), "_weight_grad_rows"),       # padding past it
]


@pytest.mark.parametrize("block", [1, 1 << 30])
@pytest.mark.parametrize("case", PHASE_CASES)
def test_weight_gradient_by_phases(case, block, monkeypatch):
    """Strided 1x1 kernels (GEMMs on the subsampled image) and few-channel inputs (im2col by
    row copies) give the weight gradient of the definition, one image per block (zeros of the
    phase grid between images) or all in one."""
    from threadpoolctl import threadpool_limits
    shape, O, k, stride, pads, kernel = case
    monkeypatch.setattr(K, "SHIFTED_POSITIONS", 1)
    monkeypatch.setattr(K, "_SHIFTED_BYTES", block)
    calls = _spy_shifted(monkeypatch, kernel)
    r = np.random.default_rng(12)
    x = r.standard_normal(shape).astype(np.float32)
    H, W = ((S + b + a - kk) // s + 1 for S, (b, a), kk, s in zip(shape[2:], pads, k, stride))
    g = r.standard_normal((shape[0], O, H, W)).astype(np.float32)
    with threadpool_limits(1, user_api="blas"):
        got = K.conv_weight_grad(x, g, (O, shape[1]) + k, stride, (1, 1), pads, 1)
    assert calls, f"{kernel} was not taken"
    np.testing.assert_allclose(got, _weight_grad_reference(x, g, k, pads, stride), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("kernel", ["_weight_grad_phases", "_weight_grad_rows"])
def test_phase_kernels_split_between_threads(kernel, monkeypatch):
    """Split between two workers, the phase kernels sum to the one-thread result."""
    from threadpoolctl import threadpool_limits
    shape, O, k, stride, pads, _ = next(c for c in PHASE_CASES if c[-1] == kernel)
    monkeypatch.setattr(K, "SHIFTED_POSITIONS", 1)
    monkeypatch.setattr(K, "_SHIFTED_BYTES", 1)
    monkeypatch.setitem(ortkernels.state, "pool", None)
    calls = _spy_shifted(monkeypatch, kernel)
    r = np.random.default_rng(13)
    x = r.standard_normal(shape).astype(np.float32)
    H, W = ((S + b + a - kk) // s + 1 for S, (b, a), kk, s in zip(shape[2:], pads, k, stride))
    g = r.standard_normal((shape[0], O, H, W)).astype(np.float32)
    args = ((O, shape[1]) + k, stride, (1, 1), pads, 1)
    with threadpool_limits(1, user_api="blas"):
        one = K.conv_weight_grad(x, g, *args)
    with threadpool_limits(2, user_api="blas"):
        if K._blas_threads() != 2:
            pytest.skip("this BLAS cannot run 2 threads here")
        split = K.conv_weight_grad(x, g, *args)
    assert len(calls) == 1 + 2 and ortkernels.state["pool"]._max_workers == 2
    np.testing.assert_allclose(split, one, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case", [CONV_CASES[1], CONV_CASES[3], CONV_CASES[5]])
def test_conv_with_phase_weight_gradients(case, fast, monkeypatch):
    """Through F.conv: a 3-channel input takes the row-copy im2col, a strided 1x1 kernel the
    subsampled GEMM, a strided 5x5 kernel keeps im2col; values and adjoints as on every path."""
    monkeypatch.setattr(K, "SHIFTED_POSITIONS", 1)
    rows, phases = _spy_shifted(monkeypatch, "_weight_grad_rows"), _spy_shifted(monkeypatch, "_weight_grad_phases")
    _check_case(case, seed=14)
    shape, O, k = case[:3]
    assert bool(rows) == (shape[1] < K.SHIFTED_CHANNELS)
    assert bool(phases) == (shape[1] >= K.SHIFTED_CHANNELS and k == 1)
