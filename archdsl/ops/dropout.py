"""Dropout: zeroes each element with probability p in training, scaling the rest by 1/(1-p)."""
from __future__ import annotations

from ..autodiff import functional as F
from .base import Arg, Op


class Dropout(Op):
    """Inverted dropout. Exported models are for inference, where dropout is the identity:
    inference-mode Dropout disappears from the ONNX graph (no node at all)."""
    name = "Dropout"
    family = "dropout"
    args = (Arg("p", "float", 0.5),)

    def infer(self, attrs, in_types):
        (x,) = in_types
        self.expect_float(x)
        p = attrs["p"]
        if not 0.0 <= p < 1.0:
            raise self.fail(f"p must be in [0, 1), got {p}",
                            "p is the probability of dropping an element; p=1 would drop everything")
        return [x]

    def lower(self, node, b, inputs):
        return [inputs[0]]

    def forward(self, node, ctx, inputs, params):
        if not ctx.training or node.attrs["p"] == 0.0:
            return [inputs[0]]
        return [F.dropout(inputs[0], node.attrs["p"], ctx.training, ctx.rng)]
