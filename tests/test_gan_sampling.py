"""Sampling a trained generator: NumPy engine vs ONNX Runtime (in memory and an exported file),
.npy output, PNG image grids and scatter plots, and the errors of `sample_command`."""
from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

import archdsl
from archdsl.errors import ArchError
from archdsl.gan import generate, sample_command, train_gan
from archdsl.gan.image import image_grid, png_bytes, read_png, scatter, write_png

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A few steps of the real dcgan_digits pair (BatchNorm running statistics move off init)."""
    d = tmp_path_factory.mktemp("dcgan")
    pair = archdsl.compile(ROOT / "specs" / "dcgan_digits.arch").gan()
    real = np.tanh(np.random.default_rng(0).standard_normal((128, 1, 8, 8))).astype(np.float32)
    np.savez(d / "real.npz", image=real)
    train_gan(pair, d / "real.npz", run_dir=d / "run", steps=4, batch=32, quiet=True, log=lambda s: None)
    return pair, d


def args(**kw):
    base = dict(file=str(ROOT / "specs" / "dcgan_digits.arch"), weights=None, n=16, output=None, seed=0,
                device=None, model=None)
    base.update(kw)
    return types.SimpleNamespace(**base)


def sample(a) -> int:
    """`archdsl sample` on the gan of a.file, as the CLI's target does it."""
    return sample_command(a, archdsl.compile(a.file).gan(a.model))


def test_onnx_generator_equals_numpy_generator(digits_run, tmp_path):
    pair, d = digits_run
    from archdsl.gan.checkpoint import load_member
    w = load_member(d / "run" / "checkpoint.npz", pair.generator.ir)
    assert any(np.any(w[k] != 0) for k in w if k.endswith("running_mean"))
    np_s, info = generate(pair, w, n=200, seed=5, device="numpy")
    assert info["engine"] == "NumPy engine" and np_s.shape == (200, 1, 8, 8) and np_s.dtype == np.float32
    ort_s, info = generate(pair, w, n=200, seed=5, device="cpu")
    assert info["engine"] == "ONNX Runtime" and info["device"] == "cpu"
    np.testing.assert_allclose(ort_s, np_s, atol=1e-4, rtol=0)
    pair.generator.to_onnx(tmp_path / "g.onnx", weights=w)
    file_s, _ = generate(pair, None, n=200, seed=5, device="auto", onnx=str(tmp_path / "g.onnx"))
    np.testing.assert_allclose(file_s, np_s, atol=1e-4, rtol=0)
    again, _ = generate(pair, w, n=200, seed=5)
    np.testing.assert_array_equal(again, np_s)                   # seeded noise
    other, _ = generate(pair, w, n=200, seed=6)
    assert np.abs(other - np_s).max() > 0.01


def test_sample_command_npy_and_png(digits_run, tmp_path, capsys):
    pair, d = digits_run
    ck = d / "run" / "checkpoint.npz"
    assert sample(args(weights=str(ck), n=10, output=str(tmp_path / "s.npy"))) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "NumPy engine" in out and "generator Generator of gan Digits" in out
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (10, 1, 8, 8) and -1 <= s.min() and s.max() <= 1
    assert sample(args(weights=str(d / "run" / "generator.npz"), n=10, output=str(tmp_path / "t.npy"),
                               device="cpu")) == 0
    assert "ONNX Runtime on cpu" in capsys.readouterr().out
    np.testing.assert_allclose(np.load(tmp_path / "t.npy"), s, atol=1e-4)
    assert sample(args(weights=str(ck), n=64, output=str(tmp_path / "grid.png"))) == 0
    assert "image grid of 64 samples (8 per row" in capsys.readouterr().out
    img = read_png(tmp_path / "grid.png")
    assert img.shape == (8 * 33 + 1, 8 * 33 + 1) and img.dtype == np.uint8   # 8x8 tiles of 32 px + 1 px gaps


def test_sample_command_from_an_exported_onnx_file(digits_run, tmp_path, capsys):
    pair, d = digits_run
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "archdsl", "export", str(ROOT / "specs" / "dcgan_digits.arch"),
                        "--weights", str(d / "run" / "generator.npz"), "-o", str(tmp_path / "g.onnx")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    assert sample(args(weights=str(tmp_path / "g.onnx"), n=12, output=str(tmp_path / "o.npy"))) == 0
    assert "ONNX Runtime" in capsys.readouterr().out
    assert sample(args(weights=str(d / "run" / "checkpoint.npz"), n=12, output=str(tmp_path / "n.npy"))) == 0
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), np.load(tmp_path / "n.npy"), atol=1e-4)


