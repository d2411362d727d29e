"""The command line, as a user runs it: exit codes, messages, no tracebacks, files written."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def run(*args, cwd=ROOT):
    p = subprocess.run([sys.executable, "-m", "archdsl", *map(str, args)], cwd=cwd, capture_output=True,
                       text=True, timeout=300)
    assert "Traceback" not in p.stderr, p.stderr
    return p


def test_check_prints_one_line_per_model():
    p = run("check", "specs/lenet5.arch", "specs/mlp_xor.arch")
    assert p.returncode == 0, p.stderr
    assert "specs/lenet5.arch: model LeNet5(image: f32[N, 1, 32, 32]) -> (logits: f32[N, 10])  ok" in p.stdout
    assert "model XorMLP(x: f32[N, 2]) -> (logit: f32[N, 1])  ok" in p.stdout


def test_check_reports_errors_with_position_and_exit_1(tmp_path):
    bad = tmp_path / "bad.arch"
    bad.write_text("model M {\n  input x: f32[N, 400]\n  x = x -> Linear(120) -> BatchNorm2d\n  output y = x\n}\n")
    p = run("check", bad)
    assert p.returncode == 1
    assert f"{bad}:3:27: error: BatchNorm2d: expects a [N, C, H, W] input, got f32[N, 120]" in p.stderr
    assert "^^^^^^^^^^^" in p.stderr and "hint: use BatchNorm1d (or BatchNorm) for a 2-D input" in p.stderr


def test_missing_file_is_an_error_not_a_traceback(tmp_path):
    p = run("check", tmp_path / "nope.arch")
    assert p.returncode == 1 and "no such file" in p.stderr


def test_summary_table_and_totals():
    p = run("summary", "specs/lenet5.arch")
    assert p.returncode == 0, p.stderr
    assert "Total params: 61,706" in p.stdout
    assert "Trainable params: 61,706" in p.stdout
    assert "MACs:" in p.stdout and "Activation memory" in p.stdout


def test_summary_set_and_json():
    p = run("summary", "specs/lenet5.arch", "--set", "classes=3", "--json")
    data = json.loads(p.stdout)
    assert data["total_params"] == 61_706 - 7 * 85
    p = run("summary", "specs/lenet5.arch", "--set", "clases=3")
    assert p.returncode == 1 and "did you mean 'classes'" in p.stderr


def test_render_svg_and_dot(tmp_path):
    p = run("render", "specs/resnet18.arch", "-o", tmp_path / "r.svg", "--rankdir", "LR")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "r.svg").read_text().count("<svg") == 1
    p = run("render", "specs/resnet18.arch", "-o", tmp_path / "r.dot", "--collapse")
    assert p.returncode == 0, p.stderr
    assert "digraph" in (tmp_path / "r.dot").read_text()


def test_export_then_run(tmp_path):
    onnx_path = tmp_path / "lenet.onnx"
    p = run("export", "specs/lenet5.arch", "-o", onnx_path, "--seed", "3")
    assert p.returncode == 0, p.stderr
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    p = run("run", onnx_path, "--input", f"image={tmp_path / 'x.npy'}", "-o", tmp_path / "out.npz")
    assert p.returncode == 0, p.stderr
    assert "logits: float32[2, 10]" in p.stdout
    assert np.load(tmp_path / "out.npz")["logits"].shape == (2, 10)


def test_doctor():
    p = run("doctor")
    assert p.returncode == 0 and "onnxruntime" in p.stdout


def test_module_and_console_script_agree():
    p = run("--version")
    assert p.returncode == 0 and "archdsl" in p.stdout
