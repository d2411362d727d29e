"""Dropout: zeroes each element with probability p in training, scaling the rest by 1/(1-p)."""
from __future__ import annotations

from ..autodiff import functional as F
from .base import Arg, Op, Sample


class Dropout(Op):
    """Zeroes each element with probability p in training and scales the rest by 1/(1-p) (inverted
    dropout); the identity at inference, so it disappears from the ONNX graph (no node at all)."""
    name = "Dropout"
    family = "dropout"
    args = (Arg("p", "float", 0.5),)
    samples = (Sample("x: f32[N, T, 6] -> Dropout(0.3)"),)

    def time_local(self, a):
        return True

    def stochastic(self, a):
        return a.attrs["p"] > 0

    def infer(self, a):
        self.expect_float(a.x)
        p = a.attrs["p"]
        if not 0.0 <= p < 1.0:
            raise self.fail(f"p must be in [0, 1), got {p}",
                            "p is the probability of dropping an element; p=1 would drop everything")
        return [a.x]

    def lower(self, a, g, inputs):
        return [inputs[0]]

    def forward(self, a, ctx, inputs, params):
        if not ctx.training or a.attrs["p"] == 0.0:
            return [inputs[0]]
        return [F.dropout(inputs[0], a.attrs["p"], ctx.training, ctx.rng)]

    def torch_forward(self, a, ctx, inputs, params):
        return [ctx.dropout(inputs[0], a.attrs["p"])]
