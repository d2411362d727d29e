"""Serving: `archdsl bench`, sampling with state and logits kept on the device (lm.DevicePicker),
`archdsl run --precision`, and `archdsl export --target/--precision` from the command line. Device
paths run on ONNX Runtime's CPU provider here (IOBinding works there too); nothing is timed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import archdsl
from archdsl.backends.onnx import placement
from archdsl.benchmark import bench, bench_inputs
from archdsl.cli import main
from archdsl.errors import ArchError
from archdsl.passes.init import initialize
from archdsl.runtime import Session
from archdsl.sample.lm import Runner, generate_ids, picker_model

SPECS = Path(__file__).resolve().parent.parent / "specs"


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("stem, name, kw", [("lstm_lm", "LstmLM", dict(hidden=16, embed=8)),
                                            ("gpt_char", "GPTChar", {}), ("deep_lstm", None, {})])
@pytest.mark.parametrize("temperature, top_k", [(0.0, None), (0.8, None), (1.0, 3)])
def test_sampling_on_the_device_picks_what_the_host_picks(stem, name, kw, temperature, top_k):
    m = archdsl.compile(SPECS / f"{stem}.arch").model(name, **kw)
    w = initialize(m.ir, 5)
    prompt = np.random.default_rng(0).integers(0, int(m.ir.outputs[0].type.shape[-1]), (2, 3))
    host = Runner(m.ir, w, engine="onnx", device="cpu")
    dev = Runner(m.ir, w, engine="onnx", device="cpu", on_device=True)
    ref = Runner(m.ir, w, engine="numpy")
    assert not host.on_device and dev.on_device and dev.picker(temperature, top_k) is not None
    ids = generate_ids(dev, prompt, 12, temperature, top_k, seed=7)
    assert ids.shape == (2, 12)
    np.testing.assert_array_equal(ids, generate_ids(host, prompt, 12, temperature, top_k, seed=7))
    np.testing.assert_array_equal(ids, generate_ids(ref, prompt, 12, temperature, top_k, seed=7))
    if dev.mode == "state":           # the states stayed in ONNX Runtime's memory between steps
        assert all(not isinstance(v, np.ndarray) for v in dev.states.values())


def test_the_picker_runs_on_cuda_entirely():
    for temperature, top_k in ((0.0, None), (0.7, None), (1.0, 5)):
        proto = picker_model(50, "tensor(float)", temperature, top_k)
        onnx.checker.check_model(proto, full_check=True)
        assert placement.cuda_fallbacks(proto) == []
    assert placement.cuda_fallbacks(picker_model(50, "tensor(float16)", 1.0, 5)) == []


def test_numpy_engine_has_no_device():
    m = archdsl.compile(SPECS / "lstm_lm.arch").model(hidden=8, embed=4)
    with pytest.raises(ArchError, match="NumPy engine"):
        Runner(m.ir, initialize(m.ir, 0), engine="numpy", on_device=True)


def test_bench_on_the_cpu_provider(tmp_path, capsys):
    path = tmp_path / "gpt.onnx"
    archdsl.compile(SPECS / "gpt_char.arch").model().to_onnx(path)
    code, out, err = _cli(capsys, "bench", path, "--device", "cpu", "--batch", 1, 8, "--dim", "T=16",
                          "--runs", 3, "--warmup", 1)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith(f"bench {path} on cpu (CPUExecutionProvider), fp32")
    assert lines[1].split() == ["batch", "p50", "ms", "p90", "ms", "samples/s"]
    rows = [line.split() for line in lines[2:]]
    assert [int(r[0]) for r in rows] == [1, 8] and all(len(r) == 4 for r in rows)
    code, _, err = _cli(capsys, "bench", path, "--device", "cpu", "--runs", 1)
    assert code == 1 and "'T'" in err and "--dim T=" in err and "Traceback" not in err


def test_bench_inputs_and_copying_outputs(tmp_path):
    path = tmp_path / "lenet.onnx"
    archdsl.compile(SPECS / "lenet5.arch").model().to_onnx(path)
    sess = Session(path, device="cpu")
    feeds = bench_inputs(sess, 4, {})
    assert feeds["image"].shape == (4, 1, 32, 32) and feeds["image"].dtype == np.float32
    rows = bench(sess, [1, 2], runs=2, warmup=0, copy_outputs=True)
    assert [r.batch for r in rows] == [1, 2] and all(r.p50_ms <= r.p90_ms for r in rows)
    with pytest.raises(ArchError, match="batch sizes must be positive"):
        bench(sess, [0])


def test_run_with_half_precision(tmp_path, capsys):
    path = tmp_path / "mlp.onnx"
    archdsl.compile(SPECS / "digits_mlp.arch").model().to_onnx(path)
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32))
    code, out, err = _cli(capsys, "run", path, "--input", f"image={x}", "--device", "cpu", "--precision", "fp16")
    assert code == 0, err
    assert "on cpu (CPUExecutionProvider), fp16" in out


def test_export_cli_targets_and_precisions(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    code, text, err = _cli(capsys, "export", SPECS / "digits_cnn.arch", "-o", out, "--target", "cuda")
    assert code == 0, err
    assert "for cuda (the newest opset whose op versions all have CUDA kernels)" in text and err == ""
    opset = onnx.load(out).opset_import[0].version
    assert f"opset {opset}" in text and placement.cuda_fallbacks(onnx.load(out)) == []
    code, text, err = _cli(capsys, "export", SPECS / "digits_cnn.arch", "-o", out, "--target", "cuda",
                           "--opset", 22)
    assert code == 0 and err.startswith("warning: a CUDA session would run") and "MaxPool-22" in err
    code, text, err = _cli(capsys, "export", SPECS / "digits_cnn.arch", "-o", out, "--precision", "fp16")
    assert code == 0 and "fp16 (float32 inputs and outputs)" in text
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in onnx.load(out).graph.initializer)
    code, text, err = _cli(capsys, "export", SPECS / "digits_cnn.arch", "-o", out, "--target", "cpu")
    from archdsl.backends.onnx.export import max_opset
    assert code == 0 and f"opset {max_opset()} for cpu" in text
    code, _, err = _cli(capsys, "export", SPECS / "digits_cnn.arch", "-o", out, "--half-io")
    assert code == 1 and "--half-io" in err and "Traceback" not in err
