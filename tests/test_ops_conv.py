"""Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d: shape rules (incl. symbolic dims), errors,
parameters, MACs, ONNX vs NumPy parity at both opsets, gradients, and PyTorch agreement."""
from __future__ import annotations

import math

import numpy as np
import pytest

from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.backends.onnx.export import to_onnx
from archdsl.errors import ArchError, ShapeError
from archdsl.ir.build import single_op_model
from archdsl.ir.types import Sym, TensorType
from archdsl.ops.base import get_op
from archdsl.passes.init import initialize
from harness import check_grads, check_parity, ort_run, random_inputs

N, T = Sym.named("N"), Sym.named("T")


def f32(*shape):
    return TensorType("f32", tuple(shape))


def out_shape(op, shape, *a, **kw):
    return single_op_model(op, [f32(*shape)], *a, **kw).outputs[0].type.shape


# -- shape rules ---------------------------------------------------------------------------

@pytest.mark.parametrize("op, shape, args, kw, want", [
    ("Conv1d", (N, 8, T), (16, 3), {}, (N, 16, T - 2)),
    ("Conv1d", (N, 8, T), (16, 3), {"padding": "same"}, (N, 16, T)),
    ("Conv1d", (N, 8, T), (16, 4), {"padding": "same", "dilation": 3}, (N, 16, T)),
    ("Conv1d", (N, 8, T), (16, 5), {"padding": 2, "dilation": 2}, (N, 16, T - 4)),
    ("Conv1d", (N, 8, T), (4, 1), {"padding": "valid"}, (N, 4, T)),
    ("Conv1d", (2, 8, 10), (4, 3), {"stride": 2}, (2, 4, 4)),
    ("Conv2d", (N, 3, 224, 224), (64, 7), {"stride": 2, "padding": 3}, (N, 64, 112, 112)),
    ("Conv2d", (N, 1, 32, 32), (6, 5), {}, (N, 6, 28, 28)),
    ("Conv2d", (N, 3, 227, 227), (96, 11), {"stride": 4}, (N, 96, 55, 55)),
    ("Conv2d", (N, 4, 10, 9), (8, (3, 2)), {"stride": (2, 1), "padding": (1, 0), "groups": 2}, (N, 8, 5, 8)),
    ("Conv2d", (N, 4, T, 9), (8, 3), {"padding": 1}, (N, 8, T, 9)),
    ("ConvTranspose2d", (N, 16, 7, 7), (8, 4), {"stride": 2, "padding": 1}, (N, 8, 14, 14)),
    ("ConvTranspose2d", (N, 16, 7, 7), (8, 3), {"stride": 2, "padding": 1, "output_padding": 1}, (N, 8, 14, 14)),
    ("ConvTranspose2d", (N, 100, 1, 1), (64, 4), {}, (N, 64, 4, 4)),
    ("ConvTranspose2d", (N, 4, 5, 6), (2, 3), {"dilation": 2, "output_padding": 1, "groups": 2}, (N, 2, 10, 11)),
    ("ConvTranspose1d", (N, 4, T), (2, 4), {"stride": 2, "padding": 1}, (N, 2, 2 * T)),
])
def test_shape_rule(op, shape, args, kw, want):
    assert out_shape(op, shape, *args, **kw) == want


def test_strided_symbolic_dim_is_a_floor_expression():
    d = out_shape("Conv1d", (N, 8, T), 4, 3, stride=2)[2]
    assert isinstance(d, Sym) and "T" in str(d) and "//2" in str(d)
    # exact division stays affine: (2T + 2 - 2)//2 + 1 = T + 1 when the input length is 2T
    assert out_shape("Conv1d", (N, 8, 2 * T), 4, 2, stride=2, padding=1)[2] == T + 1


def test_dtype_is_kept():
    m = single_op_model("Conv2d", [TensorType("f64", (2, 3, 8, 8))], 4, 3)
    assert m.outputs[0].type.dtype == "f64"


