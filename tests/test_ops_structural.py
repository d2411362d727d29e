"""Flatten, Reshape, Transpose/Permute, Concat, Add/Sub/Mul: shape rules (symbolic dims), parity,
gradients and errors."""
import numpy as np
import pytest

from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.backends.onnx.export import to_onnx
from archdsl.errors import ShapeError
from archdsl.ir.build import single_op_model
from archdsl.ir.types import Sym, TensorType
from harness import check_grads, check_parity, random_inputs

N, T = Sym.named("N"), Sym.named("T")


def f32(*shape):
    return TensorType("f32", tuple(shape))


def _run_all(m, **kw):
    x = random_inputs(m, seed=5, **kw)
    y = check_parity(m, x)
    if all(v.type.is_float for v in m.inputs):
        check_grads(m, x)
    return x, y


# -- Flatten -------------------------------------------------------------------------------------

FLATTEN = [
    ((N, 16, 5, 5), {}, (N, 400), "Flatten"),
    ((N, 3, 4, 5), {"start_dim": 0}, (N * 60,), "Reshape"),
    ((N, 3, 4, 5), {"start_dim": 1, "end_dim": 2}, (N, 12, 5), "Reshape"),
    ((N, 3, 4, T), {"start_dim": 1, "end_dim": -2}, (N, 12, T), "Reshape"),   # symbolic tail: dynamic shape
    ((N, T, 4), {"start_dim": 0, "end_dim": 1}, (Sym.named("(N)*(T)"), 4), "Reshape"),
    ((N, T, 4), {"start_dim": -1}, (N, T, 4), None),                             # one dim: a no-op
    ((N, T, 4, 2), {"start_dim": -2}, (N, T, 8), "Reshape"),
    ((N, 6), {}, (N, 6), None),                                                  # already flat
]


@pytest.mark.parametrize("shape,attrs,out,onnx_op", FLATTEN, ids=[str(i) for i in range(len(FLATTEN))])
def test_flatten(shape, attrs, out, onnx_op):
    m = single_op_model("Flatten", [f32(*shape)], **attrs)
    assert m.outputs[0].type == f32(*out)
    ops = [n.op_type for n in to_onnx(m, {}).graph.node]
    assert (onnx_op in ops) if onnx_op else ops == ["Identity"]
    _, y = _run_all(m)
    x = random_inputs(m, seed=5)["x"]
    s, e = attrs.get("start_dim", 1) % x.ndim, attrs.get("end_dim", -1) % x.ndim
    np.testing.assert_array_equal(y["y"], x.reshape(x.shape[:s] + (-1,) + x.shape[e + 1:]))


@pytest.mark.parametrize("shape,attrs,msg", [
    ((N,), {}, r"start_dim=1 is out of range for the 1-D input f32\[N\]"),
    ((N, 3, 4), {"end_dim": 3}, r"end_dim=3 is out of range for the 3-D input f32\[N, 3, 4\]"),
    ((N, 3, 4), {"start_dim": 2, "end_dim": 1}, r"start_dim 2 \(dim 2\) comes after end_dim 1 \(dim 1\)"),
])
def test_flatten_errors(shape, attrs, msg):
    with pytest.raises(ShapeError, match=msg):
        single_op_model("Flatten", [f32(*shape)], **attrs)


# -- Reshape -------------------------------------------------------------------------------------

RESHAPE = [
    ((N, 16, 5, 5), (0, -1), (N, 400)),
    ((N, 16, 5, 5), (0, 16, 25), (N, 16, 25)),
    ((N, T, 12), (0, 0, 3, 4), (N, T, 3, 4)),
    ((N, T, 12), (0, 0, -1, 4), (N, T, 3, 4)),
    ((N, 4, 6), (-1, 6), (4 * N, 6)),
    ((N, T, 6), (-1, 6), (Sym.named("(N)*(T)"), 6)),
    ((2, 3, 4), (4, -1), (4, 6)),
    ((2, 3, 4), (24,), (24,)),
    ((2, 3, 4), (3, 2, 4), (3, 2, 4)),
    ((N, 6), (0, 2, 1, 3), (N, 2, 1, 3)),
]


