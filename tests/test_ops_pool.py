"""Pooling ops: shape rules (incl. symbolic dims and ceil_mode), errors, ONNX lowering choices,
ONNX vs NumPy parity at both opsets, gradients, and PyTorch agreement."""
from __future__ import annotations

import numpy as np
import pytest

from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.backends.onnx.export import max_opset, to_onnx
from archdsl.elaborate.bind import bind_args
from archdsl.errors import ArchError, ShapeError
from archdsl.ir.build import single_op_model
from archdsl.ir.graph import Model, Node, Param, Value
from archdsl.ir.types import Sym, TensorType
from archdsl.ops.base import get_op
from archdsl.ops.pool import adaptive_bins, adaptive_matrix
from harness import check_grads, check_parity, ort_run, random_inputs

N, T = Sym.named("N"), Sym.named("T")


def f32(*shape):
    return TensorType("f32", tuple(shape))


def model(op, shape, *a, **kw):
    return single_op_model(op, [f32(*shape)], *a, **kw)


def out_shape(op, shape, *a, **kw):
    return model(op, shape, *a, **kw).outputs[0].type.shape


def onnx_ops(m):
    return [n.op_type for n in to_onnx(m, {}).graph.node]


# -- shape rules ---------------------------------------------------------------------------

@pytest.mark.parametrize("op, shape, args, kw, want", [
    ("MaxPool2d", (N, 64, 112, 112), (3,), {"stride": 2, "padding": 1}, (N, 64, 56, 56)),
    ("MaxPool2d", (N, 6, 28, 28), (2,), {}, (N, 6, 14, 14)),
    ("MaxPool2d", (N, 96, 55, 55), (3,), {"stride": 2}, (N, 96, 27, 27)),
    ("MaxPool2d", (N, 3, 7, 7), (2,), {"ceil_mode": True}, (N, 3, 4, 4)),
    ("MaxPool2d", (N, 3, 5, 5), (2,), {"padding": 1, "ceil_mode": True}, (N, 3, 3, 3)),   # last window dropped
    ("AvgPool2d", (N, 3, 9, 8), ((3, 2),), {"stride": (2, 1), "padding": (1, 0)}, (N, 3, 5, 7)),
    ("MinPool1d", (N, 4, T), (2,), {}, (N, 4, T // 2)),
    ("MaxPool1d", (N, 4, T), (3,), {"stride": 1, "padding": 1}, (N, 4, T)),
    ("AvgPool1d", (N, 4, 2 * T), (2,), {}, (N, 4, T)),
    ("AvgPool1d", (N, 4, 2 * T), (3,), {"stride": 2, "padding": 1, "ceil_mode": True}, (N, 4, T + 1)),
    ("GlobalMaxPool", (N, 100, T), (), {}, (N, 100, 1)),
    ("GlobalAvgPool", (N, 512, 7, 7), (), {}, (N, 512, 1, 1)),
    ("GlobalMinPool", (N, 3, T, 5), (), {}, (N, 3, 1, 1)),
    ("AdaptiveAvgPool2d", (N, 256, 6, 6), ((6, 6),), {}, (N, 256, 6, 6)),
    ("AdaptiveAvgPool2d", (N, 256, 13, 13), (6,), {}, (N, 256, 6, 6)),
])
def test_shape_rule(op, shape, args, kw, want):
    assert out_shape(op, shape, *args, **kw) == want


def test_ceil_mode_on_a_symbolic_length():
    # pb + stride <= kernel: a window can never start in the right padding -> plain ceil formula
    assert out_shape("MaxPool1d", (N, 4, T), 3, stride=2, padding=1, ceil_mode=True)[2] == (T + 2) // 2
    # otherwise the size depends on T's value: an opaque symbol that still prints its origin
    d = out_shape("MaxPool1d", (N, 4, T), 2, padding=1, ceil_mode=True)[2]
    assert isinstance(d, Sym) and "ceil_pool(T" in str(d)


def test_ceil_mode_sizes_match_pytorch_rule():
    mx = get_op("MaxPool1d")
    for L in range(2, 12):
        for k in (2, 3, 4):
            for s in (1, 2, 3):
                for p in range(k // 2 + 1):
                    if L + 2 * p < k:
                        continue
                    want = -(-(L + 2 * p - k) // s) + 1
                    if (want - 1) * s >= L + p:
                        want -= 1
                    got = out_shape("MaxPool1d", (1, 1, L), k, stride=s, padding=p, ceil_mode=True)[2]
                    assert got == want, (L, k, s, p)
                    assert mx.bind({"kernel_size": k, "stride": s, "padding": p, "ceil_mode": False},
                                   [f32(1, 1, L)]).out_types[0].shape[2] == (L + 2 * p - k) // s + 1


# -- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("op, shape, args, kw, words", [
    ("MaxPool2d", (N, 16), (2,), {}, ["MaxPool2d", "4-D", "f32[N, 16]"]),
    ("AvgPool1d", (N, 3, 8, 8), (2,), {}, ["AvgPool1d", "3-D", "Flatten"]),
    ("MaxPool2d", (N, 3, 4, 1), (3,), {}, ["MaxPool2d", "width 1", "kernel 3", "would be 0"]),
    ("AvgPool1d", (N, 3, 2), (5,), {"padding": 1}, ["length 2", "kernel 5", "would be 0"]),
    ("MaxPool1d", (N, 3, 2), (5,), {"stride": 5, "padding": 1, "ceil_mode": True}, ["length 2", "kernel 5"]),
    ("MaxPool2d", (N, 3, 8, 8), (3,), {"padding": 2}, ["padding 2", "half the kernel 3"]),
    ("MinPool2d", (N, 3, 8, 8), ((2, 4),), {"padding": (2, 1)}, ["padding (2, 1)", "kernel (2, 4)"]),
    ("MaxPool2d", (N, 3, 8, 8), (2,), {"stride": 0}, ["stride must be >= 1"]),
    ("AvgPool2d", (N, 3, 8, 8), ((2, 2, 2),), {}, ["kernel_size", "2 ints", "(2, 2, 2)"]),
    ("GlobalAvgPool", (N, 16), (), {}, ["GlobalAvgPool", "f32[N, 16]", "spatial"]),
    ("AdaptiveAvgPool2d", (N, 3, T, 8), (2,), {}, ["AdaptiveAvgPool2d", "concrete", "f32[N, 3, T, 8]"]),
    ("AdaptiveAvgPool2d", (N, 3, 8, 8), ((2, 0),), {}, ["output_size must be >= 1"]),
    ("AdaptiveAvgPool2d", (N, 3, 8), (2,), {}, ["4-D", "f32[N, 3, 8]"]),
])
def test_errors_name_the_dims(op, shape, args, kw, words):
    with pytest.raises(ArchError) as e:
        out_shape(op, shape, *args, **kw)
    msg = str(e.value.message) + " " + str(e.value.hint or "")
    for w in words:
        assert w in msg, (w, msg)


def test_integer_input_is_refused():
    with pytest.raises(ShapeError, match="floating-point"):
        single_op_model("GlobalMaxPool", [TensorType("i64", (N, 4, T))])


def test_pools_have_no_params_and_no_macs():
    for op, shape, args in (("MaxPool2d", (2, 3, 8, 8), [2]), ("AvgPool1d", (2, 3, 8), [2]),
                            ("GlobalMinPool", (2, 3, 8, 8), []), ("AdaptiveAvgPool2d", (2, 3, 8, 8), [4])):
        m = model(op, shape, *args)
        n = m.nodes[0]
        assert n.app.params == {} and not m.parameters
        assert n.op.macs(n.app, [shape], [tuple(n.outputs[0].type.shape)]) == 0


def test_describe():
    m = model("MaxPool2d", (N, 3, 9, 9), 3, stride=2, padding=1, ceil_mode=True)
    assert get_op("MaxPool2d").describe(m.nodes[0].attrs) == "k=3, s=2, p=1, ceil"
    m = model("AvgPool1d", (N, 3, 9), 2, count_include_pad=False)
    assert get_op("AvgPool1d").describe(m.nodes[0].attrs) == "k=2, exclude pad"
    assert get_op("AdaptiveAvgPool2d").describe({"output_size": 6}) == "(6, 6)"


# -- lowering choices ----------------------------------------------------------------------

def test_lowering_ops():
    assert onnx_ops(model("MinPool2d", (N, 3, 8, 8), 2)) == ["Neg", "MaxPool", "Neg"]
    assert onnx_ops(model("GlobalMinPool", (N, 3, T))) == ["Neg", "GlobalMaxPool", "Neg"]
    assert onnx_ops(model("GlobalAvgPool", (N, 3, 4, 4))) == ["GlobalAveragePool"]
    assert onnx_ops(model("AdaptiveAvgPool2d", (N, 3, 6, 6), (6, 6))) == ["Identity"]   # nothing but the output name
    assert onnx_ops(model("AdaptiveAvgPool2d", (N, 3, 12, 6), (6, 3))) == ["AveragePool"]
    assert onnx_ops(model("AdaptiveAvgPool2d", (N, 3, 13, 6), (6, 6))) == ["MatMul"]
    assert onnx_ops(model("AdaptiveAvgPool2d", (N, 3, 13, 7), 6)) == ["MatMul", "MatMul"]
    # opset-17 shape inference lacks PyTorch's ceil rule: a dim where it fires uses floor mode,
    # and a 2-D pool that needs both modes becomes two separable pools
    p = to_onnx(model("AvgPool2d", (N, 3, 5, 5), 2, padding=1, ceil_mode=True), {})
    assert [(n.op_type, [a.i for a in n.attribute if a.name == "ceil_mode"]) for n in p.graph.node] == \
        [("AveragePool", [0])]
    p = to_onnx(model("AvgPool2d", (N, 3, 7, 5), 2, padding=(0, 1), ceil_mode=True), {})
    assert [[a.i for a in n.attribute if a.name == "ceil_mode"] for n in p.graph.node] == [[1], [0]]


def test_adaptive_bins_are_pytorch_bins():
    assert adaptive_bins(5, 3) == [(0, 2), (1, 4), (3, 5)]
    m = adaptive_matrix(7, 3, np.float64)
    assert m.shape == (7, 3) and np.allclose(m.sum(axis=0), 1.0)


# -- ONNX Runtime vs NumPy, gradients ------------------------------------------------------

CASES = [
    ("MaxPool2d", (2, 3, 7, 6), (2,), {}),
    ("MaxPool2d", (2, 3, 9, 8), (3,), {"stride": 2, "padding": 1}),
    ("MaxPool2d", (2, 3, 7, 5), (2,), {"padding": (0, 1), "ceil_mode": True}),   # mixed ceil dims
    ("MaxPool1d", (N, 3, T), (3,), {"stride": 2, "ceil_mode": True}),
    ("MaxPool1d", (N, 3, T), (2,), {"padding": 1, "ceil_mode": True}),   # opaque size: T=9 drops a window
    ("MinPool2d", (2, 3, 6, 7), ((3, 2),), {"stride": (2, 1), "padding": (1, 0)}),
    ("MinPool1d", (N, 3, T), (2,), {}),
    ("AvgPool2d", (2, 3, 7, 6), (3,), {"stride": 2, "padding": 1}),
    ("AvgPool2d", (2, 3, 7, 6), (3,), {"stride": 2, "padding": 1, "count_include_pad": False}),
    ("AvgPool2d", (2, 3, 6, 6), (3,), {"stride": 2, "padding": 1, "ceil_mode": True}),
    ("AvgPool2d", (2, 3, 7, 5), (2,), {"padding": (0, 1), "ceil_mode": True, "count_include_pad": False}),
    ("AvgPool1d", (N, 3, T), (2,), {"ceil_mode": True}),
    ("AvgPool1d", (N, 3, T), (4,), {"stride": 3, "padding": 2}),
    ("GlobalMaxPool", (N, 4, T), (), {}),
    ("GlobalMaxPool", (2, 4, 3, 5), (), {}),
    ("GlobalAvgPool", (N, 4, T), (), {}),
    ("GlobalAvgPool", (2, 4, 3, 5), (), {}),
    ("GlobalMinPool", (N, 4, T), (), {}),
    ("GlobalMinPool", (2, 4, 3, 5), (), {}),
    ("AdaptiveAvgPool2d", (2, 3, 6, 6), ((6, 6),), {}),
    ("AdaptiveAvgPool2d", (2, 3, 8, 6), ((4, 3),), {}),
    ("AdaptiveAvgPool2d", (2, 3, 7, 5), ((3, 2),), {}),
    ("AdaptiveAvgPool2d", (2, 3, 7, 6), ((3, 6),), {}),
]


def _id(case):
    op, shape, args, kw = case
    return f"{op}-{'x'.join(map(str, shape))}-{args}-{kw}".replace(" ", "")


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_parity(case):
    op, shape, args, kw = case
    m = model(op, shape, *args, **kw)
    for dims in ({"T": 9}, {"T": 8}):
        check_parity(m, random_inputs(m, dims=dims))


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_grads(case):
    op, shape, args, kw = case
    m = model(op, shape, *args, **kw)
    # random normal inputs have no ties, so max/min are differentiable at the sample point
    check_grads(m, random_inputs(m, dims={"T": 7}), n_coords=6)


@pytest.mark.parametrize("op", ["MaxPool2d", "AvgPool2d", "GlobalMinPool", "AdaptiveAvgPool2d"])
def test_forward_keeps_float64(op):
    m = model(op, (2, 3, 6, 6), *([] if op.startswith("Global") else [(2, 3)] if op.startswith("Adaptive") else [2]))
    x = random_inputs(m)["x"].astype(np.float64)
    assert NumpyExecutor(m, {}, dtype=np.float64).run({"x": x})["y"].dtype == np.float64


def test_text_cnn_max_over_time():
    """Conv1d over a symbolic length, then max over time: [N, C, 1] for any T."""
    conv, gmp = get_op("Conv1d"), get_op("GlobalMaxPool")
    m = Model(name="textcnn", file="<test>", span=None, args={})
    x = Value("x", f32(N, 8, T))
    m.inputs = [x]
    a1 = conv.bind(bind_args(conv, [6, 3], {}), [x.type])
    n1 = Node("conv", a1, [x])
    h = Value("h", a1.out_types[0], n1)
    n1.outputs = [h]
    for local, spec in a1.params.items():
        m.parameters[f"conv.{local}"] = Param(f"conv.{local}", spec)
        n1.params[local] = f"conv.{local}"
    a2 = gmp.bind({}, [h.type])
    n2 = Node("pool", a2, [h])
    y = Value("y", a2.out_types[0], n2)
    n2.outputs = [y]
    m.nodes, m.outputs = [n1, n2], [y]
    assert h.type.shape == (N, 6, T - 2) and y.type.shape == (N, 6, 1)
    for t in (3, 10):
        check_parity(m, random_inputs(m, dims={"T": t}))


# -- PyTorch agreement -----------------------------------------------------------------------

TORCH_CASES = [
    ("MaxPool2d", (2, 3, 9, 8), (3,), {"stride": 2, "padding": 1, "ceil_mode": True},
     lambda F, x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True)),
    ("MaxPool2d", (2, 3, 5, 7), (2,), {"padding": 1, "ceil_mode": True},
     lambda F, x: F.max_pool2d(x, 2, 2, 1, ceil_mode=True)),
    ("MinPool1d", (2, 3, 10), (3,), {"stride": 2, "padding": 1},
     lambda F, x: -F.max_pool1d(-x, 3, 2, 1)),
    ("AvgPool2d", (2, 3, 6, 7), (3,), {"stride": 2, "padding": 1, "ceil_mode": True},
     lambda F, x: F.avg_pool2d(x, 3, 2, 1, True, True)),
    ("AvgPool2d", (2, 3, 6, 7), ((3, 2),), {"stride": 2, "padding": (1, 1), "count_include_pad": False},
     lambda F, x: F.avg_pool2d(x, (3, 2), 2, (1, 1), False, False)),
    ("AvgPool1d", (2, 3, 9), (2,), {"padding": 1, "ceil_mode": True},
     lambda F, x: F.avg_pool1d(x, 2, 2, 1, True, True)),
    ("GlobalAvgPool", (2, 3, 5, 4), (), {}, lambda F, x: F.adaptive_avg_pool2d(x, 1)),
    ("GlobalMaxPool", (2, 3, 7), (), {}, lambda F, x: F.adaptive_max_pool1d(x, 1)),
    ("AdaptiveAvgPool2d", (2, 3, 13, 11), ((6, 4),), {}, lambda F, x: F.adaptive_avg_pool2d(x, (6, 4))),
    ("AdaptiveAvgPool2d", (2, 3, 12, 6), (6,), {}, lambda F, x: F.adaptive_avg_pool2d(x, 6)),
]


@pytest.mark.parametrize("op, shape, args, kw, ref", TORCH_CASES,
                         ids=[c[0] + str(i) for i, c in enumerate(TORCH_CASES)])
def test_matches_torch(op, shape, args, kw, ref):
    torch = pytest.importorskip("torch")
    m = model(op, shape, *args, **kw)
    x = random_inputs(m, seed=5)["x"]
    want = ref(torch.nn.functional, torch.tensor(x)).numpy()
    assert tuple(m.outputs[0].type.shape) == want.shape
    np.testing.assert_allclose(NumpyExecutor(m, {}).run({"x": x})["y"], want, atol=1e-5, rtol=1e-5)
    for opset in (17, max_opset()):
        proto = to_onnx(m, {}, opset=opset)
        np.testing.assert_allclose(ort_run(proto, {"x": x})["y"], want, atol=1e-5, rtol=1e-5)


# -- 3-D pools, against PyTorch (forward and gradients) ---------------------------------------------

TORCH_3D = [
    ("MaxPool3d", (2, 3, 5, 6, 5), (3,), {"stride": 2, "padding": 1, "ceil_mode": True},
     lambda t, x: t.nn.functional.max_pool3d(x, 3, 2, 1, ceil_mode=True)),
    ("MaxPool3d", (2, 2, 4, 4, 6), (2,), {}, lambda t, x: t.nn.functional.max_pool3d(x, 2)),
    ("AvgPool3d", (2, 3, 5, 4, 6), ((3, 2, 3),), {"stride": 2, "padding": 1, "count_include_pad": False},
     lambda t, x: t.nn.functional.avg_pool3d(x, (3, 2, 3), 2, 1, count_include_pad=False)),
    ("AvgPool3d", (2, 2, 5, 5, 5), (2,), {"ceil_mode": True}, lambda t, x: t.nn.functional.avg_pool3d(x, 2, ceil_mode=True)),
]


@pytest.mark.parametrize("op, shape, args, kw, ref", TORCH_3D, ids=[c[0] + str(i) for i, c in enumerate(TORCH_3D)])
def test_3d_pools_match_torch(op, shape, args, kw, ref):
    m = model(op, shape, *args, **kw)
    x = random_inputs(m, seed=5)
    check_parity(m, x)
    pytest.importorskip("torch")
    from harness import check_torch
    check_torch(m, x, lambda t, xs, ps: ref(t, xs["x"]))
