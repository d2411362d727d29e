"""The recurrent specs end to end: each checks, summarises, renders, exports at opset 17 and the
newest, runs on ONNX Runtime at two batch sizes and two sequence lengths, and matches the NumPy
engine within 1e-4; plus what each architecture promises (teacher forcing, causality of the two
ELMo language models, the captioner's conditioning, stacked = fused)."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest

import archdsl
from archdsl.autodiff import Tensor, backward
from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.backends.onnx.export import to_onnx
from archdsl.passes.init import initialize
from harness import OPSETS, check_grads, ort_run

SPECS = Path(__file__).resolve().parent.parent / "specs"
MODELS = [("elman_lm", "ElmanLM"), ("lstm_lm", "LstmLM"), ("sentiment_lstm", "SentimentLSTM"),
          ("bilstm_tagger", "BiLSTMTagger"), ("seq2seq", "Seq2Seq"), ("captioner", "Captioner"),
          ("elmo", "ELMo"), ("deep_lstm", "DeepLSTM"), ("deep_lstm", "DeepLSTMFused")]


def compiled(stem, name, **overrides):
    return archdsl.compile(SPECS / f"{stem}.arch").model(name, **overrides)


def feed(ir, n, t, seed=0, s=None, high=16):
    """Random inputs: token ids below `high` (every vocabulary here), float features; S = s."""
    rng = np.random.default_rng(seed)
    dims = {"N": n, "T": t, "S": s if s is not None else t + 2}
    out = {}
    for v in ir.inputs:
        shape = [dims[str(d)] if not isinstance(d, int) else d for d in v.type.shape]
        out[v.name] = (rng.standard_normal(shape).astype(np.float32) if v.type.is_float
                       else rng.integers(0, high, shape).astype(np.int64))
    return out


@pytest.mark.parametrize("stem,name", MODELS, ids=[n for _, n in MODELS])
def test_spec_end_to_end(stem, name, tmp_path):
    m = compiled(stem, name)
    assert f"Total params: {m.param_count:,}" in m.summary()
    assert m.render(tmp_path / f"{name}.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    ir = m.ir
    w = initialize(ir, seed=1)
    ex = NumpyExecutor(ir, w)
    sessions = []
    for opset in OPSETS:
        proto = to_onnx(ir, w, opset=opset)
        onnx.checker.check_model(proto, full_check=True)
        sessions.append((opset, proto))
    for n in (1, 4):
        for t in (3, 7):
            x = feed(ir, n, t, seed=n * 10 + t)
            ref = ex.run(x)
            for v in ir.outputs:
                assert ref[v.name].shape[0] == n and np.all(np.isfinite(ref[v.name]))
            for opset, proto in sessions:
                got = ort_run(proto, x)
                for v in ir.outputs:
                    np.testing.assert_allclose(got[v.name], ref[v.name], atol=1e-4, rtol=1e-4,
                                               err_msg=f"{name}.{v.name} opset {opset} N={n} T={t}")


def test_lstm_lm_is_the_benchmark_configuration():
    ir = compiled("lstm_lm", "LstmLM").ir
    lstm = next(nd for nd in ir.nodes if nd.kind == "LSTM")
    assert lstm.attrs["hidden"] == 128 and lstm.inputs[0].type.shape[2] == 32
    assert str(ir.outputs[0].type) == "f32[N, T, 64]"
    # PyTorch: Embedding(64, 32) + LSTM(32, 128) + Linear(128, 64)
    assert ir.param_count() == 64 * 32 + (4 * 128 * (32 + 128) + 8 * 128) + (128 * 64 + 64)


def test_seq2seq_decoder_starts_from_the_encoder_state_and_is_causal():
    ir = compiled("seq2seq", "Seq2Seq", hidden=16, embed=8).ir
    enc, dec = [nd for nd in ir.nodes if nd.kind == "LSTM"]
    assert dec.inputs[1].producer is enc and dec.inputs[2].producer is enc
    ex = NumpyExecutor(ir, initialize(ir))
    x = feed(ir, 2, 6, s=5)
    base = ex.run(x)["logits"]
    src = dict(x, src=(x["src"] + 1) % 16)
    assert np.all(np.abs(ex.run(src)["logits"][:, 0] - base[:, 0]) > 0)    # the source conditions step 0
    tgt = dict(x, tgt_in=x["tgt_in"].copy())
    tgt["tgt_in"][:, 3] = (tgt["tgt_in"][:, 3] + 1) % 16
    moved = ex.run(tgt)["logits"]
    np.testing.assert_array_equal(moved[:, :3], base[:, :3])     # teacher forcing: step t sees tgt_in[:t+1]
    assert np.all(moved[:, 3:] != base[:, 3:])


def test_seq2seq_gradients_flow_through_the_encoder_states():
    ir = compiled("seq2seq", "Seq2Seq", hidden=5, embed=3, src_vocab=6, tgt_vocab=6).ir
    check_grads(ir, feed(ir, 2, 3, s=4, seed=3, high=6), n_coords=2)


def test_elmo_directions_are_causal_and_the_mix_starts_as_an_average():
    ir = compiled("elmo", "ELMo", vocab=20, dim=8).ir
    w = initialize(ir)
    ex = NumpyExecutor(ir, w)
    x = feed(ir, 2, 7)
    base = ex.run(x)
    moved = dict(x, tokens=x["tokens"].copy())
    moved["tokens"][:, 4] = (moved["tokens"][:, 4] + 1) % 16
    out = ex.run(moved)
    np.testing.assert_array_equal(out["fwd_logits"][:, :4], base["fwd_logits"][:, :4])  # left context only
    np.testing.assert_array_equal(out["bwd_logits"][:, 5:], base["bwd_logits"][:, 5:])  # right context only
    assert np.all(out["fwd_logits"][:, 4:] != base["fwd_logits"][:, 4:])
    assert np.all(out["bwd_logits"][:, :5] != base["bwd_logits"][:, :5])
    heads = [nd for nd in ir.nodes if nd.kind == "Linear"]
    assert heads[0].params == heads[1].params                 # one softmax layer for both LMs
    probe = copy.copy(ir)          # the same graph, reading the three biLM layers as outputs
    probe.outputs = [nd.outputs[0] for nd in ir.nodes if nd.kind == "Concat"]
    layers = NumpyExecutor(probe, w).run(x)
    assert len(layers) == 3 and all(v.shape == (2, 7, 16) for v in layers.values())
    np.testing.assert_allclose(base["elmo"], sum(layers.values()) / 3, atol=1e-6)


def test_captioner_features_condition_every_step():
    ir = compiled("captioner", "Captioner", features=6, vocab=20, hidden=8, embed=4).ir
    lstm = next(nd for nd in ir.nodes if nd.kind == "LSTM")
    assert [str(v.type) for v in lstm.inputs] == ["f32[N, T, 4]", "f32[1, N, 8]", "f32[1, N, 8]"]
    ex = NumpyExecutor(ir, initialize(ir))
    x = feed(ir, 3, 5)
    other = dict(x, feats=x["feats"] + 1.0)
    assert np.all(np.abs(ex.run(other)["logits"] - ex.run(x)["logits"]).max(axis=(0, 2)) > 1e-4)


def test_sentiment_reads_the_last_step_of_a_left_padded_batch():
    ir = compiled("sentiment_lstm", "SentimentLSTM", vocab=30, embed=4, hidden=6).ir
    assert str(ir.outputs[0].type) == "f32[N, 2]"
    emb = next(nd for nd in ir.nodes if nd.kind == "Embedding")
    assert emb.attrs["padding_idx"] == 0
    w = initialize(ir)
    ex = NumpyExecutor(ir, w)
    toks = np.array([[0, 0, 0, 5, 7, 9], [3, 4, 8, 2, 7, 9]], np.int64)
    y = ex.run({"tokens": toks})["logits"]
    # gradient reaches every real token of the padded row through the recurrence
    ex2 = NumpyExecutor(ir, w, dtype=np.float64)
    out = ex2.forward({"tokens": toks})["logits"]
    backward(out[0].sum())
    g = ex2.params["embedding_1.weight"].grad
    assert all(np.any(g[i] != 0) for i in (5, 7, 9)) and np.all(g[0] == 0) and np.all(np.isfinite(y))


def test_deep_lstm_stacks_match_the_fused_layer():
    spec = archdsl.compile(SPECS / "deep_lstm.arch")
    deep, fused = spec.model("DeepLSTM", hidden=16, embed=8).ir, spec.model("DeepLSTMFused", hidden=16, embed=8).ir
    assert deep.param_count() == fused.param_count()
    assert sum(nd.kind == "LSTM" for nd in deep.nodes) == 3
    wf = initialize(fused)
    # repeat copy k's weight_*_l0 is the fused layer's weight_*_l{k}
    wd = {}
    for name in deep.parameters:
        if ".lstm_1." in name:
            k = name.split(".")[1]
            local = name.rsplit(".", 1)[1].replace("_l0", f"_l{k}")
            wd[name] = wf[f"lstm_1.{local}"]
        else:
            wd[name] = wf[name]
    x = feed(deep, 2, 5)
    np.testing.assert_allclose(NumpyExecutor(deep, wd).run(x)["logits"],      # eval: dropout is identity
                               NumpyExecutor(fused, wf).run(x)["logits"], atol=1e-5)
    lstm_nodes = [n for n in to_onnx(fused, wf).graph.node if n.op_type == "LSTM"]
    assert len(lstm_nodes) == 3


def test_one_training_step_through_a_recurrent_spec_is_finite():
    ir = compiled("bilstm_tagger", "BiLSTMTagger", vocab=20, embed=4, hidden=5, tags=3).ir
    ex = NumpyExecutor(ir, initialize(ir))
    x = feed(ir, 3, 6)
    logits = ex.forward(x, training=True)["tag_logits"]
    from archdsl.autodiff import softmax_cross_entropy
    loss = softmax_cross_entropy(logits, np.random.default_rng(0).integers(0, 3, (3, 6)))
    backward(loss)
    grads = [t.grad for t in ex.trainable().values()]
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)
    assert isinstance(logits, Tensor) and logits.data.dtype == np.float32
