"""Activations (and Dropout): shape rules, ORT vs NumPy parity, gradients, errors."""
import numpy as np
import pytest

from archdsl.errors import ShapeError
from archdsl.ir.build import single_op_model
from archdsl.ir.types import Sym, TensorType
from archdsl.ops.base import get_op
from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.backends.onnx.export import to_onnx
from archdsl.passes.init import initialize
from harness import check_grads, check_parity, random_inputs

N, T = Sym.named("N"), Sym.named("T")

CASES = [
    ("ReLU", {}, (N, 6)),
    ("LeakyReLU", {}, (N, 6)),
    ("LeakyReLU", {"negative_slope": 0.2}, (N, 3, 4)),
    ("ELU", {}, (N, 6)),
    ("ELU", {"alpha": 0.5}, (N, T, 3)),
    ("Tanh", {}, (N, 6)),
    ("Sigmoid", {}, (N, 2, 3, 3)),
    ("Softmax", {}, (N, 7)),
    ("Softmax", {"axis": 1}, (N, T, 3)),
    ("Softmax", {"axis": -3}, (N, T, 3)),
    ("LogSoftmax", {}, (N, 7)),
    ("LogSoftmax", {"axis": 0}, (N, T, 3)),
    ("GELU", {}, (N, 6)),
    ("GELU", {"approximate": "tanh"}, (N, T, 4)),
    ("Identity", {}, (N, 6)),
]


def _ids(c):
    return f"{c[0]}-{'-'.join(f'{k}={v}' for k, v in c[1].items())}"


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_parity_and_grads(case):
    name, attrs, shape = case
    m = single_op_model(name, [TensorType("f32", shape)], **attrs)
    assert m.outputs[0].type == TensorType("f32", shape)   # shape-preserving, symbols kept
    x = random_inputs(m, seed=1)
    check_parity(m, x)
    check_grads(m, x)


@pytest.mark.parametrize("name", ["ReLU", "LeakyReLU", "ELU", "Tanh", "Sigmoid", "Softmax",
                                  "LogSoftmax", "GELU"])
def test_integer_input_is_rejected(name):
    with pytest.raises(ShapeError, match=rf"{name}: expects a floating-point input, got i64\[N, T\]") as e:
        single_op_model(name, [TensorType("i64", (N, T))])
    assert "Embedding" in e.value.hint


def test_identity_takes_any_dtype_and_exports_no_node():
    m = single_op_model("Identity", [TensorType("i64", (N, 3))])
    assert m.outputs[0].type == TensorType("i64", (N, 3))
    proto = to_onnx(m, {})
    assert [n.op_type for n in proto.graph.node] == ["Identity"]   # the exporter's output copy


@pytest.mark.parametrize("name", ["Softmax", "LogSoftmax"])
def test_softmax_axis_out_of_range(name):
    with pytest.raises(ShapeError, match=r"axis 3 is out of range for the 3-D input f32\[N, T, 4\]"):
        single_op_model(name, [TensorType("f32", (N, T, 4))], axis=3)


def test_softmax_sums_to_one_along_axis():
    m = single_op_model("Softmax", [TensorType("f32", (2, 3, 4))], axis=1)
    x = random_inputs(m)
    y = NumpyExecutor(m, {}).run(x)["y"]
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)
    m2 = single_op_model("LogSoftmax", [TensorType("f32", (2, 3, 4))], axis=1)
    np.testing.assert_allclose(NumpyExecutor(m2, {}).run(x)["y"], np.log(y), atol=1e-6)


@pytest.mark.parametrize("approx", ["none", "tanh"])
def test_gelu_native_and_decomposed(approx):
    m = single_op_model("GELU", [TensorType("f32", (N, 5))], approximate=approx)
    ops17 = {n.op_type for n in to_onnx(m, {}, opset=17).graph.node}
    ops20 = {n.op_type for n in to_onnx(m, {}, opset=20).graph.node}
    assert ops20 == {"Gelu"}
    assert "Gelu" not in ops17 and ("Erf" if approx == "none" else "Tanh") in ops17
    check_parity(m, random_inputs(m), opsets=(13, 17, 20))


def test_gelu_bad_approximate():
    from archdsl.errors import ArchError
    with pytest.raises(ArchError, match="approximate"):
        single_op_model("GELU", [TensorType("f32", (N, 5))], approximate="fast")


