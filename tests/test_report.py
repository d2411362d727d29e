"""`archdsl report` and notebook display: a self-contained HTML page, checked in a real headless
Chromium (Debian's `chromium` package) by reading the rendered DOM and the pixels of a screenshot."""
from __future__ import annotations

import argparse
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

import archdsl
from archdsl.authoring.cli import add_commands
from archdsl.authoring.report import model_html, report_html, write_report
from archdsl.errors import ArchError

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(ROOT.joinpath("specs").glob("*.arch"))
MODEL_SPECS = [p for p in SPECS if re.search(r"^model ", p.read_text(), re.M)]
HAS_DOT = shutil.which("dot") is not None
CHROMIUM = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome")
                 if shutil.which(b)), None)


def external_references(page: str) -> list[str]:
    """Anything the page would fetch: src/href other than in-page anchors, stylesheets, scripts."""
    refs = re.findall(r"""\b(?:src|href|xlink:href)\s*=\s*["']([^"']*)["']""", page)
    bad = [r for r in refs if not r.startswith("#")]
    bad += re.findall(r"<(?:script|link|iframe|img)\b", page)
    bad += re.findall(r"url\(", page)
    return bad


@pytest.fixture(scope="module")
def lenet_page() -> str:
    return report_html(archdsl.compile(ROOT / "specs" / "lenet5.arch"))


def test_lenet_report_content(lenet_page):
    page = lenet_page
    assert page.startswith("<!DOCTYPE html>")
    assert '<table class="summary">' in page
    for layer in ("conv2d_1", "avgpool2d_2", "linear_3"):
        assert f">{layer}</td>" in page
    assert "61,706" in page and "416,520 (0.42 M)" in page
    assert "H = W = (32 + 2\u00b70 \u2212 5)/1 + 1 = 28" in page              # explained shapes
    assert "6\u00b7(1\u00b75\u00b75) + 6 = 156" in page
    assert "Receptive fields" in page and "RF 16\u00d716" in page
    assert 'id="source"' in page and "LeNet-5 (LeCun et al., 1998)" in page   # the spec, highlighted
    assert re.search(r'<span style="[^"]*">Conv2d</span>', page)
    if HAS_DOT:
        assert page.count("<svg") == 1
    assert external_references(page) == []


def test_imports_and_recurrent_models_in_the_report():
    page = report_html(archdsl.compile(ROOT / "specs" / "resnet18.arch"))
    assert "<summary>resnet_blocks.arch (imported)</summary>" in page and "BasicBlock" in page
    assert "<summary>std/transformer.arch (imported)</summary>" in report_html(archdsl.compile(ROOT / "specs" / "gpt.arch"))
    assert "layer1.basicblock_1" in page          # block instances as header rows
    page = report_html(archdsl.compile(ROOT / "specs" / "elman_lm.arch"))
    assert "Unrolled over three time steps" in page or not HAS_DOT
    assert external_references(page) == []


@pytest.mark.parametrize("path", MODEL_SPECS, ids=lambda p: p.stem)
def test_every_spec_gets_a_report(path, tmp_path):
    try:
        spec = archdsl.compile(path)
    except ArchError as err:
        pytest.skip(f"{path.name} does not compile: {err.message}")
    out = write_report(spec, tmp_path / "r.html")
    page = out.read_text()
    for m in spec.models():
        assert f">model {m.name}</h2>" in page
        assert f"{m.param_count:,}" in page
    assert external_references(page) == []
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]     # written atomically: no leftovers


def test_report_command(tmp_path, capsys):
    ap = argparse.ArgumentParser(prog="archdsl")
    add_commands(ap.add_subparsers())
    out = tmp_path / "lenet.html"
    args = ap.parse_args(["report", str(ROOT / "specs" / "lenet5.arch"), "--set", "classes=3", "-o", str(out)])
    assert args.fn(args) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    page = out.read_text()
    assert "parameters: classes = 3" in page and f'<td class="num">{61_706 - 7 * 85:,}</td>' in page
    args = ap.parse_args(["report", str(ROOT / "specs" / "lenet5.arch"), "-m", "Nope", "-o", str(out)])
    with pytest.raises(ArchError, match="no model named 'Nope'"):
        args.fn(args)