# -- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("op, shape, args, kw, words", [
    ("Conv2d", (N, 3, 32), (8, 3), {}, ["Conv2d", "4-D", "f32[N, 3, 32]"]),
    ("Conv1d", (N, 3, 32, 32), (8, 3), {}, ["Conv1d", "3-D", "Flatten"]),
    ("Conv2d", (N, 6, 8, 8), (8, 3), {"groups": 4}, ["in_channels 6", "groups=4"]),
    ("Conv2d", (N, 8, 8, 8), (6, 3), {"groups": 4}, ["out_channels 6", "groups=4"]),
    ("Conv2d", (N, 3, 4, 20), (8, 5), {}, ["height 4", "kernel 5", "output height would be 0"]),
    ("Conv2d", (N, 3, 20, 4), (8, (3, 3)), {"dilation": 2}, ["width 4", "kernel 3 (dilation 2)"]),
    ("Conv1d", (N, 3, 2), (8, 5), {"padding": 1}, ["length 2", "kernel 5", "padding 1+1"]),
    ("Conv1d", (N, T, 20), (8, 3), {}, ["channel dim", "concrete"]),
    ("Conv2d", (N, 3, 8, 8), (8, 3), {"stride": 2, "padding": "same"}, ["'same'", "stride 1", "stride=2"]),
    ("Conv2d", (N, 3, 8, 8), (8, 3), {"padding": "full"}, ["padding", "'full'"]),
    ("Conv2d", (N, 3, 8, 8), (8, (3, 3, 3)), {}, ["kernel_size", "2 ints", "(3, 3, 3)"]),
    ("Conv2d", (N, 3, 8, 8), (8, 3), {"padding": -1}, ["padding must be >= 0"]),
    ("Conv2d", (N, 3, 8, 8), (8, 0), {}, ["kernel_size must be >= 1"]),
    ("Conv2d", (N, 3, 8, 8), (0, 3), {}, ["out_channels must be positive"]),
    ("ConvTranspose2d", (N, 4, 5, 5), (2, 3), {"stride": 2, "output_padding": 2},
     ["output_padding 2", "stride 2", "dilation 1"]),
    ("ConvTranspose2d", (N, 4, 1, 5), (2, 1), {"padding": 1}, ["padding 1", "height 1", "would be -1"]),
    ("ConvTranspose2d", (N, 6, 5, 5), (4, 3), {"groups": 4}, ["in_channels 6", "groups=4"]),
])
def test_errors_name_the_dims(op, shape, args, kw, words):
    with pytest.raises(ArchError) as e:
        out_shape(op, shape, *args, **kw)
    msg = str(e.value.message) + " " + str(e.value.hint or "")
    for w in words:
        assert w in msg, (w, msg)


def test_integer_input_is_refused():
    with pytest.raises(ShapeError, match="floating-point"):
        single_op_model("Conv1d", [TensorType("i64", (N, 4, T))], 8, 3)


# -- parameters, MACs, describe ------------------------------------------------------------

def test_params_follow_pytorch_layout_and_init():
    m = single_op_model("Conv2d", [f32(N, 8, 16, 16)], 12, (3, 5), groups=2)
    w, b = m.parameters["conv2d.weight"].spec, m.parameters["conv2d.bias"].spec
    assert w.shape == (12, 4, 3, 5) and b.shape == (12,)
    assert w.init == b.init == "uniform" and math.isclose(w.bound, 1 / math.sqrt(4 * 15))
    assert math.isclose(b.bound, w.bound)
    t = single_op_model("ConvTranspose2d", [f32(N, 8, 4, 4)], 6, 4, groups=2, bias=False)
    assert set(t.parameters) == {"convtranspose2d.weight"}
    wt = t.parameters["convtranspose2d.weight"].spec
    assert wt.shape == (8, 3, 4, 4) and math.isclose(wt.bound, 1 / math.sqrt(3 * 16))
    vals = initialize(m, 0)["conv2d.weight"]
    assert vals.dtype == np.float32 and np.abs(vals).max() <= w.bound


