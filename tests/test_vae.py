"""VAEs (archdsl/vae.py, targets.py's VaeTarget): a train section's `decoder` sharing the VAE's
weights by name, checked at compile time; training with `archdsl train` and bit-exact resume;
`archdsl sample` decoding the prior and reconstructing inputs on the NumPy engine and ONNX
Runtime; exporting the VAE or its decoder; specs/vae_digits.arch's results at a smaller size."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import archdsl
from archdsl.cli import main as cli_main
from archdsl.errors import ArchError
from archdsl.gan.image import read_png
from archdsl.train.checkpoint import load_weights, read_checkpoint
from harness import example

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "vae_digits.arch"
TEXT = SPEC.read_text()


def digits(n=96, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, 1, 8, 8)).astype(np.float32)


def cli(capsys, *argv):
    code = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("vae")
    np.savez(d / "train.npz", image=digits())
    np.savez(d / "test.npz", image=digits(20, seed=1))
    assert cli_main(["train", str(SPEC), "--data", str(d / "train.npz"), "-o", str(d / "run"), "--epochs", "3",
                     "--threads", "1", "--quiet"]) == 0
    return d


def test_the_target_is_the_vae_or_its_decoder():
    spec = archdsl.compile(SPEC)
    t = spec.target()
    assert t.kind == "vae" and t.model.name == "VAE" and [m.name for m in t.models()] == ["VAE", "Decoder"]
    assert spec.target(training=True).model.name == "VAE"
    d = spec.target("Decoder")
    assert d.kind == "vae" and d.model.name == "Decoder" and d.vae.model.name == "VAE"
    shared = set(d.model.ir.parameters)
    assert shared and shared < set(t.model.ir.parameters)              # every decoder weight is a VAE weight
    wide = spec.target(None, latent=4)                                 # --set reaches both models
    assert str(wide.vae.latent.type) == "f32[N, 4]" and str(wide.model.ir.outputs[2].type) == "f32[N, 4]"


@pytest.mark.parametrize("edit, needle", [
    (("decoder   = Decoder", "decoder   = Decodr"), "decoder 'Decodr' is not a model.*did you mean 'Decoder'"),
    (("decoder   = Decoder", "decoder   = VAE"), "the decoder must be another model than VAE"),
    (('-> DigitsDecoder(hidden, name="decoder") -> Sigmoid', '-> DigitsDecoder(hidden, name="dec") -> Sigmoid'),
     "decoder Decoder has 6 parameter.s. that model VAE lacks.*did you mean 'decoder.linear_1.weight'"),
    (('z -> DigitsDecoder(hidden, name="decoder") -> Sigmoid', 'z -> DigitsDecoder(128, name="decoder") -> Sigmoid'),
     r"parameter decoder.linear_1.weight is \[128, 8\] there but \[256, 8\] in model VAE"),
    (("  output recon = logits -> Sigmoid\n", "  output rec = logits -> Sigmoid\n"),
     "decoder Decoder outputs recon: f32.N, 1, 8, 8., but model VAE has no output 'recon'"),
    (("  input z: f32[N, latent]", "  input z: i64[N, latent]"), "the latent is floating point"),
])
def test_decoder_errors_are_compile_errors(edit, needle):
    text = TEXT.replace(*edit)
    assert text != TEXT
    if "i64" in edit[1]:          # a decoder of integers that elaborates
        text = text.replace("output recon = z -> DigitsDecoder", "output recon = (z -> Embedding(4, 8) -> Sum(1)) "
                                                                 "-> DigitsDecoder")
    with pytest.raises(ArchError, match="(?s)" + needle) as e:
        archdsl.compile(text)
    assert e.value.span is not None and e.value.span.line == TEXT[:TEXT.index("decoder   =")].count("\n") + 1


def test_training_reports_each_term_and_resumes_bit_for_bit(run, tmp_path, capsys):
    lines = [json.loads(s) for s in (run / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["kl_weight"] for r in lines] == [0.05, 0.1, 0.15]            # ramp over 20 epochs
    for r in lines:
        assert r["loss"] == pytest.approx(r["recon"] + r["kl"] * 0.05 * r["epoch"], rel=0.05)
        assert r["recon"] > 0 and r["kl"] > 0
    code, out, _ = cli(capsys, "train", SPEC, "--data", run / "train.npz", "-o", tmp_path / "a", "--epochs", 2,
                       "--threads", 1, "--quiet")
    assert code == 0 and "recon" in out and "kl_weight" in out
    code, out, _ = cli(capsys, "train", SPEC, "-o", tmp_path / "a", "--resume", tmp_path / "a" / "checkpoint.npz",
                       "--epochs", 3, "--threads", 1, "--quiet")
    assert code == 0 and "resuming VAE" in out
    a, b = read_checkpoint(tmp_path / "a" / "checkpoint.npz"), read_checkpoint(run / "run" / "checkpoint.npz")
    for k in b.weights:
        np.testing.assert_array_equal(a.weights[k], b.weights[k], err_msg=k)      # the noise stream resumed too
    assert a.meta["rng"] == b.meta["rng"]


def test_prior_samples_on_both_engines(run, tmp_path, capsys):
    ck = run / "run" / "checkpoint.npz"
    code, out, _ = cli(capsys, "sample", SPEC, "--weights", ck, "-n", 50, "--seed", 3, "-o", tmp_path / "np.npy")
    assert code == 0 and "50 samples of the prior N(0, I) decoded by Decoder, seed 3 (NumPy engine" in out
    code, out, _ = cli(capsys, "sample", SPEC, "--weights", ck, "-n", 50, "--seed", 3, "-o", tmp_path / "ort.npy",
                       "--device", "cpu")
    assert code == 0 and "ONNX Runtime on cpu" in out
    a, b = np.load(tmp_path / "np.npy"), np.load(tmp_path / "ort.npy")
    assert a.shape == (50, 1, 8, 8) and 0 <= a.min() and a.max() <= 1
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    spec = archdsl.compile(SPEC)
    dec = spec.model("Decoder")
    w = load_weights(ck, spec.model("VAE").ir)
    z = np.random.default_rng(3).standard_normal((50, 8), dtype=np.float32)
    np.testing.assert_array_equal(a, dec.executor({k: w[k] for k in dec.ir.parameters}).run({"z": z})["recon"])
    # the decoder exported from the VAE's checkpoint, and run from its file
    code, out, _ = cli(capsys, "export", SPEC, "--model", "Decoder", "--weights", ck, "-o", tmp_path / "dec.onnx")
    assert code == 0 and "model Decoder" in out
    code, _, _ = cli(capsys, "sample", SPEC, "--weights", tmp_path / "dec.onnx", "-n", 50, "--seed", 3,
                     "-o", tmp_path / "file.npy")
    assert code == 0
    np.testing.assert_allclose(np.load(tmp_path / "file.npy"), a, atol=1e-4, rtol=0)
    code, out, _ = cli(capsys, "sample", SPEC, "--weights", ck, "-o", tmp_path / "grid.png")
    assert code == 0 and "64 samples" in out and read_png(tmp_path / "grid.png").shape == (8 * 33 + 1, 8 * 33 + 1)


def test_reconstructions_on_both_engines(run, tmp_path, capsys):
    ck = run / "run" / "checkpoint.npz"
    x = np.load(run / "test.npz")["image"]
    np.save(tmp_path / "x.npy", x)
    code, out, _ = cli(capsys, "sample", SPEC, "--weights", ck, "--reconstruct", tmp_path / "x.npy",
                       "-o", tmp_path / "r.npy")
    assert code == 0 and "20 reconstructions by VAE" in out
    r = np.load(tmp_path / "r.npy")
    spec = archdsl.compile(SPEC)
    vae = spec.model("VAE")
    out_ = vae.executor(load_weights(ck, vae.ir)).run({"image": x})
    np.testing.assert_array_equal(r, out_["recon"])          # inference: z = mu, no noise
    code, _, _ = cli(capsys, "export", SPEC, "--weights", ck, "-o", tmp_path / "vae.onnx")
    assert code == 0
    for src in (ck, tmp_path / "vae.onnx"):
        code, _, _ = cli(capsys, "sample", SPEC, "--weights", src, "--reconstruct", run / "test.npz", "-n", 12,
                         "--device", "cpu", "-o", tmp_path / "o.npy")
        assert code == 0
        np.testing.assert_allclose(np.load(tmp_path / "o.npy"), r[:12], atol=1e-4, rtol=0)
    code, out, _ = cli(capsys, "sample", SPEC, "--weights", ck, "--reconstruct", run / "test.npz", "-n", 12,
                       "-o", tmp_path / "r.png")
    assert code == 0 and "each under its input" in out
    assert read_png(tmp_path / "r.png").shape == (4 * 33 + 1, 8 * 33 + 1)   # 2 rows of inputs, each with its row


def test_sample_errors(run, tmp_path, capsys):
    ck = run / "run" / "checkpoint.npz"
    np.save(tmp_path / "bad.npy", np.zeros((4, 8, 8), np.float32))
    for argv, needle in (
            (("--weights", ck, "--class", 3, "-o", tmp_path / "x.png"), "--class picks the classes of a conditional GAN"),
            (("-o", tmp_path / "x.png"), "sampling VAE VAE needs its trained weights"),
            (("--weights", ck, "--reconstruct", tmp_path / "bad.npy", "-o", tmp_path / "x.png"),
             r"array 'image' has shape \[4, 8, 8\], but model input 'image' \(f32\[N, 1, 8, 8\]\) needs"),
            (("--weights", ck, "--reconstruct", tmp_path / "none.npy", "-o", tmp_path / "x.png"), "no file"),
            (("--weights", ck, "-o", tmp_path / "x.jpg"), "unknown format '.jpg'")):
        code, _, err = cli(capsys, "sample", SPEC, *argv)
        assert code == 1 and __import__("re").search(needle, err), err


def test_vae_digits_example_at_a_smaller_size(tmp_path):
    r = example("vae_digits").main(["--out", str(tmp_path), "--epochs", "40", "--quiet"])
    assert r["classes"] == 10, r["confident_counts"]          # every digit among confident prior samples
    assert r["confident"] >= 0.4 and r["classifier_accuracy"] >= 0.97
    assert r["recon_nll"] < 22 and 1.0 < r["kl"] < 10         # held out; the posterior did not collapse
    assert r["mse"] < 0.04 and r["onnx_max_diff"] <= 1e-4 and r["ok"]
    for f in ("run/checkpoint.npz", "vae_prior.png", "vae_recon.png", "prior_onnx.npy"):
        assert (tmp_path / f).exists(), f
