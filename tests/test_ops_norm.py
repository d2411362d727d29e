"""BatchNorm (and aliases) and LayerNorm: shape rules, parity, gradients, training statistics."""
import numpy as np
import pytest

from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.backends.onnx.export import max_opset, to_onnx
from archdsl.errors import ShapeError
from archdsl.ir.build import single_op_model
from archdsl.ir.types import Sym, TensorType
from archdsl.passes.init import initialize
from harness import check_grads, check_parity, check_torch, ort_run, random_inputs

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


# -- GroupNorm, InstanceNorm, RMSNorm, channels-first LayerNorm, LocalResponseNorm ---------------

def f32(*shape):
    return TensorType("f32", shape)


def _affine_weights(m, seed=3):
    """Random scales and shifts (so the affine is tested), running variances > 0."""
    rng = np.random.default_rng(seed)
    return {k: (rng.uniform(0.5, 2.0, a.shape) if k.endswith("running_var") else rng.standard_normal(a.shape))
            .astype(np.float32) for k, a in initialize(m).items()}


NEW_NORMS = [
    ("GroupNorm", (3, 6, 4, 5), (3,), {}, lambda t, x, p: t.nn.functional.group_norm(x, 3, p["weight"], p["bias"])),
    ("GroupNorm", (2, 4, 7), (1, 4), {"eps": 1e-3, "affine": False},
     lambda t, x, p: t.nn.functional.group_norm(x, 1, eps=1e-3)),
    ("InstanceNorm2d", (3, 4, 5, 6), (4,), {"affine": True},
     lambda t, x, p: t.nn.functional.instance_norm(x, weight=p["weight"], bias=p["bias"])),
    ("InstanceNorm1d", (2, 3, 9), (), {"eps": 1e-3}, lambda t, x, p: t.nn.functional.instance_norm(x, eps=1e-3)),
    ("InstanceNorm3d", (2, 2, 3, 4, 3), (), {}, lambda t, x, p: t.nn.functional.instance_norm(x)),
    ("RMSNorm", (3, 5, 8), (8,), {"eps": 1e-6},
     lambda t, x, p: t.nn.functional.rms_norm(x, (8,), p["weight"], 1e-6)),
    ("RMSNorm", (2, 3, 4, 5), ((4, 5),), {"elementwise_affine": False, "eps": 1e-5},
     lambda t, x, p: t.nn.functional.rms_norm(x, (4, 5), None, 1e-5)),
    ("LayerNorm", (2, 6, 4, 5), (6,), {"channels_first": True, "eps": 1e-6},
     lambda t, x, p: t.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (6,), p["weight"], p["bias"], 1e-6)
     .permute(0, 3, 1, 2)),
    ("LocalResponseNorm", (2, 7, 3, 4), (3,), {"alpha": 0.3, "beta": 0.6, "k": 1.5},
     lambda t, x, p: t.nn.functional.local_response_norm(x, 3, 0.3, 0.6, 1.5)),
    ("LocalResponseNorm", (2, 6, 5), (4,), {"alpha": 0.5},
     lambda t, x, p: t.nn.functional.local_response_norm(x, 4, 0.5)),
    ("LocalResponseNorm", (2, 5, 3, 2, 2), (2,), {"alpha": 0.2, "beta": 1.0},
     lambda t, x, p: t.nn.functional.local_response_norm(x, 2, 0.2, 1.0)),
]


@pytest.mark.parametrize("name,shape,pos,kw,ref", NEW_NORMS, ids=[f"{c[0]}-{i}" for i, c in enumerate(NEW_NORMS)])
def test_new_norms_match_torch_and_ort(name, shape, pos, kw, ref):
    m = single_op_model(name, [f32(*shape)], *pos, **kw)
    w = _affine_weights(m)
    x = {"x": (np.random.default_rng(4).standard_normal(shape) * 2 + 0.5).astype(np.float32)}
    check_parity(m, x, weights=w, opsets=(13, 17, 18, 21, 23, max_opset()))
    pytest.importorskip("torch")
    check_torch(m, x, lambda t, xs, ps: ref(t, xs["x"], ps), weights=w)


