"""`archdsl sample` and archdsl/sample/lm.py: the stateful IR transform steps a recurrent LM
exactly like re-running it on the whole text (NumPy engine and ONNX Runtime), the modes are chosen
from the graph, tokens are drawn as asked, the vocabulary is found and checked, the CLI works on
both engines (and from a saved step model), and every user mistake is an ArchError."""
from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

import archdsl
from archdsl.cli import main
from archdsl.errors import ArchError
from archdsl.passes.init import initialize
from archdsl.sample.lm import Runner, Vocab, generate, generate_ids, pick, stateful
from archdsl.train.checkpoint import save_checkpoint
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"

GRU_LM = """
model GruLM(vocab: int = 11, hidden: int = 12) {
  input tokens: i64[N, T]
  h = tokens -> Embedding(vocab, 6) -> GRU(hidden, num_layers=2) -> LayerNorm -> ReLU
  g = h -> Linear(hidden) -> Tanh
  output logits = (h + g) -> Dropout(0.1) -> Linear(vocab)
}
"""


def _compare(ir, w, engine, n=2, p=4, steps=5, seed=0, **kw):
    """Max |state-mode logits - window-mode logits| over a prompt and `steps` further tokens."""
    r = Runner(ir, w, engine=engine, device="cpu", **kw)
    full = Runner(ir, w, engine=engine, device="cpu", mode="window", **kw)
    rng = np.random.default_rng(seed)
    V = int(ir.outputs[0].type.shape[-1])
    ctx = {}
    for v in ir.inputs:
        if v.name != r.token_input and v.name not in r.lengths_inputs:
            ctx[v.name] = rng.integers(0, V, (n, 6))
    prompt = rng.integers(0, V, (n, p))
    diffs = [np.abs(r.start(prompt, ctx) - full.start(prompt, ctx)).max()]
    for _ in range(steps):
        t = rng.integers(0, V, n)
        diffs.append(np.abs(r.step(t) - full.step(t)).max())
    return r, max(diffs)


@pytest.mark.parametrize("engine", ["numpy", "onnx"])
@pytest.mark.parametrize("stem,name,kw", [("lstm_lm", "LstmLM", dict(hidden=16, embed=8)),
                                          ("elman_lm", "ElmanLM", dict(hidden=16, embed=8)),
                                          ("deep_lstm", None, {}), (None, "GruLM", {})])
def test_carried_state_equals_rerunning_the_whole_text(stem, name, kw, engine):
    spec = archdsl.compile(SPECS / f"{stem}.arch") if stem else archdsl.compile(GRU_LM)
    m = spec.model(name, **kw)
    r, diff = _compare(m.ir, initialize(m.ir, 3), engine)
    assert r.mode == "state" and r.slots
    assert diff < 1e-5, diff


LENGTHS_LM = """
model LenLM(vocab: int = 9) {
  input tokens: i64[N, T]
  input lengths: DTYPE[N]
  h = (tokens -> Embedding(vocab, 6), lengths) -> LSTM(10, lengths=true, peepholes=true)
  output logits = (h, lengths) -> GRU(8, lengths=true) -> Linear(vocab)
}
"""


@pytest.mark.parametrize("engine", ["numpy", "onnx"])
@pytest.mark.parametrize("dtype", ["i64", "i32"])
def test_layers_with_padded_batch_lengths_are_sampled_with_carried_state(engine, dtype, tmp_path):
    # the sampler feeds no padding, so it sets `lengths` itself to the tokens of each call
    m = archdsl.compile(LENGTHS_LM.replace("DTYPE", dtype)).model()
    w = initialize(m.ir, 4)
    r, diff = _compare(m.ir, w, engine)
    assert r.mode == "state" and len(r.slots) == 3 and r.lengths_inputs == ["lengths"]
    assert diff < 1e-5, diff
    # and from a saved step model, which records the lengths input in its metadata
    r.save_onnx(tmp_path / "step.onnx", w)
    saved = Runner(None, onnx_file=tmp_path / "step.onnx", device="cpu")
    assert saved.mode == "state" and saved.lengths_inputs == ["lengths"]
    prompt = np.array([[1, 2, 3]])
    assert np.allclose(saved.start(prompt), Runner(m.ir, w, engine="numpy").start(prompt), atol=1e-5)


