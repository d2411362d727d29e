"""Hugging Face GPT-2 and BERT in and out, against transformers itself: models built from config
objects with random weights (never from the hub), saved as the library saves them, imported with
the shipped mappings (specs/gpt.map, specs/bert.map), exported to ONNX and run on ONNX Runtime
within 1e-4 of transformers; and archdsl weights written back, loaded by transformers with
load_state_dict(strict=True) / from_pretrained, computing the same outputs."""
from pathlib import Path

import numpy as np
import onnx
import pytest

import archdsl
from archdsl.cli import main
from archdsl.interop import export_weights
from archdsl.passes.init import initialize
from archdsl.train.checkpoint import load_weights
from harness import ort_run

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
GPT = dict(vocab=100, ctx=32, d=64, layers=2, heads=4, ffn=256)
BERT = dict(vocab=60, max_pos=16, segments=2, d=32, layers=2, heads=4, ffn=64)


def sets(kw):
    return [a for k, v in kw.items() for a in ("--set", f"{k}={v}")]


def cli(capsys, *args):
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def jitter(module, scale, seed=0):
    """Random weights well away from the initialisation (logits of several units, not ~0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return module.eval()


def gpt2(n_layer=2, cls=None, seed=0):
    cfg = transformers.GPT2Config(n_layer=n_layer, n_embd=GPT["d"], n_head=GPT["heads"], vocab_size=GPT["vocab"],
                                  n_positions=GPT["ctx"], bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    return jitter((cls or transformers.GPT2LMHeadModel)(cfg), 0.1, seed)


def tokens(n=2, t=9, high=GPT["vocab"], seed=0):
    return np.random.default_rng(seed).integers(0, high, (n, t)).astype(np.int64)


def hf_logits(m, ids):
    with torch.no_grad():
        return m(torch.from_numpy(ids)).logits.numpy()


# -- GPT-2 --------------------------------------------------------------------------------------

def test_gpt2_folder_to_onnx_in_one_command_with_verify(tmp_path, capsys):
    m = gpt2()
    m.save_pretrained(tmp_path / "gpt2")
    rc, out, err = cli(capsys, "import-weights", SPECS / "gpt.arch", tmp_path / "gpt2", "-m", "GPT2", *sets(GPT),
                       "-o", tmp_path / "gpt2.onnx", "--verify")
    assert rc == 0, err
    assert "Hugging Face folder" in out and "verified against the source model on ONNX Runtime" in out
    ids = tokens()
    ref = hf_logits(m, ids)
    assert np.abs(ref).max() > 1                      # outputs of some size: a loose check would show
    got = ort_run(onnx.load(str(tmp_path / "gpt2.onnx")), {"tokens": ids})["logits"]
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
    # `archdsl export --weights FOLDER` takes the folder directly
    rc, out, err = cli(capsys, "export", SPECS / "gpt.arch", "-m", "GPT2", *sets(GPT), "--weights", tmp_path / "gpt2",
                       "-o", tmp_path / "direct.onnx")
    assert rc == 0, err
    got = ort_run(onnx.load(str(tmp_path / "direct.onnx")), {"tokens": ids})["logits"]
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)


def test_verify_catches_a_forgotten_conv1d_transpose(tmp_path, capsys):
    """Without the transposes every shape still fits (the q/k/v/out matrices are square, and so
    are the MLP's with ffn = d here): only running both models shows the mistake."""
    kw = {**GPT, "ffn": GPT["d"]}
    cfg = transformers.GPT2Config(n_layer=1, n_embd=64, n_head=4, vocab_size=100, n_positions=32, n_inner=64)
    torch.manual_seed(0)
    jitter(transformers.GPT2LMHeadModel(cfg), 0.1).save_pretrained(tmp_path / "gpt2")
    wrong = tmp_path / "gpt.map"
    wrong.write_text((SPECS / "gpt.map").read_text().replace("split columns, transpose", "split columns")
                     .replace(" transpose\n", "\n"))
    args = ["import-weights", SPECS / "gpt.arch", tmp_path / "gpt2", "-m", "GPT2", *sets({**kw, "layers": 1}),
            "-o", tmp_path / "w.npz", "--verify"]
    rc, out, err = cli(capsys, *args, "--map", wrong)
    assert rc == 1 and "the archdsl model and the source model differ: logits: largest difference" in err
    assert "a transpose?" in err and not (tmp_path / "w.npz").exists()       # nothing written
    rc, out, err = cli(capsys, *args)
    assert rc == 0, err


def test_gpt2_base_model_checkpoint_without_prefix(tmp_path):
    """The hub's gpt2 checkpoints are GPT2Model's: no "transformer." and no lm_head (tied)."""
    lm = gpt2()
    torch.save(lm.transformer.state_dict(), tmp_path / "base.pt")
    net = archdsl.compile(SPECS / "gpt.arch").model("GPT2", **GPT)
    w = load_weights(tmp_path / "base.pt", net.ir)
    ids = tokens(seed=3)
    np.testing.assert_allclose(net.executor(w).run({"tokens": ids})["logits"], hf_logits(lm, ids), atol=1e-4, rtol=1e-4)


def test_archdsl_weights_back_to_gpt2(tmp_path, capsys):
    net = archdsl.compile(SPECS / "gpt.arch").model("GPT2", **GPT)
    rng = np.random.default_rng(0)
    w = {k: (a + rng.standard_normal(a.shape).astype(np.float32) * 0.1) for k, a in initialize(net.ir, 1).items()}
    np.savez(tmp_path / "trained.npz", **w)
    rc, out, err = cli(capsys, "export-weights", SPECS / "gpt.arch", "-m", "GPT2", *sets(GPT), "--weights",
                       tmp_path / "trained.npz", "-o", tmp_path / "hf", "--verify")
    assert rc == 0, err
    ids = tokens(seed=5)
    ours = ort_run(net.to_onnx(weights=w), {"tokens": ids})["logits"]
    # strict load of the bare file into a model built from a config object ...
    from safetensors.torch import load_file
    m = gpt2(seed=9)
    m.load_state_dict(load_file(str(tmp_path / "hf" / "model.safetensors")), strict=True)
    np.testing.assert_allclose(hf_logits(m.eval(), ids), ours, atol=1e-4, rtol=1e-4)
    # ... and from_pretrained of the folder (its config.json written from the spec's parameters)
    m2 = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    np.testing.assert_allclose(hf_logits(m2, ids), ours, atol=1e-4, rtol=1e-4)


def test_gpt2_sharded_folder_and_config_mismatch(tmp_path):
    m = gpt2(n_layer=3)
    m.save_pretrained(tmp_path / "gpt2", max_shard_size="100KB")
    assert (tmp_path / "gpt2" / "model.safetensors.index.json").exists()
    spec = archdsl.compile(SPECS / "gpt.arch")
    with pytest.raises(archdsl.ArchError) as e:
        load_weights(tmp_path / "gpt2", spec.model("GPT2", **GPT).ir)
    assert "n_layer = 3 in the config, but model GPT2 has layers = 2" in e.value.message
    assert e.value.hint.endswith("--set layers=3")
    net = spec.model("GPT2", **{**GPT, "layers": 3})
    ids = tokens(seed=1)
    got = net.executor(load_weights(tmp_path / "gpt2", net.ir)).run({"tokens": ids})["logits"]
    np.testing.assert_allclose(got, hf_logits(m, ids), atol=1e-4, rtol=1e-4)


# -- BERT ---------------------------------------------------------------------------------------

def bert(cls, seed=0):
    cfg = transformers.BertConfig(vocab_size=BERT["vocab"], max_position_embeddings=BERT["max_pos"],
                                  hidden_size=BERT["d"], num_hidden_layers=BERT["layers"],
                                  num_attention_heads=BERT["heads"], intermediate_size=BERT["ffn"])
    torch.manual_seed(seed)
    return jitter(cls(cfg), 0.05, seed)


def bert_inputs(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, BERT["vocab"], (2, 7)).astype(np.int64)
    seg = (np.arange(7) >= 4).astype(np.int64)[None].repeat(2, 0)
    keep = np.ones((2, 7), bool)
    keep[1, 5:] = False                                   # padding in the second row
    return {"tokens": ids, "segment_ids": seg, "keep": keep}


def hf_bert(m, x):
    with torch.no_grad():
        return m(input_ids=torch.from_numpy(x["tokens"]), token_type_ids=torch.from_numpy(x["segment_ids"]),
                 attention_mask=torch.from_numpy(x["keep"].astype(np.int64)))


def test_bert_for_pretraining_to_onnx(tmp_path, capsys):
    m = bert(transformers.BertForPreTraining)
    m.save_pretrained(tmp_path / "bert")
    rc, out, err = cli(capsys, "export", SPECS / "bert.arch", "-m", "BertPretraining", *sets(BERT),
                       "--weights", tmp_path / "bert", "-o", tmp_path / "bert.onnx")
    assert rc == 0, err
    x = bert_inputs()
    got = ort_run(onnx.load(str(tmp_path / "bert.onnx")), x)
    ref = hf_bert(m, x)
    np.testing.assert_allclose(got["mlm_logits"], ref.prediction_logits.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(got["nsp_logits"], ref.seq_relationship_logits.numpy(), atol=1e-4, rtol=1e-4)


def test_bert_model_and_the_encoder_of_a_pretraining_checkpoint(tmp_path, capsys):
    m = bert(transformers.BertModel)
    m.save_pretrained(tmp_path / "enc")
    # as older checkpoints (bert-base-uncased) spell LayerNorm's parameters: gamma and beta
    from safetensors.torch import save_file
    old = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
           for k, v in m.state_dict().items()}
    assert "embeddings.LayerNorm.gamma" in old
    save_file(old, str(tmp_path / "enc" / "model.safetensors"), metadata={"format": "pt"})
    rc, out, err = cli(capsys, "import-weights", SPECS / "bert.arch", tmp_path / "enc", "-m", "BertEncoder",
                       *sets(BERT), "-o", tmp_path / "enc.npz", "--verify")
    assert rc == 0, err
    assert "hidden: largest difference" in out and "pooled: largest difference" in out
    # the encoder out of a BertForPreTraining folder: the heads are listed as unused
    bert(transformers.BertForPreTraining).save_pretrained(tmp_path / "pre")
    rc, out, err = cli(capsys, "import-weights", SPECS / "bert.arch", tmp_path / "pre", "-m", "BertEncoder",
                       *sets(BERT), "-o", tmp_path / "enc2.npz", "--verify")
    assert rc == 0, err
    assert "unused in the checkpoint (7): cls.predictions.bias" in err


def test_archdsl_weights_back_to_bert(tmp_path):
    net = archdsl.compile(SPECS / "bert.arch").model("BertPretraining", **BERT)
    rng = np.random.default_rng(2)
    w = {k: (a + rng.standard_normal(a.shape).astype(np.float32) * 0.05) for k, a in initialize(net.ir, 1).items()}
    tensors, sec = export_weights(w, net.ir)
    m = bert(transformers.BertForPreTraining, seed=4)
    m.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, strict=True)
    x = bert_inputs(1)
    ours = ort_run(net.to_onnx(weights=w), x)
    ref = hf_bert(m.eval(), x)
    np.testing.assert_allclose(ours["mlm_logits"], ref.prediction_logits.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(ours["nsp_logits"], ref.seq_relationship_logits.numpy(), atol=1e-4, rtol=1e-4)
