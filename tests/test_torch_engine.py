"""The PyTorch engine as a user meets it: `archdsl train --engine torch`, `--resume` across
engines, `archdsl export --format torch`, the module's names, and the error when PyTorch is
missing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import archdsl
from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.errors import ArchError
from archdsl.train.checkpoint import read_checkpoint
from harness import run_archdsl as run
from harness import toy_workdir

torch = pytest.importorskip("torch")
from archdsl.backends.torch.module import TorchModel  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

SPEC = """
model Net(classes: int = 3) {
  input x: f32[N, 8]
  h = x -> Linear(32, name="fc1") -> BatchNorm -> ReLU -> Dropout(0.2)
  output logits = h -> Linear(classes, name="head")
}

train Net {
  loss      = cross_entropy(logits, label, label_smoothing=0.05)
  optimizer = Adam(lr=0.01)
  schedule  = cosine()
  clip_norm = 1.0
  batch     = 16
  epochs    = 4
  metrics   = [accuracy]
  val_split = 0.2
  seed      = 0
}
"""


@pytest.fixture()
def work(tmp_path):
    return toy_workdir(tmp_path, SPEC)


def _weights(path):
    return read_checkpoint(path).weights


def test_module_names_are_archdsl_names():
    ir = archdsl.compile(ROOT / "specs/gpt.arch").model("GPTSmall").ir
    net = TorchModel(ir)
    assert list(net.state_dict()) == list(ir.parameters)
    w = net.weights()
    assert set(w) == set(ir.parameters) and all(a.dtype == np.float32 for a in w.values())


def test_missing_torch_is_a_clear_error(work):
    code = ("import sys; sys.modules['torch'] = None; from archdsl.cli import main; "
            f"sys.exit(main(['train', r'{work / 'net.arch'}', '-d', r'{work / 'data.npz'}', '-o', r'{work / 'r'}', "
            "'--engine', 'torch']))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr and "pip install 'archdsl[torch]'" in p.stderr, p.stderr
    from archdsl.backends.torch import lazy
    saved = sys.modules.get("torch")
    sys.modules["torch"] = None
    try:
        with pytest.raises(ArchError, match="needs PyTorch") as e:
            lazy.require_torch("export --format torch")
        assert "archdsl[torch]" in e.value.hint
    finally:
        sys.modules["torch"] = saved


def test_the_shipped_gpt_small_trains_on_torch_resumes_on_numpy_and_exports(work):
    """issue 20's user path on specs/gpt.arch's GPTSmall and its train section: one command on the
    torch engine, resumed on the NumPy engine, exported to ONNX."""
    gpt = Path(__file__).resolve().parent.parent / "specs" / "gpt.arch"
    t = np.random.default_rng(0).integers(0, 64, (96, 17))
    np.savez(work / "chars.npz", tokens=t[:, :-1], next=t[:, 1:])
    common = [gpt, "--model", "GPTSmall", "--quiet"]
    p = run("train", *common, "-d", work / "chars.npz", "-o", work / "t", "--engine", "torch", "--epochs", "1")
    assert p.returncode == 0, p.stderr
    p = run("train", *common, "-o", work / "n", "--resume", work / "t/checkpoint.npz", "--epochs", "2")
    assert p.returncode == 0 and "resuming GPTSmall" in p.stdout, p.stderr
    assert [json.loads(ln)["epoch"] for ln in (work / "n/metrics.jsonl").read_text().splitlines()] == [1, 2]
    p = run("export", *common[:3], "--weights", work / "n/checkpoint.npz", "-o", work / "gpt.onnx")
    assert p.returncode == 0 and "108,288 parameters" in p.stdout, p.stderr


def test_train_resume_across_engines_and_export(work):
    """torch 2 epochs -> numpy to 3 -> torch to 4; the same as 4 epochs on either engine within
    float rounding (dropout draws differ between engines, so this model trains without it; with a
    constant learning rate, as a cosine schedule spans the --epochs of each run; and with SGD:
    Adam would blow the rounding in fc1's bias, which BatchNorm leaves without a gradient, up to
    full steps)."""
    spec = SPEC.replace(" -> Dropout(0.2)", "").replace("  schedule  = cosine()\n", "")
    spec = spec.replace("Adam(lr=0.01)", "SGD(lr=0.05, momentum=0.9)")
    (work / "nodrop.arch").write_text(spec)
    args = [work / "nodrop.arch", "-d", work / "data.npz", "--quiet"]
    assert run("train", *args, "-o", work / "a", "--engine", "torch", "--epochs", "2").returncode == 0
    p = run("train", *args, "-o", work / "b", "--resume", work / "a/checkpoint.npz", "--epochs", "3")
    assert p.returncode == 0 and "resuming Net" in p.stdout, p.stderr
    p = run("train", *args, "-o", work / "c", "--engine", "torch", "--resume", work / "b/checkpoint.npz", "--epochs", "4")
    assert p.returncode == 0, p.stderr
    assert run("train", *args, "-o", work / "np4", "--epochs", "4").returncode == 0
    mixed, numpy_only = _weights(work / "c/checkpoint.npz"), _weights(work / "np4/checkpoint.npz")
    for k, a in numpy_only.items():
        np.testing.assert_allclose(mixed[k], a, atol=1e-4, rtol=1e-4, err_msg=k)
    hist = [json.loads(line) for line in (work / "c/metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4] and all("val_accuracy" in h for h in hist)
    # the trained checkpoint exports to ONNX as before, and ONNX Runtime agrees with the torch engine
    p = run("export", work / "nodrop.arch", "--weights", work / "c/checkpoint.npz", "-o", work / "net.onnx")
    assert p.returncode == 0, p.stderr
    import onnxruntime as ort
    x = np.random.default_rng(3).standard_normal((5, 8)).astype(np.float32)
    got = ort.InferenceSession(str(work / "net.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ir = archdsl.compile(work / "nodrop.arch").model().ir
    want = TorchModel(ir, mixed).run({"x": x})["logits"]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_torch_resume_is_exact_with_dropout(work):
    """A PyTorch run resumed from its checkpoint ends with the uninterrupted run's weights, bit for
    bit: dropout draws from the run's seeded stream, which the checkpoint keeps. (No schedule:
    a cosine schedule spans each run's --epochs.)"""
    (work / "const.arch").write_text(SPEC.replace("  schedule  = cosine()\n", ""))
    args = [work / "const.arch", "-d", work / "data.npz", "--quiet", "--engine", "torch"]
    assert run("train", *args, "-o", work / "full").returncode == 0
    assert run("train", *args, "-o", work / "half", "--epochs", "2").returncode == 0
    p = run("train", *args, "-o", work / "half", "--resume", work / "half/checkpoint.npz", "--epochs", "4")
    assert p.returncode == 0, p.stderr
    a, b = _weights(work / "full/checkpoint.npz"), _weights(work / "half/checkpoint.npz")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ck = read_checkpoint(work / "half/checkpoint.npz")
    assert ck.meta["optimizer"]["name"] == "Adam" and ck.meta["step"] == 40
    assert {k.split("/")[0] for k in ck.optim} == {"m", "v"}


