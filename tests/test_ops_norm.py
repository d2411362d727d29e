"""BatchNorm (and aliases) and LayerNorm: shape rules, parity, gradients, training statistics."""
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


def _random_weights(m, seed=0):
    """Non-trivial weights: random scale/shift and running statistics (var > 0)."""
    rng = np.random.default_rng(seed)
    w = {}
    for name, a in initialize(m).items():
        if name.endswith("running_var"):
            w[name] = rng.uniform(0.5, 2.0, a.shape).astype(np.float32)
        else:
            w[name] = rng.standard_normal(a.shape).astype(np.float32)
    return w


# -- BatchNorm -----------------------------------------------------------------------------------

BN_CASES = [("BatchNorm", (N, 4)), ("BatchNorm", (N, 3, T)), ("BatchNorm", (N, 3, 4, 5)),
            ("BatchNorm1d", (N, 4)), ("BatchNorm1d", (N, 3, 6)), ("BatchNorm2d", (N, 2, 3, 3))]


@pytest.mark.parametrize("name,shape", BN_CASES, ids=[f"{n}-{len(s)}d" for n, s in BN_CASES])
def test_batchnorm_parity_and_grads(name, shape):
    m = single_op_model(name, [TensorType("f32", shape)], eps=1e-3)
    assert m.outputs[0].type == TensorType("f32", shape)
    x = random_inputs(m, dims={"N": 3}, seed=2)
    w = _random_weights(m)
    check_parity(m, x, weights=w)
    check_grads(m, x, weights=w)
    check_grads(m, x, weights=w, training=True)


def test_batchnorm_params():
    m = single_op_model("BatchNorm", [TensorType("f32", (N, 5, 8, 8))])
    specs = {k.split(".")[-1]: p.spec for k, p in m.parameters.items()}
    assert {k: (s.shape, s.init, s.buffer) for k, s in specs.items()} == {
        "weight": ((5,), "ones", False), "bias": ((5,), "zeros", False),
        "running_mean": ((5,), "zeros", True), "running_var": ((5,), "ones", True)}
    assert m.param_count() == 10                      # buffers are not parameters
    proto = to_onnx(m, initialize(m))
    assert [n.op_type for n in proto.graph.node] == ["BatchNormalization"]


def _bn_reference(x, gamma, beta, mean, var, eps):
    shp = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shp)) / np.sqrt(var.reshape(shp) + eps) * gamma.reshape(shp) + beta.reshape(shp)


def test_batchnorm_training_uses_batch_stats_and_updates_running_stats():
    m = single_op_model("BatchNorm", [TensorType("f32", (N, 3, 5))], momentum=0.2)
    x = random_inputs(m, dims={"N": 4})["x"] * 2 + 1
    w = _random_weights(m)
    ex = NumpyExecutor(m, w)
    y = ex.run({"x": x}, training=True)["y"]
    mu, var = x.mean(axis=(0, 2)), x.var(axis=(0, 2))
    np.testing.assert_allclose(y, _bn_reference(x, w["batchnorm.weight"], w["batchnorm.bias"], mu, var, 1e-5),
                               atol=1e-5, rtol=1e-5)
    n = x.size / 3
    np.testing.assert_allclose(ex.params["batchnorm.running_mean"].data,
                               0.8 * w["batchnorm.running_mean"] + 0.2 * mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ex.params["batchnorm.running_var"].data,
                               0.8 * w["batchnorm.running_var"] + 0.2 * var * n / (n - 1), rtol=1e-5, atol=1e-6)
    # Inference mode leaves the statistics alone and uses them.
    before = ex.params["batchnorm.running_mean"].data.copy()
    y_eval = ex.run({"x": x})["y"]
    np.testing.assert_array_equal(ex.params["batchnorm.running_mean"].data, before)
    np.testing.assert_allclose(y_eval, _bn_reference(x, w["batchnorm.weight"], w["batchnorm.bias"], before,
                                                     ex.params["batchnorm.running_var"].data, 1e-5), atol=1e-5)