def test_macs():
    conv = single_op_model("Conv2d", [f32(2, 4, 10, 10)], 8, 3, groups=2).nodes[0]
    assert conv.op.macs(conv.app, [(2, 4, 10, 10)], [(2, 8, 8, 8)]) == 2 * 8 * 8 * 8 * 2 * 9
    ct = single_op_model("ConvTranspose2d", [f32(2, 4, 5, 5)], 6, (3, 2), groups=2).nodes[0]
    assert ct.op.macs(ct.app, [(2, 4, 5, 5)], [(2, 6, 7, 6)]) == 2 * 4 * 25 * 3 * 6


def test_describe():
    m = single_op_model("Conv2d", [f32(N, 3, 32, 32)], 64, 7, stride=2, padding=3, bias=False)
    assert get_op("Conv2d").describe(m.nodes[0].attrs) == "64, k=7, s=2, p=3, no bias"
    m = single_op_model("Conv1d", [f32(N, 3, T)], 8, 3, padding="same")
    assert get_op("Conv1d").describe(m.nodes[0].attrs) == "8, k=3, p='same'"


# -- ONNX Runtime vs NumPy, gradients ------------------------------------------------------

CASES = [
    ("Conv1d", (N, 4, T), (6, 3), {}),
    ("Conv1d", (N, 4, T), (6, 4), {"padding": "same", "dilation": 2}),
    ("Conv1d", (2, 4, 9), (6, 3), {"stride": 2, "padding": 1, "groups": 2, "bias": False}),
    ("Conv2d", (2, 3, 7, 6), (4, 3), {}),
    ("Conv2d", (2, 3, 8, 7), (4, 3), {"stride": 2, "padding": 1}),
    ("Conv2d", (2, 3, 6, 6), (5, 4), {"padding": "same"}),
    ("Conv2d", (2, 4, 7, 8), (6, (3, 2)), {"stride": (1, 2), "padding": (2, 0), "dilation": (2, 1), "groups": 2}),
    ("Conv2d", (2, 4, 6, 6), (8, 3), {"groups": 4, "padding": "valid", "bias": False}),   # depthwise x2
    ("ConvTranspose1d", (N, 4, T), (3, 4), {"stride": 2, "padding": 1}),
    ("ConvTranspose2d", (2, 4, 3, 4), (3, 3), {"stride": 2, "padding": 1, "output_padding": 1}),
    ("ConvTranspose2d", (2, 4, 3, 3), (2, 4), {"stride": 2}),
    ("ConvTranspose2d", (2, 4, 3, 4), (6, 3), {"dilation": 2, "output_padding": 1, "groups": 2}),   # op >= stride
    ("ConvTranspose2d", (2, 4, 3, 4), (2, (2, 3)), {"stride": (2, 1), "padding": (0, 1), "bias": False}),
]


def _id(case):
    op, shape, args, kw = case
    return f"{op}-{'x'.join(map(str, shape))}-{args}-{kw}".replace(" ", "")


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_parity(case):
    op, shape, args, kw = case
    m = single_op_model(op, [f32(*shape)], *args, **kw)
    check_parity(m, random_inputs(m, dims={"T": 9}))


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_grads(case):
    op, shape, args, kw = case
    m = single_op_model(op, [f32(*shape)], *args, **kw)
    check_grads(m, random_inputs(m, dims={"T": 6}), n_coords=4)


def test_forward_keeps_float64():
    m = single_op_model("Conv2d", [f32(2, 3, 6, 6)], 4, 3, padding=1)
    w = initialize(m, 0)
    x = random_inputs(m)["x"].astype(np.float64)
    y = NumpyExecutor(m, w, dtype=np.float64).run({"x": x})["y"]
    assert y.dtype == np.float64


def test_parity_opset_17_and_newest_with_symbolic_batch_and_length():
    m = single_op_model("Conv1d", [f32(N, 4, T)], 6, 3, padding="same")
    for dims in ({"N": 1, "T": 3}, {"N": 3, "T": 11}):
        check_parity(m, random_inputs(m, dims=dims))


# -- PyTorch agreement (same weights) --------------------------------------------------------