def test_device_and_nproc_errors(work):
    args = [work / "net.arch", "-d", work / "data.npz", "-o", work / "r", "--quiet"]
    p = run("train", *args, "--device", "cuda")
    assert p.returncode == 1 and "--engine torch" in p.stderr, p.stderr
    p = run("train", *args, "--nproc", "2")
    assert p.returncode == 1 and "--engine torch" in p.stderr, p.stderr
    if not torch.cuda.is_available():
        p = run("train", *args, "--engine", "torch", "--device", "cuda")
        assert p.returncode == 1 and "no CUDA device" in p.stderr, p.stderr


def test_gan_trains_on_torch_and_resumes_on_numpy(tmp_path):
    spec = ROOT / "specs/gan_ring.arch"
    rng = np.random.default_rng(0)
    angle = rng.integers(0, 8, 2048) * (np.pi / 4)
    np.savez(tmp_path / "ring.npz", point=(np.stack([np.cos(angle), np.sin(angle)], 1) * 2).astype(np.float32))
    p = run("train", spec, "-d", tmp_path / "ring.npz", "-o", tmp_path / "g", "--engine", "torch", "--steps", "20",
            "--quiet")
    assert p.returncode == 0 and "trained gan Ring" in p.stdout, p.stderr
    for f in ("checkpoint.npz", "generator.npz", "discriminator.npz", "metrics.jsonl"):
        assert (tmp_path / "g" / f).exists()
    p = run("train", spec, "-o", tmp_path / "g2", "--resume", tmp_path / "g/checkpoint.npz", "--steps", "30", "--quiet")
    assert p.returncode == 0 and "step 20" in p.stdout, p.stderr
    p = run("train", spec, "-d", tmp_path / "ring.npz", "-o", tmp_path / "g3", "--engine", "torch", "--nproc", "2",
            "--steps", "5", "--quiet")
    assert p.returncode == 1 and "gan trains in one process" in p.stderr, p.stderr


