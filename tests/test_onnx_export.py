"""The ONNX exporter's promises beyond per-op parity: deterministic bytes, dynamic dims,
traceability (metadata, node names, FILE:LINE doc strings), a lean graph (no dead nodes, no
Dropout, no runtime Transpose for Linear, BatchNorm folded into Conv/Gemm), external data for
big models, opset checks, and the Python API end to end (CompiledModel.to_onnx -> Session)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import archdsl
from archdsl.backends.onnx import export as E
from archdsl.backends.onnx.export import DEFAULT_OPSET, MIN_OPSET, max_opset, to_onnx
from archdsl.errors import ArchError
from archdsl.runtime import Session

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
OPSETS = sorted({DEFAULT_OPSET, max_opset()})


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)     # spec paths in metadata and doc strings are relative


def compiled(text: str, tmp_path: Path, name: str = "m.arch", **overrides):
    p = tmp_path / name
    p.write_text(text)
    return archdsl.compile(p, **overrides)


def ort_run(proto_or_path, feeds):
    src = proto_or_path.SerializeToString() if hasattr(proto_or_path, "SerializeToString") else str(proto_or_path)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def dims(vi) -> list:
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in vi.type.tensor_type.shape.dim]


def stand_in_weights(m):
    """Tiny arrays under the parameter names: enough to look at a big model's graph quickly
    (values and shapes do not matter when the exporter is not asked to fold)."""
    return {k: np.zeros([1] * len(p.shape), np.float32) for k, p in m.ir.parameters.items()}


def op_types(proto) -> list[str]:
    return [n.op_type for n in proto.graph.node]


# -- determinism ------------------------------------------------------------------------------

def test_same_seed_same_bytes_different_seed_different_bytes(tmp_path):
    a = archdsl.compile("specs/resnet18.arch").model().to_onnx(tmp_path / "a.onnx", seed=3)
    # A fresh compile (new IR objects) of the same spec gives the same file.
    b = archdsl.compile("specs/resnet18.arch").model().to_onnx(tmp_path / "b.onnx", seed=3)
    c = archdsl.compile("specs/resnet18.arch").model().to_onnx(tmp_path / "c.onnx", seed=4)
    assert a.SerializeToString() == b.SerializeToString()
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert (tmp_path / "a.onnx").read_bytes() == a.SerializeToString()
    assert (tmp_path / "a.onnx").read_bytes() != (tmp_path / "c.onnx").read_bytes()
    # Same graph, different weights.
    assert op_types(a) == op_types(c)


def test_bytes_do_not_depend_on_the_checkout_location(tmp_path):
    """Imported files are named relative to the spec as given: no absolute paths in the file."""
    proto = archdsl.compile("specs/resnet18.arch").model().to_onnx()
    data = proto.SerializeToString()
    assert str(ROOT).encode() not in data
    assert {n.doc_string.rsplit(":", 1)[0] for n in proto.graph.node} == {"specs/resnet_blocks.arch",
                                                                            "specs/resnet18.arch"}


# -- dynamic dims -----------------------------------------------------------------------------

def test_symbolic_dims_are_dim_params_in_inputs_and_outputs(tmp_path):
    textcnn = archdsl.compile("specs/textcnn.arch").model().to_onnx()
    assert [dims(i) for i in textcnn.graph.input] == [["N", "T"]]
    assert [dims(o) for o in textcnn.graph.output] == [["N", 2]]
    lenet = archdsl.compile("specs/lenet5.arch").model().to_onnx()
    assert [dims(i) for i in lenet.graph.input] == [["N", 1, 32, 32]]
    assert [dims(o) for o in lenet.graph.output] == [["N", 10]]
    seq = compiled("model Seq { input x: f32[N, T, 8]\n  output y = x -> Linear(4) }", tmp_path).model()
    proto = seq.to_onnx()
    assert [dims(o) for o in proto.graph.output] == [["N", "T", 4]]
    w = seq.init_weights(0)
    for n, t in ((1, 3), (5, 11)):
        x = np.random.default_rng(n).standard_normal((n, t, 8)).astype(np.float32)
        got = ort_run(proto, {"x": x})["y"]
        np.testing.assert_allclose(got, x @ w["linear_1.weight"].T + w["linear_1.bias"], atol=1e-5, rtol=1e-5)


# -- traceability -----------------------------------------------------------------------------

def test_metadata_props_carry_version_spec_model_and_parameters():
    m = archdsl.compile("specs/alexnet.arch").model("AlexNet", classes=7, dropout=0.25)
    proto = to_onnx(m.ir, stand_in_weights(m), fold=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["archdsl_version"] == archdsl.__version__
    assert meta["spec_file"] == "specs/alexnet.arch"
    assert meta["model"] == "AlexNet"
    assert meta["param.classes"] == "7"
    assert meta["param.dropout"] == "0.25"
    assert proto.producer_name == "archdsl" and proto.producer_version == archdsl.__version__
    assert dims(proto.graph.output[0]) == ["N", 7]


def test_doc_strings_are_file_and_line_of_the_spec():
    m = archdsl.compile("specs/resnet18.arch").model()
    proto = m.to_onnx()
    by_name = {n.name: n for n in m.ir.nodes}
    for node in proto.graph.node:
        match = re.fullmatch(r"(.+\.arch):(\d+)", node.doc_string)
        assert match, f"{node.name}: doc_string {node.doc_string!r}"
        file, line = match.group(1), int(match.group(2))
        src = by_name[node.name.rsplit("/", 1)[0]]
        assert line == src.span.line
        assert Path(file).resolve() == Path(src.span.file).resolve()
        # The line really is where that layer is written.
        text = Path(file).read_text().splitlines()[line - 1]
        spellings = {src.kind, re.sub(r"\d+d$", "", src.kind)}       # Conv2d written as Conv2d
        assert any(w in text for w in spellings) or src.kind in ("Add", "Sub", "Mul"), (node.name, text)


def test_node_names_follow_the_spec_names():
    m = archdsl.compile("specs/resnet18.arch").model()
    proto = m.to_onnx()
    names = [n.name for n in proto.graph.node]
    assert len(set(names)) == len(names)
    assert "layer1.basicblock_1.conv2d_1/Conv" in names
    assert "layer2.basicblock_1.conv2d_3/Conv" in names          # the projection shortcut
    assert "fc/Gemm" in names
    ir_names = {n.name for n in m.ir.nodes}
    for n in proto.graph.node:
        prefix, op = n.name.rsplit("/", 1)
        assert prefix in ir_names, n.name
        assert op.startswith(n.op_type), n.name


# -- a lean graph -----------------------------------------------------------------------------

def _assert_no_dead_nodes(proto):
    consumed = {i for n in proto.graph.node for i in n.input if i}
    outputs = {o.name for o in proto.graph.output}
    for n in proto.graph.node:
        for o in n.output:
            assert o in consumed or o in outputs, f"dead output {o} of {n.name}"
    for t in proto.graph.initializer:
        assert t.name in consumed, f"unused initializer {t.name}"
    for i in proto.graph.input:
        assert i.name in consumed or i.name in outputs, f"unused input {i.name}"


@pytest.mark.parametrize("spec", ["lenet5", "resnet18", "textcnn"])
def test_no_dead_nodes_or_initializers(spec):
    m = archdsl.compile(f"specs/{spec}.arch").model()
    for opset in OPSETS:
        _assert_no_dead_nodes(to_onnx(m.ir, m.init_weights(0), opset=opset))


def test_unused_branch_is_pruned(tmp_path):
    m = compiled("model M { input x: f32[N, 4]\n  unused = x -> Linear(3) -> ReLU\n"
                 "  output y = x -> Linear(2) }", tmp_path).model()
    proto = m.to_onnx()
    assert op_types(proto) == ["Gemm"]
    _assert_no_dead_nodes(proto)


def test_inference_dropout_emits_no_node(tmp_path):
    m = compiled("model M { input x: f32[N, 4]\n  output y = x -> Linear(3) -> Dropout(0.3) -> ReLU }",
                 tmp_path).model()
    assert op_types(m.to_onnx()) == ["Gemm", "Relu"]
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(ort_run(m.to_onnx(), {"x": x})["y"], m.executor().run({"x": x})["y"], atol=1e-6)


@pytest.mark.parametrize("spec", ["alexnet", "vgg16", "textcnn"])
def test_shipped_dropouts_emit_no_node(spec):
    m = archdsl.compile(f"specs/{spec}.arch").model()
    assert any(n.kind == "Dropout" for n in m.ir.nodes)
    assert "Dropout" not in op_types(to_onnx(m.ir, stand_in_weights(m), fold=False))


def test_linear_on_3d_input_has_no_runtime_transpose_unless_tied(tmp_path):
    m = compiled("model M { input x: f32[N, T, 8]\n  output y = x -> Linear(4) }", tmp_path).model()
    proto = m.to_onnx()
    assert op_types(proto) == ["MatMul", "Add"]
    tied = compiled("""
