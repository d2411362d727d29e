"""Linear: shape rule, PyTorch initialisation, parity (Gemm for 2-D, MatMul for 3-D), grads, errors."""
import math

import numpy as np
import pytest

from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.backends.onnx.export import to_onnx
from archdsl.errors import ShapeError
from archdsl.ir.build import single_op_model
from archdsl.ir.types import Sym, TensorType
from archdsl.passes.init import initialize
from harness import check_grads, check_parity, random_inputs

N, T = Sym.named("N"), Sym.named("T")


@pytest.mark.parametrize("shape,bias,onnx_ops", [
    ((N, 6), True, ["Gemm"]),
    ((N, 6), False, ["Gemm"]),
    ((N, T, 6), True, ["MatMul", "Add"]),
    ((N, T, 6), False, ["MatMul"]),
])
def test_linear(shape, bias, onnx_ops):
    m = single_op_model("Linear", [TensorType("f32", shape)], 4, bias=bias)
    assert m.outputs[0].type == TensorType("f32", shape[:-1] + (4,))
    w = initialize(m)
    assert [n.op_type for n in to_onnx(m, w).graph.node] == onnx_ops
    x = random_inputs(m, seed=6)
    y = check_parity(m, x, weights=w)["y"]
    ref = x["x"] @ w["linear.weight"].T + (w["linear.bias"] if bias else 0)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    check_grads(m, x)


def test_linear_params_follow_pytorch():
    m = single_op_model("Linear", [TensorType("f32", (N, 9))], 5)
    specs = {k: p.spec for k, p in m.parameters.items()}
    assert specs["linear.weight"].shape == (5, 9) and specs["linear.bias"].shape == (5,)
    for s in specs.values():
        assert s.init == "uniform" and math.isclose(s.bound, 1 / 3)
    assert m.param_count() == 50
    nb = single_op_model("Linear", [TensorType("f32", (N, 9))], 5, bias=False)
    assert list(nb.parameters) == ["linear.weight"]


def test_linear_macs():
    op = single_op_model("Linear", [TensorType("f32", (N, 9))], 5).nodes[0].op
    assert op.macs({"out_features": 5}, [(2, 9)], [(2, 5)]) == 90
    assert op.macs({"out_features": 5}, [(2, 3, 9)], [(2, 3, 5)]) == 270


def test_linear_matches_torch():
    torch = pytest.importorskip("torch")
    m = single_op_model("Linear", [TensorType("f32", (N, T, 7))], 3)
    w = initialize(m)
    x = random_inputs(m)["x"]
    ref = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w["linear.weight"]),
                                     torch.from_numpy(w["linear.bias"])).numpy()
    np.testing.assert_allclose(NumpyExecutor(m, w).run({"x": x})["y"],
                               ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t,kw,msg,hint", [
    (TensorType("f32", (N,)), {}, r"Linear: expects an input of rank >= 2 \(\[N, ..., features\]\), got f32\[N\]",
     None),
    (TensorType("i64", (N, T)), {}, r"expects a floating-point input, got i64\[N, T\]", "Embedding"),
    (TensorType("f32", (N, T)), {}, r"last dim of the input must be concrete, got f32\[N, T\]", None),
])
def test_linear_errors(t, kw, msg, hint):
    with pytest.raises(ShapeError, match=msg) as e:
        single_op_model("Linear", [t], 4, **kw)
    if hint:
        assert hint in e.value.hint


def test_linear_out_features_positive():
    with pytest.raises(ShapeError, match="out_features must be positive, got 0"):
        single_op_model("Linear", [TensorType("f32", (N, 3))], 0)


@pytest.mark.parametrize("shape", [(2, 3, 4, 6), (2, 2, 3, 2, 5)])
def test_linear_on_any_rank_matches_torch(shape):
    """ConvNeXt's pointwise Linear layers on channels-last maps: MatMul above 2-D, as PyTorch."""
    m = single_op_model("Linear", [TensorType("f32", shape)], 4)
    assert m.outputs[0].type.shape == shape[:-1] + (4,)
    x = random_inputs(m)
    check_parity(m, x)
    assert [n.op_type for n in to_onnx(m, initialize(m)).graph.node][:2] == ["MatMul", "Add"]
    pytest.importorskip("torch")
    from harness import check_torch
    check_torch(m, x, lambda t, xs, ps: t.nn.functional.linear(xs["x"], ps["weight"], ps["bias"]))