def test_default_attributes_and_describe():
    op = get_op("LeakyReLU")
    assert op.describe({"negative_slope": 0.01}) == ""
    assert op.describe({"negative_slope": 0.2}) == "negative_slope=0.2"


@pytest.mark.parametrize("approx", ["none", "tanh"])
def test_gelu_matches_torch(approx):
    torch = pytest.importorskip("torch")
    m = single_op_model("GELU", [TensorType("f32", (3, 50))], approximate=approx)
    x = random_inputs(m)["x"] * 3
    ours = NumpyExecutor(m, {}).run({"x": x})["y"]
    ref = torch.nn.functional.gelu(torch.from_numpy(x), approximate=approx).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=1e-5)


def test_activations_match_torch():
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    x = np.random.default_rng(3).standard_normal((4, 9)).astype(np.float32)
    refs = {("ReLU", ()): tf.relu, ("LeakyReLU", (0.2,)): lambda t: tf.leaky_relu(t, 0.2),
            ("ELU", (0.7,)): lambda t: tf.elu(t, 0.7), ("Tanh", ()): torch.tanh,
            ("Sigmoid", ()): torch.sigmoid, ("Softmax", (0,)): lambda t: tf.softmax(t, 0),
            ("LogSoftmax", (-1,)): lambda t: tf.log_softmax(t, -1)}
    for (name, pos), fn in refs.items():
        m = single_op_model(name, [TensorType("f32", (4, 9))], *pos)
        np.testing.assert_allclose(NumpyExecutor(m, {}).run({"x": x})["y"], fn(torch.from_numpy(x)).numpy(),
                                   atol=1e-6, rtol=1e-5, err_msg=name)


def test_forward_keeps_float64():
    m = single_op_model("GELU", [TensorType("f32", (2, 3))])
    x = np.random.default_rng(0).standard_normal((2, 3))
    assert NumpyExecutor(m, {}, dtype=np.float64).run({"x": x})["y"].dtype == np.float64


# -- Dropout (elementwise, shape-preserving: tested beside the activations) ----------------------

def test_dropout_inference_is_identity_and_exports_no_node():
    m = single_op_model("Dropout", [TensorType("f32", (N, T, 8))], p=0.3)
    assert m.outputs[0].type == TensorType("f32", (N, T, 8))
    x = random_inputs(m)
    y = check_parity(m, x)["y"]
    np.testing.assert_array_equal(y, x["x"])
    proto = to_onnx(m, {})
    assert all(n.op_type != "Dropout" for n in proto.graph.node)
    assert len(proto.graph.node) <= 1                   # at most the exporter's output Identity
    check_grads(m, x)


def test_dropout_training_statistics():
    p = 0.3
    m = single_op_model("Dropout", [TensorType("f32", (200, 500))], p=p)
    x = np.ones((200, 500), np.float32)
    ex = NumpyExecutor(m, {}, seed=7)
    y = ex.run({"x": x}, training=True)["y"]
    dropped = (y == 0).mean()
    assert abs(dropped - p) < 0.01                     # 100k Bernoulli draws: sd ~ 0.0015
    np.testing.assert_allclose(y[y != 0], 1 / (1 - p), rtol=1e-6)   # inverted dropout scaling
    assert abs(y.mean() - 1.0) < 0.02
    y2 = ex.run({"x": x}, training=True)["y"]
    assert not np.array_equal(y == 0, y2 == 0)          # a fresh mask per call
    np.testing.assert_array_equal(ex.run({"x": x})["y"], x)   # inference: identity


def test_dropout_training_grads():
    m = single_op_model("Dropout", [TensorType("f32", (3, 7))], p=0.5)
    check_grads(m, random_inputs(m), training=True)    # each executor replays the same seeded mask


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5])
def test_dropout_bad_p(p):
    with pytest.raises(ShapeError, match=rf"Dropout: p must be in \[0, 1\), got {p}"):
        single_op_model("Dropout", [TensorType("f32", (N, 4))], p=p)


def test_dropout_p_zero_training_is_identity():
    m = single_op_model("Dropout", [TensorType("f32", (3, 4))], p=0.0)
    x = random_inputs(m)
    np.testing.assert_array_equal(NumpyExecutor(m, {}).run(x, training=True)["y"], x["x"])