def test_computed_lengths_fall_back_to_the_window_mode():
    src = LENGTHS_LM.replace("DTYPE", "i64").replace(
        "(tokens -> Embedding(vocab, 6), lengths)", "(tokens -> Embedding(vocab, 6), lengths -> Identity)")
    m = archdsl.compile(src).model()
    assert Runner(m.ir, initialize(m.ir, 0)).mode == "window"


def test_step_graph_of_a_seq2seq_decoder_drops_the_encoder():
    m = archdsl.compile(SPECS / "seq2seq.arch").model(hidden=16, embed=8)
    step, slots = stateful(m.ir)
    assert [n.name for n in step.nodes] == ["embedding_2", "lstm_2", "linear_1"]
    assert [v.name for v in step.inputs] == ["tgt_in", "state.lstm_2.h0", "state.lstm_2.c0"]
    assert [v.name for v in step.outputs] == ["logits", "state.lstm_2.h_n", "state.lstm_2.c_n"]
    assert [s.node for s in slots] == ["lstm_2", "lstm_2"]
    assert "embedding_1.weight" not in step.parameters
    w = initialize(m.ir, 0)
    for engine in ("numpy", "onnx"):
        r, diff = _compare(m.ir, w, engine, token_input="tgt_in")
        assert r.mode == "state" and r.needs_prefill(m.ir)       # the encoder's state starts it
        assert diff < 1e-5, diff


def test_modes_follow_the_graph():
    gpt = archdsl.compile(SPECS / "gpt.arch").model("GPTSmall", layers=1, d=16, heads=2, ffn=32)
    r = Runner(gpt.ir, initialize(gpt.ir, 0))
    assert r.mode == "window" and r.window == 64            # the PositionalEmbedding's context
    tagger = archdsl.compile(SPECS / "bilstm_tagger.arch").model()
    assert not Runner.can_carry_state(tagger.ir)            # a bidirectional LSTM sees the future
    with pytest.raises(ArchError, match="mix time steps"):
        Runner(tagger.ir, initialize(tagger.ir, 0), mode="state")
    lm = archdsl.compile(SPECS / "lstm_lm.arch").model(hidden=8, embed=4)
    assert Runner(lm.ir, initialize(lm.ir, 0), window=5).mode == "state"
    assert Runner(lm.ir, initialize(lm.ir, 0), mode="window", window=5).window == 5


def test_window_mode_sees_only_the_last_window():
    m = archdsl.compile(SPECS / "gpt.arch").model("GPTSmall", layers=1, d=16, heads=2, ffn=32, ctx=8)
    w = initialize(m.ir, 0)
    r = Runner(m.ir, w)
    rng = np.random.default_rng(0)
    ids = generate_ids(r, rng.integers(0, 64, (1, 5)), 10, temperature=1.0, seed=0)   # 15 > ctx 8
    assert ids.shape == (1, 10) and r.history.shape == (1, 14)
    last = m.executor(w).run({"tokens": r.history[:, -8:]})["logits"][:, -1]
    np.testing.assert_allclose(r._window(), last, rtol=1e-5, atol=1e-6)


def test_pick():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([[0.1, 0.2, 0.7], [0.5, 0.4, 0.1]]))
    assert pick(logits, 0, None, rng).tolist() == [2, 0]
    assert pick(logits, 1.0, 1, rng).tolist() == [2, 0]           # top-1 = greedy
    many = np.tile(logits, (4000, 1))                              # rows 0, 2, 4, ...: logits[0]
    draws = pick(many, 1.0, None, rng).reshape(4000, 2)
    np.testing.assert_allclose(np.bincount(draws[:, 0], minlength=3) / 4000, [0.1, 0.2, 0.7], atol=0.03)
    np.testing.assert_allclose(np.bincount(draws[:, 1], minlength=3) / 4000, [0.5, 0.4, 0.1], atol=0.03)
    draws = pick(many, 1.0, 2, rng).reshape(4000, 2)
    assert set(draws[:, 0]) == {1, 2} and set(draws[:, 1]) == {0, 1}   # top-2 never draws the rest
    hot = pick(many, 0.05, None, rng).reshape(4000, 2)
    assert (hot[:, 0] == 2).mean() > 0.99                          # low temperature: nearly greedy


