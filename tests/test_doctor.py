"""archdsl.doctor: every item is reported; missing or broken pieces are flagged with a way out."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort

import archdsl
from archdsl import doctor
from archdsl.doctor import doctor_report, format_doctor

ITEMS = ["archdsl", "python", "numpy", "onnx", "onnxruntime", "execution providers", "cuda",
         "graphviz (python)", "dot", "torch", "numba"]


def rows_by_item(rows=None):
    rows = doctor_report() if rows is None else rows
    return {item: (detail, ok) for item, detail, ok in rows}


def test_report_shape_and_items():
    rows = doctor_report()
    assert all(isinstance(r, tuple) and len(r) == 3 and isinstance(r[2], bool) for r in rows)
    assert [r[0] for r in rows] == ITEMS


def test_versions_reported():
    r = rows_by_item()
    assert r["archdsl"][0].startswith(archdsl.__version__)
    assert r["python"][0].startswith(".".join(map(str, sys.version_info[:3])))
    assert r["numpy"] == (np.__version__, True)
    assert onnx.__version__ in r["onnx"][0] and "max opset" in r["onnx"][0]
    assert ort.__version__ in r["onnxruntime"][0]
    assert "onnxruntime" in r["onnxruntime"][0]  # the distribution name
    assert "CPUExecutionProvider" in r["execution providers"][0] and r["execution providers"][1]


def test_format_mentions_every_item():
    text = format_doctor()
    for item in ITEMS:
        assert item in text
    last = text.splitlines()[-1]
    assert last == "everything archdsl needs is in place" or "problem" in last


def test_format_marks_problems():
    text = format_doctor([("numpy", "2.0", True), ("dot", "not found", False)])
    lines = text.splitlines()
    assert lines[0].startswith("ok") and lines[1].startswith("!!")
    assert lines[-1] == "1 problem: dot"


def test_no_cuda_on_cpu_build_is_fine(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(doctor, "_dist_version", lambda d: "1.31.1" if d == "onnxruntime" else None)
    detail, ok = rows_by_item()["cuda"]
    assert ok and "not available" in detail and "make gpu" in detail


def test_cuda_listed_but_falls_back(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    real = ort.InferenceSession

    def fake(model, sess_options=None, providers=None, provider_options=None):
        return real(model, sess_options=sess_options, providers=["CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", fake)
    detail, ok = rows_by_item()["cuda"]
    assert not ok and "not usable" in detail and "fell back" in detail


def test_cuda_usable(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    real = ort.InferenceSession

    class Claims:
        def __init__(self, s):
            self.s = s

        def __getattr__(self, k):
            return getattr(self.s, k)

        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def fake(model, sess_options=None, providers=None, provider_options=None):
        return Claims(real(model, sess_options=sess_options, providers=["CPUExecutionProvider"]))
    monkeypatch.setattr(ort, "InferenceSession", fake)
    detail, ok = rows_by_item()["cuda"]
    assert ok and detail.startswith("usable")


def test_both_onnxruntime_packages_conflict(monkeypatch):
    monkeypatch.setattr(doctor, "_dist_version",
                        lambda d: {"onnxruntime": "1.31.1", "onnxruntime-gpu": "1.31.1"}.get(d))
    detail, ok = rows_by_item()["onnxruntime"]
    assert not ok and "CONFLICT" in detail and "onnxruntime-gpu 1.31.1" in detail and "uninstall" in detail


def test_gpu_package_reported(monkeypatch):
    monkeypatch.setattr(doctor, "_dist_version", lambda d: "1.31.1" if d == "onnxruntime-gpu" else None)
    detail, ok = rows_by_item()["onnxruntime"]
    assert ok and "(onnxruntime-gpu 1.31.1)" in detail


def test_dot_missing(monkeypatch):
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    detail, ok = rows_by_item()["dot"]
    assert not ok and "not found" in detail and "graphviz" in detail.lower()


def test_dot_version_and_failure(monkeypatch):
    monkeypatch.setattr(doctor.shutil, "which", lambda name: "/opt/bin/dot")

    def ok_run(cmd, **kw):
        assert cmd == ["/opt/bin/dot", "-V"]
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="dot - graphviz version 9.0.0 (0)\n")
    monkeypatch.setattr(doctor.subprocess, "run", ok_run)
    assert rows_by_item()["dot"] == ("dot - graphviz version 9.0.0 (0) (/opt/bin/dot)", True)

    def broken(cmd, **kw):
        raise OSError("Exec format error")
    monkeypatch.setattr(doctor.subprocess, "run", broken)
    detail, ok = rows_by_item()["dot"]
    assert not ok and "cannot run" in detail


def test_graphviz_python_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)  # makes `import graphviz` fail
    detail, ok = rows_by_item()["graphviz (python)"]
    assert not ok and "pip install graphviz" in detail


def test_torch_is_optional(monkeypatch):
    real = doctor._dist_version
    monkeypatch.setattr(doctor, "_dist_version", lambda d: None if d == "torch" else real(d))
    detail, ok = rows_by_item()["torch"]
    assert ok and "not installed" in detail and "optional" in detail


def test_numba_is_optional(monkeypatch):
    real = doctor._dist_version
    monkeypatch.setattr(doctor, "_dist_version", lambda d: None if d == "numba" else real(d))
    detail, ok = rows_by_item()["numba"]
    assert ok and "not installed" in detail and "archdsl[fast]" in detail


def test_numba_turned_off(monkeypatch):
    monkeypatch.setattr(doctor, "_dist_version", lambda d: "0.68.1" if d == "numba" else None)
    monkeypatch.setenv("ARCHDSL_JIT", "numpy")
    assert rows_by_item()["numba"] == ("0.68.1: compiled kernels off (ARCHDSL_JIT=numpy)", True)


def test_onnxruntime_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    r = rows_by_item()
    detail, ok = r["onnxruntime"]
    assert not ok and "not importable" in detail and "pip install onnxruntime" in detail
    assert [row[0] for row in doctor_report()] == ITEMS  # the same rows, each saying why
    assert "not importable" in r["execution providers"][0] and "not importable" in r["cuda"][0]