def test_batchnorm_matches_torch():
    torch = pytest.importorskip("torch")
    m = single_op_model("BatchNorm2d", [TensorType("f32", (N, 3, 4, 4))], eps=1e-4, momentum=0.3)
    w = _random_weights(m)
    x = random_inputs(m, dims={"N": 5})["x"]
    bn = torch.nn.BatchNorm2d(3, eps=1e-4, momentum=0.3)
    with torch.no_grad():
        for k in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn, k).copy_(torch.from_numpy(w[f"batchnorm2d.{k}"]))
    ex = NumpyExecutor(m, w)
    bn.eval()
    np.testing.assert_allclose(ex.run({"x": x})["y"], bn(torch.from_numpy(x)).detach().numpy(), atol=1e-5)
    bn.train()
    ref = bn(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(ex.run({"x": x}, training=True)["y"], ref, atol=1e-5)
    for k in ("running_mean", "running_var"):
        np.testing.assert_allclose(ex.params[f"batchnorm2d.{k}"].data, getattr(bn, k).numpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=k)


def test_batchnorm_forward_keeps_float64():
    m = single_op_model("BatchNorm", [TensorType("f32", (4, 3))])
    ex = NumpyExecutor(m, initialize(m), dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((4, 3))
    assert ex.run({"x": x}, training=True)["y"].dtype == np.float64
    assert ex.run({"x": x})["y"].dtype == np.float64


@pytest.mark.parametrize("name,shape,msg,hint", [
    ("BatchNorm", (N, 3, 4, 5, 6), r"expects a \[N, C\] or \[N, C, L\] or \[N, C, H, W\] input, got f32\[N, 3, 4, 5, 6\]", None),
    ("BatchNorm", (N,), r"got f32\[N\]", None),
    ("BatchNorm2d", (N, 3, 7), r"BatchNorm2d: expects a \[N, C, H, W\] input, got f32\[N, 3, 7\]", "BatchNorm1d"),
    ("BatchNorm1d", (N, 3, 7, 7), r"BatchNorm1d: expects a \[N, C\] or \[N, C, L\] input, got f32\[N, 3, 7, 7\]",
     "BatchNorm2d"),
    ("BatchNorm", (N, T, 4), r"channel dim \(dim 1\) of the input must be concrete, got f32\[N, T, 4\]", None),
])
def test_batchnorm_errors(name, shape, msg, hint):
    with pytest.raises(ShapeError, match=msg) as e:
        single_op_model(name, [TensorType("f32", shape)])
    if hint:
        assert hint in e.value.hint


def test_batchnorm_rejects_integer_input_and_bad_attrs():
    with pytest.raises(ShapeError, match=r"floating-point input, got i64\[N, 3\]"):
        single_op_model("BatchNorm", [TensorType("i64", (N, 3))])
    with pytest.raises(ShapeError, match="momentum must be in"):
        single_op_model("BatchNorm", [TensorType("f32", (N, 3))], momentum=1.5)
    with pytest.raises(ShapeError, match="eps must be positive"):
        single_op_model("BatchNorm", [TensorType("f32", (N, 3))], eps=0.0)


# -- LayerNorm -----------------------------------------------------------------------------------

LN_CASES = [(N, 8), (N, T, 6), (N, 2, 3, 5)]


@pytest.mark.parametrize("shape", LN_CASES, ids=[f"{len(s)}d" for s in LN_CASES])
def test_layernorm_parity_and_grads(shape):
    m = single_op_model("LayerNorm", [TensorType("f32", shape)])
    assert m.outputs[0].type == TensorType("f32", shape)
    x = random_inputs(m, seed=3)
    w = _random_weights(m)
    check_parity(m, x, weights=w)
    check_parity(m, x, weights=w, opsets=(13, 16))     # the ReduceMean/Sub/Pow/Sqrt/Div decomposition
    check_grads(m, x, weights=w)


def test_layernorm_native_vs_decomposed_nodes():
    m = single_op_model("LayerNorm", [TensorType("f32", (N, 4))], eps=1e-6)
    w = initialize(m)
    assert [n.op_type for n in to_onnx(m, w, opset=17).graph.node] == ["LayerNormalization"]
    ops13 = [n.op_type for n in to_onnx(m, w, opset=13).graph.node]
    assert "LayerNormalization" not in ops13 and {"ReduceMean", "Sqrt", "Div"} <= set(ops13)


def test_layernorm_params():
    m = single_op_model("LayerNorm", [TensorType("f32", (N, T, 16))])
    specs = {k.split(".")[-1]: (p.spec.shape, p.spec.init) for k, p in m.parameters.items()}
    assert specs == {"weight": ((16,), "ones"), "bias": ((16,), "zeros")}


def test_layernorm_matches_torch():
    torch = pytest.importorskip("torch")
    m = single_op_model("LayerNorm", [TensorType("f32", (N, T, 6))], eps=1e-3)
    w = _random_weights(m)
    x = random_inputs(m)["x"] * 3 + 1
    ln = torch.nn.LayerNorm(6, eps=1e-3)
    with torch.no_grad():
        ln.weight.copy_(torch.from_numpy(w["layernorm.weight"]))
        ln.bias.copy_(torch.from_numpy(w["layernorm.bias"]))
    np.testing.assert_allclose(NumpyExecutor(m, w).run({"x": x})["y"], ln(torch.from_numpy(x)).detach().numpy(),
                               atol=1e-5)


def test_layernorm_errors():
    with pytest.raises(ShapeError, match=r"LayerNorm: the last dim of the input .* must be concrete, got f32\[N, T\]"):
        single_op_model("LayerNorm", [TensorType("f32", (N, T))])
    with pytest.raises(ShapeError, match=r"floating-point input, got i32\[N, 4\]"):
        single_op_model("LayerNorm", [TensorType("i32", (N, 4))])
