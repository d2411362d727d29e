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
    args = (Arg("num_features", "int", None, doc="the channels (dim 1); checked against the input (inferred)"),
            Arg("eps", "float", 1e-5, keyword_only=True), Arg("momentum", "float", 0.1, keyword_only=True))
    ranks: tuple[int, ...] = (2, 3, 4)
    samples = (Sample("x: f32[N, 3, 4, 4] -> BatchNorm"), Sample("x: f32[N, 5] -> BatchNorm(5, eps=0.001)"))

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
        n = a.attrs["num_features"]
        if n is not None and n != c:
            raise self.fail(f"num_features is {n} but the input has {c} channels ({x})",
                            f"write {self.name}({c}), or leave the count out: it is inferred")
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
    samples = (Sample("x: f32[N, 2, 3, 3] -> BatchNorm2d(2, momentum=0.3)"),)


class LayerNorm(Op):
    """Normalises over the trailing dims `normalized_shape` (the last dim by default), then scales
    and shifts: weight and bias of that shape (PyTorch's nn.LayerNorm)."""
    name = "LayerNorm"
    family = "norm"
    args = (Arg("normalized_shape", "ints", None, doc="the trailing dims normalised over (inferred: the last)"),
            Arg("eps", "float", 1e-5, keyword_only=True))
    samples = (Sample("x: f32[N, T, 6] -> LayerNorm"), Sample("x: f32[N, 4] -> LayerNorm(4, eps=0.001)"),
               Sample("x: f32[N, 3, 2, 4] -> LayerNorm((2, 4))"))

    def derive(self, a) -> tuple:
        """The normalised (trailing) dims."""
        x, ns = a.x, a.attrs["normalized_shape"]
        if x.rank < 1:
            raise self.fail(f"expects an input with at least 1 dim, got {x}")
        dims = (x.shape[-1],) if ns is None else tuple(ns) if isinstance(ns, tuple) else (ns,)
        if len(dims) > x.rank or tuple(x.shape[x.rank - len(dims):]) != dims:
            raise self.fail(f"normalized_shape {_show(ns)} is not the trailing dims of the input {x}",
                            f"write LayerNorm({x.shape[-1]}) to normalise over the last dim"
                            if is_static(x.shape[-1]) else None)
        if not all(is_static(d) for d in dims):
            raise self.fail(f"the last dim of the input (normalised over) must be concrete, got {x}")
        return dims

    def time_local(self, a):
        return len(a.derived) == 1 or a.x.rank - len(a.derived) >= 2

    def infer(self, a):
        self.expect_float(a.x)
        if a.attrs["eps"] <= 0:
            raise self.fail(f"eps must be positive, got {a.attrs['eps']}")
        return [a.x]

    def params(self, a):
        d = tuple(int(v) for v in a.derived)
        return {"weight": ParamSpec(d, "ones"), "bias": ParamSpec(d, "zeros")}

    @lowering(since=17)
    def lower_native(self, a, g, inputs):
        return [g.op("LayerNormalization", [inputs[0], g.param("weight"), g.param("bias")],
                     axis=-len(a.derived), epsilon=float(a.attrs["eps"]))]

    @lowering()
    def lower_decomposed(self, a, g, inputs):
        # (x - mean) / sqrt(var + eps) * w + b, with the population variance.
        x, k = inputs[0], len(a.derived)
        dt = a.x.np_dtype
        mean = reduce_mean_last(g, x, k)
        d = g.op("Sub", [x, mean])
        var = reduce_mean_last(g, g.op("Pow", [d, g.const(np.asarray(2.0, dtype=dt), hint="two")]), k)
        std = g.op("Sqrt", [g.op("Add", [var, g.const(np.asarray(float(a.attrs["eps"]), dtype=dt), hint="eps")])])
        return [g.op("Add", [g.op("Mul", [g.op("Div", [d, std]), g.param("weight")]), g.param("bias")])]

    def forward(self, a, ctx, inputs, params):
        return [F.layer_norm(inputs[0], params["weight"], params["bias"], tuple(range(-len(a.derived), 0)),
                             a.attrs["eps"])]


def _show(v) -> str:
    return "(" + ", ".join(map(str, v)) + ")" if isinstance(v, tuple) else str(v)


def reduce_mean_last(g, x, k: int = 1):
    """ReduceMean over the last k axes, keeping them. Only emitted below opset 17
    (LayerNormalization is native from 17), where ReduceMean still takes `axes` as an attribute
    (an input from 18)."""
    return g.op("ReduceMean", [x], axes=list(range(-k, 0)), keepdims=1)
