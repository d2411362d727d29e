"""Seeded, deterministic parameter initialisation with each op's declared initialiser.

Every parameter draws from its own generator, seeded from (seed, parameter name), so adding a
layer does not change the initial weights of the others, and the same seed gives the same bytes.
"""
from __future__ import annotations

import zlib

import numpy as np

from ..ir.graph import Model, ParamSpec


def _generator(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(name.encode())])


def init_param(spec: ParamSpec, rng: np.random.Generator) -> np.ndarray:
    shape = tuple(int(d) for d in spec.shape)
    if spec.init == "zeros":
        a = np.zeros(shape)
    elif spec.init == "ones":
        a = np.ones(shape)
    elif spec.init == "constant":
        a = np.full(shape, spec.value)
    elif spec.init == "uniform":
        a = rng.uniform(-spec.bound, spec.bound, shape)
    elif spec.init == "normal":
        a = rng.normal(0.0, spec.std, shape)
    elif spec.init == "xavier_uniform":
        bound = np.sqrt(6.0 / (spec.fan_in + spec.fan_out))
        a = rng.uniform(-bound, bound, shape)
    elif spec.init == "kaiming_normal":
        a = rng.normal(0.0, np.sqrt(2.0 / spec.fan_in), shape)
    else:
        raise ValueError(f"unknown initialiser {spec.init!r}")
    if spec.zero_row is not None:
        a[spec.zero_row] = 0.0
    return a.astype(np.float32)


def initialize(model: Model, seed: int = 0) -> dict[str, np.ndarray]:
    """name -> float32 array for every parameter and buffer of the model."""
    return {name: init_param(p.spec, _generator(seed, name)) for name, p in model.parameters.items()}
