"""Embedding: integer ids of any rank -> [..., dim]; padding_idx; errors."""
import numpy as np
import pytest

from archdsl.autodiff import Tensor, backward
from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.backends.onnx.export import to_onnx
from archdsl.errors import ShapeError
from archdsl.ir.build import single_op_model
from archdsl.ir.types import Sym, TensorType
from archdsl.passes.init import initialize
from harness import check_grads, check_parity, random_inputs

N, T = Sym.named("N"), Sym.named("T")

CASES = [("i64", (N, T), {}), ("i32", (N,), {}), ("i64", (N, T, 3), {}), ("i64", (), {}),
         ("i64", (N, T), {"padding_idx": 0}), ("i32", (N, T), {"padding_idx": -2})]


@pytest.mark.parametrize("dtype,shape,attrs", CASES, ids=[f"{d}-{len(s)}d-{a}" for d, s, a in CASES])
def test_parity_and_grads(dtype, shape, attrs):
    m = single_op_model("Embedding", [TensorType(dtype, shape)], 7, 5, **attrs)
    assert m.outputs[0].type == TensorType("f32", shape + (5,))
    x = random_inputs(m, seed=4, high=7)
    y = check_parity(m, x)["y"]
    check_grads(m, x, n_coords=12)
    w = initialize(m)["embedding.weight"]
    p = attrs.get("padding_idx")
    expect = w[x["x"]]
    if p is not None:
        expect[x["x"] == p % 7] = 0
    np.testing.assert_array_equal(y, expect)


def test_params_follow_pytorch():
    m = single_op_model("Embedding", [TensorType("i64", (N, T))], 1000, 16)
    spec = m.parameters["embedding.weight"].spec
    assert (spec.shape, spec.init, spec.std) == ((1000, 16), "normal", 1.0)
    w = initialize(m)["embedding.weight"]
    assert abs(w.std() - 1.0) < 0.05 and abs(w.mean()) < 0.05


def test_padding_row_is_zero_and_gets_no_gradient():
    m = single_op_model("Embedding", [TensorType("i64", (2, 4))], 6, 3, padding_idx=2)
    ids = np.array([[2, 1, 2, 5], [0, 2, 1, 1]], np.int64)
    ex = NumpyExecutor(m, initialize(m), dtype=np.float64)
    y = ex.forward({"x": ids}, training=True)["y"]
    np.testing.assert_array_equal(y.data[ids == 2], 0)
    backward((y * np.random.default_rng(0).standard_normal(y.shape)).sum())
    g = ex.params["embedding.weight"].grad
    np.testing.assert_array_equal(g[2], 0)
    assert np.all(g[[0, 1, 5]] != 0) and np.all(g[[3, 4]] == 0)


def test_lowers_to_gather():
    m = single_op_model("Embedding", [TensorType("i64", (N, T))], 10, 4)
    assert [n.op_type for n in to_onnx(m, initialize(m)).graph.node] == ["Gather"]


def test_float_input_is_rejected_with_hint():
    with pytest.raises(ShapeError, match=r"Embedding: expects integer ids \(i32 or i64\), got f32\[N, T\]") as e:
        single_op_model("Embedding", [TensorType("f32", (N, T))], 10, 4)
    assert "i64" in e.value.hint and "Linear" in e.value.hint


@pytest.mark.parametrize("args,kw,msg", [
    ((10, 4), {"padding_idx": 10}, "padding_idx 10 is out of range for 10 embeddings"),
    ((10, 4), {"padding_idx": -11}, "padding_idx -11 is out of range for 10 embeddings"),
    ((0, 4), {}, "must be positive, got 0 and 4"),
    ((10, -1), {}, "must be positive, got 10 and -1"),
])
def test_bad_arguments(args, kw, msg):
    with pytest.raises(ShapeError, match=msg):
        single_op_model("Embedding", [TensorType("i64", (N,))], *args, **kw)


def test_forward_keeps_float64():
    m = single_op_model("Embedding", [TensorType("i64", (3,))], 5, 2, padding_idx=1)
    ex = NumpyExecutor(m, initialize(m), dtype=np.float64)
    assert ex.run({"x": np.array([0, 1, 4])})["y"].dtype == np.float64


def test_tensor_ids_accepted():
    m = single_op_model("Embedding", [TensorType("i64", (3,))], 5, 2)
    w = initialize(m)
    y = NumpyExecutor(m, w).run({"x": Tensor(np.array([4, 0, 4]))})["y"]
    np.testing.assert_array_equal(y, w["embedding.weight"][[4, 0, 4]])


def test_padding_row_starts_at_zero_and_lowers_to_a_single_gather():
    from archdsl.backends.onnx.export import to_onnx
    from archdsl.ir.build import single_op_model
    from archdsl.ir.types import Sym, TensorType
    from archdsl.passes.init import initialize
    m = single_op_model("Embedding", [TensorType("i64", (Sym.named("N"),))], 6, 3, padding_idx=2)
    w = initialize(m, seed=0)
    assert not w["embedding.weight"][2].any() and w["embedding.weight"][1].any()
    assert [n.op_type for n in to_onnx(m, w).graph.node] == ["Gather"]
