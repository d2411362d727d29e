"""RNN, LSTM, GRU and ScalarMix: shape rules and errors, PyTorch parameter layout and counts,
ONNX (native RNN/LSTM/GRU nodes) vs NumPy parity at both opsets, BPTT gradients vs finite
differences, the semantics of reverse / bidirectional / many-to-one / states, and agreement
with torch.nn.LSTM/GRU/RNN (forward and gradients) when PyTorch is installed."""
from __future__ import annotations

import math

import numpy as np
import pytest

from archdsl.autodiff import Tensor, backward, no_grad
from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.backends.onnx.export import to_onnx
from archdsl.errors import ArchError, ShapeError
from archdsl.ir.build import single_op_model
from archdsl.ir.types import Sym, TensorType
from archdsl.passes.init import initialize
from harness import OPSETS, assert_recurrent_matches_torch, check_grads, check_parity, ort_run

import archdsl

N, T = Sym.named("N"), Sym.named("T")
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def f32(*shape):
    return TensorType("f32", tuple(shape))


def model(op, hidden=4, c=3, states=0, **kw):
    """A one-op model over x f32[N, T, c], with `states` initial-state inputs of the right shape."""
    L, D = kw.get("num_layers", 1), 2 if kw.get("bidirectional") else 1
    return single_op_model(op, [f32(N, T, c)] + [f32(L * D, N, hidden)] * states, hidden, **kw)


def inputs(m, n=2, t=5, seed=0):
    rng = np.random.default_rng(seed)
    dims = {"N": n, "T": t}
    return {v.name: rng.standard_normal([dims.get(str(d), d) if not isinstance(d, int) else d
                                         for d in v.type.shape]).astype(np.float32) for v in m.inputs}


def run(m, x, w=None, dtype=np.float32):
    return NumpyExecutor(m, w if w is not None else initialize(m), dtype=dtype).run(x)


# -- parity and gradients over the configurations ------------------------------------------------

CASES = [
    ("RNN", 0, {}),
    ("RNN", 0, {"nonlinearity": "relu"}),
    ("RNN", 1, {"bidirectional": True, "num_layers": 2, "return_state": True}),
    ("RNN", 0, {"reverse": True, "return_sequences": False, "bias": False}),
    ("LSTM", 0, {}),
    ("LSTM", 0, {"peepholes": True}),
    ("LSTM", 0, {"bidirectional": True}),
    ("LSTM", 0, {"num_layers": 2}),
    ("LSTM", 0, {"reverse": True}),
    ("LSTM", 0, {"return_sequences": False}),
    ("LSTM", 0, {"bidirectional": True, "return_sequences": False, "peepholes": True}),
    ("LSTM", 0, {"return_state": True, "bias": False}),
    ("LSTM", 2, {}),
    ("LSTM", 1, {"peepholes": True, "reverse": True}),
    ("LSTM", 2, {"num_layers": 2, "bidirectional": True, "peepholes": True, "return_state": True}),
    ("GRU", 0, {}),
    ("GRU", 0, {"linear_before_reset": False}),
    ("GRU", 1, {"bidirectional": True, "return_state": True}),
    ("GRU", 1, {"num_layers": 2, "linear_before_reset": False, "return_sequences": False, "reverse": True}),
    ("GRU", 0, {"bias": False, "num_layers": 2}),
]


def _id(case):
    op, states, kw = case
    return "-".join([op] + ([f"{states}states"] if states else []) + [f"{k}={v}" for k, v in kw.items()])


@pytest.mark.parametrize("op,states,kw", CASES, ids=[_id(c) for c in CASES])
def test_parity_and_grads(op, states, kw):
    m = model(op, states=states, **kw)
    x = inputs(m, seed=len(kw))
    check_parity(m, x)
    check_grads(m, x, n_coords=4)


def test_parity_at_other_batch_and_sequence_sizes_and_opset_13():
    m = model("LSTM", states=2, num_layers=2, bidirectional=True, peepholes=True, return_state=True)
    w = initialize(m, seed=3)
    for n, t in ((1, 1), (3, 9)):
        check_parity(m, inputs(m, n, t), weights=w, opsets=(13, 17))


# -- shape rules ---------------------------------------------------------------------------------