def test_instance_norm_running_stats_match_torch():
    torch = pytest.importorskip("torch")
    m = single_op_model("InstanceNorm2d", [f32(3, 4, 5, 6)], 4, momentum=0.2, affine=True, track_running_stats=True)
    w = _affine_weights(m)
    ex = NumpyExecutor(m, w)
    mod = torch.nn.InstanceNorm2d(4, momentum=0.2, affine=True, track_running_stats=True)
    with torch.no_grad():
        for k in ("weight", "bias", "running_mean", "running_var"):
            getattr(mod, k).copy_(torch.from_numpy(w[f"instancenorm2d.{k}"]))
    x = np.random.default_rng(5).standard_normal((3, 4, 5, 6)).astype(np.float32) * 3 + 1
    for _ in range(2):                                         # training: instance stats, running stats move
        y = ex.run({"x": x}, training=True)["y"]
        np.testing.assert_allclose(y, mod.train()(torch.from_numpy(x)).detach().numpy(), atol=1e-5)
    for k in ("running_mean", "running_var"):
        np.testing.assert_allclose(ex.params[f"instancenorm2d.{k}"].data, getattr(mod, k).numpy(), rtol=1e-5,
                                   atol=1e-6)
    ref = mod.eval()(torch.from_numpy(x)).detach().numpy()     # inference: the running statistics
    np.testing.assert_allclose(ex.run({"x": x})["y"], ref, atol=1e-5)
    trained = ex.weights()
    np.testing.assert_allclose(ort_run(to_onnx(m, trained), {"x": x})["y"], ref, atol=1e-5)
    check_grads(m, {"x": x[:2]}, weights=w, training=True)


def test_new_norm_lowerings_by_opset():
    def ops(name, shape, *pos, opset, **kw):
        m = single_op_model(name, [f32(*shape)], *pos, **kw)
        return [n.op_type for n in to_onnx(m, initialize(m), opset=opset).graph.node]
    assert "GroupNormalization" in ops("GroupNorm", (N, 4, 3), 2, opset=21)
    assert "InstanceNormalization" in ops("GroupNorm", (N, 4, 3), 2, opset=20)
    assert ops("RMSNorm", (N, T, 8), opset=23)[0] == "RMSNormalization"
    assert "RMSNormalization" not in ops("RMSNorm", (N, T, 8), opset=22)
    assert "LRN" in ops("LocalResponseNorm", (N, 5, 3, 3), 3, opset=17)
    assert "LRN" not in ops("LocalResponseNorm", (N, 5, 3, 3), 4, opset=17)      # ONNX's even window differs
    assert ops("LayerNorm", (N, 4, 3, 3), channels_first=True, opset=17) == ["Transpose", "LayerNormalization",
                                                                           "Transpose"]
    assert ops("InstanceNorm2d", (N, 3, 4, 4), track_running_stats=True, opset=17) == ["BatchNormalization"]


def test_new_norms_symbolic_batch_and_sizes_on_one_export():
    for name, shape, pos in (("GroupNorm", (N, 4, T), (2,)), ("InstanceNorm1d", (N, 3, T), ()),
                             ("LocalResponseNorm", (N, 5, T), (2,)), ("RMSNorm", (N, T, 6), ())):
        m = single_op_model(name, [f32(*shape)], *pos)
        for dims in ({"N": 1, "T": 3}, {"N": 3, "T": 7}):
            check_parity(m, random_inputs(m, dims=dims), opsets=(17, 18, max_opset()))


@pytest.mark.parametrize("name,shape,pos,kw,msg,hint", [
    ("GroupNorm", (N, 6, 4), (4,), {}, r"the 6 channels of the input \(f32\[N, 6, 4\]\) do not split into "
     r"num_groups=4 groups", "1, 2, 3, 6"),
    ("GroupNorm", (N, 6, 4), (3, 12), {}, r"num_channels is 12 but the input has 6 channels", "write 6"),
    ("InstanceNorm2d", (N, 6, 4), (), {}, r"expects a \[N, C, H, W\] input, got f32\[N, 6, 4\]", "InstanceNorm1d"),
    ("InstanceNorm1d", (N, 6, 4), (5,), {}, r"num_features is 5 but the input has 6 channels", "write 6"),
    ("RMSNorm", (N, T, 6), (5,), {}, r"normalized_shape 5 is not the trailing dims", "RMSNorm(6)"),
    ("LayerNorm", (N, 6, 4, 4), (4,), {"channels_first": True}, r"with channels_first=true normalized_shape is the "
     r"channel count; it is 4 "
     r"but the input has 6 channels", "LayerNorm(6, channels_first=true)"),
    ("LocalResponseNorm", (N, 6), (3,), {}, r"expects an \[N, C, \*spatial\] input with at least 3 dims", None),
])
def test_new_norm_errors(name, shape, pos, kw, msg, hint):
    with pytest.raises(ShapeError, match=rf"{name}: {msg}") as e:
        single_op_model(name, [f32(*shape)], *pos, **kw)
    if hint:
        assert hint in e.value.hint


def test_groupnorm_counts_and_positional_args_mean_pytorch():
    m = single_op_model("GroupNorm", [f32(N, 64, 8, 8)], 32, 64)
    assert m.param_count() == 128 and m.nodes[0].app.attrs["eps"] == 1e-5
    from archdsl.errors import ArchError
    with pytest.raises(ArchError, match="at most 2 positional"):
        single_op_model("GroupNorm", [f32(N, 64, 8, 8)], 32, 64, 1e-3)
    assert single_op_model("RMSNorm", [f32(N, T, 8)]).param_count() == 8
    assert single_op_model("InstanceNorm2d", [f32(N, 8, 4, 4)]).param_count() == 0
