"""Normalisation: BatchNorm (with rank-checking aliases BatchNorm1d, BatchNorm2d) and LayerNorm."""
from __future__ import annotations

import numpy as np

from ..autodiff import functional as F
from ..ir.graph import ParamSpec
from ..ir.types import is_static
from .base import Arg, Op, Sample, lowering


class BatchNorm(Op):
    """Batch normalisation over the channel dim 1 of [N, C], [N, C, L] or [N, C, H, W].

    Training mode normalises with the batch statistics and updates the running statistics in
    place (PyTorch's convention: new = (1 - momentum) * old + momentum * batch, unbiased batch
    variance); inference mode (and ONNX export) uses the running statistics.
    """
    name = "BatchNorm"
    family = "norm"
    args = (Arg("eps", "float", 1e-5), Arg("momentum", "float", 0.1))
    ranks: tuple[int, ...] = (2, 3, 4)
    samples = (Sample("x: f32[N, 3, 4, 4] -> BatchNorm"), Sample("x: f32[N, 5] -> BatchNorm(eps=0.001)"))

    def batch_coupled(self, a):
        return True

    def infer(self, a):
        x = a.x
        if x.rank not in self.ranks:
            want = " or ".join(_RANK_NAMES[r] for r in self.ranks)
            other = [o.name for o in (BatchNorm1d, BatchNorm2d) if x.rank in o.ranks and o.name != self.name]
            raise self.fail(f"expects a {want} input, got {x}",
                            f"use {other[0]} (or BatchNorm) for a {x.rank}-D input" if other
                            else "did you mean to Flatten first?" if x.rank > max(self.ranks) else None)
        self.expect_float(x)
        c = x.shape[1]
        if not is_static(c):
            raise self.fail(f"the channel dim (dim 1) of the input must be concrete, got {x}")
        if a.attrs["eps"] <= 0:
            raise self.fail(f"eps must be positive, got {a.attrs['eps']}")
        if not 0.0 <= a.attrs["momentum"] <= 1.0:
            raise self.fail(f"momentum must be in [0, 1], got {a.attrs['momentum']}")
        return [x]

    def params(self, a):
        c = int(a.x.shape[1])
        return {"weight": ParamSpec((c,), "ones"), "bias": ParamSpec((c,), "zeros"),
                "running_mean": ParamSpec((c,), "zeros", buffer=True),
                "running_var": ParamSpec((c,), "ones", buffer=True)}

    def lower(self, a, g, inputs):
        # Inference mode; BatchNormalization accepts [N, C] as well as [N, C, D1, ...].
        return [g.op("BatchNormalization", [inputs[0], g.param("weight"), g.param("bias"),
                                            g.param("running_mean"), g.param("running_var")],
                     epsilon=float(a.attrs["eps"]))]

    def forward(self, a, ctx, inputs, params):
        return [F.batch_norm(inputs[0], params["weight"], params["bias"], params["running_mean"],
                             params["running_var"], ctx.training, a.attrs["momentum"], a.attrs["eps"])]


_RANK_NAMES = {2: "[N, C]", 3: "[N, C, L]", 4: "[N, C, H, W]"}


class BatchNorm1d(BatchNorm):
    """BatchNorm that accepts [N, C] or [N, C, L] only."""
    name = "BatchNorm1d"
    ranks = (2, 3)
    samples = (Sample("x: f32[N, 4, T] -> BatchNorm1d"),)


class BatchNorm2d(BatchNorm):
    """BatchNorm that accepts [N, C, H, W] only."""
    name = "BatchNorm2d"
    ranks = (4,)
    samples = (Sample("x: f32[N, 2, 3, 3] -> BatchNorm2d"),)


class LayerNorm(Op):
    """Normalises over the last dim, then scales and shifts: weight, bias of shape [d]."""
    name = "LayerNorm"
    family = "norm"
    args = (Arg("eps", "float", 1e-5),)
    samples = (Sample("x: f32[N, T, 6] -> LayerNorm"), Sample("x: f32[N, 4] -> LayerNorm(eps=0.001)"))

    def time_local(self, a):
        return True

    def infer(self, a):
        x = a.x
        if x.rank < 1:
            raise self.fail(f"expects an input with at least 1 dim, got {x}")
        self.expect_float(x)
        if not is_static(x.shape[-1]):
            raise self.fail(f"the last dim of the input (normalised over) must be concrete, got {x}")
        if a.attrs["eps"] <= 0:
            raise self.fail(f"eps must be positive, got {a.attrs['eps']}")
        return [x]

    def params(self, a):
        d = int(a.x.shape[-1])
        return {"weight": ParamSpec((d,), "ones"), "bias": ParamSpec((d,), "zeros")}

    @lowering(since=17)
    def lower_native(self, a, g, inputs):
        return [g.op("LayerNormalization", [inputs[0], g.param("weight"), g.param("bias")], axis=-1,
                     epsilon=float(a.attrs["eps"]))]

    @lowering()
    def lower_decomposed(self, a, g, inputs):
        # (x - mean) / sqrt(var + eps) * w + b, with the population variance.
        x = inputs[0]
        dt = a.x.np_dtype
        mean = reduce_mean_last(g, x)
        d = g.op("Sub", [x, mean])
        var = reduce_mean_last(g, g.op("Pow", [d, g.const(np.asarray(2.0, dtype=dt), hint="two")]))
        std = g.op("Sqrt", [g.op("Add", [var, g.const(np.asarray(float(a.attrs["eps"]), dtype=dt), hint="eps")])])
        return [g.op("Add", [g.op("Mul", [g.op("Div", [d, std]), g.param("weight")]), g.param("bias")])]

    def forward(self, a, ctx, inputs, params):
        return [F.layer_norm(inputs[0], params["weight"], params["bias"], (-1,), a.attrs["eps"])]


def reduce_mean_last(g, x):
    """ReduceMean over the last axis, keeping it. Only emitted below opset 17 (LayerNormalization
    is native from 17), where ReduceMean still takes `axes` as an attribute (an input from 18)."""
    return g.op("ReduceMean", [x], axes=[-1], keepdims=1)
