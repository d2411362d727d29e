"""Dense layers: Linear."""
from __future__ import annotations

import math

from ..autodiff import functional as F
from ..backends.torch.lazy import TF
from ..ir.graph import ParamSpec
from ..ir.types import is_static
from .base import DOT, Arg, Op, Sample, numel


class Linear(Op):
    """y = x W^T + b over the last dim of an input of any rank >= 2 (PyTorch layout: weight
    [out, in]); ONNX Gemm for 2-D inputs, MatMul + Add above.

    `tied=emb` shares the weight of an Embedding(out, in) instance (output projection tied to
    the input embedding); the elaborator maps the parameter, this op needs no special case.
    """
    name = "Linear"
    family = "dense"
    args = (Arg("out_features", "int"), Arg("bias", "bool", True), Arg("tied", "layer", None))
    samples = (Sample("x: f32[N, 6] -> Linear(4)"), Sample("x: f32[N, T, 6] -> Linear(3, bias=false)"),
               Sample("x: f32[N, 3, 4, 5] -> Linear(2)"))

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
        return [x.with_shape(x.shape[:-1] + (a.attrs["out_features"],))]

    def params(self, a):
        fan_in, out = int(a.x.shape[-1]), a.attrs["out_features"]
        bound = 1.0 / math.sqrt(fan_in)     # PyTorch's default (kaiming_uniform with a=sqrt(5))
        p = {"weight": ParamSpec((out, fan_in), "uniform", bound=bound, fan_in=fan_in, fan_out=out)}
        if a.attrs["bias"]:
            p["bias"] = ParamSpec((out,), "uniform", bound=bound, fan_in=fan_in)
        return p

    def explain(self, a):
        n_in, n_out, bias = int(a.x.shape[-1]), a.attrs["out_features"], a.attrs["bias"]
        lines = [f"Linear: last dim {n_in} \u2192 {n_out}: each output is a weighted sum of the {n_in} inputs"
                 + (" plus a bias" if bias else "")]
        total = n_out * n_in + (n_out if bias else 0)
        lines.append(f"params: {n_out}{DOT}{n_in}" + (f" + {n_out}" if bias else "") + f" = {total:,}  "
                     f"(weight [{n_out}, {n_in}]" + (f", bias [{n_out}])" if bias else ")"))
        return lines

    def macs(self, a, in_shapes, out_shapes):
        return numel(out_shapes[0]) * in_shapes[0][-1]

    def lower(self, a, g, inputs):
        (x,) = inputs
        bias = g.param("bias") if a.attrs["bias"] else ""
        if a.x.rank == 2:
            return [g.op("Gemm", [x, g.param("weight")] + ([bias] if bias else []), transB=1)]
        if a.attrs["tied"] is not None:   # weight shared with an embedding: transpose at runtime
            wt = g.op("Transpose", [g.param("weight")], perm=[1, 0])
        else:
            wt = g.derived("weight", lambda w: w.T, "T")
        y = g.op("MatMul", [x, wt])
        return [g.op("Add", [y, bias]) if bias else y]

    def forward(self, a, ctx, inputs, params):
        return [F.linear(inputs[0], params["weight"], params.get("bias"))]

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.linear(inputs[0], params["weight"], params.get("bias"))]