# -- the activations of modern CNNs and LLMs, against PyTorch (forward and gradients) ------------

TORCH_ACTIVATIONS = [
    ("ReLU6", (), lambda t, x: t.nn.functional.relu6(x)),
    ("Hardtanh", (), lambda t, x: t.nn.functional.hardtanh(x)),
    ("Hardtanh", (-0.5, 2.0), lambda t, x: t.nn.functional.hardtanh(x, -0.5, 2.0)),
    ("SiLU", (), lambda t, x: t.nn.functional.silu(x)),
    ("Swish", (), lambda t, x: t.nn.functional.silu(x)),
    ("Hardswish", (), lambda t, x: t.nn.functional.hardswish(x)),
    ("Hardsigmoid", (), lambda t, x: t.nn.functional.hardsigmoid(x)),
    ("Mish", (), lambda t, x: t.nn.functional.mish(x)),
    ("Softplus", (), lambda t, x: t.nn.functional.softplus(x)),
    ("Softplus", (2.0, 3.0), lambda t, x: t.nn.functional.softplus(x, 2.0, 3.0)),
    ("Softsign", (), lambda t, x: t.nn.functional.softsign(x)),
    ("LogSigmoid", (), lambda t, x: t.nn.functional.logsigmoid(x)),
]


@pytest.mark.parametrize("name,pos,ref", TORCH_ACTIVATIONS, ids=[f"{c[0]}{c[1]}" for c in TORCH_ACTIVATIONS])
def test_new_activations_match_torch(name, pos, ref):
    pytest.importorskip("torch")
    from harness import check_torch
    m = single_op_model(name, [TensorType("f32", (3, 4, 50))], *pos)
    x = {"x": np.random.default_rng(5).standard_normal((3, 4, 50)).astype(np.float32) * 4}
    check_torch(m, x, lambda t, xs, ps: ref(t, xs["x"]))
    check_parity(m, x)                   # ORT at 17 and the newest opset, on the wide range too


@pytest.mark.parametrize("shape,n", [((3, 4, 5, 6), 4), ((3, 7), 1), ((2, 5, 9), 5)])
def test_prelu_matches_torch(shape, n):
    pytest.importorskip("torch")
    from harness import check_torch
    m = single_op_model("PReLU", [TensorType("f32", shape)], n, 0.3)
    w = {k: np.random.default_rng(1).uniform(-1, 1, v.shape).astype(np.float32)
         for k, v in initialize(m).items()}
    x = random_inputs(m)
    check_torch(m, x, lambda t, xs, ps: t.nn.functional.prelu(xs["x"], ps["weight"]), weights=w)
    check_parity(m, x, weights=w)


def test_prelu_params_and_channel_check():
    m = single_op_model("PReLU", [TensorType("f32", (N, 8, 4, 4))], 8)
    (spec,) = [p.spec for p in m.parameters.values()]
    assert spec.shape == (8,) and np.all(initialize(m)["prelu.weight"] == np.float32(0.25))
    assert m.param_count() == 8
    with pytest.raises(ShapeError, match=r"num_parameters is 6 but the input has 8 channels") as e:
        single_op_model("PReLU", [TensorType("f32", (N, 8, 4, 4))], 6)
    assert "PReLU(8)" in e.value.hint


def test_lowerings_of_the_new_activations():
    ops = {}
    for name in ("ReLU6", "Mish", "SiLU", "Hardswish", "Softplus"):
        m = single_op_model(name, [TensorType("f32", (N, 5))])
        ops[name] = {o: [n.op_type for n in to_onnx(m, initialize(m), opset=o).graph.node] for o in (17, 18)}
    assert "Clip" in ops["ReLU6"][17]
    assert "Mish" in ops["Mish"][18] and "Mish" not in ops["Mish"][17] and "Softplus" in ops["Mish"][17]
    assert ops["SiLU"][17][:2] == ["Sigmoid", "Mul"]
    assert ops["Hardswish"][17][0] == "HardSwish"
    assert {"Softplus", "Where"} <= set(ops["Softplus"][17])


def test_hardtanh_bounds_must_be_ordered():
    with pytest.raises(ShapeError, match=r"Hardtanh: min_val 1.0 must be below max_val 0.0"):
        single_op_model("Hardtanh", [TensorType("f32", (N, 5))], 1.0, 0.0)
