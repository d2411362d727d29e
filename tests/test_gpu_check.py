"""tools/gpu_check.py in its smoke mode (--device cpu), so the GPU check is known to work before
anyone runs it on a GPU: every file variant of a small CNN and a small GPT exports, runs, agrees
with the NumPy engine within its tolerance, is timed, and no node is predicted on the CPU; GPT's
row in PyTorch eager (transformers, the weights through specs/gpt.map) agrees too. Timings are
printed, never asserted."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "tools" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_check_smoke_mode(tmp_path, capsys):
    tool = _tool()
    out = tmp_path / "rows.json"
    md = tmp_path / "table.md"
    code = tool.main(["--device", "cpu", "--specs", "lenet5", "gpt", "--models", "LeNet5", "GPTSmall",
                      "--batch", "1", "2", "--seq", "8", "--runs", "2", "--warmup", "0",
                      "--json", str(out), "--markdown", str(md)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    rows = json.loads(out.read_text())["rows"]
    variants = [(r["model"], r["variant"]) for r in rows]
    for model in ("LeNet5", "GPTSmall"):
        for v in ("opset 17", "opset 17 tf32", "newest", "fp16", "PyTorch eager"):
            assert (model, v) in variants
    for r in rows:
        if "skipped" in r:
            assert r["model"] == "LeNet5" and r["variant"] == "PyTorch eager"      # no weight mapping
            continue
        assert "error" not in r, r
        assert r["max_rel_error"] <= r["tolerance"], r
        assert set(r["p50_ms"]) == {"1", "2"}
        if r["variant"] != "PyTorch eager":
            assert r["predicted_cpu_nodes"] == [] and r["measured_cpu_nodes"] is None and r["strict"] == "n/a"
    newest = {r["model"]: r["opset"] for r in rows if r["variant"] == "newest"}
    assert newest["GPTSmall"] >= 23                   # the native Attention op has CUDA kernels
    table = md.read_text()
    assert table.startswith("| model | file | opset |") and len(table.strip().splitlines()) == len(rows) + 2
    assert "| gpt.GPTSmall | fp16 |" in printed


def test_no_cuda_provider_is_said_plainly(capsys):
    import onnxruntime as ort
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    assert _tool().main(["--specs", "lenet5"]) == 2
    assert "no CUDAExecutionProvider" in capsys.readouterr().err