@pytest.mark.parametrize("shape,target,out", RESHAPE, ids=[str(i) for i in range(len(RESHAPE))])
def test_reshape(shape, target, out):
    m = single_op_model("Reshape", [f32(*shape)], target)
    assert m.outputs[0].type == f32(*out)
    x, y = _run_all(m)
    want = tuple(x["x"].shape[i] if v == 0 else v for i, v in enumerate(target))
    np.testing.assert_array_equal(y["y"], x["x"].reshape(want))


def test_reshape_integer_input():
    m = single_op_model("Reshape", [TensorType("i64", (N, 6))], (0, 3, 2))
    x = random_inputs(m)
    np.testing.assert_array_equal(check_parity(m, x)["y"], x["x"].reshape(2, 3, 2))


@pytest.mark.parametrize("shape,target,msg", [
    ((2, 3, 4), (5, -1), r"cannot reshape f32\[2, 3, 4\] \(24 elements\) to \(5, -1\): 24 is not divisible by 5"),
    ((2, 3, 4), (5, 5), r"cannot reshape f32\[2, 3, 4\] \(24 elements\) to \(5, 5\) \(25 elements\)"),
    ((N, 4), (2, 8), r"cannot reshape f32\[N, 4\] to \(2, 8\): the symbolic dims N have no place in it"),
    ((N, 4), (-1, -1), r"at most one dim of the target shape \(-1, -1\) can be -1"),
    ((N, 4), (0, 0, 0), r"target dim 2 is 0 \(copy the input dim\), but the input f32\[N, 4\] has only 2 dims"),
    ((N, 4), (0, -3), r"invalid dim -3"),
])
def test_reshape_errors(shape, target, msg):
    with pytest.raises(ShapeError, match=msg):
        single_op_model("Reshape", [f32(*shape)], target)


# -- Transpose / Permute -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["Transpose", "Permute"])
@pytest.mark.parametrize("perm,out", [((0, 2, 1), (N, 4, T)), ((2, 0, 1), (4, N, T)), ((0, -1, 1), (N, 4, T))])
def test_transpose(name, perm, out):
    m = single_op_model(name, [f32(N, T, 4)], perm)
    assert m.outputs[0].type == f32(*out)
    x, y = _run_all(m)
    np.testing.assert_array_equal(y["y"], x["x"].transpose([p % 3 for p in perm]))


@pytest.mark.parametrize("perm,msg", [
    ((0, 1), r"perm \(0, 1\) has 2 entries, but the input f32\[N, T, 4\] has 3 dims"),
    ((0, 1, 1), r"perm \(0, 1, 1\) is not a permutation of the dims 0..2 of f32\[N, T, 4\]"),
    ((0, 1, 3), r"perm \(0, 1, 3\) has a dim out of range for the 3-D input"),
])
def test_transpose_errors(perm, msg):
    with pytest.raises(ShapeError, match=msg):
        single_op_model("Permute", [f32(N, T, 4)], perm)


# -- Concat --------------------------------------------------------------------------------------

@pytest.mark.parametrize("types,axis,out", [
    ([f32(N, 3, 4), f32(N, 5, 4)], 1, f32(N, 8, 4)),
    ([f32(N, T, 4), f32(N, T, 2), f32(N, T, 1)], -1, f32(N, T, 7)),
    ([f32(N, 3), f32(N, 3)], 0, f32(2 * N, 3)),
    ([f32(N, T, 2), f32(N, 3, 2)], 1, f32(N, T + 3, 2)),
])
def test_concat(types, axis, out):
    m = single_op_model("Concat", types, axis=axis)
    assert m.outputs[0].type == out
    x, y = _run_all(m)
    np.testing.assert_array_equal(y["y"], np.concatenate([x[f"x{i}"] for i in range(len(types))], axis=axis))