def test_vocab_forms_and_errors(tmp_path):
    v = Vocab.from_array(np.array(list("ab c")), "x")
    assert v.chars and len(v) == 4 and v.decode(v.encode("c ab")) == "c ab"
    assert Vocab.from_array(np.array([104, 105]), "x").tokens == ["h", "i"]
    (tmp_path / "v.json").write_text(json.dumps({"vocab": ["the", "cat", "sat"]}))
    w = Vocab.load(tmp_path / "v.json")
    assert not w.chars and w.decode(w.encode("the cat sat")) == "the cat sat"
    with pytest.raises(ArchError, match="does not know: 'z'"):
        v.encode("abz")
    with pytest.raises(ArchError, match="twice"):
        Vocab(["a", "b", "a"])
    with pytest.raises(ArchError, match="empty"):
        Vocab([])
    with pytest.raises(ArchError, match="1-D"):
        Vocab.from_array(np.zeros((2, 2), np.int64), "x")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ArchError, match="cannot read the vocabulary"):
        Vocab.load(tmp_path / "bad.json")
    with pytest.raises(ArchError, match="no vocabulary found"):
        Vocab.find(weights=_checkpoint(tmp_path / "nodata", "abc", data=False))


TEXT = "the cat sat on the mat. "


def _checkpoint(run, chars=TEXT, data=True, hidden=8):
    """A run directory with an (untrained) LstmLM checkpoint whose data .npz holds the vocabulary."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    vocab = sorted(set(chars))
    m = archdsl.compile(SPECS / "lstm_lm.arch").model(vocab=len(vocab), hidden=hidden, embed=4)
    meta = {}
    if data:
        np.savez(run / "data.npz", tokens=np.zeros((1, 4), np.int64), next=np.zeros((1, 4), np.int64),
                 vocab=np.array(vocab))
        meta["data"] = str(run / "data.npz")
    return save_checkpoint(run / "checkpoint.npz", initialize(m.ir, 1), meta=meta)


def _sample(capsys, *argv):
    code = main(["sample", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_numpy_and_onnx_agree_and_the_step_model_round_trips(tmp_path, capsys):
    ck = _checkpoint(tmp_path / "run")
    base = [SPECS / "lstm_lm.arch", "--set", "hidden=8", "--set", "embed=4", "--weights", ck,
            "--prompt", "the ", "--length", 40, "--seed", 3]
    code, np_out, err = _sample(capsys, *base)
    assert code == 0, err
    assert np_out.startswith("the ") and len(np_out.rstrip("\n")) == 44
    assert "carried state" in err and "NumPy engine" in err
    step = tmp_path / "step.onnx"
    code, ort_out, err = _sample(capsys, *base, "--device", "cpu", "--save-onnx", step)
    assert code == 0, err
    assert ort_out == np_out and "ONNX Runtime (cpu)" in err
    code, file_out, err = _sample(capsys, SPECS / "lstm_lm.arch", "--onnx", step, "--prompt", "the ",
                                  "--length", 40, "--seed", 3, "--device", "cpu")
    assert code == 0, err
    assert file_out == np_out and "carried state" in err          # vocabulary and states from metadata
    code, greedy, _ = _sample(capsys, *base, "-n", 2, "--temperature", 0, "--top-k", 3)
    a, b = greedy.rstrip("\n").split("\n\n")
    assert code == 0 and a == b                                   # greedy: both rows alike
    out = tmp_path / "s.txt"
    assert _sample(capsys, *base, "-o", out)[0] == 0 and out.read_text() == np_out


def test_cli_plain_export_runs_in_window_mode(tmp_path, capsys):
    ck = _checkpoint(tmp_path / "run")
    onnx_file = tmp_path / "plain.onnx"
    assert main(["export", str(SPECS / "lstm_lm.arch"), "--set", f"vocab={len(set(TEXT))}", "--set", "hidden=8",
                 "--set", "embed=4", "--weights", str(ck), "-o", str(onnx_file)]) == 0
    capsys.readouterr()
    code, out, err = _sample(capsys, SPECS / "lstm_lm.arch", "--onnx", onnx_file, "--weights", ck,
                             "--prompt", "the ", "--length", 20, "--device", "cpu")
    assert code == 0, err
    assert "re-running the whole text" in err
    code, ref, _ = _sample(capsys, SPECS / "lstm_lm.arch", "--set", "hidden=8", "--set", "embed=4",
                           "--weights", ck, "--prompt", "the ", "--length", 20)
    assert out == ref


def test_cli_vocabulary_beside_the_checkpoint_wins(tmp_path, capsys):
    ck = _checkpoint(tmp_path / "run")                    # its data .npz has a vocabulary too
    assert Vocab.find(weights=ck).source.endswith("data.npz:vocab")
    side = sorted(set(TEXT), reverse=True)
    Vocab(side).save(tmp_path / "run" / "vocab.json")
    assert Vocab.find(weights=ck).tokens == side
    assert Vocab.find(weights=tmp_path / "run").tokens == side       # a run directory works too
    code, out, err = _sample(capsys, SPECS / "lstm_lm.arch", "--set", "hidden=8", "--set", "embed=4",
                             "--weights", tmp_path / "run", "--prompt", "a", "--length", 5)
    assert code == 0, err
    assert out.startswith("a") and set(out.strip()) <= set(TEXT)


@pytest.mark.parametrize("extra,message", [
    (["--prompt", "the dog"], "does not know: 'd', 'g'"),
    ([], "needs --prompt"),
    (["--prompt", ""], "the prompt is empty"),
    (["--prompt", "the", "--onnx", "x.onnx", "--device", "numpy"], "use --device cpu, cuda or auto"),
    (["--prompt", "the", "--set", "hidden=9"], "wrong shape"),
    (["--prompt", "the", "--set", "vocab=5"], "wrong shape"),
])
def test_cli_user_errors(tmp_path, capsys, extra, message):
    ck = _checkpoint(tmp_path / "run")
    code, out, err = _sample(capsys, SPECS / "lstm_lm.arch", "--set", "hidden=8", "--set", "embed=4",
                             "--weights", ck, *extra)
    assert code == 1 and message in err, err
    assert "Traceback" not in err


def test_cli_errors_without_weights_vocab_or_a_language_model(tmp_path, capsys):
    code, _, err = _sample(capsys, SPECS / "lstm_lm.arch", "--prompt", "a")
    assert code == 1 and "--weights" in err
    ck = _checkpoint(tmp_path / "run", data=False)
    code, _, err = _sample(capsys, SPECS / "lstm_lm.arch", "--weights", ck, "--prompt", "a")
    assert code == 1 and "no vocabulary found" in err and "--vocab" in err
    (tmp_path / "v.json").write_text(json.dumps(list("abc")))
    code, _, err = _sample(capsys, SPECS / "sentiment_lstm.arch", "--weights", ck, "--vocab",
                           tmp_path / "v.json", "--prompt", "a")
    assert code == 1 and "not a language model" in err
    code, _, err = _sample(capsys, SPECS / "lstm_lm.arch", "--weights", tmp_path / "nothere.npz",
                           "--vocab", tmp_path / "v.json", "--prompt", "a")
    assert code == 1 and "no checkpoint file" in err


def test_model_and_vocabulary_sizes_must_agree():
    m = archdsl.compile(SPECS / "lstm_lm.arch").model(vocab=5, hidden=8, embed=4)
    r = Runner(m.ir, initialize(m.ir, 0))
    with pytest.raises(ArchError, match="scores 5 tokens but the vocabulary"):
        generate(r, Vocab(list("abc")), "ab", 3)
    with pytest.raises(ArchError, match="outside the model's vocabulary"):
        r.start(np.array([[7]]))


def test_gan_specs_go_to_the_gan_sampler(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake(args, pair):
        seen.update(n=args.n, output=args.output, weights=args.weights, device=args.device, seed=args.seed)
        return 0

    mod = types.ModuleType("archdsl.gan.sampling")
    mod.sample_command = fake
    monkeypatch.setitem(sys.modules, "archdsl.gan.sampling", mod)
    spec = next((p for p in SPECS.glob("*.arch") if "gan " in p.read_text()), None)
    if spec is None:
        pytest.skip("no gan spec in specs/")
    code = main(["sample", str(spec), "--weights", "g.npz", "-n", "16", "-o", str(tmp_path / "s.png"),
                 "--device", "cpu", "--seed", "4"])
    assert code == 0 and seen == {"n": 16, "output": str(tmp_path / "s.png"), "weights": "g.npz",
                                  "device": "cpu", "seed": 4}