def test_sample_command_errors(digits_run, tmp_path):
    pair, d = digits_run
    ck = str(d / "run" / "checkpoint.npz")
    with pytest.raises(ArchError, match="needs the trained generator: --weights"):
        sample(args(output=str(tmp_path / "x.npy")))
    with pytest.raises(ArchError, match="unknown format '.jpg'"):
        sample(args(weights=ck, output=str(tmp_path / "x.jpg")))
    with pytest.raises(ArchError, match="unknown device 'gpu'"):
        sample(args(weights=ck, output=str(tmp_path / "x.npy"), device="gpu"))
    with pytest.raises(ArchError, match="does not fit model Generator"):
        sample(args(weights=str(d / "run" / "discriminator.npz"), output=str(tmp_path / "x.npy")))
    with pytest.raises(ArchError, match="no ONNX file"):
        sample(args(weights=str(tmp_path / "missing.onnx"), output=str(tmp_path / "x.npy")))
    ring = str(ROOT / "specs" / "gan_ring.arch")
    with pytest.raises(ArchError, match="does not fit model Generator"):
        sample(args(file=ring, weights=ck, output=str(tmp_path / "x.npy")))


def test_ring_samples_draw_as_a_scatter_plot(tmp_path, capsys):
    pair = archdsl.compile(ROOT / "specs" / "gan_ring.arch").gan()
    w = pair.generator.init_weights(0)
    np.savez(tmp_path / "g.npz", **w)
    a = args(file=str(ROOT / "specs" / "gan_ring.arch"), weights=str(tmp_path / "g.npz"), n=500,
             output=str(tmp_path / "ring.png"))
    assert sample(a) == 0
    assert "scatter plot of 500 2-D samples" in capsys.readouterr().out
    img = read_png(tmp_path / "ring.png")
    assert img.shape == (480, 480) and (img < 100).any()


def test_image_grid_and_png_encoding(tmp_path):
    x = np.linspace(-1, 1, 5 * 3 * 4, dtype=np.float32).reshape(5, 1, 3, 4)
    g = image_grid(x, cols=3, scale=2, pad=1)
    assert g.shape == (2 * (6 + 1) + 1, 3 * (8 + 1) + 1)
    assert g[1, 1] == 0 and g[1 + 6 + 1 + 5, 1 + 9 + 7] == 255     # first pixel of the first tile; last of the last
    assert (g[:, 0] == 128).all()                                   # padding
    write_png(tmp_path / "g.png", g)
    np.testing.assert_array_equal(read_png(tmp_path / "g.png"), g)
    rgb = image_grid(np.random.default_rng(0).random((4, 3, 5, 5)), scale=1)
    assert rgb.shape == (2 * 6 + 1, 2 * 6 + 1, 3)
    np.testing.assert_array_equal(read_png_bytes(png_bytes(rgb), tmp_path), rgb)
    with pytest.raises(ArchError, match="are not images"):
        image_grid(np.zeros((4, 2)))
    s = scatter(np.array([[0.0, 0.0], [1.0, 1.0]]), size=11, lim=1.0, dot=1)
    assert s[0, 10] == 30 and s[5, 5] == 30


def read_png_bytes(data: bytes, tmp_path) -> np.ndarray:
    (tmp_path / "b.png").write_bytes(data)
    return read_png(tmp_path / "b.png")


def test_archdsl_sample_command_line(digits_run, tmp_path):
    import subprocess
    import sys
    pair, d = digits_run

    def run(*a):
        return subprocess.run([sys.executable, "-m", "archdsl", "sample", str(ROOT / "specs" / "dcgan_digits.arch"),
                               *map(str, a)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    p = run("--weights", d / "run", "-n", 16, "-o", tmp_path / "a.png")
    assert p.returncode == 0, p.stderr
    assert "image grid of 16 samples" in p.stdout and read_png(tmp_path / "a.png").shape == (4 * 33 + 1, 4 * 33 + 1)
    p = run("--weights", d / "run" / "checkpoint.npz", "-n", 16, "--device", "cpu", "--seed", 3, "-o", tmp_path / "b.npy")
    assert p.returncode == 0, p.stderr
    p = run("--weights", d / "run" / "checkpoint.npz", "-n", 16, "--seed", 3, "-o", tmp_path / "c.npy")
    assert p.returncode == 0, p.stderr
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), np.load(tmp_path / "c.npy"), atol=1e-4)
    p = run("-n", 4, "-o", tmp_path / "d.npy")
    assert p.returncode == 1 and "--weights" in p.stderr and "Traceback" not in p.stderr


def test_sample_count_is_checked_against_the_memory_limit(digits_run, tmp_path):
    # issue 13: `-n 100000000` asked for gigabytes of noise and samples and died in an allocation
    pair, d = digits_run
    with pytest.raises(ArchError) as ei:
        sample(args(weights=str(d / "run" / "checkpoint.npz"), n=10 ** 12, output=str(tmp_path / "s.npy")))
    assert "drawing 1,000,000,000,000 samples needs about" in ei.value.message and "-n" in ei.value.hint
    assert not (tmp_path / "s.npy").exists()
