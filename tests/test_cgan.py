"""Conditional GANs: gan sections whose generator and discriminator take conditions after their
first input (archdsl/gan/pair.py), fed from the data for the real batch and drawn for the
generated one (archdsl/gan/loop.py), bit-exact resume, `archdsl sample --class` on both engines
(archdsl/gan/sampling.py), and specs/cgan_digits.arch's per-class results at a smaller size."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import archdsl
from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.cli import main as cli_main
from archdsl.errors import ArchError
from archdsl.gan import generate, read_gan_checkpoint, train_gan
from archdsl.gan.image import read_png
from archdsl.train.checkpoint import read_checkpoint
from harness import example

ROOT = Path(__file__).resolve().parent.parent

COND = """
model G {
  input noise: f32[N, 3]
  input label: i64[N]
  c = label -> Embedding(6, 4)
  output x = (noise, c) -> Concat(axis=1) -> Linear(8) -> ReLU -> Linear(2)
}
model D {
  input x: f32[N, 2]
  input label: i64[N]
  c = label -> Embedding(6, 4)
  output score = (x, c) -> Concat(axis=1) -> Linear(8) -> LeakyReLU(0.2) -> Linear(1)
}
gan P { generator = G  discriminator = D  batch = 16  epochs = 3  seed = 1
        g_optimizer = Adam(lr=1e-2)  d_optimizer = Adam(lr=1e-2) }
