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


# -- Split, Chunk, Squeeze, Unsqueeze, Pad, Roll, Tile, Expand; Upsample, PixelShuffle -----------

def _ours_vs_torch(name, shape, pos, kw, ref, seed=2):
    """Parity with ORT (17 and newest), then forward and gradients against PyTorch."""
    m = single_op_model(name, [f32(*shape)], *pos, **kw)
    x = random_inputs(m, seed=seed)
    check_parity(m, x)
    pytest.importorskip("torch")
    from harness import check_torch
    check_torch(m, x, lambda t, xs, ps: ref(t, xs["x"]))
    return m


SHAPE_OPS = [
    ("Split", (2, 7, 3), (3,), {"dim": 1}, lambda t, x: t.split(x, 3, dim=1)),
    ("Split", (2, 4, 6), ((1, 3, 2),), {"dim": -1}, lambda t, x: t.split(x, (1, 3, 2), dim=-1)),
    ("Chunk", (2, 3, 8), (2,), {"dim": -1}, lambda t, x: t.chunk(x, 2, dim=-1)),
    ("Chunk", (6, 3), (4,), {}, lambda t, x: t.chunk(x, 4)),                     # 3 pieces of 2, as torch
    ("Squeeze", (2, 1, 4, 1), (), {}, lambda t, x: x.squeeze()),
    ("Squeeze", (2, 1, 3, 1), ((1, 3),), {}, lambda t, x: x.squeeze((1, 3))),
    ("Unsqueeze", (2, 4), (1,), {}, lambda t, x: x.unsqueeze(1)),
    ("Unsqueeze", (2, 3, 4), (-1,), {}, lambda t, x: x.unsqueeze(-1)),
    ("Pad", (2, 3, 4, 5), ((1, 2, 0, 3),), {"value": 0.5}, lambda t, x: t.nn.functional.pad(x, (1, 2, 0, 3), value=0.5)),
    ("Pad", (2, 3, 5, 4), ((2, 1, 3, 3), "reflect"), {}, lambda t, x: t.nn.functional.pad(x, (2, 1, 3, 3), "reflect")),
    ("Pad", (2, 3, 6), ((2, 3), "replicate"), {}, lambda t, x: t.nn.functional.pad(x, (2, 3), "replicate")),
    ("Pad", (2, 2, 3, 4, 3), ((1, 1, 2, 0, 0, 1), "replicate"), {},
     lambda t, x: t.nn.functional.pad(x, (1, 1, 2, 0, 0, 1), "replicate")),
    ("Roll", (2, 5, 6, 3), ((-2, 3), (1, 2)), {}, lambda t, x: t.roll(x, (-2, 3), (1, 2))),
    ("Roll", (2, 4, 7), (9, -1), {}, lambda t, x: t.roll(x, 9, -1)),
    ("Tile", (2, 2, 3), ((1, 2, 3),), {}, lambda t, x: t.tile(x, (1, 2, 3))),
    ("Tile", (3, 4), ((2, 1, 2),), {}, lambda t, x: t.tile(x, (2, 1, 2))),
    ("Expand", (2, 1, 4), ((-1, 3, -1),), {}, lambda t, x: x.expand(-1, 3, -1)),
    ("Expand", (1, 3), ((2, 4, 3),), {}, lambda t, x: x.expand(2, 4, 3)),
    ("PixelShuffle", (2, 8, 3, 2), (2,), {}, lambda t, x: t.nn.functional.pixel_shuffle(x, 2)),
    ("PixelUnshuffle", (2, 3, 6, 4), (2,), {}, lambda t, x: t.nn.functional.pixel_unshuffle(x, 2)),
]


@pytest.mark.parametrize("name,shape,pos,kw,ref", SHAPE_OPS, ids=[f"{c[0]}-{i}" for i, c in enumerate(SHAPE_OPS)])
def test_shape_ops_match_torch(name, shape, pos, kw, ref):
    _ours_vs_torch(name, shape, pos, kw, ref)


UPSAMPLE = [
    ((2, 3, 4, 5), {"scale_factor": 2}, {"scale_factor": 2}),
    ((2, 3, 4, 5), {"scale_factor": (1.5, 3)}, {"scale_factor": (1.5, 3)}),
    ((2, 3, 4, 5), {"size": (7, 3)}, {"size": (7, 3)}),
    ((2, 3, 4, 5), {"scale_factor": 2, "mode": "bilinear"}, {"scale_factor": 2, "mode": "bilinear"}),
    ((2, 3, 4, 5), {"size": (9, 7), "mode": "bilinear", "align_corners": True},
     {"size": (9, 7), "mode": "bilinear", "align_corners": True}),
    ((2, 3, 6, 5), {"size": (4, 3), "mode": "bilinear"}, {"size": (4, 3), "mode": "bilinear"}),
    ((2, 3, 4, 5), {"scale_factor": 2.5, "mode": "bilinear"}, {"scale_factor": 2.5, "mode": "bilinear"}),
    ((2, 3, 7), {"scale_factor": 3, "mode": "linear", "align_corners": True},
     {"scale_factor": 3, "mode": "linear", "align_corners": True}),
    ((2, 2, 3, 4, 2), {"scale_factor": 2, "mode": "trilinear"}, {"scale_factor": 2, "mode": "trilinear"}),
    ((2, 2, 3, 4, 2), {"size": (4, 4, 5)}, {"size": (4, 4, 5)}),
]


@pytest.mark.parametrize("shape,kw,tkw", UPSAMPLE, ids=[str(i) for i in range(len(UPSAMPLE))])
def test_upsample_matches_torch(shape, kw, tkw):
    _ours_vs_torch("Upsample", shape, (), kw, lambda t, x: t.nn.functional.interpolate(x, **tkw))


