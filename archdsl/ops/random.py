"""Randomness inside a model: noise shaped like a tensor, drawn on every training step.

    eps = mu -> NormalLike                    # N(0, 1) noise shaped like mu
    z = mu + exp(0.5 * logvar) * eps          # a VAE's reparameterisation

In training the values come from the run's seeded random stream (the model's, which every
checkpoint keeps), so runs stay deterministic and `--resume` bit-exact. At inference the draw
is replaced by its mean (`sample=false`, the default): a VAE then reconstructs from mu, and an
exported model computes the same function every time. `sample=true` keeps drawing at inference;
the ONNX lowering is then RandomNormalLike / RandomUniformLike (ONNX Runtime's own generator: the
values differ from the NumPy engine's, their distribution does not).

The input only gives the shape and dtype; no gradient flows into it (the noise does not depend
on its values).
"""
from __future__ import annotations

import numpy as np

from ..autodiff.tensor import Tensor
from .base import Arg, Op, Sample

_SAMPLE = Arg("sample", "bool", False, doc="draw at inference too (default: the mean at inference)")


class _Noise(Op):
    family = "random"

    def time_local(self, a):
        return True

    def stochastic(self, a):
        return True

    def infer(self, a):
        self.expect_float(a.x)
        self.check(a)
        self.expect_fits(a, list(a.attrs), headroom=2)
        return [a.x]

    def check(self, a) -> None:
        pass

    def mean(self, a) -> float:
        raise NotImplementedError

    def draw(self, a, rng: np.random.Generator, shape, dtype) -> np.ndarray:
        raise NotImplementedError

    def forward(self, a, ctx, inputs, params):
        x = inputs[0]
        data = x.data if isinstance(x, Tensor) else np.asarray(x)
        if ctx.training or a.attrs["sample"]:
            return [Tensor(self.draw(a, ctx.rng, data.shape, data.dtype))]
        return [Tensor(np.full(data.shape, self.mean(a), data.dtype))]

    def lower(self, a, g, inputs):
        if a.attrs["sample"]:
            return [self.lower_draw(a, g, inputs[0])]
        mean = g.const(np.asarray(self.mean(a), a.x.np_dtype), hint="mean")
        return [g.op("Expand", [mean, g.op("Shape", inputs)])]

    def lower_draw(self, a, g, x: str) -> str:
        raise NotImplementedError


class NormalLike(_Noise):
    """Gaussian noise N(mean, std²) shaped like the input (a VAE's epsilon); its mean at inference."""
    name = "NormalLike"
    args = (Arg("mean", "float", 0.0, keyword_only=True), Arg("std", "float", 1.0, keyword_only=True), _SAMPLE)
    samples = (Sample("x: f32[N, 4] -> NormalLike", grad=False),
               Sample("x: f32[N, T, 3] -> NormalLike(mean=0.5, std=2.0)", grad=False))

    def check(self, a):
        if not a.attrs["std"] >= 0 or not np.isfinite(a.attrs["std"]) or not np.isfinite(a.attrs["mean"]):
            raise self.fail(f"std must be a finite number >= 0 and mean finite, got mean={a.attrs['mean']}, "
                            f"std={a.attrs['std']}")

    def mean(self, a):
        return a.attrs["mean"]

    def draw(self, a, rng, shape, dtype):
        out = rng.standard_normal(shape, dtype=np.float64 if dtype == np.float64 else np.float32)
        return (out * a.attrs["std"] + a.attrs["mean"]).astype(dtype, copy=False)

    def lower_draw(self, a, g, x):
        return g.op("RandomNormalLike", [x], mean=float(a.attrs["mean"]), scale=float(a.attrs["std"]))

    def torch_forward(self, a, ctx, inputs, params):
        return [ctx.noise_like(inputs[0], "normal", a.attrs["mean"], a.attrs["std"], a.attrs["sample"])]


class UniformLike(_Noise):
    """Uniform noise U(low, high) shaped like the input; its mean at inference."""
    name = "UniformLike"
    args = (Arg("low", "float", 0.0, keyword_only=True), Arg("high", "float", 1.0, keyword_only=True), _SAMPLE)
    samples = (Sample("x: f32[N, 5] -> UniformLike(low=-1.0, high=1.0)", grad=False),)

    def check(self, a):
        lo, hi = a.attrs["low"], a.attrs["high"]
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
            raise self.fail(f"needs finite low <= high, got low={lo}, high={hi}")

    def mean(self, a):
        return 0.5 * (a.attrs["low"] + a.attrs["high"])

    def draw(self, a, rng, shape, dtype):
        u = rng.random(shape, dtype=np.float64 if dtype == np.float64 else np.float32)
        return (a.attrs["low"] + (a.attrs["high"] - a.attrs["low"]) * u).astype(dtype, copy=False)

    def lower_draw(self, a, g, x):
        return g.op("RandomUniformLike", [x], low=float(a.attrs["low"]), high=float(a.attrs["high"]))

    def torch_forward(self, a, ctx, inputs, params):
        return [ctx.noise_like(inputs[0], "uniform", a.attrs["low"], a.attrs["high"], a.attrs["sample"])]


class BernoulliLike(_Noise):
    """0/1 noise, 1 with probability p, shaped like the input (random masks); p at inference."""
    name = "BernoulliLike"
    args = (Arg("p", "float", 0.5), _SAMPLE)
    samples = (Sample("x: f32[N, 6] -> BernoulliLike(0.3)", grad=False),)

    def check(self, a):
        if not 0.0 <= a.attrs["p"] <= 1.0:
            raise self.fail(f"p must be a probability in [0, 1], got {a.attrs['p']}")

    def mean(self, a):
        return a.attrs["p"]

    def draw(self, a, rng, shape, dtype):
        return (rng.random(shape) < a.attrs["p"]).astype(dtype)

    def lower_draw(self, a, g, x):
        u = g.op("RandomUniformLike", [x], low=0.0, high=1.0)
        p = g.const(np.asarray(a.attrs["p"], a.x.np_dtype), hint="p")
        return g.op("Cast", [g.op("Less", [u, p])], to=int(_onnx_dtype(a.x.np_dtype)))

    def torch_forward(self, a, ctx, inputs, params):
        return [ctx.noise_like(inputs[0], "bernoulli", a.attrs["p"], 0.0, a.attrs["sample"])]


def _onnx_dtype(dt) -> int:
    from onnx import helper
    return helper.np_dtype_to_tensor_dtype(np.dtype(dt))
