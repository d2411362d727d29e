"""Deployment on the CUDA provider, guarded without a GPU (archdsl/backends/onnx/placement.py):

- every model of every shipped spec, exported as `archdsl export` writes it (opset 17), has no
  node a CUDA session would leave to the CPU: no Gather (or other arithmetic) over a Shape
  output, no ConvTranspose with asymmetric pads, no op version without a CUDA kernel;
- `--target cuda` picks the newest opset at which that holds, and at the newest opset ONNX knows
  the lowerings still read no Shape output as data and pad no ConvTranspose asymmetrically
  (there only op versions the CUDA provider lacks, MaxPool-22 say, may remain: the target's
  reason not to go there);
- the placement model itself, on small graphs: ONNX Runtime's kernel-version rule, its
  CPU-preferred shape subgraphs, the CUDA provider's ConvTranspose and RNN restrictions;
- lowerings declared for a provider (`@lowering(providers=...)`) agree with the NumPy engine,
  run on the CPU provider.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import archdsl
from archdsl.backends.onnx import deploy, placement
from archdsl.backends.onnx.export import DEFAULT_OPSET, max_opset, to_onnx
from archdsl.errors import ArchError
from archdsl.ops.base import CUDA_PROVIDER, load_all
from harness import check_parity
from test_op_contract import sample_inputs, sample_model

SPECS = sorted(Path(__file__).resolve().parent.parent.joinpath("specs").glob("*.arch"))
CASES = [(p, n) for p in SPECS for n in archdsl.compile(p).model_names]
IDS = [f"{p.stem}-{n}" for p, n in CASES]


def _structural(proto) -> dict:
    fallbacks = placement.cuda_fallbacks(proto)
    return {"gathers over Shape": placement.gathers_over_shape(proto),
            "asymmetric ConvTranspose": placement.asymmetric_conv_transposes(proto),
            "shape arithmetic on the CPU": [str(f) for f in fallbacks if "host tensor" in f.reason],
            "all": fallbacks}


def _not_scan(fallbacks) -> list:
    """The fallbacks other than Scan nodes: ONNX Runtime's CUDA provider has no Scan-16 kernel
    (cuda_kernels.py), so a scanned cell runs on the CPU; everything else must stay on the GPU."""
    return [f for f in fallbacks if f.op_type != "Scan"]


@pytest.mark.parametrize("path, name", CASES, ids=IDS)
def test_every_model_runs_fully_on_cuda(path, name):
    # graph-only exports (to_onnx(data=False)): the same nodes, no weights to build or copy
    ir = archdsl.compile(path).model(name).ir
    scans = sum(n.op.name == "Scan" for n in ir.nodes)
    # the default export (portable, opset 17)
    found = _structural(to_onnx(ir, None, DEFAULT_OPSET, data=False))
    assert _not_scan(found["all"]) == [], "\n".join(map(str, found["all"]))
    assert len(found["all"]) == scans
    # the newest opset ONNX knows, with the CUDA lowerings: the lowerings' own properties hold
    found = _structural(to_onnx(ir, None, max_opset(), provider=CUDA_PROVIDER, data=False))
    for what in ("gathers over Shape", "asymmetric ConvTranspose", "shape arithmetic on the CPU"):
        assert found[what] == [], f"{what} at opset {max_opset()}: {found[what]}"
    # --target cuda: the newest opset whose op versions all have CUDA kernels, nothing on the CPU
    result = deploy.export(ir, None, target="cuda", data=False)
    assert _not_scan(result.fallbacks) == [], "\n".join(map(str, result.fallbacks))
    if scans:
        return
    assert DEFAULT_OPSET <= result.opset == result.proto.opset_import[0].version
    if result.opset < max_opset():      # the next opset up would put a node on the CPU
        up = to_onnx(ir, None, result.opset + 1, provider=CUDA_PROVIDER, data=False)
        assert placement.cuda_opset_ok({n.op_type for n in up.graph.node}, result.opset + 1)


# -- the placement model ------------------------------------------------------------------------

def _model(nodes, inputs, outputs, opset, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    return m


def _x(name="x", shape=("N", 8, 4), t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, list(shape))


def test_a_gather_over_a_shape_runs_on_the_cpu_and_shape_start_end_does_not():
    idx = helper.make_tensor("i", TensorProto.INT64, [1], [1])
    gathered = _model([helper.make_node("Shape", ["x"], ["s"], name="shape"),
                       helper.make_node("Gather", ["s", "i"], ["t"], axis=0, name="gather"),
                       helper.make_node("Expand", ["one", "t"], ["y"], name="expand")],
                      [_x()], [_x("y", ("T",), TensorProto.INT64)], 17,
                      [idx, helper.make_tensor("one", TensorProto.INT64, [1], [1])])
    found = placement.cuda_fallbacks(gathered)
    assert [f.node for f in found] == ["gather"]
    assert placement.gathers_over_shape(gathered) == ["gather"]
    sliced = _model([helper.make_node("Shape", ["x"], ["t"], start=1, end=2, name="shape"),
                     helper.make_node("Expand", ["one", "t"], ["y"], name="expand")],
                    [_x()], [_x("y", ("T",), TensorProto.INT64)], 17,
                    [helper.make_tensor("one", TensorProto.INT64, [1], [1])])
    assert placement.cuda_fallbacks(sliced) == []


def test_shape_arithmetic_spreads_until_a_kernel_reads_it_from_host_memory():
    # Concat of a dim with a constant, then Div: both CPU; the Reshape reading it is not
    m = _model([helper.make_node("Shape", ["x"], ["s"], start=0, end=1, name="shape"),
                helper.make_node("Concat", ["s", "c"], ["sc"], axis=0, name="concat"),
                helper.make_node("Div", ["sc", "two"], ["half"], name="div"),
                helper.make_node("Reshape", ["x", "half"], ["y"], name="reshape")],
               [_x()], [_x("y", ("A", "B"))], 17,
               [helper.make_tensor("c", TensorProto.INT64, [1], [32]),
                helper.make_tensor("two", TensorProto.INT64, [1], [1])])
    assert [f.node for f in placement.cuda_fallbacks(m)] == ["concat", "div"]


def test_half_precision_inputs_stay_on_the_gpu():
    # ONNX Runtime never moves a node with a float16 input to the CPU for being shape arithmetic
    m = _model([helper.make_node("Shape", ["x"], ["s"], name="shape"),
                helper.make_node("Cast", ["s"], ["sh"], to=TensorProto.FLOAT16, name="cast"),
                helper.make_node("Mul", ["sh", "k"], ["y"], name="mul")],
               [_x()], [_x("y", (3,), TensorProto.FLOAT16)], 17,
               [helper.make_tensor("k", TensorProto.FLOAT16, [1], [0])])
    assert [f.node for f in placement.cuda_fallbacks(m)] == ["cast"]


def test_an_open_ended_kernel_matches_its_own_version_only():
    assert placement.cuda_kernel("MaxPool", 12) is not None
    assert placement.cuda_kernel("MaxPool", 22) is None               # "12+" is MaxPool-12 only
    assert placement.cuda_kernel("Conv", 22) is not None and placement.cuda_kernel("Conv", 11) is not None
    assert placement.cuda_kernel("Reshape", 21) is not None            # [21, 22]
    assert placement.cuda_kernel("Mish", 22) is None                    # no CUDA kernel at all
    assert placement.cuda_kernel("Conv", 11, "bf16") is None and placement.cuda_kernel("Conv", 22, "bf16")
    assert placement.cuda_opset_ok({"MaxPool", "Relu"}, 21) == []
    assert placement.cuda_opset_ok({"MaxPool", "Relu"}, 22) == ["MaxPool"]
    assert placement.newest_cuda_opset({"MaxPool", "Relu"}, 28, 13) == 21


def test_conv_transpose_with_asymmetric_pads_and_default_rnn_cells():
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 2, 3, 3])
    asym = _model([helper.make_node("ConvTranspose", ["x", "w"], ["y"], pads=[1, 1, 0, 0], strides=[2, 2],
                                    name="ct")], [_x(shape=("N", 2, 4, 4)), w], [_x("y", ("N", 2, 8, 8))], 17)
    assert [f.node for f in placement.cuda_fallbacks(asym)] == ["ct"]
    assert placement.asymmetric_conv_transposes(asym) == ["ct"]
    gru = helper.make_node("GRU", ["x", "W", "R"], ["y"], hidden_size=2, name="gru")
    assert placement.declined(gru) is not None          # linear_before_reset=0: not cuDNN's GRU
    gru = helper.make_node("GRU", ["x", "W", "R"], ["y"], hidden_size=2, linear_before_reset=1, name="gru")
    assert placement.declined(gru) is None


def test_cuda_target_with_a_too_new_opset_reports_what_falls_back():
    cm = archdsl.compile(Path(__file__).resolve().parent.parent / "specs" / "digits_cnn.arch").model()
    result = deploy.export(cm.ir, cm.init_weights(0), target="cuda", opset=max_opset())
    assert result.opset == max_opset()
    assert any(f.op_type == "MaxPool" for f in result.fallbacks)
    (warning,) = result.warnings()
    assert "MaxPool-22" in warning and f"--opset {result.cuda_opset}" in warning
    assert result.cuda_opset < 22
    with pytest.raises(ArchError, match="unknown target"):
        deploy.export(cm.ir, cm.init_weights(0), target="tpu")


def test_lowering_for_a_provider_is_taken_only_for_that_provider():
    m, _ = sample_model("Flatten", 0)
    node = next(n for n in m.ir.nodes if n.kind == "Flatten")
    portable = node.op.lowering_for(node.app, max_opset())
    cuda = node.op.lowering_for(node.app, max_opset(), CUDA_PROVIDER)
    assert portable.__name__ == "lower" and cuda.__name__ == "lower_cuda"
    assert node.op.lowering_for(node.app, 20, CUDA_PROVIDER).__name__ == "lower"


PROVIDER_CASES = [(name, i, provider) for name, op in sorted(load_all().items())
                  for provider in sorted({p for low in op.lowerings for p in (low.providers or ())})
                  for i in range(len(op.samples))]


@pytest.mark.parametrize("name, i, provider", PROVIDER_CASES, ids=[f"{n}-{i}-{p[:4]}" for n, i, p in PROVIDER_CASES])
def test_provider_lowerings_match_numpy(name, i, provider):
    m, sample = sample_model(name, i)
    opsets = sorted({DEFAULT_OPSET, max_opset()} | {low.since for low in load_all()[name].lowerings
                                                     if low.providers and low.since <= max_opset()})
    check_parity(m.ir, sample_inputs(m, sample), opsets=opsets, provider=provider)


def test_cuda_target_files_are_valid_and_match_numpy():
    """What --target cuda writes passes the checker and agrees with the NumPy engine (run on the
    CPU provider; small specs whose lowerings cover the rest: convolutions, recurrent layers,
    attention, transposed convolutions)."""
    import onnxruntime as ort
    from test_onnx_specs import _inputs
    for stem in ("lenet5", "gpt_char", "dcgan_digits", "lstm_lm"):
        spec = archdsl.compile(Path(__file__).resolve().parent.parent / "specs" / f"{stem}.arch")
        for name in spec.model_names:
            cm = spec.model(name)
            weights = cm.init_weights(0)
            result = deploy.export(cm.ir, weights, target="cuda")
            onnx.checker.check_model(result.proto, full_check=True)
            feed = _inputs(cm.ir, {"N": 3, **{s: 9 for s in cm.ir.symbols() if s != "N"}}, 0)
            want = cm.executor(weights).run(feed)
            sess = ort.InferenceSession(result.proto.SerializeToString(), providers=["CPUExecutionProvider"])
            got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
            for k, v in want.items():
                np.testing.assert_allclose(got[k], v, atol=1e-4, rtol=1e-4, err_msg=f"{stem} {name} {k}")