TORCH_CASES = [
    ("Conv2d", (2, 4, 9, 8), (6, 3), {"stride": 2, "padding": 1, "dilation": 1, "groups": 2},
     lambda F, x, w, b: F.conv2d(x, w, b, 2, 1, 1, 2)),
    ("Conv2d", (2, 4, 9, 8), (6, 4), {"padding": "same", "dilation": (1, 2)},
     lambda F, x, w, b: F.conv2d(x, w, b, 1, "same", (1, 2))),
    ("Conv1d", (2, 4, 11), (6, 5), {"stride": 3, "padding": 2},
     lambda F, x, w, b: F.conv1d(x, w, b, 3, 2)),
    ("ConvTranspose2d", (2, 4, 5, 6), (6, 3), {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2},
     lambda F, x, w, b: F.conv_transpose2d(x, w, b, 2, 1, 1, 2)),
    ("ConvTranspose2d", (2, 4, 5, 6), (6, 3), {"dilation": 3, "output_padding": 2},
     lambda F, x, w, b: F.conv_transpose2d(x, w, b, 1, 0, 2, 1, 3)),
]


@pytest.mark.parametrize("op, shape, args, kw, ref", TORCH_CASES,
                         ids=[c[0] + str(i) for i, c in enumerate(TORCH_CASES)])
def test_matches_torch(op, shape, args, kw, ref):
    torch = pytest.importorskip("torch")
    m = single_op_model(op, [f32(*shape)], *args, **kw)
    w = initialize(m, 3)
    x = random_inputs(m, seed=4)["x"]
    name = m.nodes[0].name
    want = ref(torch.nn.functional, torch.tensor(x), torch.tensor(w[f"{name}.weight"]),
               torch.tensor(w[f"{name}.bias"]) if f"{name}.bias" in w else None).numpy()
    assert tuple(m.outputs[0].type.shape) == want.shape
    np.testing.assert_allclose(NumpyExecutor(m, w).run({"x": x})["y"], want, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(ort_run(to_onnx(m, w), {"x": x})["y"], want, atol=1e-4, rtol=1e-4)


# -- 3-D: the same n-d kernels, against PyTorch (forward and gradients) -----------------------------

TORCH_3D = [
    ("Conv3d", (2, 4, 5, 6, 5), (6, 3), {"stride": (1, 2, 2), "padding": 1, "groups": 2},
     lambda t, x, p: t.nn.functional.conv3d(x, p["weight"], p["bias"], (1, 2, 2), 1, 1, 2)),
    ("Conv3d", (2, 3, 4, 5, 6), (2, (2, 3, 1)), {"dilation": (2, 1, 1), "bias": False, "padding": "same"},
     lambda t, x, p: t.nn.functional.conv3d(x, p["weight"], None, 1, "same", (2, 1, 1))),
    ("ConvTranspose3d", (2, 4, 3, 2, 3), (2, 3), {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2},
     lambda t, x, p: t.nn.functional.conv_transpose3d(x, p["weight"], p["bias"], 2, 1, 1, 2)),
]


@pytest.mark.parametrize("op, shape, args, kw, ref", TORCH_3D, ids=[c[0] + str(i) for i, c in enumerate(TORCH_3D)])
def test_3d_matches_torch(op, shape, args, kw, ref):
    m = single_op_model(op, [f32(*shape)], *args, **kw)
    w = initialize(m, 3)
    x = random_inputs(m, seed=4)
    check_parity(m, x, weights=w)
    pytest.importorskip("torch")
    from harness import check_torch
    check_torch(m, x, lambda t, xs, ps: ref(t, xs["x"], ps), weights=w)


def test_conv3d_explain_and_symbolic_depth():
    m = single_op_model("Conv3d", [f32(N, 2, T, 8, 8)], 4, 3, stride=(1, 2, 2), padding=1)
    assert m.outputs[0].type.shape == (N, 4, T, 4, 4)
    (line, params) = m.nodes[0].op.explain(m.nodes[0].app)
    assert line.startswith("Conv3d k=3 s=(1, 2, 2) p=1: D = (T + 2\u00b71 \u2212 3)/1 + 1 = T; H = ")
    assert params.startswith("params: 4\u00b7(2\u00b73\u00b73\u00b73) + 4 = 220")
    for dims in ({"N": 1, "T": 3}, {"N": 2, "T": 6}):
        check_parity(m, random_inputs(m, dims=dims))
