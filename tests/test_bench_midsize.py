"""bench/bench_midsize.py runs end to end on tiny sizes (a smoke run: no timing is asserted)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_quick_run_writes_its_report(tmp_path):
    """With PyTorch installed, the twins too (their first-step losses must match archdsl's)."""
    torch = "with-torch" if importlib.util.find_spec("torch") else "no-torch"
    out, raw = tmp_path / "midsize.md", tmp_path / "midsize.json"
    cmd = [sys.executable, str(ROOT / "bench" / "bench_midsize.py"), "--quick", "--threads", "1",
           "--out", str(out), "--json", str(raw)] + (["--no-torch"] if torch == "no-torch" else [])
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    data = json.loads(raw.read_text())
    engines = ["archdsl"] + (["torch"] if torch == "with-torch" else [])
    assert sorted(data) == sorted(["mlp", "encoder", "lstm", "resnet"])
    for key, r in data.items():
        assert sorted(r["first_loss"]) == sorted(engines)
        if torch == "with-torch":       # the twins compute the same function from the same weights
            assert r["first_loss"]["torch"] == pytest.approx(r["first_loss"]["archdsl"], rel=1e-4)
        for e in engines:
            t = r["timing"]["1"][e]
            assert t["wall"] > 0 and t["minflt"] >= 0
            m = r["memory"][e]
            assert m is not None and m["rss_growth_kib"] >= 0 and m["minflt"] >= 0
    text = out.read_text()
    assert "## Summary" in text and "CIFAR ResNet-18" in text
