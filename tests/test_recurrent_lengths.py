"""Padded batches for RNN, LSTM and GRU (`lengths=true`): ONNX `sequence_lens` vs the NumPy
engine, BPTT gradients vs finite differences, the property users rely on (a padded row gives
what the row alone, unpadded, gives, whatever the padding holds), shape and dtype errors, and
agreement with torch.nn.utils.rnn.pack_padded_sequence when PyTorch is installed."""
from __future__ import annotations

import numpy as np
import pytest

import archdsl
from archdsl.autodiff import Tensor, backward
from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.backends.onnx.export import to_onnx
from archdsl.errors import ArchError
from archdsl.ir.build import single_op_model
from archdsl.ir.types import Sym, TensorType
from archdsl.passes.init import initialize
from harness import assert_recurrent_matches_torch, check_grads, check_parity

N, T = Sym.named("N"), Sym.named("T")
C, H = 3, 4
LENS = np.array([5, 1, 3, 4])          # a full-length row, a length-1 row, two in between
T_MAX = 5


def f32(*shape):
    return TensorType("f32", tuple(shape))


def model(op, states=0, ldtype="i64", hidden=H, **kw):
    L, D = kw.get("num_layers", 1), 2 if kw.get("bidirectional") else 1
    types = [f32(N, T, C), TensorType(ldtype, (N,))] + [f32(L * D, N, hidden)] * states
    return single_op_model(op, types, hidden, lengths=True, **kw)


def padded_inputs(m, lens=LENS, t=T_MAX, seed=0, garbage=True):
    """x with garbage (large values) past each row's length, lengths, and random states."""
    rng = np.random.default_rng(seed)
    n = len(lens)
    x = rng.standard_normal((n, t, C)).astype(np.float32)
    if garbage:
        for r, k in enumerate(lens):
            x[r, k:] = rng.uniform(-50, 50, (t - k, C))
    feed = {"x0": x, "x1": np.asarray(lens, m.inputs[1].type.np_dtype)}
    for v in m.inputs[2:]:
        feed[v.name] = rng.standard_normal((int(v.type.shape[0]), n, int(v.type.shape[2]))).astype(np.float32)
    return feed


def run(m, feed, w, dtype=np.float32):
    return NumpyExecutor(m, w, dtype=dtype).run(feed)


CASES = [
    ("RNN", 0, {}),
    ("RNN", 0, {"nonlinearity": "relu", "reverse": True}),
    ("RNN", 1, {"bidirectional": True, "num_layers": 2, "return_state": True}),
    ("RNN", 0, {"return_sequences": False, "bias": False}),
    ("LSTM", 0, {}),
    ("LSTM", 0, {"peepholes": True}),
    ("LSTM", 0, {"reverse": True, "return_state": True}),
    ("LSTM", 1, {"peepholes": True, "reverse": True, "return_sequences": False}),
    ("LSTM", 0, {"bidirectional": True}),
    ("LSTM", 0, {"bidirectional": True, "return_sequences": False, "peepholes": True}),
    ("LSTM", 2, {"num_layers": 2, "return_state": True}),
    ("LSTM", 2, {"num_layers": 2, "bidirectional": True, "peepholes": True, "return_state": True}),
    ("LSTM", 0, {"num_layers": 2, "bidirectional": True, "return_sequences": False}),
    ("GRU", 0, {}),
    ("GRU", 0, {"linear_before_reset": False}),
    ("GRU", 0, {"reverse": True, "return_state": True}),
    ("GRU", 1, {"bidirectional": True, "return_state": True, "linear_before_reset": False}),
    ("GRU", 1, {"num_layers": 2, "bidirectional": True, "return_sequences": False}),
    ("GRU", 0, {"num_layers": 2, "reverse": True, "linear_before_reset": False, "return_state": True}),
]


def _id(case):
    op, states, kw = case
    return "-".join([op] + ([f"{states}states"] if states else []) + [f"{k}={v}" for k, v in kw.items()])


@pytest.mark.parametrize("op,states,kw", CASES, ids=[_id(c) for c in CASES])
def test_parity_and_grads(op, states, kw):
    m = model(op, states, **kw)
    feed = padded_inputs(m, seed=len(kw))
    check_parity(m, feed)
    # finite differences without the garbage (large values saturate the gates: tiny gradients)
    check_grads(m, padded_inputs(m, seed=len(kw), garbage=False), n_coords=4)


