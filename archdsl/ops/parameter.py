"""Parameter: a free learnable tensor, what a `param` statement declares.

    param cls: f32[1, 1, d] = zeros                 # ViT's class token
    param pos: f32[1, 197, d] = normal(std=0.02)    # a learned position table
    param gamma: f32[d] = constant(1e-6)            # layer scale

The parameter is named after the statement (`cls`; `block1.gamma` inside a block instance, one per
instance and repeat copy, as layer weights are) and is a tensor like any other from there on. Its
initialiser is the statement's value (ir/initializers.py). It counts in summaries, is trained,
frozen, checkpointed, and exported as an ONNX initializer; the node itself computes nothing.
"""
from __future__ import annotations

from ..ir.graph import ParamSpec
from ..ir.types import TensorType
from .base import Arg, Op, Sample, explain_params


class Parameter(Op):
    """A learnable tensor of its own (what `param name: f32[...] = init` declares)."""
    name = "Parameter"
    family = "parameter"
    args = (Arg("shape", "shape", doc="the tensor's shape (ints)"),)
    n_inputs = 0
    samples = (Sample("x: f32[N, 2]", setup="param p: f32[2, 3] = normal(std=0.5)", expr="p"),
               Sample("x: f32[N, 2]", setup="param s: f32[4] = constant(0.25)", expr="s"))

    def infer(self, a):
        shape = tuple(a.attrs["shape"])
        if any(d <= 0 for d in shape):
            raise self.fail(f"every dim must be positive, got [{', '.join(map(str, shape))}]",
                            "declare it with: param w: f32[4, 8] = zeros")
        return [TensorType("f32", shape)]

    def params(self, a):
        # the empty local name: the parameter is named after the statement itself (`cls`)
        return {"": ParamSpec(tuple(a.attrs["shape"]), "zeros")}

    def explain(self, a):
        return [f"Parameter: a learnable {a.out_types[0]}"] + explain_params({"value": a.params[""]})

    def describe(self, attrs):
        return "[" + ", ".join(map(str, attrs["shape"])) + "]"

    def lower(self, a, g, inputs):
        return [g.param("")]

    def forward(self, a, ctx, inputs, params):
        return [params[""]]

    def torch_forward(self, a, ctx, inputs, params):
        return [params[""]]
