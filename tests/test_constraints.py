"""Shape constraints: a U-Net's skip connection joins H with 2*(H//2), equal for even H only. The
compiler records that instead of refusing the model, refuses dims that can never agree, and every
runner (archdsl run, runtime.Session, the NumPy executor) checks the recorded constraints against
the input sizes before running, saying in words what does not fit."""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import archdsl
from archdsl.cli import main
from archdsl.errors import ArchError
from archdsl.ir.constraints import METADATA_KEY, Constraint, at_least, dumps, loads, pretty, relate
from archdsl.ir.types import Sym
from archdsl.runtime import Session
from harness import check_parity

UNET = """\
block Double(out: int) {
  input x
  output x -> Conv2d(out, 3, padding=1) -> ReLU -> Conv2d(out, 3, padding=1) -> ReLU
}

block Level(out: int, depth: int) {
  input x
  skip = x -> Double(out)
  inner = skip -> MaxPool2d(2) -> (Level(out * 2, depth - 1) if depth > 1 else Double(out * 2))
  up = inner -> ConvTranspose2d(out, 2, stride=2)
  output (skip, up) -> Concat(axis=1) -> Double(out)
}

model UNet(levels: int = 3, width: int = 2) {
  input image: f32[N, 1, H, W]
  output mask = image -> Level(width, levels) -> Conv2d(2, 1)
}
"""
H, W = Sym.named("H"), Sym.named("W")


@pytest.fixture(scope="module")
def unet_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("unet") / "unet.arch"
    path.write_text(UNET)
    return path


def test_relations_between_dims():
    assert relate(H, H) == "equal"
    assert relate(2 * (H // 2), H) == "maybe"               # H even
    assert relate(2 * (H // 2) + 2, H) == "differ"          # never: 2*(H//2) <= H
    assert relate(H, Sym.named("S")) == "differ"            # independent symbols stay an error
    assert relate(H + 1, H) == "differ" and relate(4, 5) == "differ"
    assert relate(64 * (H // 64), H) == "maybe"             # found among sizes up to 1024
    assert at_least(H, 1) == "always" and at_least(H - 2, 1) == "maybe" and at_least(3, 4) == "never"
    assert pretty(2 * (H // 2)) == "2*(H//2)" and pretty((H - 3) // 2 + 1) == "(H - 3)//2 + 1"


def test_unet_compiles_and_records_its_skip_constraints(unet_file):
    m = archdsl.compile(unet_file).model()
    cons = m.ir.constraints
    assert sorted(c.text() for c in cons) == sorted([
        "2*(H//2//2//2) = H//2//2", "2*(W//2//2//2) = W//2//2", "2*(H//2//2) = H//2", "2*(W//2//2) = W//2",
        "2*(H//2) = H", "2*(W//2) = W"])
    assert all(c.op == "Concat" and c.span.line == 11 and c.layer.endswith("concat_1") for c in cons)
    assert str(m.ir.outputs[0].type) == "f32[N, 2, H, W]"


def test_dims_that_can_never_agree_are_an_error():
    bad = UNET.replace("ConvTranspose2d(out, 2, stride=2)", "ConvTranspose2d(out, 4, stride=2)")
    with pytest.raises(ArchError) as e:
        archdsl.compile(bad).model()
    err = e.value.errors[0] if hasattr(e.value, "errors") else e.value
    assert err.message.startswith("Concat: input 1") and "differs from input 0" in err.message
    assert "in dim 2 (2*(((H)//2)//2)//2+2 vs ((H)//2)//2)" in err.message
    assert err.span.line == 11


def test_constraints_travel_in_the_onnx_metadata(unet_file, tmp_path):
    m = archdsl.compile(unet_file).model()
    proto = m.to_onnx(tmp_path / "unet.onnx")
    meta = {p.key: p.value for p in proto.metadata_props}
    back = loads(meta[METADATA_KEY])
    assert [c.text() for c in back] == [c.text() for c in m.ir.constraints]
    assert {c.where for c in back} == {f"{unet_file}:11"}
    assert back[0].holds({"H": 96}) is True and back[0].holds({"H": 100}) is False
    assert back[0].holds({"W": 100}) is None            # unbound: not judged
    assert loads("not json") == [] and loads('[{"lhs": 1}]') == []
    assert json.loads(dumps([Constraint(H, ">=", 8, "needs 8")]))[0]["relation"] == ">="


def test_session_refuses_sizes_that_break_a_constraint_before_running(unet_file, tmp_path, capfd):
    m = archdsl.compile(unet_file).model(levels=4)
    path = tmp_path / "unet4.onnx"
    m.to_onnx(path)
    sess = Session(path, device="cpu")
    with pytest.raises(ArchError) as e:
        sess.run({"image": np.zeros((1, 1, 100, 100), np.float32)})
    msg = e.value.message
    assert msg == "input 'image' (shape (1, 1, 100, 100)) does not fit model UNet: H must be a multiple of 16, got H = 100"
    assert f"Concat at {unet_file}:11" in e.value.hint and "H = 96 or 112 would fit" in e.value.hint
    assert "export bug" not in str(e.value) and "onnxruntime" not in capfd.readouterr().err
    with pytest.raises(ArchError, match="W must be a multiple of 16, got W = 40"):
        sess.run({"image": np.zeros((1, 1, 32, 40), np.float32)})


def test_sizes_that_fit_run_on_onnx_runtime_and_numpy_alike(unet_file):
    m = archdsl.compile(unet_file).model()
    rng = np.random.default_rng(0)
    for n, h, w in ((1, 16, 24), (3, 24, 8)):
        check_parity(m.ir, {"image": rng.standard_normal((n, 1, h, w)).astype(np.float32)})


def test_the_numpy_executor_checks_them_too(unet_file):
    m = archdsl.compile(unet_file).model()
    ex = m.executor()
    with pytest.raises(ArchError) as e:
        ex.run({"image": np.zeros((1, 1, 16, 20), np.float32)})
    assert "W must be a multiple of 8, got W = 20" in e.value.message
    assert e.value.span.file == str(unet_file) and e.value.span.line == 11


def test_archdsl_run_prints_the_constraint_and_no_raw_runtime_log(unet_file, tmp_path, capfd):
    onnx_path, npy = tmp_path / "u.onnx", tmp_path / "x.npy"
    assert main(["export", str(unet_file), "-o", str(onnx_path)]) == 0
    np.save(npy, np.zeros((2, 1, 20, 16), np.float32))
    capfd.readouterr()
    assert main(["run", str(onnx_path), "-i", f"image={npy}"]) == 1
    err = capfd.readouterr().err
    assert "does not fit model UNet: H must be a multiple of 8, got H = 20" in err
    assert "H = 16 or 24 would fit" in err
    assert "Traceback" not in err and "[E:onnxruntime" not in err and "export bug" not in err


def test_a_runtime_failure_in_a_foreign_file_is_not_called_an_archdsl_bug(tmp_path, capfd):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["A", "C"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "D"])
    out = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    g = helper.make_graph([helper.make_node("Concat", ["x", "y"], ["z"], axis=0)], "g", [x, y], [out])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    sess = Session(path, device="cpu")
    assert sess.constraints == []
    with pytest.raises(ArchError) as e:
        sess.run({"x": np.zeros((2, 3), np.float32), "y": np.zeros((2, 4), np.float32)})
    assert "ONNX Runtime failed" in e.value.message and "check the inputs" in e.value.hint
    assert "export bug" not in e.value.hint
    assert "[E:onnxruntime" not in capfd.readouterr().err