def test_export_torch_cli_runs_without_archdsl(work):
    """`export --format torch` with trained weights: model.py and model.pt, imported and run in
    a process where archdsl cannot be imported, give the NumPy engine's outputs."""
    args = [work / "net.arch", "-d", work / "data.npz", "--quiet", "--epochs", "1"]
    assert run("train", *args, "-o", work / "r").returncode == 0
    p = run("export", work / "net.arch", "--weights", work / "r/checkpoint.npz", "--format", "torch",
            "-o", work / "netmod.py")
    assert p.returncode == 0 and "netmod.pt" in p.stdout, p.stderr
    text = (work / "netmod.py").read_text()
    assert "archdsl" not in "".join(l for l in text.splitlines() if l.startswith(("import", "from")))
    x = np.random.default_rng(4).standard_normal((6, 8)).astype(np.float32)
    np.save(work / "x.npy", x)
    code = ("import sys; sys.modules['archdsl'] = None; import numpy as np, torch, netmod; m = netmod.Net(); "
            "m.load_state_dict(torch.load('netmod.pt')); m.eval(); "
            "np.save('y.npy', m(torch.from_numpy(np.load('x.npy'))).detach().numpy())")
    q = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(work)})
    assert q.returncode == 0, q.stderr
    ir = archdsl.compile(work / "net.arch").model().ir
    want = NumpyExecutor(ir, _weights(work / "r/checkpoint.npz")).run({"x": x})["logits"]
    np.testing.assert_allclose(np.load(work / "y.npy"), want, atol=1e-5, rtol=1e-5)
    p = run("export", work / "net.arch", "--format", "torch", "-o", work / "net.onnx")
    assert p.returncode == 1 and ".py" in p.stderr
    for flags in (["--opset", "17"], ["--target", "cuda"], ["--precision", "fp16"]):
        p = run("export", work / "net.arch", "--format", "torch", *flags, "-o", work / "m.py")
        assert p.returncode == 1 and f"{flags[0]} applies to ONNX" in p.stderr, p.stderr


def test_loss_terms_train_on_torch_and_nproc_refuses_them(tmp_path):
    """A VAE (a loss of named expression terms) trains with --engine torch and resumes on the
    NumPy engine; --nproc refuses it with a clear error before starting any process."""
    spec = ROOT / "specs/vae_digits.arch"
    np.savez(tmp_path / "d.npz", image=np.random.default_rng(0).random((64, 1, 8, 8), dtype=np.float32))
    args = [spec, "-d", tmp_path / "d.npz", "--set", "hidden=16", "--quiet"]
    p = run("train", *args, "-o", tmp_path / "v", "--engine", "torch", "--epochs", "2")
    assert p.returncode == 0, p.stderr
    rec = [json.loads(line) for line in (tmp_path / "v/metrics.jsonl").read_text().splitlines()]
    assert len(rec) == 2 and all(np.isfinite(r[k]) for r in rec for k in ("loss", "recon", "kl", "kl_weight"))
    p = run("train", spec, "--set", "hidden=16", "-o", tmp_path / "v2", "--resume", tmp_path / "v/checkpoint.npz",
            "--epochs", "3", "--quiet")
    assert p.returncode == 0, p.stderr
    p = run("train", *args, "-o", tmp_path / "v3", "--engine", "torch", "--nproc", "2")
    assert p.returncode == 1 and "named terms or expressions" in p.stderr and "drop --nproc" in p.stderr, p.stderr
    assert not (tmp_path / "v3").exists()

