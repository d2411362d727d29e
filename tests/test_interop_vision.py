"""torchvision's AlexNet, VGG-16 and ResNet-18/50 in and out (torchvision-style modules with
torchvision's parameter names, tests/torchvision_style.py): imported with the shipped mappings,
exported to ONNX and run on ONNX Runtime within 1e-4 of PyTorch; archdsl weights written back and
loaded with load_state_dict(strict=True). ResNet-18/50 and AlexNet at full size (10 classes);
VGG-16's mapping on a narrower copy of the spec (its full-size names and shapes are checked in
test_interop_mapping.py)."""
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import archdsl
from archdsl.cli import main
from archdsl.passes.init import initialize
from archdsl.train.checkpoint import load_weights
from harness import ort_run

torch = pytest.importorskip("torch")
import torchvision_style as tv  # noqa: E402  (needs torch)

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


def randomized(module, seed=0):
    """Random weights and BatchNorm statistics (a swapped mean and variance would show)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean") or name.endswith(".bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.is_floating_point() and name.endswith(".weight") and t.ndim == 1:
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return module.eval()


def image(n=2, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 224, 224)).astype(np.float32)


def torch_out(m, x):
    with torch.no_grad():
        return m(torch.from_numpy(x)).numpy()


def test_resnet18_in_one_command_with_verify(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", type(sys)("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision.models", tv.models)       # what --verify builds
    m = randomized(tv.resnet18(num_classes=10))
    torch.save(m.state_dict(), tmp_path / "resnet18.pth")
    rc = main(["import-weights", str(SPECS / "resnet18.arch"), str(tmp_path / "resnet18.pth"), "--set", "classes=10",
               "-o", str(tmp_path / "resnet18.onnx"), "--verify"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "PyTorch checkpoint" in out.out and "(20 dropped)" in out.out      # num_batches_tracked
    assert "verified against the source model on ONNX Runtime" in out.out
    x = image(1)
    got = ort_run(onnx.load(str(tmp_path / "resnet18.onnx")), {"image": x})["logits"]
    np.testing.assert_allclose(got, torch_out(m, x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name,spec", [("resnet50", "resnet50.arch"), ("alexnet", "alexnet.arch")])
def test_full_size_checkpoints_to_onnx(tmp_path, name, spec):
    m = randomized(getattr(tv, name)(num_classes=10))
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(tmp_path / f"{name}.safetensors"))
    net = archdsl.compile(SPECS / spec).model(classes=10)
    w = load_weights(tmp_path / f"{name}.safetensors", net.ir)
    x = image(1, seed=1)
    got = ort_run(net.to_onnx(weights=w), {"image": x})["logits"]
    np.testing.assert_allclose(got, torch_out(m, x), atol=1e-4, rtol=1e-4)


def test_vgg16_mapping_on_a_narrower_copy(tmp_path):
    """The shipped spec with 1/8 of the widths and a 64-wide classifier: the same layer names,
    so the shipped mapping applies as it is."""
    text = (SPECS / "vgg16.arch").read_text()
    for w in (64, 128, 256, 512):
        text = re.sub(rf"Stage\({w},", f"Stage({w // 8},", text)
    text = text.replace("Linear(4096)", "Linear(64)")
    (tmp_path / "vgg16.arch").write_text(text)
    (tmp_path / "vgg16.map").write_text((SPECS / "vgg16.map").read_text())
    narrow = [v if v == "M" else v // 8 for v in tv.VGG16_CFG]
    m = randomized(tv.VGG(narrow, num_classes=10, hidden=64))
    torch.save(m.state_dict(), tmp_path / "vgg.pt")
    net = archdsl.compile(tmp_path / "vgg16.arch").model(classes=10)
    w = load_weights(tmp_path / "vgg.pt", net.ir)
    x = image(2, seed=2)
    np.testing.assert_allclose(net.executor(w).run({"image": x})["logits"], torch_out(m, x), atol=1e-4)


def test_archdsl_weights_back_to_resnet18(tmp_path, capsys):
    net = archdsl.compile(SPECS / "resnet18.arch").model(classes=10)
    rng = np.random.default_rng(0)
    w = {k: a + rng.standard_normal(a.shape).astype(np.float32) * 0.05 for k, a in initialize(net.ir, 0).items()}
    w = {k: np.abs(a) + 0.5 if k.endswith("running_var") else a for k, a in w.items()}
    np.savez(tmp_path / "trained.npz", **w)
    rc = main(["export-weights", str(SPECS / "resnet18.arch"), "--set", "classes=10", "--weights",
               str(tmp_path / "trained.npz"), "-o", str(tmp_path / "resnet18.safetensors")])
    assert rc == 0, capsys.readouterr().err
    from safetensors.torch import load_file
    m = tv.resnet18(num_classes=10)
    m.load_state_dict(load_file(str(tmp_path / "resnet18.safetensors")), strict=True)
    x = image(1, seed=3)
    ours = ort_run(net.to_onnx(weights=w), {"image": x})["logits"]
    np.testing.assert_allclose(torch_out(m.eval(), x), ours, atol=1e-4, rtol=1e-4)