def test_upsample_symbolic_spatial_dims_on_one_export():
    m = single_op_model("Upsample", [f32(N, 3, T, T)], scale_factor=2, mode="bilinear")
    assert m.outputs[0].type.shape == (N, 3, T * 2, T * 2)
    for dims in ({"N": 1, "T": 3}, {"N": 2, "T": 6}):
        check_parity(m, random_inputs(m, dims=dims))
    m = single_op_model("Upsample", [f32(N, 3, T, 4)], size=(5, 6))
    for dims in ({"N": 1, "T": 3}, {"N": 3, "T": 7}):
        check_parity(m, random_inputs(m, dims=dims))


def test_split_outputs_in_the_language():
    import archdsl
    m = archdsl.compile("""
model SwiGLU {
  input x: f32[N, T, 8]
  gate, up = x -> Linear(16) -> Chunk(2, dim=-1)
  output y = gate -> SiLU
  output z = up
}
""").model()
    assert [str(v.type) for v in m.ir.outputs] == ["f32[N, T, 8]", "f32[N, T, 8]"]
    check_parity(m.ir, random_inputs(m.ir))


@pytest.mark.parametrize("name,shape,pos,kw,msg", [
    ("Split", (N, 7), ((3, 3),), {"dim": 1}, r"sections \(3, 3\) add up to 6, but dim 1 of f32\[N, 7\] is 7"),
    ("Chunk", (N, T), (2,), {"dim": 1}, r"dim 1 of the input must be concrete to split it, got f32\[N, T\]"),
    ("Chunk", (N, 4), (2,), {"dim": 2}, r"dim 2 is out of range for the 2-D input f32\[N, 4\]"),
    ("Squeeze", (N, 3, 1), (1,), {}, r"dim 1 of f32\[N, 3, 1\] has size 3; Squeeze removes only dims of size 1"),
    ("Unsqueeze", (N, 3), (3,), {}, r"dim 3 is out of range for the 2-D input"),
    ("Pad", (N, 3, 4), ((1, 2, 3),), {}, r"pad \(1, 2, 3\) must hold \(left, right\) pairs"),
    ("Pad", (N, 3, 4), ((4, 0), "reflect"), {}, r"reflect padding of 4 needs dim 2 to be longer than that"),
    ("Roll", (N, T, 4), (1, 1), {}, r"dim 1 of the input must be concrete to roll it"),
    ("Roll", (N, 5, 4), ((1, 2), 1), {}, r"shifts \(1, 2\) and dims 1 differ in length"),
    ("Tile", (N, 3), ((0, 2),), {}, r"repeat counts must be >= 1"),
    ("Expand", (N, 3), ((-1, 4),), {}, r"cannot expand dim 1 of f32\[N, 3\] \(size 3\) to 4"),
    ("Upsample", (N, 3, 4, 4), (), {}, r"give exactly one of size and scale_factor"),
    ("Upsample", (N, 3, 4, 4), (), {"scale_factor": 2, "mode": "linear"}, r"mode 'linear' takes a 3-D input"),
    ("Upsample", (N, 3, 4, 4), (), {"scale_factor": 2, "align_corners": True}, r"align_corners applies to the linear"),
    ("Upsample", (N, 3, T, 4), (), {"scale_factor": 1.5}, r"a fractional scale_factor 1.5 needs a concrete height"),
    ("PixelShuffle", (N, 6, 4, 4), (2,), {}, r"the channels of f32\[N, 6, 4, 4\] must be a multiple of upscale_factor"),
    ("PixelUnshuffle", (N, 2, 5, 4), (2,), {}, r"the height 5 of f32\[N, 2, 5, 4\] is not divisible by downscale_factor 2"),
])
def test_shape_op_errors(name, shape, pos, kw, msg):
    with pytest.raises(ShapeError, match=rf"{name}: {msg}"):
        single_op_model(name, [f32(*shape)], *pos, **kw)


def test_shape_ops_symbolic_dims():
    assert single_op_model("Pad", [f32(N, 3, T)], (1, 2)).outputs[0].type.shape == (N, 3, T + 3)
    assert single_op_model("Tile", [f32(N, T)], (1, 2)).outputs[0].type.shape == (N, T * 2)
    assert single_op_model("Squeeze", [f32(N, 1, T)]).outputs[0].type.shape == (N, T)
    m = single_op_model("Pad", [f32(N, 3, T)], (2, 1), "reflect")
    for dims in ({"N": 1, "T": 4}, {"N": 3, "T": 9}):
        check_parity(m, random_inputs(m, dims=dims))


def test_resampling_ops_declare_their_windows_to_the_receptive_field_pass():
    import archdsl
    from archdsl.authoring.receptive import receptive_fields
    m = archdsl.compile("""model M {
  input x: f32[N, 2, 16, 16]
  output y = x -> Conv2d(4, 3) -> Pad((1, 1, 1, 1), 'reflect') -> Upsample(scale_factor=2, mode='bilinear')
               -> PixelUnshuffle(2) -> Conv2d(4, 3) -> PixelShuffle(2)
}""").model()
    rf = {k.split("_")[0]: (v.size, v.jump) for k, v in receptive_fields(m).items()}
    assert rf["pad"][0] == (3, 3)                            # padding widens nothing
    assert rf["upsample"] == ((4, 4), (0.5, 0.5))            # two neighbours, half steps
    assert rf["pixelunshuffle"] == ((5, 5), (1, 1))          # a 2x2 block of half steps
    assert rf["pixelshuffle"][1] == (0.5, 0.5)
