"""Seeded, deterministic parameter initialisation with each op's declared initialiser.

Every parameter draws from its own generator, seeded from (seed, parameter name), so adding a
layer does not change the initial weights of the others, and the same seed gives the same bytes.
"""
from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np

from ..ir.graph import Model, ParamSpec


def _generator(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(name.encode())])


# Random draws are made in float64 and stored as float32, this many at a time: generating a
# huge weight whole would take 3x its float32 size for a moment. The stream of draws is the same
# whatever the chunking, so the weights are the same bytes.
INIT_CHUNK = 1 << 20


def init_param(spec: ParamSpec, rng: np.random.Generator) -> np.ndarray:
    shape = tuple(int(d) for d in spec.shape)
    if spec.init == "zeros":
        a = np.zeros(shape, np.float32)
    elif spec.init == "ones":
        a = np.ones(shape, np.float32)
    elif spec.init == "uniform":
        a = _drawn(shape, lambda n: rng.uniform(-spec.bound, spec.bound, n))
    elif spec.init == "normal":
        a = _drawn(shape, lambda n: rng.normal(0.0, spec.std, n))
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
