"""Half-precision exports (archdsl/backends/onnx/precision.py), run on ONNX Runtime's CPU provider,
which runs every op these models use in float16 (some by widening to float32 inside):

- every model of every shipped spec under 0.1 GMACs per sample (and ResNet-18), exported with
  --precision fp16, agrees with the float32 model within FP16_TOLERANCE of the output's scale;
  its weights are float16, its inputs and outputs float32 (float16 with half_io);
- bfloat16 files have bfloat16 weights rounded from the float32 values and Casts to bfloat16,
  and are written for the CUDA target only;
- Session(precision="fp16") converts a float32 file on load.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

import archdsl
from archdsl.backends.onnx import deploy
from archdsl.backends.onnx.precision import FP16_TOLERANCE, _to_bf16_bits, to_half
from archdsl.errors import ArchError
from archdsl.runtime import Session
from test_onnx_specs import _inputs

SPECS = Path(__file__).resolve().parent.parent / "specs"
HEAVY_MACS = 1e8


def _cases():
    out = []
    for path in sorted(SPECS.glob("*.arch")):
        spec = archdsl.compile(path)
        for name in spec.model_names:
            cm = spec.model(name)
            seq = {s: 16 for s in cm.ir.symbols() if s != "N"}
            if cm.cost(dims=seq, batch=1).macs < HEAVY_MACS or name == "ResNet18":
                out.append((path, name))
    return out


CASES = _cases()


def _run(proto, feed):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.mark.parametrize("path, name", CASES, ids=[f"{p.stem}-{n}" for p, n in CASES])
def test_fp16_export_matches_fp32(path, name):
    cm = archdsl.compile(path).model(name)
    weights = cm.init_weights(0)
    fp32 = deploy.export(cm.ir, weights).proto
    fp16 = deploy.export(cm.ir, weights, precision="fp16").proto
    onnx.checker.check_model(fp16, full_check=True)
    inits = fp16.graph.initializer
    assert any(t.data_type == TensorProto.FLOAT16 for t in inits)
    assert not [t.name for t in inits if t.data_type == TensorProto.FLOAT and np.prod(t.dims) > 16], \
        "weights left in float32"
    assert [i.type.tensor_type.elem_type for i in fp16.graph.input] == \
           [i.type.tensor_type.elem_type for i in fp32.graph.input]          # float32 in, float32 out
    assert [o.type.tensor_type.elem_type for o in fp16.graph.output] == \
           [o.type.tensor_type.elem_type for o in fp32.graph.output]
    feed = _inputs(cm.ir, {"N": 4, **{s: 12 for s in cm.ir.symbols() if s != "N"}}, seed=0)
    want, got = _run(fp32, feed), _run(fp16, feed)
    for k in want:
        assert got[k].dtype == want[k].dtype
        assert _rel(got[k], want[k]) <= FP16_TOLERANCE, (k, _rel(got[k], want[k]))


def test_half_io_and_the_original_stays_float32():
    cm = archdsl.compile(SPECS / "lenet5.arch").model()
    proto = cm.to_onnx()
    before = proto.SerializeToString()
    half = to_half(proto, "fp16", half_io=True)
    assert proto.SerializeToString() == before
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    got = _run(half, {"image": x.astype(np.float16)})["logits"]
    assert got.dtype == np.float16
    assert _rel(got, _run(proto, {"image": x})["logits"]) <= FP16_TOLERANCE
    assert {p.key: p.value for p in half.metadata_props}["archdsl.precision"] == "fp16"


def test_bf16_export_for_cuda():
    cm = archdsl.compile(SPECS / "lenet5.arch").model()
    weights = cm.init_weights(0)
    result = deploy.export(cm.ir, weights, target="cuda", precision="bf16")
    proto = result.proto
    onnx.checker.check_model(proto, full_check=True)
    conv_w = next(t for t in proto.graph.initializer if t.name.endswith("conv2d_1.weight"))
    assert conv_w.data_type == TensorProto.BFLOAT16
    # rounded to nearest even from the float32 weights, not from a float16 copy
    want = _to_bf16_bits(weights[next(k for k in weights if k.endswith("conv2d_1.weight"))])
    assert np.frombuffer(conv_w.raw_data, np.uint16).tolist() == want.ravel().tolist()
    assert any(n.op_type == "Cast" and n.attribute[0].i == TensorProto.BFLOAT16 for n in proto.graph.node)
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert result.fallbacks == []          # every op of LeNet-5 at its opset has a bfloat16 CUDA kernel
    with pytest.raises(ArchError, match="CUDA provider only"):
        deploy.export(cm.ir, weights, precision="bf16")
    with pytest.raises(ArchError, match="half-io"):
        deploy.export(cm.ir, weights, half_io=True)


def test_bf16_rounding():
    x = np.array([1.0, 1.00390625, 1.01171875, -2.5, 3.0e38, np.inf, np.nan], np.float32)
    bits = _to_bf16_bits(x)
    back = (bits.astype(np.uint32) << 16).view(np.float32)
    assert back[0] == 1.0 and back[1] == 1.0                  # a tie rounds to even
    assert back[2] == np.float32(1.015625)                    # above the tie rounds up
    assert back[3] == -2.5 and np.isinf(back[5]) and np.isnan(back[6])


def test_session_converts_to_fp16_on_load(tmp_path):
    cm = archdsl.compile(SPECS / "digits_cnn.arch").model()
    path = tmp_path / "m.onnx"
    cm.to_onnx(path)
    x = np.random.default_rng(1).standard_normal((3, 1, 8, 8)).astype(np.float32)
    full = Session(path, device="cpu").run({"image": x})
    half = Session(path, device="cpu", precision="fp16")
    assert half.precision == "fp16" and "fp16" in repr(half)
    got = half.run({"image": x})
    for k in full:
        assert got[k].dtype == np.float32
        assert 0 < _rel(got[k], full[k]) <= FP16_TOLERANCE       # really computed in float16
    with pytest.raises(ArchError, match="unknown precision"):
        Session(path, device="cpu", precision="int8")