@pytest.mark.parametrize("op,states,kw", CASES, ids=[_id(c) for c in CASES])
def test_a_padded_row_is_the_row_alone(op, states, kw):
    """Each row of a padded batch (garbage past its length) gives the outputs and final states
    that the same row, unpadded and alone, gives; and the sequence is 0 past the length."""
    m = model(op, states, **kw)
    w = initialize(m, seed=2)
    feed = padded_inputs(m, seed=7)
    full = run(m, feed, w, np.float64)
    names = [v.name for v in m.outputs]
    for r, k in enumerate(LENS):
        alone = {"x0": feed["x0"][r:r + 1, :k], "x1": feed["x1"][r:r + 1]}
        alone.update({v: feed[v][:, r:r + 1] for v in list(feed)[2:]})
        one = run(m, alone, w, np.float64)
        for name in names:
            got = full[name]
            if name == names[0] and kw.get("return_sequences", True):
                np.testing.assert_allclose(got[r, :k], one[name][0], atol=1e-12, err_msg=name)
                assert np.all(got[r, k:] == 0), "the sequence is 0 past the length"
            elif name == names[0]:
                np.testing.assert_allclose(got[r], one[name][0], atol=1e-12, err_msg=name)
            else:
                np.testing.assert_allclose(got[:, r], one[name][:, 0], atol=1e-12, err_msg=name)


@pytest.mark.parametrize("op", ["RNN", "LSTM", "GRU"])
def test_full_lengths_equal_no_lengths_and_i32_lengths_export(op):
    kw = {"num_layers": 2, "bidirectional": True, "return_state": True}
    plain = single_op_model(op, [f32(N, T, C)], H, **kw)
    m = model(op, ldtype="i32", **kw)
    w = initialize(plain, seed=4)
    feed = padded_inputs(m, lens=[T_MAX] * 3, garbage=False)
    want = run(plain, {"x": feed["x0"]}, w)
    got = run(m, feed, w)
    for a, b in zip(got.values(), want.values()):
        np.testing.assert_array_equal(a, b)
    check_parity(m, padded_inputs(m), weights=w)
    nodes = to_onnx(m, w).graph.node
    assert "Cast" not in [n.op_type for n in nodes]
    rec = [n for n in nodes if n.op_type == op]
    assert len(rec) == 2 and all(n.input[4] == "x1" for n in rec)   # the same lengths, every layer


def test_onnx_casts_i64_lengths_once_and_feeds_every_layer():
    m = model("LSTM", num_layers=3)
    nodes = to_onnx(m, initialize(m)).graph.node
    casts = [n for n in nodes if n.op_type == "Cast"]
    assert len(casts) == 1 and casts[0].input[0] == "x1"
    lstms = [n for n in nodes if n.op_type == "LSTM"]
    assert len(lstms) == 3 and {n.input[4] for n in lstms} == {casts[0].output[0]}


def test_padded_steps_get_zero_gradient_and_nan_padding_does_not_leak():
    m = model("LSTM", bidirectional=True, peepholes=True, return_state=True)
    w = initialize(m)
    feed = padded_inputs(m, garbage=False)
    x = feed["x0"].astype(np.float64)
    for r, k in enumerate(LENS):
        x[r, k:] = np.nan
    ex = NumpyExecutor(m, w, dtype=np.float64)
    xt = Tensor(x, requires_grad=True)
    outs = ex.forward({"x0": xt, "x1": feed["x1"]})
    assert all(np.all(np.isfinite(o.data)) for o in outs.values())
    backward(sum((o * o).sum() for o in outs.values()))
    valid = np.arange(T_MAX)[None, :] < LENS[:, None]
    assert np.all(xt.grad[~valid] == 0) and np.all(np.abs(xt.grad[valid]).sum(-1) > 0)
    assert all(np.all(np.isfinite(p.grad)) for p in ex.params.values())


def test_lengths_in_the_language():
    ir = archdsl.compile("""
model M { input x: f32[N, T, 3]  input len: i64[N]  input h: f32[2, N, 4]  input c: f32[2, N, 4]
  y, hn, cn = (x, len, h, c) -> LSTM(4, num_layers=2, lengths=true, return_state=true)
  z = (y, len) -> GRU(5, bidirectional=true, lengths=true, return_sequences=false)
  output a = z
  output b = hn }""").model().ir
    assert [str(v.type) for v in ir.outputs] == ["f32[N, 10]", "f32[2, N, 4]"]
    w = initialize(ir)
    feed = {"x": np.ones((2, 4, 3), np.float32), "len": np.array([4, 2]),
            "h": np.zeros((2, 2, 4), np.float32), "c": np.zeros((2, 2, 4), np.float32)}
    check_parity(ir, feed, weights=w)


