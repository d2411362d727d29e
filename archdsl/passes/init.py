"""Seeded, deterministic parameter initialisation with each op's declared initialiser.

Every parameter draws from its own generator, seeded from (seed, parameter name), so adding a
layer does not change the initial weights of the others, and the same seed gives the same bytes.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Mapping

import numpy as np

from ..ir.graph import Model, ParamSpec
from ..ir.initializers import Initializer, fans, gain


def _generator(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(name.encode())])


# Random draws are made in float64 and stored as float32, this many at a time: generating a
# huge weight whole would take 3x its float32 size for a moment. The stream of draws is the same
# whatever the chunking, so the weights are the same bytes.
INIT_CHUNK = 1 << 20


def init_param(spec: ParamSpec, rng: np.random.Generator) -> np.ndarray:
    shape = tuple(int(d) for d in spec.shape)
    if spec.initializer is not None:
        a = np.asarray(draw(spec.initializer, shape, rng), np.float32)
    elif spec.init == "zeros":
        a = np.zeros(shape, np.float32)
    elif spec.init == "ones":
        a = np.ones(shape, np.float32)
    elif spec.init == "constant":
        a = np.full(shape, spec.value, np.float32)
    elif spec.init == "uniform":
        a = _drawn(shape, lambda n: rng.uniform(-spec.bound, spec.bound, n))
    elif spec.init == "normal":
        a = _drawn(shape, lambda n: rng.normal(0.0, spec.std, n))
    elif spec.init == "unit_normal":     # a random direction (spectral norm starts u, v so, as PyTorch)
        a = _drawn(shape, lambda n: rng.normal(0.0, 1.0, n))
        a /= max(float(np.linalg.norm(a)), 1e-12)
    elif spec.init == "xavier_uniform":
        bound = np.sqrt(6.0 / (spec.fan_in + spec.fan_out))
        a = _drawn(shape, lambda n: rng.uniform(-bound, bound, n))
    elif spec.init == "kaiming_normal":
        a = _drawn(shape, lambda n: rng.normal(0.0, np.sqrt(2.0 / spec.fan_in), n))
    else:
        raise ValueError(f"unknown initialiser {spec.init!r}")
    if spec.zero_row is not None:
        a[spec.zero_row] = 0.0
    return a


def _drawn(shape: tuple, draw) -> np.ndarray:
    """A float32 array of `shape` filled by `draw(n)` (float64 draws), INIT_CHUNK at a time."""
    out = np.empty(shape, np.float32)
    flat = out.reshape(-1)
    for i in range(0, flat.size, INIT_CHUNK):
        flat[i:i + INIT_CHUNK] = draw(min(INIT_CHUNK, flat.size - i))
    return out


def draw(init: Initializer, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    """Values for a spec's initialiser (PyTorch's torch.nn.init formulas), in float64."""
    k = init.kind
    if k == "zeros":
        return np.zeros(shape)
    if k == "ones":
        return np.ones(shape)
    if k == "constant":
        return np.full(shape, init["value"])
    if k == "normal":
        return rng.normal(init["mean"], init["std"], shape)
    if k == "uniform":
        return rng.uniform(init["a"], init["b"], shape)
    if k == "trunc_normal":
        return _trunc_normal(rng, init["mean"], init["std"], init["a"], init["b"], shape)
    fan_in, fan_out = fans(shape)
    if k.startswith("xavier"):
        std = init["gain"] * math.sqrt(2.0 / max(1, fan_in + fan_out))
    else:
        fan = fan_in if init["mode"] == "fan_in" else fan_out
        std = gain(init["nonlinearity"], init["a"]) / math.sqrt(max(1, fan))
    if k.endswith("_normal"):
        return rng.normal(0.0, std, shape)
    bound = math.sqrt(3.0) * std        # U(-b, b) has variance b^2 / 3
    return rng.uniform(-bound, bound, shape)


def _trunc_normal(rng, mean, std, lo, hi, shape) -> np.ndarray:
    """N(mean, std^2) restricted to [lo, hi]: draws outside are drawn again (make() refuses a
    window holding less than 0.1% of the mass, so this ends quickly)."""
    a = rng.normal(mean, std, shape)
    bad = (a < lo) | (a > hi)
    while bad.any():
        a[bad] = rng.normal(mean, std, int(bad.sum()))
        bad = (a < lo) | (a > hi)
    return a


def initialize(model: Model, seed: int = 0) -> dict[str, np.ndarray]:
    """name -> float32 array for every parameter and buffer of the model."""
    return {name: init_param(p.spec, _generator(seed, name)) for name, p in model.parameters.items()}


class SeededWeights(Mapping):
    """The weights `initialize(model, seed)` gives, each made when it is asked for and not kept:
    exporting a model then holds one weight at a time, not all of them (the same bytes, since
    every parameter has its own generator)."""

    def __init__(self, model: Model, seed: int = 0):
        self.model, self.seed = model, seed

    def __getitem__(self, name: str) -> np.ndarray:
        p = self.model.parameters[name]
        return init_param(p.spec, _generator(self.seed, name))

    def __iter__(self):
        return iter(self.model.parameters)

    def __len__(self) -> int:
        return len(self.model.parameters)
