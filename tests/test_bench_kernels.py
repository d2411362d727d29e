"""bench/bench_kernels.py's sections run on tiny sizes and cross-check their alternatives (a smoke
run: no timing is asserted)."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench_kernels as B  # noqa: E402


def test_sections_run_and_agree(monkeypatch):
    monkeypatch.setattr(B, "GEMMS", [(300, 64, 16, "tiny thin product")])
    try:
        import torch
    except ImportError:
        torch = None
    rows = B.gemm_rows(1, torch) + B.copy_rows(1) + B.select_rows(1) + B.recurrent_rows(1, torch, N=2, T=3, C=4, H=8)
    text = "\n".join(rows)
    assert "300 × 64 × 16" in text and "LSTM forward + backward" in text and "GRU" in text
    assert all(r.startswith("|") for r in rows)


def test_compiled_kernels_section_runs_and_agrees():
    try:
        import torch
    except ImportError:
        torch = None
    rows = B.compiled_rows(1, torch, bn=(2, 8, 6, 6), ln=(40, 16), params=5000)
    text = "\n".join(rows)
    assert all(r.startswith("|") for r in rows) or "not installed" in text
    if "not installed" not in text:
        assert "batch norm" in text and "layer norm" in text and "ReLU" in text and "Adam update" in text
