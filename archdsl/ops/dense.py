"""Dense layers: Linear; and spectral normalisation of a weight, shared with conv.py.

`spectral_norm=true` (Miyato et al. 2018, as PyTorch's parametrizations.spectral_norm with one
power iteration) makes a layer use W / sigma, sigma its weight's largest singular value as the
power method estimates it. The estimates of the first singular vectors, u and v, are buffers
(`weight_u`, `weight_v`: checkpointed, not trained, not counted as parameters); each training
forward does one power iteration on them, inference uses them as stored, and the ONNX export
holds W / sigma, computed once at export time.
"""
from __future__ import annotations

import math

import numpy as np

from ..autodiff import functional as F
from ..backends.torch.lazy import TF, TK
from ..ir.graph import ParamSpec
from ..ir.types import is_static
from .base import DOT, Arg, Op, Sample, numel

SPECTRAL_NORM = Arg("spectral_norm", "bool", False, keyword_only=True,
                    doc="divide the weight by its largest singular value, estimated by one power "
                        "iteration per training step (Miyato et al. 2018)")


def spectral_params(a, shape: tuple, dim: int = 0) -> dict:
    """The buffers spectral_norm needs for a weight of `shape` seen as [shape[dim], rest]."""
    if not a.attrs["spectral_norm"]:
        return {}
    rows = int(shape[dim])
    return {"weight_u": ParamSpec((rows,), "unit_normal", buffer=True),
            "weight_v": ParamSpec((numel(shape) // rows,), "unit_normal", buffer=True)}


def spectral_weight(a, ctx, params, dim: int = 0):
    """The weight a NumPy forward uses: W, or W / sigma under spectral_norm."""
    if not a.attrs["spectral_norm"]:
        return params["weight"]
    return F.spectral_norm(params["weight"], params["weight_u"], params["weight_v"], ctx.training, dim=dim)


def spectral_torch_weight(a, ctx, params, dim: int = 0):
    """The weight a PyTorch forward uses: W, or W / sigma under spectral_norm (the buffers
    updated in training, as the NumPy engine updates them)."""
    if not a.attrs["spectral_norm"]:
        return params["weight"]
    return TK.spectral_norm(params["weight"], params["weight_u"], params["weight_v"], ctx.training, dim=dim)


def spectral_onnx(a, g, dim: int = 0, then=None, suffix: str = "") -> str:
    """The weight initializer an ONNX lowering reads: the parameter itself, or (under
    spectral_norm, or with `then`, a further NumPy function of it) a tensor derived at export."""
    fn = then or (lambda w: w)
    if a.attrs["spectral_norm"]:
        u, v = g.param_value("weight_u"), g.param_value("weight_v")

        def normalised(w):
            with np.errstate(divide="ignore", invalid="ignore"):     # a graph-only export's stand-ins are 0
                return fn(F.spectral_norm(w, u, v, False, dim=dim).data)
        return g.derived("weight", normalised, "sn" + suffix)
    return g.derived("weight", fn, suffix) if then else g.param("weight")


def spectral_explain(a) -> list[str]:
    """The explain lines spectral_norm adds."""
    if not a.attrs["spectral_norm"]:
        return []
    u, v = a.params["weight_u"].shape[0], a.params["weight_v"].shape[0]
    return [f"spectral_norm: W / \u03c3, \u03c3 = u\u1d40Wv its largest singular value (the power method on W as "
            f"[{u}, {v}], one iteration per training step)",
            f"buffers (state, not parameters): weight_u [{u}], weight_v [{v}]"]


class Linear(Op):
    """y = x W^T + b over the last dim of an input of any rank >= 2 (PyTorch layout: weight
    [out, in]); ONNX Gemm for 2-D inputs, MatMul + Add above.

    `tied=emb` shares the weight of an Embedding(out, in) instance (output projection tied to
    the input embedding); the elaborator maps the parameter, this op needs no special case.
    """
    name = "Linear"
    family = "dense"
    args = (Arg("out_features", "int"), Arg("bias", "bool", True), Arg("tied", "layer", None), SPECTRAL_NORM)
    samples = (Sample("x: f32[N, 6] -> Linear(4)"), Sample("x: f32[N, T, 6] -> Linear(3, bias=false)"),
               Sample("x: f32[N, 3, 4, 5] -> Linear(2)"), Sample("x: f32[N, T, 6] -> Linear(3, spectral_norm=true)"))

    def time_local(self, a):
        return True

    def infer(self, a):
        x = a.x
        if x.rank < 2:
            raise self.fail(f"expects an input of rank >= 2 ([N, ..., features]), got {x}")
        self.expect_float(x)
        if not is_static(x.shape[-1]):
            raise self.fail(f"the last dim of the input must be concrete, got {x}")
        if a.attrs["out_features"] <= 0:
            raise self.fail(f"out_features must be positive, got {a.attrs['out_features']}")
        if a.attrs["spectral_norm"] and a.attrs["tied"] is not None:
            raise self.fail("spectral_norm=true cannot normalise a tied weight (it belongs to the embedding)",
                            "drop tied=, or spectral_norm=")
        return [x.with_shape(x.shape[:-1] + (a.attrs["out_features"],))]

    def params(self, a):
        fan_in, out = int(a.x.shape[-1]), a.attrs["out_features"]
        bound = 1.0 / math.sqrt(fan_in)     # PyTorch's default (kaiming_uniform with a=sqrt(5))
        p = {"weight": ParamSpec((out, fan_in), "uniform", bound=bound, fan_in=fan_in, fan_out=out)}
        if a.attrs["bias"]:
            p["bias"] = ParamSpec((out,), "uniform", bound=bound, fan_in=fan_in)
        return p | spectral_params(a, (out, fan_in))

    def explain(self, a):
        n_in, n_out, bias = int(a.x.shape[-1]), a.attrs["out_features"], a.attrs["bias"]
        lines = [f"Linear: last dim {n_in} \u2192 {n_out}: each output is a weighted sum of the {n_in} inputs"
                 + (" plus a bias" if bias else "")]
        total = n_out * n_in + (n_out if bias else 0)
        lines.append(f"params: {n_out}{DOT}{n_in}" + (f" + {n_out}" if bias else "") + f" = {total:,}  "
                     f"(weight [{n_out}, {n_in}]" + (f", bias [{n_out}])" if bias else ")"))
        return lines + spectral_explain(a)

    def macs(self, a, in_shapes, out_shapes):
        return numel(out_shapes[0]) * in_shapes[0][-1]

    def lower(self, a, g, inputs):
        (x,) = inputs
        bias = g.param("bias") if a.attrs["bias"] else ""
        if a.x.rank == 2:
            return [g.op("Gemm", [x, spectral_onnx(a, g)] + ([bias] if bias else []), transB=1)]
        if a.attrs["tied"] is not None:   # weight shared with an embedding: transpose at runtime
            wt = g.op("Transpose", [g.param("weight")], perm=[1, 0])
        else:
            wt = spectral_onnx(a, g, then=lambda w: w.T, suffix="T")
        y = g.op("MatMul", [x, wt])
        return [g.op("Add", [y, bias]) if bias else y]

    def forward(self, a, ctx, inputs, params):
        return [F.linear(inputs[0], spectral_weight(a, ctx, params), params.get("bias"))]

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.linear(inputs[0], spectral_torch_weight(a, ctx, params), params.get("bias"))]
