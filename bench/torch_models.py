"""Plain PyTorch equivalents of the shipped specs, for the ONNX export benchmark.

torchvision is not a dependency, so LeNet-5 is written out here, and AlexNet, ResNet-18 and
ResNet-50 come from the tests' torchvision-style modules (tests/torchvision_style.py:
torchvision's layer order, defaults and parameter names; ResNet v1.5). `load_archdsl_weights`
copies an archdsl weight dict into a module: both list their tensors in the same order (definition order), which is checked shape by shape, so the two
exported files compute the same function and their outputs can be compared.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from torchvision_style import AlexNet, resnet18, resnet50  # noqa: E402


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998): tanh activations, average-pool subsampling, 1x32x32 input."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


# spec stem -> (constructor, input shape without the batch dim)
MODELS = {
    "lenet5": (LeNet5, (1, 32, 32)),
    "alexnet": (AlexNet, (3, 224, 224)),
    "resnet18": (resnet18, (3, 224, 224)),
    "resnet50": (resnet50, (3, 224, 224)),
}


def load_archdsl_weights(module: nn.Module, weights: dict[str, np.ndarray], order: list[str]) -> nn.Module:
    """Copy archdsl's weights (names in `order`, the IR's parameter order) into `module`'s
    parameters and buffers (state_dict order, BatchNorm's num_batches_tracked skipped)."""
    state = {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    if len(state) != len(order):
        raise ValueError(f"{type(module).__name__}: {len(state)} torch tensors vs {len(order)} archdsl parameters")
    new = {}
    for (tk, tv), ak in zip(state.items(), order):
        a = weights[ak]
        if tuple(tv.shape) != tuple(a.shape):
            raise ValueError(f"shape mismatch: torch {tk} {tuple(tv.shape)} vs archdsl {ak} {a.shape}")
        new[tk] = torch.from_numpy(np.ascontiguousarray(a))
    module.load_state_dict(new, strict=False)
    return module.eval()