"""


def labelled(n=96, seed=0):
    rng = np.random.default_rng(seed)
    label = rng.choice([0, 2, 5], n)                                # the classes the data has
    return {"x": (rng.standard_normal((n, 2)) + label[:, None]).astype(np.float32), "label": label.astype(np.int64)}


def quiet(**kw):
    return dict(quiet=True, log=lambda s: None, **kw)


def spy_discriminator(monkeypatch):
    seen = []
    forward = NumpyExecutor.forward

    def spy(self, inputs, **kw):
        if self.model.name in ("D", "Discriminator"):
            seen.append({k: np.asarray(getattr(v, "data", v)).copy() for k, v in inputs.items()})
        return forward(self, inputs, **kw)
    monkeypatch.setattr(NumpyExecutor, "forward", spy)
    return seen


def test_the_pair_knows_its_conditions():
    pair = archdsl.compile(COND).gan()
    assert [v.name for v in pair.condition_inputs] == ["label"] and pair.class_input.name == "label"
    assert archdsl.compile(ROOT / "specs" / "dcgan_digits.arch").gan().condition_inputs == []


@pytest.mark.parametrize("edit, needle", [
    (("  input label: i64[N]\n  c = label -> Embedding(6, 4)\n  output score = (x, c) -> Concat(axis=1)",
      "  output score = x"),
     r"G and discriminator D must take the same conditions after their first input; G takes label: i64\[N\], "
     "D takes none"),
    (("  input label: i64[N]\n  c = label -> Embedding(6, 4)\n  output score",
      "  input label: f32[N, 4]\n  c = label\n  output score"), r"D takes label: f32\[N, 4\]"),
    (("seed = 1", "seed = 1  pack = 2"), "pack = 2 packs unconditional samples; generator G is conditional"),
])
def test_pair_errors(edit, needle):
    text = COND.replace(*edit)
    assert text != COND
    with pytest.raises(ArchError, match=needle):
        archdsl.compile(text)


def test_real_labels_go_with_real_samples_and_generated_ones_are_drawn_uniformly(tmp_path, monkeypatch):
    pair = archdsl.compile(COND).gan()
    data = labelled()
    seen = spy_discriminator(monkeypatch)
    res = train_gan(pair, data, run_dir=tmp_path, **quiet())
    assert res.steps == 3 * (96 // 16) and np.isfinite(res.last["d_loss"])
    joint = [s for s in seen if len(s["x"]) == 32]                 # real and generated in one pass
    assert len(joint) == res.steps
    real_x = {tuple(r) for r in data["x"]}
    drawn = []
    for s in joint:
        x, lab = s["x"], s["label"]
        for row, k in zip(x[:16], lab[:16]):                         # each real sample with its own label
            i = np.flatnonzero((data["x"] == row).all(1))[0]
            assert tuple(row) in real_x and data["label"][i] == k
        drawn += lab[16:].tolist()
    counts = np.bincount(drawn, minlength=6)
    assert set(np.flatnonzero(counts)) == {0, 2, 5} and counts.min(where=counts > 0, initial=999) > 0.2 * len(drawn)
    assert read_checkpoint(tmp_path / "checkpoint.npz").meta["classes"] == {"label": [0, 2, 5]}


def test_any_conditioning_array_is_drawn_from_the_data(monkeypatch):
    text = COND.replace("input label: i64[N]\n  c = label -> Embedding(6, 4)", "input cond: f32[N, 4]\n  c = cond")
    pair = archdsl.compile(text).gan()
    assert pair.class_input is None
    cond = np.random.default_rng(2).standard_normal((96, 4)).astype(np.float32)
    seen = spy_discriminator(monkeypatch)
    train_gan(pair, {"x": labelled()["x"], "cond": cond}, steps=3, **quiet())
    rows = {tuple(r) for r in cond}
    assert all(tuple(r) in rows for s in seen for r in s["cond"])
    with pytest.raises(ArchError, match="no array 'cond'"):
        train_gan(pair, {"x": labelled()["x"]}, steps=1, **quiet())


def _same(a, b):
    ca, cb = read_checkpoint(a), read_checkpoint(b)
    for k in ca.weights:
        np.testing.assert_array_equal(ca.weights[k], cb.weights[k], err_msg=k)
    for k in ca.optim:
        np.testing.assert_array_equal(ca.optim[k], cb.optim[k], err_msg=k)
    assert ca.meta["rng"] == cb.meta["rng"]


def test_resume_is_bit_for_bit(tmp_path):
    stop = lambda k: lambda t, step, rec: t.request_stop() if step == k else None    # noqa: E731
    for name, pair, data in (
            ("mlp", archdsl.compile(COND).gan(), labelled()),
            ("dcgan", archdsl.compile(ROOT / "specs" / "cgan_digits.arch").gan(),      # BatchNorm: two passes
             {"image": np.tanh(np.random.default_rng(0).standard_normal((48, 1, 8, 8))).astype(np.float32),
              "label": np.arange(48) % 10})):
        kw = quiet(batch=16, epochs=2) if name == "dcgan" else quiet()
        train_gan(pair, data, run_dir=tmp_path / name / "full", **kw)
        part = train_gan(pair, data, run_dir=tmp_path / name / "part", on_step=stop(2), **kw)
        assert part.interrupted
        train_gan(pair, data, run_dir=tmp_path / name / "part", resume=tmp_path / name / "part", **quiet())
        _same(tmp_path / name / "full" / "checkpoint.npz", tmp_path / name / "part" / "checkpoint.npz")


def test_sample_classes_on_both_engines(tmp_path, capsys):
    spec = tmp_path / "c.arch"
    spec.write_text(COND)
    np.savez(tmp_path / "d.npz", **labelled())
    assert cli_main(["train", str(spec), "--data", str(tmp_path / "d.npz"), "-o", str(tmp_path / "run"),
                     "--quiet"]) == 0
    ck = tmp_path / "run" / "checkpoint.npz"

    def run(*argv):
        code = cli_main(["sample", str(spec), *map(str, argv)])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return code, out + err

    code, out = run("--weights", ck, "--class", 2, "-n", 7, "-o", tmp_path / "two.npy")
    assert code == 0 and "class 2 (" in out
    pair = archdsl.compile(COND).gan()
    _, w, _ = read_gan_checkpoint(ck)
    want, _ = generate(pair, w["generator"], 7, seed=0, conditions={"label": np.full(7, 2)})
    np.testing.assert_array_equal(np.load(tmp_path / "two.npy"), want)
    code, out = run("--weights", ck, "-n", 4, "-o", tmp_path / "all.npy", "--device", "cpu")   # every class
    assert code == 0 and "classes 0, 2, 5 (4 each)" in out and "ONNX Runtime" in out
    every, _ = generate(pair, w["generator"], 12, seed=0, conditions={"label": np.repeat([0, 2, 5], 4)})
    np.testing.assert_allclose(np.load(tmp_path / "all.npy"), every, atol=1e-4, rtol=0)
    assert cli_main(["export", str(spec), "--weights", str(tmp_path / "run" / "generator.npz"),
                     "-o", str(tmp_path / "g.onnx")]) == 0
    code, out = run("--weights", tmp_path / "g.onnx", "--class", "0,2,5", "-n", 4, "-o", tmp_path / "file.npy")
    assert code == 0
    np.testing.assert_allclose(np.load(tmp_path / "file.npy"), every, atol=1e-4, rtol=0)
    for argv, needle in ((("--weights", ck, "--class", 3, "-o", tmp_path / "x.npy"),
                          "class 3 is not one the generator was trained on.*classes: 0, 2, 5"),
                         (("--weights", tmp_path / "g.onnx", "-o", tmp_path / "x.npy"),
                          "the checkpoint does not list the classes"),
                         (("--weights", ck, "--class", "two", "-o", tmp_path / "x.npy"), "--class takes class numbers")):
        code, out = run(*argv)
        assert code == 1 and re.search("(?s)" + needle, out), out


def test_class_grid_has_a_row_per_class(tmp_path, capsys):
    pair = archdsl.compile(ROOT / "specs" / "cgan_digits.arch").gan()
    data = {"image": np.tanh(np.random.default_rng(0).standard_normal((64, 1, 8, 8))).astype(np.float32),
            "label": np.arange(64) % 10}
    train_gan(pair, data, run_dir=tmp_path, steps=2, batch=32, **quiet())
    spec = ROOT / "specs" / "cgan_digits.arch"
    assert cli_main(["sample", str(spec), "--weights", str(tmp_path / "checkpoint.npz"), "-n", "6",
                     "-o", str(tmp_path / "grid.png")]) == 0
    assert read_png(tmp_path / "grid.png").shape == (10 * 33 + 1, 6 * 33 + 1)          # 10 classes x 6
    assert cli_main(["sample", str(spec), "--weights", str(tmp_path / "checkpoint.npz"), "--class", "3", "-n", "16",
                     "-o", str(tmp_path / "threes.png")]) == 0
    assert read_png(tmp_path / "threes.png").shape == (4 * 33 + 1, 4 * 33 + 1)         # one class: a square
    assert cli_main(["sample", str(ROOT / "specs" / "dcgan_digits.arch"), "--weights",
                     str(tmp_path / "checkpoint.npz"), "--class", "3", "-o", str(tmp_path / "x.png")]) == 1
    assert "Generator takes only noise" in capsys.readouterr().err


def test_cgan_digits_example_at_a_smaller_size(tmp_path):
    r = example("cgan_digits").main(["--out", str(tmp_path), "--epochs", "15", "--quiet", "--min-accuracy", "0.8"])
    assert r["worst_accuracy"] >= 0.8, r["per_class"]
    assert np.mean([c["accuracy"] for c in r["per_class"]]) >= 0.9
    assert r["onnx_max_diff"] <= 1e-4 and r["classifier_accuracy"] >= 0.97 and r["ok"]
    assert read_png(tmp_path / "cgan_digits.png").shape == (10 * 33 + 1, 10 * 33 + 1)
