"""User-defined cells (`cell` definitions) and `Scan`, the step loop that runs one over a sequence.

- the language: a cell applied directly is one step; scanned, every step (forward, reversed,
  padded batches, initial states, the sequence and/or the final states); errors name the state
  and both types, with positions;
- the standard library's cells (std/cells.arch) equal the fused layers with the same weights,
  forward and gradients, on the NumPy engine and on ONNX Runtime;
- ONNX: a scanned cell is one `Scan` node whose body is the step graph; full_check, two batch
  sizes, two lengths, opset 17 and the newest, against the NumPy engine; fused layers stay fused;
- the NumPy engine's backpropagation through the scan, gradient-checked;
- summary, --explain, render --unroll, sampling with carried state, checkpoints, freezing and
  weight sharing know cells.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import archdsl
from archdsl.authoring.explain import explain_model
from archdsl.authoring.unroll import unroll_dot
from archdsl.autodiff import Tensor, backward
from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.backends.onnx.export import max_opset, to_onnx
from archdsl.errors import ArchError
from archdsl.passes.init import initialize
from archdsl.sample.lm import Runner, generate_ids
from harness import OPSETS, check_grads, check_parity, ort_run

ROOT = Path(__file__).resolve().parent.parent
CELLS = 'import "std/cells.arch"\n'


def compiled(src: str):
    return archdsl.compile(CELLS + src)


def model(src: str, name=None, **kw):
    return compiled(src).model(name, **kw).ir


# -- the language --------------------------------------------------------------------------------

def test_a_cell_applied_directly_is_one_step_of_its_scan():
    src = """
    model Step {
      input x: f32[N, 3]
      input h: f32[N, 4]
      input c: f32[N, 4]
      cell = LSTMCell(4)
      y, h1, c1 = (x, h, c) -> cell
      output y
      output h1
      output c1
    }
    model Scanned {
      input x: f32[N, T, 3]
      input h: f32[N, 4]
      input c: f32[N, 4]
      y, h1, c1 = (x, h, c) -> Scan(LSTMCell(4), return_state=true)
      output y
      output h1
      output c1
    }
    """
    step, scanned = model(src, "Step"), model(src, "Scanned")
    assert [n.kind for n in scanned.nodes] == ["Scan"]
    assert sorted(p.split(".", 1)[1] for p in step.parameters) == sorted(
        p.split(".", 1)[1] for p in scanned.parameters)
    w = initialize(step, 0)
    ws = {k.replace("cell.", "lstmcell_1."): v for k, v in w.items()}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    h, c = (rng.standard_normal((2, 4)).astype(np.float32) for _ in range(2))
    a = NumpyExecutor(step, w).run({"x": x, "h": h, "c": c})
    b = NumpyExecutor(scanned, ws).run({"x": x[:, None], "h": h, "c": c})
    np.testing.assert_allclose(b["y"][:, 0], a["y"], atol=1e-6)
    np.testing.assert_allclose(b["h1"], a["h1"], atol=1e-6)
    np.testing.assert_allclose(b["c1"], a["c1"], atol=1e-6)


SCANS = """
cell Acc(d: int) {                        # a running mean of the inputs, with a learned gain
  input x: f32[N, C]
  state s: f32[N, d]
  state k: f32[N, 1]
  k = k + 1
  s = s + ((x -> Linear(d)) - s) / k
  output s
}
model M(reverse: bool = false) {
  input x: f32[N, T, 3]
  input lengths: i64[N]
  y, s, k = (x, lengths) -> Scan(Acc(2), lengths=true, reverse=reverse, return_state=true)
  last = (x, lengths) -> Scan(Acc(2), lengths=true, reverse=reverse, return_sequences=false, name="last")
  output y
  output s
  output k
  output last
}
"""


@pytest.mark.parametrize("reverse", [False, True])
def test_padded_batches_run_each_row_over_its_own_steps(reverse):
    ir = model(SCANS, reverse=reverse)
    w = initialize(ir, 0)
    w["last.linear_1.weight"], w["last.linear_1.bias"] = w["acc_1.linear_1.weight"], w["acc_1.linear_1.bias"]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 3)).astype(np.float32)
    lengths = np.array([5, 2, 3])
    out = NumpyExecutor(ir, w).run({"x": x, "lengths": lengths})
    proj = x @ w["acc_1.linear_1.weight"].T + w["acc_1.linear_1.bias"]
    for n, ln in enumerate(lengths):
        steps = range(ln - 1, -1, -1) if reverse else range(ln)
        means = {}
        seen = []
        for t in steps:                  # the mean of the steps read so far, in scan order
            seen.append(proj[n, t])
            means[t] = np.mean(seen, axis=0)
        for t in range(5):
            want = means.get(t, np.zeros(2))    # 0 beyond the row's length
            np.testing.assert_allclose(out["y"][n, t], want, atol=1e-5)
        np.testing.assert_allclose(out["s"][n], np.mean(seen, axis=0), atol=1e-5)
        assert out["k"][n, 0] == ln             # the state stopped at the row's last step
        np.testing.assert_allclose(out["last"][n], means[0 if reverse else ln - 1], atol=1e-5)
    check_grads(ir, {"x": x, "lengths": lengths}, w)
    check_parity(ir, {"x": x, "lengths": lengths}, w)


BAD = """
cell Grow(hidden: int) {
  input x: f32[N, C]
  state h: f32[N, hidden]
  h = (x, h) -> Concat(axis=1) -> Linear(2 * hidden)
  output h
}
model M {
  input x: f32[N, T, 3]
  output y = x -> Scan(Grow(8))
}
"""


def _error(src: str) -> ArchError:
    with pytest.raises(ArchError) as e:
        compiled(src).model()
    return e.value


def test_a_state_must_come_back_with_its_type():
    err = _error(BAD)
    assert "state 'h'" in err.message and "f32[N, 8]" in err.message and "f32[N, 16]" in err.message
    assert err.span.line == 6                     # the statement that made the next value (after the import)
    assert "f32[N, hidden]" in err.hint and ":5:" in err.hint   # and where the state is declared


@pytest.mark.parametrize("src,words,line", [
    ("cell C(d: int) {\n input x: f32[N, C]\n state h: f32[N, d]\n state c: f32[N, d]\n"
     " h = tanh(x -> Linear(d))\n output h\n}\nmodel M { input x: f32[N, T, 3]  output y = x -> Scan(C(4)) }\n",
     ["never updates its state 'c'"], 5),
    ("model M { input x: f32[N, 3]  state h: f32[N, 3]  output y = x }\n", ["'state' declares", "not a cell"], 2),
    ("cell C(d: int) {\n input x: f32[N, C]\n state h: f32[N, d]\n h = h + 1\n output h\n}\n"
     "model M { input x: f32[N, T, 3]  input h0: f32[N, 5]  output y = (x, h0) -> Scan(C(4)) }\n",
     ["initial state h0", "f32[N, 4]", "f32[N, 5]"], 8),
    ("cell C(d: int) {\n input x: f32[N, C]\n output x\n}\nmodel M { input x: f32[N, T, 3]  "
     "output y = x -> Scan(C(4)) }\n", ["has no state"], 2),
    ("cell C(d: int) {\n input x\n state h: f32[B, d]\n h = h + 1\n output h\n}\nmodel M { input x: f32[N, T, 3]  "
     "output y = x -> Scan(C(4)) }\n", ["dim B of state 'h' is not bound"], 4),
    ("model M { input x: f32[N, T, 3]  output y = x -> Scan(Linear(3)) }\n", ["must be a cell"], 2),
    ("model M { input x: f32[N, T, 3]  input m: f32[N, 3]  output y = (x, m, m, m) -> Scan(GRUCell(3)) }\n",
     ["takes (x, h0)", "got 4 inputs"], 2),
])
def test_cell_mistakes_are_positioned_errors(src, words, line):
    err = _error(src)
    for w in words:
        assert w in err.message, err.format()
    assert err.span is not None and err.span.line == line, err.format()


def test_the_cli_reports_a_bad_cell_without_a_traceback(tmp_path):
    f = tmp_path / "bad.arch"
    f.write_text(CELLS + BAD)
    r = subprocess.run([sys.executable, "-m", "archdsl", "check", str(f)], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "bad.arch:6:" in r.stderr and "state 'h'" in r.stderr


def test_cells_format_canonically():
    from archdsl.authoring.fmt import format_source
    for path in (ROOT / "archdsl" / "stdlib" / "cells.arch", ROOT / "specs" / "seq2seq_bahdanau.arch",
                 ROOT / "specs" / "show_attend_tell.arch"):
        text = path.read_text()
        assert format_source(text) == text, path.name


# -- the standard library equals the fused layers --------------------------------------------------

def _pair(cell: str, fused: str, extra: str = ""):
    spec = compiled(f"""
    model Cell {{
      input x: f32[N, T, 3]
      {extra}
      output y = x -> Scan({cell})
    }}
    model Fused {{
      input x: f32[N, T, 3]
      output y = x -> {fused}
    }}
    """)
    return spec.model("Cell").ir, spec.model("Fused").ir


def _lstm_names(prefix):
    return {f"{prefix}.ih.weight": "weight_ih_l0", f"{prefix}.hh.weight": "weight_hh_l0",
            f"{prefix}.ih.bias": "bias_ih_l0", f"{prefix}.hh.bias": "bias_hh_l0"}


def _peephole_weights(fused_w: dict, H: int) -> dict:
    """The lecture's cell from nn.LSTM-style weights: W_* = weight_ih rows, R_* = weight_hh rows,
    b_* = bias_ih + bias_hh (gate order i, f, g=z, o), p_* the peepholes."""
    p = "peepholelstmcell_1"
    out = {}
    for k, gate in enumerate("ifzo"):
        rows = slice(k * H, (k + 1) * H)
        out[f"{p}.W_{gate}.weight"] = fused_w["lstm_1.weight_ih_l0"][rows]
        out[f"{p}.W_{gate}.bias"] = fused_w["lstm_1.bias_ih_l0"][rows] + fused_w["lstm_1.bias_hh_l0"][rows]
        out[f"{p}.R_{gate}.weight"] = fused_w["lstm_1.weight_hh_l0"][rows]
    for gate in "ifo":
        out[f"{p}.p_{gate}"] = fused_w[f"lstm_1.p_{gate}_l0"]
    return out


CASES = {
    "LSTMCell": ("LSTMCell(4)", "LSTM(4)", "lstm_1", _lstm_names("lstmcell_1")),
    "GRUCell": ("GRUCell(4)", "GRU(4)", "gru_1", {k.replace("lstmcell_1", "grucell_1"): v
                                                  for k, v in _lstm_names("lstmcell_1").items()}),
    "RNNCell": ("RNNCell(4)", "RNN(4)", "rnn_1", {k.replace("lstmcell_1", "rnncell_1"): v
                                                  for k, v in _lstm_names("lstmcell_1").items()}),
    "PeepholeLSTMCell": ("PeepholeLSTMCell(4)", "LSTM(4, peepholes=true)", "lstm_1", None),
}


def _weights_for(name, cell_ir, fused_ir):
    _, _, prefix, names = CASES[name]
    fw = {k: v.astype(np.float64) for k, v in initialize(fused_ir, 3).items()}
    if names is None:
        cw = _peephole_weights(fw, 4)
    else:
        cw = {k: fw[f"{prefix}.{v}"] for k, v in names.items()}
    assert sorted(cw) == sorted(cell_ir.parameters)
    return cw, fw


def _forward_and_grads(ir, w, x, probe):
    ex = NumpyExecutor(ir, {k: v.astype(np.float64) for k, v in w.items()}, dtype=np.float64)
    xt = Tensor(x, requires_grad=True)
    y = ex.forward({"x": xt})["y"]
    backward((y * probe).sum())
    return y.data, xt.grad, {k: t.grad for k, t in ex.params.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_std_cells_equal_the_fused_layers_forward_and_gradients(name):
    cell, fused, prefix, names = CASES[name]
    cell_ir, fused_ir = _pair(cell, fused)
    cw, fw = _weights_for(name, cell_ir, fused_ir)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 6, 3))
    probe = rng.standard_normal((3, 6, 4))
    yc, gxc, gc = _forward_and_grads(cell_ir, cw, x, probe)
    yf, gxf, gf = _forward_and_grads(fused_ir, fw, x, probe)
    np.testing.assert_allclose(yc, yf, atol=1e-12)
    np.testing.assert_allclose(gxc, gxf, atol=1e-12)
    if names is not None:
        for k, v in names.items():
            np.testing.assert_allclose(gc[k], gf[f"{prefix}.{v}"], atol=1e-12, err_msg=k)
    else:       # the lecture's cell: the fused gradients, gate by gate
        for k, gate in enumerate("ifzo"):
            rows = slice(4 * k, 4 * (k + 1))
            np.testing.assert_allclose(gc[f"peepholelstmcell_1.W_{gate}.weight"], gf["lstm_1.weight_ih_l0"][rows],
                                       atol=1e-12)
            np.testing.assert_allclose(gc[f"peepholelstmcell_1.R_{gate}.weight"], gf["lstm_1.weight_hh_l0"][rows],
                                       atol=1e-12)
            np.testing.assert_allclose(gc[f"peepholelstmcell_1.W_{gate}.bias"], gf["lstm_1.bias_hh_l0"][rows],
                                       atol=1e-12)
        for gate in "ifo":
            np.testing.assert_allclose(gc[f"peepholelstmcell_1.p_{gate}"], gf[f"lstm_1.p_{gate}_l0"], atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_std_cells_equal_the_fused_layers_on_onnx_runtime(name):
    cell, fused, _, _ = CASES[name]
    cell_ir, fused_ir = _pair(cell, fused)
    cw, fw = _weights_for(name, cell_ir, fused_ir)
    x = np.random.default_rng(1).standard_normal((2, 7, 3)).astype(np.float32)
    for opset in OPSETS:
        a = ort_run(to_onnx(cell_ir, cw, opset=opset), {"x": x})["y"]
        b = ort_run(to_onnx(fused_ir, fw, opset=opset), {"x": x})["y"]
        np.testing.assert_allclose(a, b, atol=1e-5)


# -- cells with no fused layer: their equations in NumPy ------------------------------------------

def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def _lin(w, p, x, bias=True):
    return x @ w[f"{p}.weight"].T + (w[f"{p}.bias"] if bias else 0)


def _min_gru(w, x, h):
    z = _sigmoid(_lin(w, "mingrucell_1.z", x))
    return (1 - z) * h + z * _lin(w, "mingrucell_1.h", x)


def _mgu(w, x, h):
    p = "mgucell_1"
    f = _sigmoid(_lin(w, f"{p}.W_f", x) + _lin(w, f"{p}.U_f", h, bias=False))
    candidate = np.tanh(_lin(w, f"{p}.W_h", x) + _lin(w, f"{p}.U_h", f * h, bias=False))
    return (1 - f) * h + f * candidate


def _ind_rnn(w, x, h):
    return np.maximum(_lin(w, "indrnncell_1.W", x) + w["indrnncell_1.u"] * h, 0)


def _layer_norm_rnn(w, x, h):
    p = "layernormrnncell_1"
    a = _lin(w, f"{p}.W_xh", x, bias=False) + _lin(w, f"{p}.W_hh", h, bias=False)
    mu, var = a.mean(-1, keepdims=True), a.var(-1, keepdims=True)
    return np.tanh(w[f"{p}.ln.weight"] * (a - mu) / np.sqrt(var + 1e-5) + w[f"{p}.ln.bias"])


EQUATIONS = {"MinGRUCell": _min_gru, "MGUCell": _mgu, "IndRNNCell": _ind_rnn, "LayerNormRNNCell": _layer_norm_rnn}


@pytest.mark.parametrize("name", sorted(EQUATIONS))
def test_new_cells_follow_their_equations_on_both_engines_with_checked_gradients(name):
    ir = model(f"""
    model M {{
      input x: f32[N, T, 3]
      output y = x -> Scan({name}(4))
    }}
    """)
    w = initialize(ir, 2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 6, 3)).astype(np.float32)
    h = np.zeros((3, 4))
    want = []
    for t in range(x.shape[1]):
        h = EQUATIONS[name](w, x[:, t].astype(np.float64), h)
        want.append(h)
    y = check_parity(ir, {"x": x}, w)["y"]            # ONNX Runtime (opset 17 and newest) = NumPy engine
    np.testing.assert_allclose(y, np.stack(want, 1), atol=1e-5)
    check_grads(ir, {"x": x[:2, :4]}, w)


@pytest.mark.parametrize("name", sorted(EQUATIONS))
def test_new_cells_train(name, tmp_path):
    from archdsl.train import train
    spec = compiled(f"""
    model CellLM {{
      input tokens: i64[N, T]
      output logits = tokens -> Embedding(16, 8) -> Scan({name}(16)) -> Linear(16)
    }}
    train CellLM {{
      loss      = cross_entropy(logits, next)
      optimizer = Adam(lr=3e-2)
      batch     = 16
      epochs    = 8
      seed      = 0
    }}
    """)
    m = spec.model()
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 16, (64, 8))
    np.savez(tmp_path / "d.npz", tokens=tokens, next=np.roll(tokens, 1, axis=1))   # the previous token
    w0 = m.init_weights(0)
    r = train(m, tmp_path / "d.npz", run_dir=tmp_path / "run", quiet=True)
    assert r.steps == 32
    losses = [e["loss"] for e in r.history]
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.8 * losses[0], losses
    for k in m.ir.parameters:
        assert not np.array_equal(r.weights[k], w0[k]), f"{k} did not train"


def test_lstm_cell_with_lengths_reverse_and_initial_states_equals_the_fused_lstm():
    spec = compiled("""
    model Cell {
      input x: f32[N, T, 3]
      input lengths: i64[N]
      input h0: f32[N, 4]
      input c0: f32[N, 4]
      y, h, c = (x, lengths, h0, c0) -> Scan(LSTMCell(4), lengths=true, reverse=true, return_state=true)
      output y
      output h
      output c
    }
    model Fused {
      input x: f32[N, T, 3]
      input lengths: i64[N]
      input h0: f32[1, N, 4]
      input c0: f32[1, N, 4]
      y, h, c = (x, lengths, h0, c0) -> LSTM(4, lengths=true, reverse=true, return_state=true)
      output y
      output h
      output c
    }
    """)
    cell_ir, fused_ir = spec.model("Cell").ir, spec.model("Fused").ir
    fw = initialize(fused_ir, 2)
    cw = {k: fw[f"lstm_1.{v}"] for k, v in _lstm_names("lstmcell_1").items()}
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 5, 3)).astype(np.float32)
    lengths = np.array([5, 1, 3])
    h0, c0 = (rng.standard_normal((3, 4)).astype(np.float32) for _ in range(2))
    a = NumpyExecutor(cell_ir, cw).run({"x": x, "lengths": lengths, "h0": h0, "c0": c0})
    b = NumpyExecutor(fused_ir, fw).run({"x": x, "lengths": lengths, "h0": h0[None], "c0": c0[None]})
    np.testing.assert_allclose(a["y"], b["y"], atol=1e-6)
    np.testing.assert_allclose(a["h"], b["h"][0], atol=1e-6)
    np.testing.assert_allclose(a["c"], b["c"][0], atol=1e-6)
    check_parity(cell_ir, {"x": x, "lengths": lengths, "h0": h0, "c0": c0}, cw)


# -- ONNX -----------------------------------------------------------------------------------------

def test_a_scanned_cell_is_one_onnx_scan_with_the_step_as_its_body():
    m = archdsl.compile(ROOT / "specs" / "seq2seq_bahdanau.arch").model()
    w = m.init_weights(0)
    for opset in OPSETS:
        proto = to_onnx(m.ir, w, opset=opset)
        onnx.checker.check_model(proto, full_check=True)
        scans = [n for n in proto.graph.node if n.op_type == "Scan"]
        assert len(scans) == 1
        body = onnx.helper.get_attribute_value(next(a for a in scans[0].attribute if a.name == "body"))
        kinds = [n.op_type for n in body.node]
        assert "Softmax" in kinds and kinds.count("Gemm") >= 3          # attention and the GRU's projections
        # the attention keys U h_j depend on the encoder alone: computed once, before the Scan
        main = [n.op_type for n in proto.graph.node]
        assert main.index("MatMul") < main.index("Scan")
    rng = np.random.default_rng(0)
    for n, s, t in ((1, 5, 3), (6, 9, 11)):           # two batch sizes, two lengths of each sequence
        xs = {"src": rng.integers(0, 16, (n, s)), "tgt_in": rng.integers(0, 16, (n, t))}
        check_parity(m.ir, xs, w)


def test_fused_layers_stay_fused():
    m = archdsl.compile(ROOT / "specs" / "lstm_lm.arch").model("LstmLM")
    kinds = [n.op_type for n in to_onnx(m.ir, m.init_weights(0), opset=max_opset()).graph.node]
    assert "LSTM" in kinds and "Scan" not in kinds


def test_backpropagation_through_the_scan_is_gradient_checked():
    m = archdsl.compile(ROOT / "specs" / "seq2seq_bahdanau.arch").model(hidden=5, units=4, embed=3)
    rng = np.random.default_rng(0)
    check_grads(m.ir, {"src": rng.integers(0, 16, (2, 4)), "tgt_in": rng.integers(0, 16, (2, 3))},
                initialize(m.ir, 0), n_coords=3)


# -- everything else knows cells ------------------------------------------------------------------

def test_summary_shows_the_step_and_counts_the_parameters_once():
    spec = archdsl.compile(ROOT / "specs" / "lstm_lm.arch")
    cell, fused = spec.model("LstmCellLM"), spec.model("LstmLM")
    assert cell.param_count == fused.param_count == 93_248
    text = cell.summary()
    assert "Scan(LSTMCell(128))" in text and "one step:" in text
    step = text[text.index("one step:"):text.index("linear_1")]
    assert "ih" in step and "Linear(512)" in step and "f32[N, 512]" in step     # per-step shapes
    assert "(66,048)" in text                     # hh: 512·128 + 512, shown in the step, counted above
    report = cell.cost(dims={"T": 64})
    assert report.row("lstmcell_1").params == fused.cost().row("lstm_1").params == 82_944
    assert report.row("lstmcell_1").macs == fused.cost(dims={"T": 64}).row("lstm_1").macs
    explained = explain_model(cell)
    assert "step t: x_t f32[N, 32], h_(t-1) f32[N, 128], c_(t-1) f32[N, 128]" in explained
    assert "the same at every step (counted once)" in explained
    assert f"Total params: 2,048 + 82,944 + 8,256 = {cell.param_count:,}" in explained


def test_render_unroll_draws_the_cell_step_by_step_with_its_states(tmp_path):
    cell = archdsl.compile(ROOT / "specs" / "lstm_lm.arch").model("LstmCellLM")
    g = unroll_dot(cell, 3).source
    assert g.count("LSTMCell(128) \u00b7 t=") == 3                       # one cluster per drawn step
    for state in ("h", "c"):
        assert f"{state}<SUB>1</SUB>" in g and f"{state}<SUB>0</SUB>" in g   # state edges, initial states
    assert "lstmcell_1: shared weights" in g
    bahdanau = archdsl.compile(ROOT / "specs" / "seq2seq_bahdanau.arch").model()
    src = unroll_dot(bahdanau, 2).source
    assert src.count("BahdanauDecoder(64, 64) \u00b7 t=") == 2 and "s<SUB>1</SUB>" in src
    from archdsl.authoring.drawing import save_graph
    import shutil
    if shutil.which("dot"):
        out = save_graph(unroll_dot(cell, 2), tmp_path / "cell.svg")
        assert out.read_text().startswith("<?xml")


@pytest.mark.parametrize("engine", ["numpy", "onnx"])
def test_sampling_carries_a_user_cells_states(engine):
    ir = model("""
    model LM(vocab: int = 11) {
      input tokens: i64[N, T]
      h = tokens -> Embedding(vocab, 6) -> Scan(GRUCell(8)) -> Scan(PeepholeLSTMCell(7))
      output logits = h -> Linear(vocab)
    }
    """)
    w = initialize(ir, 1)
    r = Runner(ir, w, engine=engine, device="cpu")
    assert r.mode == "state"
    assert [s.input for s in r.slots] == ["state.grucell_1.h", "state.peepholelstmcell_1.y",
                                          "state.peepholelstmcell_1.c"]
    window = Runner(ir, w, engine=engine, device="cpu", mode="window")
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    assert np.abs(r.start(prompt) - window.start(prompt)).max() < 1e-5
    for t in ([7, 8], [9, 10]):
        assert np.abs(r.step(np.array(t)) - window.step(np.array(t))).max() < 1e-5
    ids = generate_ids(Runner(ir, w, engine=engine, device="cpu"), prompt, 8, temperature=0.8, seed=2)
    assert (ids == generate_ids(Runner(ir, w, engine="numpy"), prompt, 8, temperature=0.8, seed=2)).all()


def _lm_data(path: Path, n: int = 64):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 64, (n, 12))
    np.savez(path, tokens=tokens, next=np.roll(tokens, -1, axis=1))


def test_checkpoints_and_freezing_inside_a_cell(tmp_path):
    from archdsl.train import train
    from archdsl.train.checkpoint import load_weights
    spec = archdsl.compile(ROOT / "specs" / "lstm_lm.arch")
    m = spec.model("LstmCellLM", hidden=16)
    _lm_data(tmp_path / "d.npz")
    w0 = m.init_weights(0)
    r = train(m, tmp_path / "d.npz", run_dir=tmp_path / "run", quiet=True, epochs=1, batch=16,
              freeze=["lstmcell_1.hh"])
    assert r.steps > 0
    np.testing.assert_array_equal(r.weights["lstmcell_1.hh.weight"], w0["lstmcell_1.hh.weight"])  # frozen
    assert not np.array_equal(r.weights["lstmcell_1.ih.weight"], w0["lstmcell_1.ih.weight"])       # trained
    loaded = load_weights(tmp_path / "run" / "checkpoint.npz", m.ir)
    for k in m.ir.parameters:
        np.testing.assert_array_equal(loaded[k], r.weights[k])
    m2 = spec.model("LstmCellLM", hidden=16)
    from archdsl.passes.freeze import apply_freeze
    apply_freeze(m2.ir, ["lstmcell_1.hh"])
    assert m2.cost().trainable_params == m2.param_count - (64 * 16 + 64)
    # resuming continues the run from the checkpoint, bit for bit
    r2 = train(m, tmp_path / "d.npz", run_dir=tmp_path / "run", quiet=True, resume=tmp_path / "run", epochs=2)
    full = train(spec.model("LstmCellLM", hidden=16), tmp_path / "d.npz", run_dir=tmp_path / "run2", quiet=True,
                 epochs=2, batch=16, freeze=["lstmcell_1.hh"])
    for k in m.ir.parameters:
        np.testing.assert_array_equal(r2.weights[k], full.weights[k])


def test_weight_sharing_inside_and_across_cells():
    src = """
    cell Tied(d: int) {                 # the same layer on the input and on the state
      input x: f32[N, d]
      state h: f32[N, d]
      proj = Linear(d, bias=false)
      h = tanh((x -> proj) + (h -> proj))
      output h
    }
    model M {
      input a: f32[N, T, 4]
      input b: f32[N, S, 4]
      cell = Tied(4)
      ya = a -> Scan(cell)
      yb = b -> Scan(cell, reverse=true)
      output ya
      output yb
    }
    """
    ir = archdsl.compile(src).model().ir
    assert list(ir.parameters) == ["cell.proj.weight"]                  # one weight, shared four ways
    assert [n.name for n in ir.nodes] == ["cell", "cell#2"]
    rng = np.random.default_rng(0)
    xs = {"a": rng.standard_normal((2, 3, 4)).astype(np.float32), "b": rng.standard_normal((2, 4, 4)).astype(np.float32)}
    w = initialize(ir, 0)
    out = NumpyExecutor(ir, w).run(xs)
    W = w["cell.proj.weight"]
    h = np.zeros((2, 4), np.float32)
    for t in range(3):
        h = np.tanh(xs["a"][:, t] @ W.T + h @ W.T)
        np.testing.assert_allclose(out["ya"][:, t], h, atol=1e-6)
    check_grads(ir, xs, w)
    check_parity(ir, xs, w)
