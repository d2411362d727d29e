"""Dropout: zeroes each element with probability p in training, scaling the rest by 1/(1-p); and
stochastic depth, which drops a whole sample's residual branch."""
from __future__ import annotations

from ..autodiff import functional as F
from ..autodiff.tensor import Tensor
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

class StochasticDepth(Dropout):
    """Drops the whole residual branch of a sample with probability p in training and scales the
    kept ones by 1/(1-p) (Huang et al.'s stochastic depth, torchvision.ops.StochasticDepth; mode
    'batch': one draw for the whole batch); the identity at inference, with no ONNX node."""
    name = "StochasticDepth"
    args = (Arg("p", "float", doc="the probability of dropping a sample's branch"),
            Arg("mode", "str", "row", choices=("row", "batch"), doc="one draw per sample, or one per batch"))
    samples = (Sample("x: f32[N, 3, 4, 4] -> StochasticDepth(0.2)"),
               Sample("x: f32[N, T, 6] -> StochasticDepth(0.5, mode='batch')"))

    def infer(self, a):
        self.expect_float(a.x)
        p = a.attrs["p"]
        if not 0.0 <= p <= 1.0:
            raise self.fail(f"p must be in [0, 1], got {p}", "p is the probability of dropping a sample's branch")
        if a.x.rank < 1:
            raise self.fail(f"expects a batch of samples (rank >= 1), got {a.x}")
        return [a.x]

    def forward(self, a, ctx, inputs, params):
        x, p = inputs[0], a.attrs["p"]
        if not ctx.training or p == 0.0:
            return [x]
        rows = x.shape[0] if a.attrs["mode"] == "row" else 1
        keep = (ctx.rng.random(rows) >= p).astype(x.data.dtype)
        if p < 1.0:         # torchvision: the kept rows scaled by 1/(1-p); p = 1 drops everything
            keep /= (1.0 - p)
        return [F.mul(x, Tensor(keep.reshape((rows,) + (1,) * (x.ndim - 1))))]

    def torch_forward(self, a, ctx, inputs, params):
        return [ctx.drop_branch(inputs[0], a.attrs["p"], per_row=a.attrs["mode"] == "row")]
