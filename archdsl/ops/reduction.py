"""Reductions of a tensor to fewer dims: what `sum(x)` and `mean(x, 1)` make.

    sum(x)                       Sum over every dim: a scalar f32[] (a loss term)
    mean(x, 1)                   Mean over dim 1
    sum(x, (1, 2, 3))            over several dims
    mean(x, dim=-1, keepdim=true)   the reduced dims kept, with size 1 (torch.mean's keepdim)

A VAE's KL term reads as the paper writes it: `mean(-0.5 * sum(1 + logvar - mu ** 2 - exp(logvar), 1))`.
Floating-point tensors only; the output keeps the input's dtype.
"""
from __future__ import annotations

from ..autodiff import functional as F
from ..backends.torch.lazy import torch
from .base import Arg, Op, Sample, lowering, numel
from .structural import norm_dim


class _Reduce(Op):
    family = "reduction"
    args = (Arg("dim", "ints", None, doc="the dim or dims to reduce (default: all)"),
            Arg("keepdim", "bool", False, doc="keep the reduced dims with size 1"))
    onnx_op = ""
    engine_fn = None
    torch_fn = ""           # torch.sum / torch.mean

    def derive(self, a) -> tuple:
        """The reduced dims, sorted and non-negative."""
        x, d = a.x, a.attrs["dim"]
        if d is None:
            return tuple(range(x.rank))
        dims = tuple(d) if isinstance(d, tuple) else (d,)
        out = sorted({norm_dim(self, x, v) for v in dims})
        if len(out) != len(dims):
            raise self.fail(f"dim {d} names a dim twice", "each dim once: (1, 2)")
        return tuple(out)

    def time_local(self, a):
        return a.x.rank >= 3 and all(i >= 2 for i in a.derived)

    def infer(self, a):
        self.expect_float(a.x)
        keep = a.attrs["keepdim"]
        shape = tuple((1 if keep else None) if i in a.derived else v for i, v in enumerate(a.x.shape))
        return [a.x.with_shape(tuple(v for v in shape if v is not None))]

    def macs(self, a, in_shapes, out_shapes):
        return numel(in_shapes[0])

    def lower(self, a, g, inputs):
        if not a.derived:
            return [inputs[0]]
        return [g.op(self.onnx_op, [inputs[0], g.ints(list(a.derived), "axes")], keepdims=int(a.attrs["keepdim"]))]

    def forward(self, a, ctx, inputs, params):
        if not a.derived:
            return [inputs[0]]
        return [type(self).engine_fn(inputs[0], axis=a.derived, keepdims=a.attrs["keepdim"])]

    def torch_forward(self, a, ctx, inputs, params):
        if not a.derived:
            return [inputs[0]]
        return [getattr(torch, self.torch_fn)(inputs[0], dim=a.derived, keepdim=a.attrs["keepdim"])]


class Sum(_Reduce):
    """The sum over `dim` (an int or a tuple; default: every dim, a scalar), as `sum(x, dim)` writes it."""
    name = "Sum"
    onnx_op = "ReduceSum"
    engine_fn = F.sum
    torch_fn = "sum"
    samples = (Sample("x: f32[N, 3, 4] -> Sum"), Sample("x: f32[N, T, 3] -> Sum(-1)"),
               Sample("x: f32[N, 2, 3, 4]", expr="sum(x, (1, 3), keepdim=true)"))


class Mean(_Reduce):
    """The mean over `dim` (an int or a tuple; default: every dim, a scalar), as `mean(x, dim)` writes it."""
    name = "Mean"
    onnx_op = "ReduceMean"
    engine_fn = F.mean
    torch_fn = "mean"
    samples = (Sample("x: f32[N, 4] -> Mean"), Sample("x: f32[N, 3, 4] -> Mean(dim=1, keepdim=true)"),
               Sample("x: f32[N, 2, 3]", expr="mean(x, 1)"))

    @lowering(since=18)
    def lower_axes_input(self, a, g, inputs):
        return _Reduce.lower(self, a, g, inputs)

    @lowering()
    def lower(self, a, g, inputs):     # below opset 18 ReduceMean takes its axes as an attribute
        if not a.derived:
            return [inputs[0]]
        return [g.op("ReduceMean", [inputs[0]], axes=list(a.derived), keepdims=int(a.attrs["keepdim"]))]