@pytest.mark.parametrize("op,kw,states,want", [
    ("LSTM", {}, 0, ["f32[N, T, 4]"]),
    ("LSTM", {"bidirectional": True}, 0, ["f32[N, T, 8]"]),
    ("LSTM", {"return_sequences": False}, 0, ["f32[N, 4]"]),
    ("LSTM", {"return_sequences": False, "bidirectional": True}, 0, ["f32[N, 8]"]),
    ("LSTM", {"return_state": True, "num_layers": 3, "bidirectional": True}, 0,
     ["f32[N, T, 8]", "f32[6, N, 4]", "f32[6, N, 4]"]),
    ("LSTM", {"return_state": True}, 1, ["f32[N, T, 4]", "f32[1, N, 4]", "f32[1, N, 4]"]),
    ("GRU", {"return_state": True, "num_layers": 2}, 1, ["f32[N, T, 4]", "f32[2, N, 4]"]),
    ("RNN", {"return_sequences": False, "return_state": True}, 0, ["f32[N, 4]", "f32[1, N, 4]"]),
])
def test_shape_rule(op, kw, states, want):
    assert [str(v.type) for v in model(op, states=states, **kw).outputs] == want


def test_dtype_and_concrete_sizes_are_kept():
    m = single_op_model("GRU", [TensorType("f64", (2, 7, 3))], 5, bidirectional=True)
    assert str(m.outputs[0].type) == "f64[2, 7, 10]"


# -- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("op,types,kw,words", [
    ("LSTM", [f32(N, 8)], {}, ["LSTM", "3-D", "[N, T, C]", "f32[N, 8]"]),
    ("GRU", [f32(N, T, 4, 4)], {}, ["GRU", "3-D", "f32[N, T, 4, 4]"]),
    ("LSTM", [TensorType("i64", (N, T))], {}, ["3-D", "Embedding"]),
    ("RNN", [TensorType("i64", (N, T, 3))], {}, ["floating-point", "Embedding"]),
    ("LSTM", [f32(N, T, T)], {}, ["feature dim", "concrete", "f32[N, T, T]"]),
    ("LSTM", [f32(N, T, 3)], {"bidirectional": True, "reverse": True}, ["bidirectional", "reverse"]),
    ("LSTM", [f32(N, T, 3)], {"hidden": 0}, ["hidden must be positive"]),
    ("GRU", [f32(N, T, 3)], {"num_layers": 0}, ["num_layers must be positive"]),
    ("LSTM", [f32(N, T, 3), f32(1, N, 4)], {"num_layers": 2},
     ["h0", "[2, N, 4]", "f32[1, N, 4]", "dim 0 is 1", "num_layers*directions = 2"]),
    ("LSTM", [f32(N, T, 3), f32(2, N, 4), f32(2, N, 5)], {"bidirectional": True},
     ["c0", "dim 2 is 5", "hidden = 4"]),
    ("GRU", [f32(N, T, 3), f32(1, 2, 4)], {}, ["h0", "dim 1 is 2", "N (the batch dim"]),
    ("RNN", [f32(N, T, 3), f32(N, 4)], {}, ["h0", "2-D", "Reshape((1, -1, 4))"]),
    ("GRU", [f32(N, T, 3), TensorType("f64", (1, N, 4))], {}, ["h0", "dtype f64"]),
])
def test_errors_name_the_dims(op, types, kw, words):
    kw = {"hidden": 4, **kw}
    with pytest.raises(ArchError) as e:
        single_op_model(op, types, kw.pop("hidden"), **kw)
    msg = str(e.value.message) + " " + str(e.value.hint or "")
    for w in words:
        assert w in msg, (w, msg)


def test_language_errors_for_inputs_and_arguments():
    with pytest.raises(ArchError, match=r"takes x and at most 2 initial states \(h0, c0\), got 4 inputs"):
        archdsl.compile("model M { input x: f32[N, T, 3]  input h: f32[1, N, 4]\n"
                        "  output y = (x, h, h, h) -> LSTM(4) }")
    with pytest.raises(ArchError, match="takes 1 to 4 input tensors, got 5"):    # x, lengths, h0, c0 at most
        archdsl.compile("model M { input x: f32[N, T, 3]  input h: f32[1, N, 4]\n"
                        "  output y = (x, h, h, h, h) -> LSTM(4) }")
    with pytest.raises(ArchError, match="nonlinearity.*'tanh', 'relu'"):
        archdsl.compile('model M { input x: f32[N, T, 3]  output y = x -> RNN(4, nonlinearity="sigmoid") }')
    with pytest.raises(ArchError, match="did you mean"):
        archdsl.compile("model M { input x: f32[N, T, 3]  output y = x -> LSTM(4, peephole=true) }")