def test_notebook_html():
    m = archdsl.compile(ROOT / "specs" / "lenet5.arch").model()
    page = m._repr_html_()
    assert page == model_html(m)
    assert '<table class="summary">' in page and ">conv2d_1</td>" in page and "61,706" in page
    if HAS_DOT:
        assert "<svg" in page and page.count("<svg") == 1
    assert external_references(page) == []
    assert m._repr_svg_() is None or m._repr_svg_().lstrip().startswith(("<?xml", "<svg", "<!--"))


# -- in a real browser --------------------------------------------------------------------------
def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, timeout=180)


def read_png(path: Path) -> np.ndarray:
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes) into an [H, W, C] uint8 array."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h = struct.unpack(">II", body[:8])
            depth, color = body[8], body[9]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    assert depth == 8 and color in (2, 6), (depth, color)
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * bpp
    out = np.zeros((h, stride), np.uint8)
    prev = np.zeros(stride, np.int64)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        if f == 0:
            cur = line
        elif f == 1:        # Sub: running sums per channel
            cur = np.cumsum(line.reshape(w, bpp), axis=0).reshape(-1) % 256
        elif f == 2:        # Up
            cur = (line + prev) % 256
        else:               # Average and Paeth depend on the pixel to the left: byte by byte
            cur = np.zeros(stride, np.int64)
            lst, up = line.tolist(), prev.tolist()
            res = [0] * stride
            for i in range(stride):
                a = res[i - bpp] if i >= bpp else 0
                b = up[i]
                if f == 3:
                    res[i] = (lst[i] + (a + b) // 2) % 256
                else:
                    c = up[i - bpp] if i >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                    res[i] = (lst[i] + pred) % 256
            cur = np.array(res, np.int64)
        out[y] = cur
        prev = cur
    return out.reshape(h, w, bpp)


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium: apt-get install -y chromium")
def test_report_renders_in_chromium(tmp_path, lenet_page):
    page = tmp_path / "lenet5.html"
    page.write_text(lenet_page, encoding="utf-8")
    url = page.as_uri()

    dom = chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    html = dom.stdout.decode("utf-8")
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", html, re.S)
    cells = [re.sub(r"<[^>]+>", "", r) for r in rows]
    assert any(c.startswith("conv2d_1Conv2d(6, k=5)f32[N, 6, 28, 28]156117,600") for c in cells), cells[:5]
    assert any("Total params" in c and "61,706" in c for c in cells)
    if HAS_DOT:
        svg = re.search(r"<svg\b.*?</svg>", html, re.S)
        assert svg and "Conv2d(6, k=5)" in svg.group(0)
    assert "H = W = (32 + 2\u00b70 \u2212 5)/1 + 1 = 28" in html

    shot = tmp_path / "shot.png"
    r = chromium(tmp_path, "--window-size=1000,900", f"--screenshot={shot}", url)
    assert r.returncode == 0 and shot.exists(), r.stderr.decode(errors="replace")[-2000:]
    img = read_png(shot)[..., :3].astype(int)
    assert img.shape[:2] == (900, 1000)
    ink = (img.sum(axis=2) < 3 * 200).mean()           # dark pixels: text and lines
    assert ink > 0.005, ink
    colors = {tuple(c) for c in img.reshape(-1, 3)[::7]}
    assert len(colors) > 50                              # anti-aliased text, fills, edges: not blank
    if HAS_DOT:
        # the drawing's fills are on screen: an op box (#eef3fb) and the input oval (#e3f4e3)
        near = lambda rgb: (np.abs(img - np.array(rgb)).sum(axis=2) <= 6).sum()   # noqa: E731
        assert near((0xEE, 0xF3, 0xFB)) > 200 and near((0xE3, 0xF4, 0xE3)) > 200
