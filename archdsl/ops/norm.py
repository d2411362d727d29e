"""Normalisation: BatchNorm (with rank-checking aliases BatchNorm1d, BatchNorm2d) and LayerNorm."""
from __future__ import annotations

import numpy as np

from ..autodiff import functional as F
from ..ir.graph import ParamSpec
from ..ir.types import is_static
from .base import Arg, Op


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

    def infer(self, attrs, in_types):
        (x,) = in_types
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
        if attrs["eps"] <= 0:
            raise self.fail(f"eps must be positive, got {attrs['eps']}")
        if not 0.0 <= attrs["momentum"] <= 1.0:
            raise self.fail(f"momentum must be in [0, 1], got {attrs['momentum']}")
        return [x]

    def params(self, attrs, in_types):
        c = int(in_types[0].shape[1])
        return {"weight": ParamSpec((c,), "ones"), "bias": ParamSpec((c,), "zeros"),
                "running_mean": ParamSpec((c,), "zeros", buffer=True),
                "running_var": ParamSpec((c,), "ones", buffer=True)}

    def lower(self, node, b, inputs):
        # Inference mode; BatchNormalization accepts [N, C] as well as [N, C, D1, ...].
        return [b.op("BatchNormalization", [inputs[0], b.param("weight"), b.param("bias"),
                                            b.param("running_mean"), b.param("running_var")],
                     epsilon=float(node.attrs["eps"]))]

    def forward(self, node, ctx, inputs, params):
        return [F.batch_norm(inputs[0], params["weight"], params["bias"], params["running_mean"],
                             params["running_var"], ctx.training, node.attrs["momentum"], node.attrs["eps"])]


_RANK_NAMES = {2: "[N, C]", 3: "[N, C, L]", 4: "[N, C, H, W]"}


class BatchNorm1d(BatchNorm):
    name = "BatchNorm1d"
    ranks = (2, 3)


class BatchNorm2d(BatchNorm):
    name = "BatchNorm2d"
    ranks = (4,)


class LayerNorm(Op):
    """Normalises over the last dim, then scales and shifts: weight, bias of shape [d]."""
    name = "LayerNorm"
    family = "norm"
    args = (Arg("eps", "float", 1e-5),)

    def infer(self, attrs, in_types):
        (x,) = in_types
        if x.rank < 1:
            raise self.fail(f"expects an input with at least 1 dim, got {x}")
        self.expect_float(x)
        if not is_static(x.shape[-1]):
            raise self.fail(f"the last dim of the input (normalised over) must be concrete, got {x}")
        if attrs["eps"] <= 0:
            raise self.fail(f"eps must be positive, got {attrs['eps']}")
        return [x]

    def params(self, attrs, in_types):
        d = int(in_types[0].shape[-1])
        return {"weight": ParamSpec((d,), "ones"), "bias": ParamSpec((d,), "zeros")}

    def lower(self, node, b, inputs):
        (x,) = inputs
        eps = float(node.attrs["eps"])
        w, bias = b.param("weight"), b.param("bias")
        if b.opset >= 17:
            return [b.op("LayerNormalization", [x, w, bias], axis=-1, epsilon=eps)]
        # (x - mean) / sqrt(var + eps) * w + b, with the population variance.
        dt = node.inputs[0].type.np_dtype
        mean = _reduce_mean(b, x)
        d = b.op("Sub", [x, mean])
        var = _reduce_mean(b, b.op("Pow", [d, b.const(np.asarray(2.0, dtype=dt), hint="two")]))
        std = b.op("Sqrt", [b.op("Add", [var, b.const(np.asarray(eps, dtype=dt), hint="eps")])])
        return [b.op("Add", [b.op("Mul", [b.op("Div", [d, std]), w]), bias])]

    def forward(self, node, ctx, inputs, params):
        return [F.layer_norm(inputs[0], params["weight"], params["bias"], (-1,), node.attrs["eps"])]


def _reduce_mean(b, x):
    # Only used below opset 17 (LayerNormalization is native from 17), where ReduceMean still
    # takes `axes` as an attribute (it became an input at opset 18).
    return b.op("ReduceMean", [x], axes=[-1], keepdims=1)