model LM(vocab: int = 11, d: int = 8) {
  input tokens: i64[N, T]
  wte = Embedding(vocab, d)
  h = tokens -> wte
  output logits = h -> Linear(vocab, bias=false, tied=wte)
}""", tmp_path, "lm.arch").model()
    tp = tied.to_onnx()
    assert op_types(tp) == ["Gather", "Transpose", "MatMul"]
    assert len(tp.graph.initializer) == 1            # the table is stored once
    ids = np.random.default_rng(0).integers(0, 11, (2, 5)).astype(np.int64)
    ref = tied.executor().run({"tokens": ids})["logits"]
    np.testing.assert_allclose(ort_run(tp, {"tokens": ids})["logits"], ref, atol=1e-5, rtol=1e-5)


BN_SPEC = """
model Folds {
  input image: f32[N, 3, 9, 9]
  conv = Conv2d(4, 3, padding=1)
  a = image -> conv -> BatchNorm -> ReLU
  b = image -> conv -> BatchNorm              # the same (shared) conv, another BatchNorm
  c = image -> Conv2d(4, 3, padding=1, bias=false, groups=1) -> BatchNorm
  d = image -> ConvTranspose2d(4, 2, stride=2) -> BatchNorm -> MaxPool2d(2)
  e = image -> Conv2d(4, 1) -> ReLU -> BatchNorm   # after a ReLU: nothing to fold into
  output y = (a + b + c) -> Flatten -> Linear(6) -> BatchNorm1d -> ReLU
  output z = d + e -> Conv2d(4, 1)
  output w = image -> Conv2d(2, 1) -> BatchNorm
}
"""


def _random_bn(ir, weights, seed=0):
    rng = np.random.default_rng(seed)
    w = dict(weights)
    for node in ir.nodes:
        if node.kind.startswith("BatchNorm"):
            p = node.params
            c = w[p["weight"]].shape
            w[p["weight"]] = rng.uniform(0.5, 1.5, c).astype(np.float32)
            w[p["bias"]] = rng.normal(0, 0.5, c).astype(np.float32)
            w[p["running_mean"]] = rng.normal(0, 0.5, c).astype(np.float32)
            w[p["running_var"]] = rng.uniform(0.2, 2.0, c).astype(np.float32)
    return w


@pytest.mark.parametrize("opset", OPSETS)
def test_batchnorm_folds_into_conv_convtranspose_and_gemm(tmp_path, opset):
    m = compiled(BN_SPEC, tmp_path).model()
    w = _random_bn(m.ir, m.init_weights(0))
    x = {"image": np.random.default_rng(1).standard_normal((3, 3, 9, 9)).astype(np.float32)}
    ref = m.executor(w).run(x)
    folded = to_onnx(m.ir, w, opset=opset)
    plain = to_onnx(m.ir, w, opset=opset, fold=False)
    onnx.checker.check_model(folded, full_check=True)
    n_bn = sum(1 for n in m.ir.nodes if n.kind.startswith("BatchNorm"))
    assert op_types(plain).count("BatchNormalization") == n_bn
    # Only the BatchNorm after the ReLU remains.
    assert op_types(folded).count("BatchNormalization") == 1
    assert len(folded.graph.node) == len(plain.graph.node) - (n_bn - 1)
    _assert_no_dead_nodes(folded)
    for proto in (folded, plain):
        got = ort_run(proto, x)
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], atol=1e-4, rtol=1e-4, err_msg=k)
    # The folded convolution keeps its spec name, source line and output name.
    conv = next(n for n in folded.graph.node if n.name == "conv/Conv")
    assert conv.doc_string == f"{tmp_path / 'm.arch'}:5"
    assert list(conv.output) == ["conv/Conv:0"]
    kept = next(n for n in folded.graph.node if n.op_type == "BatchNormalization")
    assert {i for n in folded.graph.node for i in n.input if "BatchNormalization" in i} == set(kept.output)


def test_fold_keeps_batchnorm_when_conv_output_is_used_elsewhere(tmp_path):
    m = compiled("model M { input x: f32[N, 2, 5, 5]\n  c = x -> Conv2d(3, 3, padding=1)\n"
                 "  output y = c -> BatchNorm\n  output z = c -> ReLU }", tmp_path).model()
    w = _random_bn(m.ir, m.init_weights(0))
    proto = to_onnx(m.ir, w)
    assert op_types(proto) == ["Conv", "BatchNormalization", "Relu"]
    x = {"x": np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32)}
    ref = m.executor(w).run(x)
    got = ort_run(proto, x)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=1e-5, rtol=1e-5)


# -- external data ----------------------------------------------------------------------------

def test_threshold_is_a_module_constant_of_two_gigabytes():
    assert E.EXTERNAL_DATA_THRESHOLD <= 2**31 - 1
    assert E.EXTERNAL_DATA_THRESHOLD >= 1_000_000_000


def test_small_models_are_one_file(tmp_path):
    m = archdsl.compile("specs/lenet5.arch").model()
    m.to_onnx(tmp_path / "lenet.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet.onnx"]


def test_big_models_use_external_data_beside_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(E, "EXTERNAL_DATA_THRESHOLD", 10_000)
    m = archdsl.compile("specs/lenet5.arch").model()
    path = tmp_path / "lenet.onnx"
    proto = m.to_onnx(path, seed=0)
    inline = proto.SerializeToString()
    data = tmp_path / "lenet.onnx.data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet.onnx", "lenet.onnx.data"]
    assert data.stat().st_size > 200_000                 # 61,706 float32 weights
    assert path.stat().st_size < 20_000
    # The in-memory proto is untouched by saving.
    assert proto.SerializeToString() == inline
    # onnx loads it (and checks it from the path), ONNX Runtime and archdsl's Session run it.
    loaded = onnx.load(str(path))
    onnx.checker.check_model(str(path), full_check=True)
    assert {t.name: onnx.numpy_helper.to_array(t).tobytes() for t in loaded.graph.initializer} == \
           {t.name: onnx.numpy_helper.to_array(t).tobytes() for t in proto.graph.initializer}
    external = [t for t in onnx.load(str(path), load_external_data=False).graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and all(int({e.key: e.value for e in t.external_data}["offset"]) % E.EXTERNAL_ALIGNMENT == 0
                            for t in external)
    x = {"image": np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)}
    ref = m.executor().run(x)["logits"]
    np.testing.assert_allclose(ort_run(path, x)["logits"], ref, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(Session(path, device="cpu").run(x)["logits"], ref, atol=1e-4, rtol=1e-4)
    # Saving again replaces both files atomically; no temporaries are left behind.
    m.to_onnx(path, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet.onnx", "lenet.onnx.data"]
    ref1 = m.executor(seed=1).run(x)["logits"]
    np.testing.assert_allclose(ort_run(path, x)["logits"], ref1, atol=1e-4, rtol=1e-4)


# -- opsets -----------------------------------------------------------------------------------

def test_max_opset_is_what_onnxruntime_runs():
    top = max_opset()
    assert top >= 23                                   # Attention, RMSNormalization are native
    m = archdsl.compile("specs/lenet5.arch").model()
    proto = m.to_onnx(opset=top)
    assert proto.opset_import[0].version == top
    ort_run(proto, {"image": np.zeros((1, 1, 32, 32), np.float32)})


@pytest.mark.parametrize("opset", [0, MIN_OPSET - 1, max_opset() + 1, 99])
def test_opset_out_of_range_is_an_arch_error(opset):
    m = archdsl.compile("specs/lenet5.arch").model()
    with pytest.raises(ArchError, match=rf"opset {opset} is not supported"):
        to_onnx(m.ir, m.init_weights(0), opset=opset)


def test_opset_may_be_any_integer_type():
    m = archdsl.compile("specs/mlp_xor.arch").model()
    assert to_onnx(m.ir, m.init_weights(0), opset=np.int64(18)).opset_import[0].version == 18
    with pytest.raises(ArchError, match="not supported"):
        to_onnx(m.ir, m.init_weights(0), opset=17.0)
    with pytest.raises(ArchError, match="not supported"):
        to_onnx(m.ir, m.init_weights(0), opset=True)


def test_opset_out_of_range_on_the_cli(tmp_path, capsys):
    from archdsl.cli import main
    rc = main(["export", "specs/lenet5.arch", "-o", str(tmp_path / "x.onnx"), "--opset", "99"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "opset 99 is not supported" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_ir_version_is_the_oldest_that_carries_the_opset():
    m = archdsl.compile("specs/mlp_xor.arch").model()
    assert m.to_onnx(opset=17).ir_version == 8
    for opset in OPSETS:
        proto = m.to_onnx(opset=opset)
        assert proto.ir_version == onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", opset)])


# -- the Python API end to end ----------------------------------------------------------------

def test_python_api_to_onnx_and_session_end_to_end(tmp_path):
    spec = archdsl.compile("specs/textcnn.arch")
    model = spec.model("TextCNN", classes=3)
    path = tmp_path / "textcnn.onnx"
    proto = model.to_onnx(path, opset=max_opset(), seed=7)
    assert path.read_bytes() == proto.SerializeToString()
    sess = Session(path, device="cpu")
    assert sess.device == "cpu"
    assert sess.input_names == ["tokens"] and sess.output_names == ["logits"]
    assert sess.inputs[0].shape == ("N", "T")
    ex = model.executor(seed=7)
    for n, t in ((1, 5), (4, 23)):
        ids = np.random.default_rng(t).integers(0, 5000, (n, t))
        out = sess.run({"tokens": ids})["logits"]
        assert out.shape == (n, 3)
        np.testing.assert_allclose(out, ex.run({"tokens": ids})["logits"], atol=1e-4, rtol=1e-4)
    with pytest.raises(ArchError, match="tokens"):
        sess.run({"tokens": np.zeros((2, 5), np.float32)})


def test_cli_export_then_run(tmp_path, capsys):
    from archdsl.cli import main
    out = tmp_path / "lenet.onnx"
    assert main(["export", "specs/lenet5.arch", "-o", str(out), "--seed", "2"]) == 0
    assert "wrote" in capsys.readouterr().out
    x = tmp_path / "x.npy"
    np.save(x, np.ones((3, 1, 32, 32), np.float32))
    res = tmp_path / "y.npz"
    assert main(["run", str(out), "--input", f"image={x}", "-o", str(res), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "logits" in printed and "[3, 10]" in printed
    m = archdsl.compile("specs/lenet5.arch").model()
    ref = m.executor(seed=2).run({"image": np.ones((3, 1, 32, 32), np.float32)})["logits"]
    with np.load(res) as z:
        np.testing.assert_allclose(z["logits"], ref, atol=1e-4, rtol=1e-4)
    assert os.path.getsize(out) > 200_000