def test_concat_default_axis_is_1():
    m = single_op_model("Concat", [f32(N, 2, 3), f32(N, 4, 3)])
    assert m.outputs[0].type == f32(N, 6, 3)


@pytest.mark.parametrize("types,kw,msg", [
    ([f32(N, 3, 4), f32(N, 5, 4), f32(N, 3, 5)], {},
     r"input 2 f32\[N, 3, 5\] differs from input 0 f32\[N, 3, 4\] in dim 2 \(5 vs 4\)"),
    ([f32(N, 3, 4), f32(T, 3, 4)], {}, r"input 1 f32\[T, 3, 4\] differs from input 0 f32\[N, 3, 4\] in dim 0 \(T vs N\)"),
    ([f32(N, 3), f32(N, 3, 1)], {}, r"input 1 f32\[N, 3, 1\] has 3 dims but input 0 f32\[N, 3\] has 2"),
    ([f32(N, 3), TensorType("f64", (N, 3))], {}, r"input 1 has dtype f64 but input 0 has f32"),
    ([f32(N, 3), f32(N, 3)], {"axis": 2}, r"axis 2 is out of range for the 2-D input f32\[N, 3\]"),
    ([f32(N, 3)], {}, r"needs at least 2 inputs, got 1"),
])
def test_concat_errors(types, kw, msg):
    with pytest.raises(ShapeError, match=msg):
        single_op_model("Concat", types, **kw)


# -- Add / Sub / Mul -----------------------------------------------------------------------------

@pytest.mark.parametrize("name,fn", [("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply)])
@pytest.mark.parametrize("a,c,out", [
    ((N, T, 4), (N, T, 4), (N, T, 4)),
    ((N, T, 4), (4,), (N, T, 4)),
    ((N, 1, 4), (1, T, 1), (N, T, 4)),
    ((3, 1), (N, 1, 5), (N, 3, 5)),
])
def test_binary(name, fn, a, c, out):
    m = single_op_model(name, [f32(*a), f32(*c)])
    assert m.outputs[0].type == f32(*out)
    x, y = _run_all(m)
    np.testing.assert_allclose(y["y"], fn(x["x0"], x["x1"]), rtol=1e-6)


@pytest.mark.parametrize("name,sym", [("Add", r"\+"), ("Sub", "-"), ("Mul", r"\*")])
def test_binary_errors(name, sym):
    with pytest.raises(ShapeError, match=rf"{name}: cannot broadcast f32\[N, 3\] {sym} f32\[N, 4\]: "
                                         r"shapes \[N, 3\] and \[N, 4\] differ"):
        single_op_model(name, [f32(N, 3), f32(N, 4)])
    with pytest.raises(ShapeError, match=rf"cannot broadcast f32\[N, 3\] {sym} f32\[T, 3\]"):
        single_op_model(name, [f32(N, 3), f32(T, 3)])
    with pytest.raises(ShapeError, match=rf"operands have different dtypes: f32\[N, 3\] {sym} i64\[N, 3\]"):
        single_op_model(name, [f32(N, 3), TensorType("i64", (N, 3))])


def test_binary_integer_operands():
    m = single_op_model("Add", [TensorType("i64", (N, 3)), TensorType("i64", (3,))])
    x = random_inputs(m)
    np.testing.assert_array_equal(check_parity(m, x)["y"], x["x0"] + x["x1"])


def test_structural_ops_keep_float64():
    m = single_op_model("Concat", [f32(2, 3), f32(2, 1)])
    r = np.random.default_rng(0)
    y = NumpyExecutor(m, {}, dtype=np.float64).run({"x0": r.random((2, 3)), "x1": r.random((2, 1))})["y"]
    assert y.dtype == np.float64
