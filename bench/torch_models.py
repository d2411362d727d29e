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
from torchvision_style import AlexNet, BasicBlock, resnet18, resnet50  # noqa: E402


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


# -- the twins of bench/bench_midsize.py's networks ---------------------------------------------

class ResNetCifar(nn.Module):
    """ResNet-18 for 32x32 images: a 3x3 stem without max pool, then torchvision's stages."""

    def __init__(self, width: int = 64, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        cin, stages = width, []
        for i, n in enumerate((2, 2, 2, 2)):
            w = width << i
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, w, stride=2 if (i > 0 and j == 0) else 1))
                cin = w
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(x.mean((2, 3)), 1))


class EncoderBlock(nn.Module):
    """Post-norm encoder block (nn.TransformerEncoderLayer's arithmetic, ReLU, no dropout), with
    separate q/k/v projections as archdsl's MultiHeadAttention has them."""

    def __init__(self, d: int, heads: int, ffn: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff1, self.ff2 = nn.Linear(d, ffn), nn.Linear(ffn, d)

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = (f(x).view(n, t, self.heads, d // self.heads).transpose(1, 2) for f in (self.q, self.k, self.v))
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        h = self.ln1(x + self.out(a.transpose(1, 2).reshape(n, t, d)))
        return self.ln2(h + self.ff2(torch.relu(self.ff1(h))))


class EncoderLM(nn.Module):
    def __init__(self, vocab: int, ctx: int, d: int, layers: int, heads: int, ffn: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(ctx, d))
        self.blocks = nn.ModuleList(EncoderBlock(d, heads, ffn) for _ in range(layers))
        self.head = nn.Linear(d, vocab)

    def forward(self, x):
        h = self.emb(x) + self.pos[:x.shape[1]]
        for b in self.blocks:
            h = b(h)
        return self.head(h)


class LstmLM(nn.Module):
    def __init__(self, vocab: int, embed: int, hidden: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, embed)
        self.rnn = nn.LSTM(embed, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, vocab)

    def forward(self, x):
        return self.fc(self.rnn(self.emb(x))[0])


def _copy(params: dict[str, nn.Parameter], weights: dict[str, np.ndarray]) -> None:
    """torch parameter name -> archdsl weight name copies, every archdsl weight used once."""
    if set(params) != set(weights):
        raise ValueError(f"unmatched weights: {sorted(set(params) ^ set(weights))[:6]}")
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(torch.from_numpy(np.ascontiguousarray(weights[k])))


def midsize(key: str, p: dict, weights: dict[str, np.ndarray]) -> nn.Module:
    """The torch twin of bench_midsize.py's workload `key` (parameters `p`) with archdsl's weights."""
    if key == "mlp":
        m = nn.Sequential(nn.Linear(p["inp"], p["hidden"]), nn.ReLU(), nn.Linear(p["hidden"], p["hidden"]),
                          nn.ReLU(), nn.Linear(p["hidden"], p["classes"]))
        return load_archdsl_weights(m, weights, list(weights))
    if key == "resnet":
        return load_archdsl_weights(ResNetCifar(p["width"], p["classes"]), weights, list(weights))
    if key == "lstm":
        m = LstmLM(p["vocab"], p["embed"], p["hidden"])
        names = {"embedding_1.weight": m.emb.weight, "linear_1.weight": m.fc.weight, "linear_1.bias": m.fc.bias}
        names.update({f"lstm_1.{k}_l0": getattr(m.rnn, f"{k}_l0") for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
        _copy(names, weights)
        return m
    if key == "encoder":
        m = EncoderLM(p["vocab"], p["ctx"], p["d"], p["layers"], p["heads"], p["ffn"])
        names = {"embedding_1.weight": m.emb.weight, "positionalembedding_1.weight": m.pos,
                 "linear_1.weight": m.head.weight, "linear_1.bias": m.head.bias}
        for i, b in enumerate(m.blocks):
            pre = f"repeat_1.{i}.transformerencoderblock_1."
            mha = pre + "multiheadattention_1."
            for j in ("q", "k", "v", "out"):
                names[f"{mha}{j}_weight"] = getattr(b, j).weight
                names[f"{mha}{j}_bias"] = getattr(b, j).bias
            for j, ln in ((1, b.ln1), (2, b.ln2)):
                names[f"{pre}layernorm_{j}.weight"] = ln.weight
                names[f"{pre}layernorm_{j}.bias"] = ln.bias
            for j, lin in ((1, b.ff1), (2, b.ff2)):
                names[f"{pre}feedforward_1.linear_{j}.weight"] = lin.weight
                names[f"{pre}feedforward_1.linear_{j}.bias"] = lin.bias
        _copy(names, weights)
        return m
    raise ValueError(key)
