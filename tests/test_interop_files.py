"""Weights files of other frameworks, without PyTorch: safetensors (bfloat16 too), Hugging Face
folders (sharded or not), ONNX initializers; --weights / --init / export taking them through
archdsl.train.checkpoint; the import-weights and export-weights commands; the clear error when a
.pt file needs PyTorch."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import archdsl
from archdsl.cli import main
from archdsl.errors import ArchError
from archdsl.interop import export_weights, read_source
from archdsl.passes.init import initialize
from archdsl.train.checkpoint import init_from, load_weights, read_checkpoint
from harness import ort_run

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
SMALL = ["--set", "vocab=50", "--set", "ctx=16", "--set", "d=16", "--set", "layers=2", "--set", "heads=2",
         "--set", "ffn=32"]
KW = dict(vocab=50, ctx=16, d=16, layers=2, heads=2, ffn=32)


@pytest.fixture(scope="module")
def gpt():
    return archdsl.compile(SPECS / "gpt.arch").model("GPT2", **KW)


@pytest.fixture()
def hf_tensors(gpt):
    """GPT-2's names, contiguous (safetensors writes a transposed view's memory as it lies)."""
    return {k: np.ascontiguousarray(v) for k, v in export_weights(initialize(gpt.ir, 3), gpt.ir)[0].items()}


def cli(capsys, *args):
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


# -- formats ------------------------------------------------------------------------------------

def _bf16_safetensors(path, arrays: dict):
    """A safetensors file with bfloat16 tensors, written by hand (NumPy has no bfloat16)."""
    header, blobs, offset = {}, [], 0
    for k, a in arrays.items():
        raw = (np.asarray(a, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        header[k] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    path.write_bytes(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def test_bfloat16_is_widened_to_float32(tmp_path):
    a = np.array([[1.5, -2.0], [0.15625, 2.0 ** 127]], np.float32)       # exact in bfloat16
    _bf16_safetensors(tmp_path / "w.safetensors", {"a": a})
    got = read_source(tmp_path / "w.safetensors").tensors["a"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, a)


def test_sharded_hugging_face_folder(tmp_path, gpt, hf_tensors):
    names = sorted(hf_tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for f, ks in shards.items():
        save_file({k: hf_tensors[k] for k in ks}, str(tmp_path / f))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: f for f, ks in shards.items() for k in ks}}))
    src = read_source(tmp_path)
    assert src.kind == "huggingface" and len(src.files) == 2 and src.tensors.keys() == hf_tensors.keys()
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ArchError, match="lists the shard 'model-00002-of-00002.safetensors', which is not in"):
        read_source(tmp_path)


def test_folders_and_files_that_hold_no_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ArchError, match="holds no weights: expected model.safetensors"):
        read_source(tmp_path)
    (tmp_path / "w.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": trunc")
    with pytest.raises(ArchError, match="not a readable safetensors file"):
        read_source(tmp_path / "w.safetensors")
    with pytest.raises(ArchError, match="unknown weights format '.h5'"):
        read_source(_touch(tmp_path / "w.h5"))


def _touch(p):
    p.write_bytes(b"")
    return p


def test_onnx_initializers_round_trip(tmp_path):
    lenet = archdsl.compile(SPECS / "lenet5.arch").model()
    w = lenet.init_weights(4)
    lenet.to_onnx(tmp_path / "lenet.onnx", weights=w)
    got = load_weights(tmp_path / "lenet.onnx", lenet.ir)       # the names are archdsl's own
    for k in w:
        np.testing.assert_array_equal(got[k], w[k])
    # an export that folded BatchNorm into the convolutions has other tensors: a clear error
    r18 = archdsl.compile(SPECS / "resnet18.arch").model()
    r18.to_onnx(tmp_path / "r18.onnx", seed=0)
    with pytest.raises(ArchError, match=r"does not fit model ResNet18:\n  missing 80") as e:
        load_weights(tmp_path / "r18.onnx", r18.ir)
    assert "'stem_1.conv2d_1.bias' -> 'stem_1.conv2d_1.bias'; did you mean 'stem_1.batchnorm_1.bias'?" in e.value.message


def test_a_pytorch_file_without_pytorch_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)              # import torch -> ImportError
    _touch(tmp_path / "model.pt")
    with pytest.raises(ArchError, match="needs PyTorch, which is not installed") as e:
        read_source(tmp_path / "model.pt")
    assert "pip install 'archdsl[torch]'" in e.value.hint


# -- through archdsl.train.checkpoint: --weights, --init ---------------------------------------

def test_weights_and_init_take_foreign_files(tmp_path, gpt, hf_tensors):
    save_file(hf_tensors, str(tmp_path / "w.safetensors"))
    w = load_weights(tmp_path / "w.safetensors", gpt.ir)
    assert list(w) == list(gpt.ir.parameters)
    with pytest.raises(ArchError, match="holds another framework's weights") as e:
        read_checkpoint(tmp_path / "w.safetensors")               # no model: nothing to map onto
    assert "archdsl import-weights SPEC" in e.value.hint
    # --init is lenient: a model with another vocabulary keeps its own embedding (renamed)
    other = archdsl.compile("""import "std/transformer.arch"
      model GPT2(vocab: int = 50, ctx: int = 16, d: int = 16, layers: int = 2, heads: int = 2, ffn: int = 32) {
        input tokens: i64[N, T]
        wte = Embedding(vocab + 5, d, name="tokens")
        h = tokens -> wte -> PositionalEmbedding(ctx, d, name="wpe")
        h = h -> repeat layers { GPTBlock(d, heads, ffn, 0.0) } -> LayerNorm(name="ln_f")
        output logits = h -> Linear(vocab + 5, bias=false, tied=wte, name="lm_head")
      }""").model()
    other.ir.file = str(SPECS / "gpt.arch")                      # so the mapping beside gpt.arch applies
    weights = initialize(other.ir, 0)
    rep = init_from(tmp_path / "w.safetensors", other.ir, weights)
    assert rep.kept == ["tokens.weight"] and "transformer.wte.weight" in rep.unused
    np.testing.assert_array_equal(weights["ln_f.bias"], w["ln_f.bias"])


# -- the commands -------------------------------------------------------------------------------

def test_import_weights_writes_a_checkpoint_atomically(tmp_path, capsys, gpt, hf_tensors):
    save_file({**hf_tensors, "v_head.weight": np.zeros((1, 16), np.float32)}, str(tmp_path / "w.safetensors"))
    rc, out, err = cli(capsys, "import-weights", SPECS / "gpt.arch", tmp_path / "w.safetensors", "-m", "GPT2", *SMALL,
                       "-o", tmp_path / "gpt.npz")
    assert rc == 0, err
    assert "safetensors file" in out and "read 36 parameters through the mapping gpt.map" in out
    assert "unused in the checkpoint (1): v_head.weight" in err
    ck = read_checkpoint(tmp_path / "gpt.npz")
    assert not ck.is_full and ck.meta["kind"] == "weights" and ck.meta["source"].endswith("w.safetensors")
    assert not list(tmp_path.glob(".*tmp*"))
    # the written file is ordinary weights for --weights (and refused by --resume)
    rc, out, err = cli(capsys, "export", SPECS / "gpt.arch", "-m", "GPT2", *SMALL, "--weights", tmp_path / "gpt.npz",
                       "-o", tmp_path / "gpt.onnx")
    assert rc == 0, err
    from archdsl.train.loop import train
    with pytest.raises(ArchError, match="holds weights only; --resume needs a training checkpoint"):
        train(gpt, None, resume=tmp_path / "gpt.npz")


def test_import_weights_to_onnx_and_export_weights_back(tmp_path, capsys, gpt, hf_tensors):
    save_file(hf_tensors, str(tmp_path / "w.safetensors"))
    rc, out, err = cli(capsys, "import-weights", SPECS / "gpt.arch", tmp_path / "w.safetensors", "-m", "GPT2", *SMALL,
                       "-o", tmp_path / "gpt.onnx")
    assert rc == 0, err
    import onnx
    proto = onnx.load(str(tmp_path / "gpt.onnx"))
    x = {"tokens": np.random.default_rng(0).integers(0, 50, (2, 7))}
    w = load_weights(tmp_path / "w.safetensors", gpt.ir)
    np.testing.assert_allclose(ort_run(proto, x)["logits"], gpt.executor(w).run(x)["logits"], atol=1e-4)
    # and back out: a folder a Hugging Face loader reads, the same tensors as the source
    rc, out, err = cli(capsys, "export-weights", SPECS / "gpt.arch", "-m", "GPT2", *SMALL, "--weights",
                       tmp_path / "w.safetensors", "-o", tmp_path / "hf")
    assert rc == 0, err
    back = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert back.keys() == hf_tensors.keys() | {"lm_head.weight"}
    for k, a in hf_tensors.items():
        np.testing.assert_array_equal(back[k], a)
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["n_layer"] == 2 and cfg["n_embd"] == 16 and cfg["architectures"] == ["GPT2LMHeadModel"]
    assert cfg["activation_function"] == "gelu_new"


def test_command_errors_exit_1_without_a_traceback(tmp_path, capsys, hf_tensors):
    save_file(hf_tensors, str(tmp_path / "w.safetensors"))
    rc, out, err = cli(capsys, "import-weights", SPECS / "gpt.arch", tmp_path / "w.safetensors", "-m", "GPT2",
                       "-o", tmp_path / "gpt.npz")                    # the default, 12-layer GPT-2
    assert rc == 1 and "does not fit model GPT2" in err and "--set" in err
    assert not (tmp_path / "gpt.npz").exists()
    rc, out, err = cli(capsys, "import-weights", SPECS / "gpt.arch", tmp_path / "w.safetensors", "-o", tmp_path / "x.txt")
    assert rc == 1 and "expected an archdsl checkpoint (.npz) or an ONNX file" in err
    rc, out, err = cli(capsys, "export-weights", SPECS / "lenet5.arch", "--weights", tmp_path / "w.safetensors",
                       "-o", tmp_path / "x.safetensors")
    assert rc == 1 and "does not fit model LeNet5" in err


def test_verify_without_pytorch_names_the_fix(tmp_path, capsys, monkeypatch, hf_tensors):
    save_file(hf_tensors, str(tmp_path / "w.safetensors"))
    monkeypatch.setitem(sys.modules, "torch", None)
    rc, out, err = cli(capsys, "import-weights", SPECS / "gpt.arch", tmp_path / "w.safetensors", "-m", "GPT2", *SMALL,
                       "-o", tmp_path / "gpt.npz", "--verify")
    assert rc == 1 and "--verify (running the source model) needs PyTorch" in err
    assert "pip install 'archdsl[torch]'" in err and not (tmp_path / "gpt.npz").exists()