@pytest.mark.parametrize("op,types,kw,words", [
    ("LSTM", [f32(N, T, 3)], {}, ["lengths=true", "second input", "(x, lengths, h0, c0)"]),
    ("LSTM", [f32(N, T, 3), f32(1, N, 4)], {}, ["lengths i64[N]", "f32[1, N, 4]", "right after x"]),
    ("GRU", [f32(N, T, 3), TensorType("i64", (N, 1))], {}, ["lengths i64[N]", "i64[N, 1]"]),
    ("RNN", [f32(N, T, 3), TensorType("f32", (N,))], {}, ["lengths i64[N]", "f32[N]", "(x, lengths, h0)"]),
    ("RNN", [f32(N, T, 3), TensorType("bool", (N,))], {}, ["lengths i64[N]", "bool[N]", "cast"]),
    ("LSTM", [f32(2, T, 3), TensorType("i64", (3,))], {}, ["batch dim", "i64[3]", "3 vs 2"]),
    ("LSTM", [f32(N, T, 3), TensorType("i64", (N,)), f32(2, N, 4)], {},
     ["h0", "[1, N, 4]", "dim 0 is 2"]),
    ("GRU", [f32(N, T, 3), TensorType("i32", (N,)), f32(1, N, 4), f32(1, N, 4)], {},
     ["takes x, lengths and at most 1 initial state (h0), got 4 inputs"]),
])
def test_errors(op, types, kw, words):
    with pytest.raises(ArchError) as e:
        single_op_model(op, types, 4, lengths=True, **kw)
    msg = str(e.value.message) + " " + str(e.value.hint or "")
    for w in words:
        assert w in msg, (w, msg)


def test_integer_second_input_without_lengths_true_says_so():
    with pytest.raises(ArchError) as e:
        single_op_model("LSTM", [f32(N, T, 3), TensorType("i64", (N,))], 4)
    assert "add lengths=true" in str(e.value.hint)
    with pytest.raises(ArchError, match=r"compile|lengths=true|h0"):
        archdsl.compile("model M { input x: f32[N, T, 3]  input n: i64[N]  output y = (x, n) -> GRU(4) }")


@pytest.mark.parametrize("lens", [[5, 0, 3, 4], [5, 6, 3, 4]])
def test_lengths_out_of_range_are_refused_at_run_time(lens):
    m = model("GRU")
    feed = padded_inputs(m)
    feed["x1"] = np.array(lens)
    with pytest.raises(ArchError, match=r"sequence lengths must be in 1\.\.5"):
        run(m, feed, initialize(m))


# -- PyTorch -------------------------------------------------------------------------------------

TORCH_CASES = [("LSTM", {"num_layers": 2, "bidirectional": True}), ("LSTM", {}),
               ("GRU", {"num_layers": 2, "bidirectional": True}), ("GRU", {}),
               ("RNN", {"bidirectional": True, "nonlinearity": "relu"})]


@pytest.mark.parametrize("op,kw", TORCH_CASES, ids=[_id((o, 0, k)) for o, k in TORCH_CASES])
def test_matches_pytorch_packed_sequences(op, kw):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    L, D = kw.get("num_layers", 1), 2 if kw.get("bidirectional") else 1
    n_states = 2 if op == "LSTM" else 1
    lens = LENS
    n = len(lens)
    m = single_op_model(op, [TensorType("f64", (n, T_MAX, C)), TensorType("i64", (n,))]
                        + [TensorType("f64", (L * D, n, H))] * n_states, H, lengths=True, return_state=True, **kw)
    w = initialize(m, seed=5)
    tm = getattr(torch.nn, op)(C, H, batch_first=True, dtype=torch.float64, **kw)
    tm.load_state_dict({k: torch.tensor(w[f"{op.lower()}.{k}"]) for k in tm.state_dict()})
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, T_MAX, C))
    states = [rng.standard_normal((L * D, n, H)) for _ in range(n_states)]

    ex = NumpyExecutor(m, w, dtype=np.float64)
    feed = {"x0": Tensor(x, requires_grad=True), "x1": lens}
    feed.update({f"x{2 + i}": Tensor(s, requires_grad=True) for i, s in enumerate(states)})
    ours = list(ex.forward(feed).values())

    tx = torch.tensor(x, requires_grad=True)
    ts = [torch.tensor(s, requires_grad=True) for s in states]
    packed = pack_padded_sequence(tx, torch.tensor(lens), batch_first=True, enforce_sorted=False)
    out, st = tm(packed, tuple(ts) if op == "LSTM" else ts[0])
    ty, _ = pad_packed_sequence(out, batch_first=True, total_length=T_MAX)
    theirs = [ty] + (list(st) if op == "LSTM" else [st])
    names = ["x0"] + [f"x{2 + i}" for i in range(n_states)]
    assert_recurrent_matches_torch(ours, theirs, ex, tm, op, [(feed[n], b) for n, b in zip(names, [tx] + ts)])