def test_unpacking_states_in_the_language():
    ir = archdsl.compile("""
model M { input x: f32[N, T, 3]
  y, h, c = x -> LSTM(4, num_layers=2, return_state=true)
  z = (x, h, c) -> LSTM(4, num_layers=2)
  output a = z
  output b = h }""").model().ir
    assert [str(v.type) for v in ir.outputs] == ["f32[N, T, 4]", "f32[2, N, 4]"]


# -- parameters, MACs, describe --------------------------------------------------------------------

def pytorch_count(op, c, h, layers=1, bidirectional=False, bias=True):
    g, d = GATES[op], 2 if bidirectional else 1
    total = 0
    for k in range(layers):
        c_in = c if k == 0 else d * h
        total += d * (g * h * (c_in + h) + (2 * g * h if bias else 0))
    return total


@pytest.mark.parametrize("op", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("layers,bidi,bias", [(1, False, True), (2, True, True), (3, False, False)])
def test_param_counts_equal_pytorch(op, layers, bidi, bias):
    m = single_op_model(op, [f32(N, T, 10)], 20, num_layers=layers, bidirectional=bidi, bias=bias)
    assert m.param_count() == pytorch_count(op, 10, 20, layers, bidi, bias)
    names = {k.split(".", 1)[1] for k in m.parameters}
    assert ("weight_ih_l0_reverse" in names) == bidi and (f"bias_hh_l{layers - 1}" in names) == bias
    spec = m.parameters[f"{op.lower()}.weight_hh_l0"].spec
    assert spec.shape == (GATES[op] * 20, 20) and spec.init == "uniform" and math.isclose(spec.bound, 1 / math.sqrt(20))
    if layers > 1:
        assert m.parameters[f"{op.lower()}.weight_ih_l1"].spec.shape == (GATES[op] * 20, (2 if bidi else 1) * 20)


def test_peephole_params_and_uniform_init():
    m = single_op_model("LSTM", [f32(N, T, 3)], 6, peepholes=True, bidirectional=True)
    assert m.param_count() == pytorch_count("LSTM", 3, 6, bidirectional=True) + 2 * 3 * 6
    assert m.parameters["lstm.p_o_l0_reverse"].spec.shape == (6,)
    w = initialize(m)
    assert all(np.abs(v).max() <= 1 / math.sqrt(6) for v in w.values())


def test_macs_and_describe():
    m = model("LSTM", hidden=8, num_layers=2, bidirectional=True)
    node = m.nodes[0]
    # per step: layer 0 = 2 dirs * 4 gates * 8 * (3 + 8); layer 1 = 2 * 4 * 8 * (16 + 8)
    assert node.op.macs(node.app, [(2, 5, 3)], []) == 2 * 5 * (2 * 32 * 11 + 2 * 32 * 24)
    assert m.nodes[0].op.describe(m.nodes[0].attrs) == "8, num_layers=2, bidirectional=true"


# -- semantics -----------------------------------------------------------------------------------

def test_reverse_is_the_forward_layer_on_the_flipped_sequence():
    fwd = model("LSTM", peepholes=True)
    rev = model("LSTM", peepholes=True, reverse=True, return_state=True)
    w = initialize(fwd)
    x = inputs(fwd, t=6)
    y_f = run(fwd, {"x": x["x"][:, ::-1]}, w)["y"]
    out = run(rev, x, w)
    np.testing.assert_allclose(out["y0"], y_f[:, ::-1], atol=1e-6)
    np.testing.assert_allclose(out["y1"][0], out["y0"][:, 0], atol=1e-7)    # h_n = state at t = 0


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_many_to_one_is_the_final_state_of_each_direction(op):
    seq = model(op, num_layers=2, bidirectional=True, return_state=True)
    last = model(op, num_layers=2, bidirectional=True, return_sequences=False)
    w = initialize(seq)
    x = inputs(seq)
    full = run(seq, x, w)
    y = full["y0"]
    got = run(last, x, w)["y"]
    np.testing.assert_allclose(got, np.concatenate([y[:, -1, :4], y[:, 0, 4:]], axis=1), atol=1e-7)
    np.testing.assert_allclose(got, np.concatenate([full["y1"][2], full["y1"][3]], axis=1), atol=1e-7)


def test_lstm_with_h0_only_starts_from_zero_cell():
    m2 = model("LSTM", states=2)
    m1 = model("LSTM", states=1)
    w = initialize(m2)
    x = inputs(m2)
    zero = {"x0": x["x0"], "x1": x["x1"], "x2": np.zeros_like(x["x2"])}
    want = run(m2, zero, w)["y"]
    one = {"x0": x["x0"], "x1": x["x1"]}
    np.testing.assert_allclose(run(m1, one, w)["y"], want, atol=1e-7)
    check_parity(m1, one, weights=w)


def test_onnx_nodes_are_native_and_few():
    def ops(**kw):
        m = model("LSTM", **kw)
        return [n.op_type for n in to_onnx(m, initialize(m)).graph.node]
    assert ops() == ["Transpose", "LSTM", "Transpose", "Reshape"]
    assert ops(return_sequences=False) == ["Transpose", "LSTM", "Squeeze"]
    assert ops(num_layers=2) == ["Transpose", "LSTM", "Squeeze", "LSTM", "Transpose", "Reshape"]
    assert ops(num_layers=2, bidirectional=True, return_state=True).count("LSTM") == 2
    m = model("GRU", bidirectional=True)
    node = [n for n in to_onnx(m, initialize(m)).graph.node if n.op_type == "GRU"][0]
    attrs = {a.name: a for a in node.attribute}
    assert attrs["direction"].s == b"bidirectional" and attrs["linear_before_reset"].i == 1
    assert attrs["hidden_size"].i == 4
    m = model("RNN", nonlinearity="relu", reverse=True)
    node = [n for n in to_onnx(m, initialize(m)).graph.node if n.op_type == "RNN"][0]
    attrs = {a.name: a for a in node.attribute}
    assert attrs["direction"].s == b"reverse" and list(attrs["activations"].strings) == [b"Relu"]


def test_dynamic_batch_and_time_in_the_exported_graph():
    m = model("GRU", num_layers=2, bidirectional=True)
    proto = to_onnx(m, initialize(m))
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", "T", 3]
    w = initialize(m)
    for n, t in ((1, 2), (5, 11)):
        x = inputs(m, n, t)
        np.testing.assert_allclose(ort_run(proto, x)["y"], run(m, x, w)["y"], atol=1e-5)


def test_float32_in_float32_out_and_inference_records_nothing():
    from archdsl.autodiff import clear_tape, tape_size
    clear_tape()
    m = model("LSTM", bidirectional=True)
    ex = NumpyExecutor(m, initialize(m))
    with no_grad():
        y = ex.forward(inputs(m))["y"]
    assert y.data.dtype == np.float32 and tape_size() == 0


def test_backward_through_time_reaches_the_first_step():
    m = single_op_model("LSTM", [f32(1, 30, 2)], 8)
    ex = NumpyExecutor(m, initialize(m), dtype=np.float64)
    x = Tensor(np.random.default_rng(0).standard_normal((1, 30, 2)), requires_grad=True)
    y = ex.forward({"x": x})["y"]
    backward(y[:, -1].sum())
    assert np.all(np.abs(x.grad[0, 0]) > 0) and np.all(x.grad[0, -1] != 0)


# -- PyTorch -------------------------------------------------------------------------------------

TORCH_CASES = [("LSTM", {"num_layers": 2, "bidirectional": True}), ("LSTM", {}),
               ("GRU", {"num_layers": 2, "bidirectional": True}), ("GRU", {}),
               ("RNN", {"num_layers": 2, "nonlinearity": "relu"}), ("RNN", {"bidirectional": True})]


@pytest.mark.parametrize("op,kw", TORCH_CASES, ids=[_id((o, 0, k)) for o, k in TORCH_CASES])
def test_matches_pytorch_forward_and_gradients(op, kw):
    torch = pytest.importorskip("torch")
    n_, t_, c, h = 3, 6, 5, 4
    L, D = kw.get("num_layers", 1), 2 if kw.get("bidirectional") else 1
    n_states = 2 if op == "LSTM" else 1
    m = single_op_model(op, [TensorType("f64", (n_, t_, c))] + [TensorType("f64", (L * D, n_, h))] * n_states,
                        h, return_state=True, **kw)
    w = initialize(m, seed=5)
    tm = getattr(torch.nn, op)(c, h, batch_first=True, dtype=torch.float64, **kw)
    sd = {k: torch.tensor(w[f"{op.lower()}.{k}"], dtype=torch.float64) for k in tm.state_dict()}
    assert set(f"{op.lower()}.{k}" for k in sd) == set(w)        # same names, same count
    tm.load_state_dict(sd)

    rng = np.random.default_rng(1)
    xs = [rng.standard_normal([int(d) for d in v.type.shape]) for v in m.inputs]
    ex = NumpyExecutor(m, w, dtype=np.float64)
    feed = {v.name: Tensor(a, requires_grad=True) for v, a in zip(m.inputs, xs)}
    ours = list(ex.forward(feed).values())
    tx = [torch.tensor(a, requires_grad=True) for a in xs]
    ty, ts = tm(tx[0], tuple(tx[1:]) if op == "LSTM" else tx[1])
    theirs = [ty] + (list(ts) if op == "LSTM" else [ts])
    assert_recurrent_matches_torch(ours, theirs, ex, tm, op, list(zip(feed.values(), tx)))

    # and the ONNX export (float32) against PyTorch
    m32 = single_op_model(op, [f32(N, T, c)] + [f32(L * D, N, h)] * n_states, h, return_state=True, **kw)
    feed32 = {v.name: a.astype(np.float32) for v, a in zip(m32.inputs, xs)}
    got = ort_run(to_onnx(m32, {k: v.astype(np.float32) for k, v in w.items()}), feed32)
    for v, b in zip(m32.outputs, theirs):
        np.testing.assert_allclose(got[v.name], b.detach().numpy(), atol=1e-5)


# -- ScalarMix -----------------------------------------------------------------------------------

def _mix(k=3, shape=(N, T, 6), **kw):
    return single_op_model("ScalarMix", [f32(*shape)] * k, **kw)


@pytest.mark.parametrize("kw", [{}, {"do_layer_norm": True}], ids=["plain", "layer_norm"])
def test_scalar_mix_parity_and_grads(kw):
    m = _mix(**kw)
    rng = np.random.default_rng(0)
    w = {k: v + rng.standard_normal(v.shape).astype(np.float32) for k, v in initialize(m).items()}
    x = inputs(m)
    check_parity(m, x, weights=w, opsets=(13,) + OPSETS)
    check_grads(m, x, weights=w, n_coords=3)
    s = np.exp(w["scalarmix.weights"]) / np.exp(w["scalarmix.weights"]).sum()
    xs = [x[f"x{j}"] for j in range(3)]
    if kw:
        xs = [(a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + 1e-12) for a in xs]
    want = w["scalarmix.gamma"][0] * sum(s[j] * xs[j] for j in range(3))
    np.testing.assert_allclose(run(m, x, w)["y"], want, atol=1e-5)


def test_scalar_mix_starts_as_an_average_and_exports_2k_minus_1_nodes():
    m = _mix(k=4)
    assert {k: (p.spec.shape, p.spec.init) for k, p in m.parameters.items()} == {
        "scalarmix.weights": ((4,), "zeros"), "scalarmix.gamma": ((1,), "ones")}
    x = inputs(m)
    np.testing.assert_allclose(run(m, x)["y"], sum(x.values()) / 4, atol=1e-6)
    assert len(to_onnx(m, initialize(m)).graph.node) == 7
    one = _mix(k=1)
    np.testing.assert_allclose(run(one, {"x": x["x0"]})["y"], x["x0"], atol=1e-7)


@pytest.mark.parametrize("types,kw,words", [
    ([f32(N, T, 6), f32(N, T, 4)], {}, ["input 1 is f32[N, T, 4]", "dim 2: 4 vs 6"]),
    ([f32(N, T, 6), TensorType("f64", (N, T, 6))], {}, ["same type"]),
    ([f32(N, T, 6)] * 2, {"count": 3}, ["count=3", "2 inputs"]),
    ([TensorType("i64", (N, T))] * 2, {}, ["floating-point"]),
    ([f32(N, T)] * 2, {"do_layer_norm": True}, ["concrete last dim"]),
])
def test_scalar_mix_errors(types, kw, words):
    with pytest.raises(ShapeError) as e:
        single_op_model("ScalarMix", types, **kw)
    msg = str(e.value.message)
    for w in words:
        assert w in msg, (w, msg)
