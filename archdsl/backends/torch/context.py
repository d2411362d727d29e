"""What an op's PyTorch forward needs besides its inputs and parameters: whether the model is
training, and randomness (dropout, noise).

`torch_forward(a, ctx, inputs, params)` never branches on `ctx.training` itself: it passes it to
torch (F.batch_norm(..., training=ctx.training)) or asks the context (`ctx.dropout(x, p)`,
`ctx.dropout_mask(...)`, `ctx.noise_like(...)`), because when the model is traced for export
(export.py) `ctx.training` is the module's `self.training`, a value known only at run time.
`ctx.tracing` is true then, and checks of run-time sizes are skipped.

Randomness comes from a NumPy stream (the run's, which checkpoints keep, so a resumed run draws
what the uninterrupted one drew), in one of two ways:

    TorchRandom   a torch.Generator on the model's device, seeded from the stream the first time
                  a forward draws: fast on any device (the default)
    NumpyRandom   the NumPy engine's own draws, in its order (masks and noise equal on both
                  engines: what the equivalence tests use); drawn on the CPU and copied over
"""
from __future__ import annotations

import numpy as np

from .lazy import TK, torch


class TorchRandom:
    """Draws with a torch.Generator on the device, reseeded from `rng` once per forward that
    draws; `offset` separates the processes of a distributed run (each its own dropout)."""

    def __init__(self, rng: np.random.Generator, offset: int = 0):
        self.rng, self.offset = rng, offset
        self._generators: dict = {}
        self._seeded = False

    def begin(self) -> None:
        """A new forward: the next draw reseeds."""
        self._seeded = False

    def _generator(self, device):
        key = str(device)
        g = self._generators.get(key)
        if g is None:
            g = self._generators[key] = torch.Generator(device=device)
        if not self._seeded:
            seed = int(self.rng.integers(0, 2 ** 62))
            for gen in self._generators.values():
                gen.manual_seed(seed + self.offset)
            self._seeded = True
        return g

    def uniform(self, shape, dtype, device):
        return torch.rand(tuple(shape), generator=self._generator(device), dtype=dtype, device=device)

    def normal(self, shape, dtype, device):
        return torch.randn(tuple(shape), generator=self._generator(device), dtype=dtype, device=device)


class NumpyRandom:
    """The NumPy engine's draws from the same stream: equal masks and noise on both engines."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def begin(self) -> None:
        pass

    def uniform(self, shape, dtype, device):
        dt = np.float64 if dtype == torch.float64 else np.float32
        return torch.from_numpy(self.rng.random(tuple(shape), dtype=dt)).to(device)

    def normal(self, shape, dtype, device):
        dt = np.float64 if dtype == torch.float64 else np.float32
        return torch.from_numpy(self.rng.standard_normal(tuple(shape), dtype=dt)).to(device)


class TorchContext:
    """The engine's context: training is a bool, draws come from `random`."""
    tracing = False

    def __init__(self, random=None):
        self.training = False
        self.random = random if random is not None else TorchRandom(np.random.default_rng(0))

    def dropout_mask(self, shape, p: float, like):
        """The inverted-dropout multiplier (0 or 1/(1-p)) of `shape`, or None outside training."""
        if not self.training or p == 0:
            return None
        keep = self.random.uniform(shape, like.dtype, like.device) >= p
        return keep.to(like.dtype) * (1.0 / (1.0 - p))

    def dropout(self, x, p: float):
        """Inverted dropout in training; x itself otherwise."""
        m = self.dropout_mask(x.shape, p, x)
        return x if m is None else x * m

    def drop_branch(self, x, p: float, per_row: bool):
        """Stochastic depth in training: x times 0 or 1/(1-p), one draw per sample (`per_row`)
        or one for the batch, in float64 as the NumPy engine draws; x itself otherwise."""
        if not self.training or p == 0:
            return x
        u = self.random.uniform((x.shape[0] if per_row else 1,), torch.float64, x.device)
        return x * TK.branch_keep(u, p, x)

    def noise_like(self, x, kind: str, a: float, b: float, sample: bool):
        """Noise shaped like x ('normal' N(a, b^2), 'uniform' U(a, b), 'bernoulli' 1 with
        probability a), drawn in training or with `sample`, else its mean."""
        if not (self.training or sample):
            return torch.full_like(x, (a + b) / 2 if kind == "uniform" else a)
        if kind == "normal":
            return self.random.normal(x.shape, x.dtype, x.device) * b + a
        if kind == "uniform":
            return a + (b - a) * self.random.uniform(x.shape, x.dtype, x.device)
        return (self.random.uniform(x.shape, torch.float64, x.device) < a).to(x.dtype)
