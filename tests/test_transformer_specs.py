"""The attention specs (gpt, bert, transformer, seq2seq_attention) and the transformer standard
library: exact parameter counts of the published configurations, and end to end on small
configurations: check, summary, render, export at opset 17 and the newest, ONNX Runtime at two
batch sizes and two sequence lengths with dynamic N and T, parity with the NumPy engine, and
gradients. The std/transformer.arch blocks are compared with PyTorch's layers."""
from pathlib import Path

import numpy as np
import onnx
import pytest

import archdsl
from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.backends.onnx.export import max_opset, to_onnx
from archdsl.passes.init import initialize
from harness import check_grads, ort_run

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
OPSETS = (17, max_opset())


@pytest.fixture(scope="module")
def gpt():
    return archdsl.compile(SPECS / "gpt.arch")


@pytest.fixture(scope="module")
def bert():
    return archdsl.compile(SPECS / "bert.arch")


@pytest.fixture(scope="module")
def transformer():
    return archdsl.compile(SPECS / "transformer.arch")


# -- published parameter counts ------------------------------------------------------------------

def test_gpt2_small_count_is_the_default(gpt):
    assert gpt.model_names == ["GPTSmall", "GPT2"]
    m = gpt.model()
    assert m.name == "GPT2"
    assert m.param_count == 124_439_808
    assert gpt.model("GPTSmall").param_count == 108_288
    lm_head = m.ir.node("lm_head")
    assert lm_head.params["weight"] == "wte.weight" and "bias" not in lm_head.params


def test_bert_base_counts_and_default_model(bert):
    assert bert.model_names == ["BertEncoder", "BertSmall", "BertPretraining"]
    assert bert.model("BertEncoder").param_count == 109_482_240
    m = bert.model()
    assert m.name == "BertPretraining"
    assert m.param_count == 110_106_428
    assert [str(o.type) for o in m.ir.outputs] == ["f32[N, T, 30522]", "f32[N, 2]"]
    # the summary shows both figures: the total, and the encoder (with pooler) as the `bert` block
    report = m.cost()
    assert report.scopes["bert"].params == 109_482_240
    text = m.summary()
    assert "Total params: 110,106,428" in text and "109,482,240" in text
    dec = m.ir.node("mlm_decoder")
    assert dec.params["weight"] == "bert.word_embeddings.weight"
    assert m.ir.parameters[dec.params["bias"]].shape == (30522,)


def test_transformer_base_count(transformer):
    m = transformer.model()
    assert m.param_count == 63_082_496
    assert [str(v.type) for v in m.ir.inputs] == ["i64[N, S]", "i64[N, T]"]
    assert str(m.ir.outputs[0].type) == "f32[N, T, 37000]"
    d = 512
    mha, ffn, ln = 4 * d * d + 4 * d, 2 * d * 2048 + 2048 + d, 2 * d
    assert m.param_count == 37000 * d + 6 * (mha + ffn + 2 * ln) + 6 * (2 * mha + ffn + 3 * ln)


def test_transformer_embedding_scale_is_optional(transformer):
    scales = lambda m: [n.attrs["scale"] for n in m.ir.nodes if n.kind == "PositionalEncoding"]   # noqa: E731
    assert scales(transformer.model()) == [1.0, 1.0]
    assert scales(transformer.model(scale_embeddings=True)) == [pytest.approx(512 ** 0.5)] * 2


def test_cli_summary_reports_the_published_counts():
    from archdsl.cli import main
    import contextlib
    import io
    for spec, count in (("gpt.arch", "124,439,808"), ("bert.arch", "110,106,428")):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["summary", str(SPECS / spec)])
        assert rc in (0, None) and f"Total params: {count}" in buf.getvalue()


# -- end to end on small configurations ----------------------------------------------------------

def _feed(model, n, lengths, vocab, seed):
    rng = np.random.default_rng(seed)
    out = {}
    for v in model.inputs:
        shape = tuple(n if str(d) == "N" else lengths[str(d)] if not isinstance(d, int) else d for d in v.type.shape)
        if v.type.dtype == "bool":
            keep = np.ones(shape, bool)
            for i in range(n):
                keep[i, rng.integers(1, shape[1] + 1):] = False     # right padding, >= 1 real token
            out[v.name] = keep
        elif v.name == "segment_ids":
            out[v.name] = (np.arange(shape[1])[None, :] >= shape[1] // 2).astype(np.int64).repeat(n, 0)
        elif v.type.dtype in ("i64", "i32"):
            out[v.name] = rng.integers(0, vocab, shape).astype(v.type.np_dtype)
        else:
            out[v.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def end_to_end(m, vocab, tmp_path, sizes=((1, 3), (3, 7)), grads=True):
    """summary + render + export at both opsets + ORT at two batch sizes x two lengths + parity."""
    ir = m.ir
    assert f"Total params: {m.param_count:,}" in m.summary()
    assert m.render(tmp_path / f"{m.name}.svg", collapse=True).exists()
    w = initialize(ir, seed=1)
    protos = {}
    for opset in OPSETS:
        protos[opset] = to_onnx(ir, w, opset=opset)
        onnx.checker.check_model(protos[opset], full_check=True)
        for i in protos[opset].graph.input:       # dynamic batch and sequence length
            assert [d.dim_param for d in i.type.tensor_type.shape.dim[:2]] == [str(d) for d in
                                                                                next(v for v in ir.inputs if v.name == i.name).type.shape[:2]]
    ex = NumpyExecutor(ir, w)
    syms = [s for s in ir.symbols() if s != "N"]
    seed = 0
    for n in (sizes[0][0], sizes[1][0]):
        for t in (sizes[0][1], sizes[1][1]):
            seed += 1
            lengths = {s: t + i for i, s in enumerate(syms)}     # S != T where both exist
            x = _feed(ir, n, lengths, vocab, seed)
            ref = ex.run(x)
            for opset, proto in protos.items():
                got = ort_run(proto, x)
                for v in ir.outputs:
                    np.testing.assert_allclose(got[v.name], ref[v.name], atol=1e-4, rtol=1e-4,
                                               err_msg=f"{m.name} {v.name} opset {opset} N={n} T={t}")
    if grads:
        x = _feed(ir, 2, {s: 3 + i for i, s in enumerate(syms)}, vocab, 99)
        check_grads(ir, x, weights=w, n_coords=2)
    return protos


def test_gpt_small_end_to_end(gpt, tmp_path):
    m = gpt.model("GPTSmall", vocab=20, d=16, heads=2, ffn=32, ctx=16)
    end_to_end(m, 20, tmp_path)


def test_gpt2_structure_end_to_end_at_reduced_size(gpt, tmp_path):
    m = gpt.model("GPT2", vocab=30, ctx=12, d=24, layers=1, heads=3, ffn=48)
    protos = end_to_end(m, 30, tmp_path, grads=False)
    assert [n.op_type for n in protos[OPSETS[1]].graph.node].count("Attention") == 1


def test_bert_end_to_end(bert, tmp_path):
    for name in ("BertEncoder", "BertPretraining"):
        m = bert.model(name, vocab=25, max_pos=16, d=16, layers=2, heads=4, ffn=32)
        end_to_end(m, 25, tmp_path, grads=name == "BertPretraining")
    end_to_end(bert.model("BertSmall"), 64, tmp_path, sizes=((2, 5), (3, 9)), grads=False)


def test_transformer_end_to_end(transformer, tmp_path):
    m = transformer.model(vocab=23, d=16, heads=4, ffn=32, layers=2, max_len=32)
    end_to_end(m, 23, tmp_path)


def test_seq2seq_attention_end_to_end(tmp_path):
    spec = archdsl.compile(SPECS / "seq2seq_attention.arch")
    m = spec.model()
    assert m.name == "Seq2SeqAttention" and m.param_count == 68_816
    assert [str(o.type) for o in m.ir.outputs] == ["f32[N, T, 16]", "f32[N, T, S]"]
    end_to_end(m, 16, tmp_path)
    x = _feed(m.ir, 2, {"S": 5, "T": 4}, 16, 3)
    w = NumpyExecutor(m.ir, initialize(m.ir)).run(x)["attention"]
    np.testing.assert_allclose(w.sum(-1), 1, atol=1e-5)


def test_training_mode_forward_backward_with_dropout(bert):
    """Dropout on attention weights and activations in training; gradients reach every weight."""
    from archdsl.autodiff import backward, softmax_cross_entropy
    m = bert.model("BertSmall")
    ex = NumpyExecutor(m.ir, initialize(m.ir))
    x = _feed(m.ir, 4, {"T": 10}, 64, 5)
    out = ex.forward(x, training=True)
    loss = softmax_cross_entropy(out["mlm_logits"], x["tokens"]) + \
        softmax_cross_entropy(out["nsp_logits"], np.array([0, 1, 0, 1]))
    backward(loss)
    missing = [n for n, t in ex.trainable().items() if t.grad is None or not np.any(t.grad)]
    assert missing == []


# -- the standard library against PyTorch --------------------------------------------------------

def _stdlib_model(src):
    return archdsl.compile('import "std/transformer.arch"\n' + src).model()


def _copy_mha(torch, mod, w, prefix):
    g = lambda k: torch.tensor(w[f"{prefix}.{k}"], dtype=torch.float64)    # noqa: E731
    mod.in_proj_weight.copy_(torch.cat([g("q_weight"), g("k_weight"), g("v_weight")]))
    mod.in_proj_bias.copy_(torch.cat([g("q_bias"), g("k_bias"), g("v_bias")]))
    mod.out_proj.weight.copy_(g("out_weight"))
    mod.out_proj.bias.copy_(g("out_bias"))


def _copy_linear_ln(torch, layer, w, prefix):
    layer.weight.copy_(torch.tensor(w[f"{prefix}.weight"], dtype=torch.float64))
    layer.bias.copy_(torch.tensor(w[f"{prefix}.bias"], dtype=torch.float64))


def _random(ir, seed=0):
    rng = np.random.default_rng(seed)
    return {k: (a + rng.standard_normal(a.shape) * 0.1).astype(np.float64) for k, a in initialize(ir).items()}


@pytest.mark.parametrize("prenorm,act", [(False, "relu"), (True, "gelu")])
def test_encoder_block_matches_pytorch(prenorm, act):
    torch = pytest.importorskip("torch")
    d, h, f = 16, 4, 32
    m = _stdlib_model(f"""model M {{ input x: f32[N, T, {d}]
      output y = x -> TransformerEncoderBlock({d}, {h}, {f}, dropout=0.0, prenorm={str(prenorm).lower()}, act="{act}") }}""")
    w = _random(m.ir)
    layer = torch.nn.TransformerEncoderLayer(d, h, f, dropout=0.0, activation=act, batch_first=True,
                                             norm_first=prenorm).double()
    p = "transformerencoderblock_1"
    with torch.no_grad():
        _copy_mha(torch, layer.self_attn, w, f"{p}.multiheadattention_1")
        _copy_linear_ln(torch, layer.linear1, w, f"{p}.feedforward_1.linear_1")
        _copy_linear_ln(torch, layer.linear2, w, f"{p}.feedforward_1.linear_2")
        _copy_linear_ln(torch, layer.norm1, w, f"{p}.layernorm_1")
        _copy_linear_ln(torch, layer.norm2, w, f"{p}.layernorm_2")
    layer.eval()
    x = np.random.default_rng(1).standard_normal((3, 5, d))
    y = NumpyExecutor(m.ir, w, dtype=np.float64).run({"x": x})["y"]
    with torch.no_grad():
        ty = layer(torch.tensor(x)).numpy()
    np.testing.assert_allclose(y, ty, atol=1e-10)


@pytest.mark.parametrize("prenorm", [False, True])
def test_decoder_block_matches_pytorch(prenorm):
    torch = pytest.importorskip("torch")
    d, h, f = 16, 4, 32
    m = _stdlib_model(f"""model M {{ input x: f32[N, T, {d}]  input mem: f32[N, S, {d}]
      y, _ = (x, mem) -> TransformerDecoderBlock({d}, {h}, {f}, dropout=0.0, prenorm={str(prenorm).lower()})
      output y = y }}""")
    w = _random(m.ir)
    layer = torch.nn.TransformerDecoderLayer(d, h, f, dropout=0.0, batch_first=True, norm_first=prenorm).double()
    p = "transformerdecoderblock_1"
    with torch.no_grad():
        _copy_mha(torch, layer.self_attn, w, f"{p}.multiheadattention_1")
        _copy_mha(torch, layer.multihead_attn, w, f"{p}.multiheadattention_2")
        _copy_linear_ln(torch, layer.linear1, w, f"{p}.feedforward_1.linear_1")
        _copy_linear_ln(torch, layer.linear2, w, f"{p}.feedforward_1.linear_2")
        for i in (1, 2, 3):
            _copy_linear_ln(torch, getattr(layer, f"norm{i}"), w, f"{p}.layernorm_{i}")
    layer.eval()
    rng = np.random.default_rng(2)
    x, mem = rng.standard_normal((2, 5, d)), rng.standard_normal((2, 7, d))
    y = NumpyExecutor(m.ir, w, dtype=np.float64).run({"x": x, "mem": mem})["y"]
    with torch.no_grad():
        ty = layer(torch.tensor(x), torch.tensor(mem), tgt_is_causal=True,
                   tgt_mask=torch.nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(y, ty, atol=1e-10)


def test_stdlib_blocks_chain_through_repeat_and_masks():
    m = _stdlib_model("""model M { input x: f32[N, T, 8]  input keep: bool[N, T]  input mem: f32[N, S, 8]
      input src_keep: bool[N, S]
      h, _ = (x, keep) -> repeat 2 { MaskedTransformerEncoderBlock(8, 2, prenorm=true) }
      g, _, _ = (h, mem, src_keep) -> repeat 2 { MaskedTransformerDecoderBlock(8, 2, 16) }
      output y = g -> repeat 2 { GPTBlock(8, 2) } }""")
    ir = m.ir
    assert str(ir.outputs[0].type) == "f32[N, T, 8]"
    mha = [n for n in ir.nodes if n.kind == "MultiHeadAttention"]
    assert len(mha) == 2 + 4 + 2
    assert [n.attrs["mask"] for n in mha[:2]] == ["padding"] * 2
    assert [n.attrs["causal"] for n in mha[-2:]] == [True, True]
    # FeedForward's default width is 4 d; the GPT block's MLP has no inner dropout
    assert any(n.kind == "Linear" and n.attrs["out_features"] == 32 for n in ir.nodes)
    x = _feed(ir, 2, {"T": 4, "S": 5}, 10, 0)
    for opset in OPSETS:
        got = ort_run(to_onnx(ir, initialize(ir), opset=opset), x)["y"]
        np.testing.assert_allclose(got, NumpyExecutor(ir, initialize(ir)).run(x)["y"], atol=1e-4, rtol=1e-4)


def test_stdlib_rejects_an_unknown_activation():
    with pytest.raises(archdsl.ArchError,
                       match="'none', 'tanh'"):
        _stdlib_model("model M { input x: f32[N, T, 8]  output y = x -> FeedForward(8, 16, act=\"swish\") }")
