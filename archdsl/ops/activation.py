"""Activations: ReLU, LeakyReLU, ELU, Tanh, Sigmoid, Softmax, LogSoftmax, GELU, Identity.

All are shape-preserving and take floating-point inputs (Identity takes anything). Each lowers
to its native ONNX op; GELU is native only from opset 20 and is decomposed below that.
"""
from __future__ import annotations

import math

import numpy as np

from ..autodiff import functional as F
from .base import Arg, Op, Sample, lowering


class _Elementwise(Op):
    """A float -> float op that keeps the shape."""
    family = "activation"

    def time_local(self, a):
        return True

    def infer(self, a):
        self.expect_float(a.x)
        return [a.x]


def _const_like(a, g, value, hint="const"):
    """A scalar constant with the dtype of the first input (ONNX does not promote)."""
    return g.const(np.asarray(value, dtype=a.x.np_dtype), hint=hint)


class ReLU(_Elementwise):
    """max(x, 0)."""
    name = "ReLU"
    samples = (Sample("x: f32[N, 3, 4] -> ReLU"),)

    def lower(self, a, g, inputs):
        return [g.op("Relu", inputs)]

    def forward(self, a, ctx, inputs, params):
        return [F.relu(inputs[0])]


class LeakyReLU(_Elementwise):
    """x for x >= 0, negative_slope * x below."""
    name = "LeakyReLU"
    args = (Arg("negative_slope", "float", 0.01),)
    samples = (Sample("x: f32[N, 7] -> LeakyReLU(negative_slope=0.2)"),)

    def lower(self, a, g, inputs):
        return [g.op("LeakyRelu", inputs, alpha=float(a.attrs["negative_slope"]))]

    def forward(self, a, ctx, inputs, params):
        return [F.leaky_relu(inputs[0], a.attrs["negative_slope"])]


class ELU(_Elementwise):
    """x for x > 0, alpha * (exp(x) - 1) below."""
    name = "ELU"
    args = (Arg("alpha", "float", 1.0),)
    samples = (Sample("x: f32[N, 7] -> ELU(alpha=0.5)"),)

    def lower(self, a, g, inputs):
        return [g.op("Elu", inputs, alpha=float(a.attrs["alpha"]))]

    def forward(self, a, ctx, inputs, params):
        return [F.elu(inputs[0], a.attrs["alpha"])]


class Tanh(_Elementwise):
    """The hyperbolic tangent, into (-1, 1)."""
    name = "Tanh"
    samples = (Sample("x: f32[N, T, 3] -> Tanh"),)

    def lower(self, a, g, inputs):
        return [g.op("Tanh", inputs)]

    def forward(self, a, ctx, inputs, params):
        return [F.tanh(inputs[0])]


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x)), into (0, 1)."""
    name = "Sigmoid"
    samples = (Sample("x: f32[N, 6] -> Sigmoid"),)

    def lower(self, a, g, inputs):
        return [g.op("Sigmoid", inputs)]

    def forward(self, a, ctx, inputs, params):
        return [F.sigmoid(inputs[0])]


class _AxisSoftmax(_Elementwise):
    args = (Arg("axis", "int", -1),)
    onnx_op = ""

    def derive(self, a):
        x, ax = a.x, a.attrs["axis"]
        if not -x.rank <= ax < x.rank:
            raise self.fail(f"axis {ax} is out of range for the {x.rank}-D input {x}",
                            f"choose an axis in {-x.rank}..{x.rank - 1}" if x.rank else None)
        return ax % x.rank          # the normalised axis

    def time_local(self, a):
        return a.x.rank < 3 or a.derived >= 2

    def lower(self, a, g, inputs):
        # Opset >= 13 Softmax/LogSoftmax normalise along one axis (the older ones flattened).
        return [g.op(self.onnx_op, inputs, axis=a.derived)]


class Softmax(_AxisSoftmax):
    """exp(x) normalised to sum to 1 along `axis` (the last by default)."""
    name = "Softmax"
    onnx_op = "Softmax"
    samples = (Sample("x: f32[N, 6] -> Softmax"), Sample("x: f32[N, 3, T] -> Softmax(axis=1)"))

    def forward(self, a, ctx, inputs, params):
        return [F.softmax(inputs[0], a.derived)]


class LogSoftmax(_AxisSoftmax):
    """The logarithm of Softmax, computed stably: x - logsumexp(x) along `axis`."""
    name = "LogSoftmax"
    onnx_op = "LogSoftmax"
    samples = (Sample("x: f32[N, T, 5] -> LogSoftmax"),)

    def forward(self, a, ctx, inputs, params):
        return [F.log_softmax(inputs[0], a.derived)]


class GELU(_Elementwise):
    """x * Phi(x) ('none'), or PyTorch's tanh approximation ('tanh')."""
    name = "GELU"
    args = (Arg("approximate", "str", "none", choices=("none", "tanh")),)
    samples = (Sample("x: f32[N, 6] -> GELU"), Sample("x: f32[N, T, 4] -> GELU(approximate='tanh')"))

    @lowering(since=20)
    def lower_native(self, a, g, inputs):
        return [g.op("Gelu", inputs, approximate=a.attrs["approximate"])]

    @lowering()
    def lower_decomposed(self, a, g, inputs):
        (x,) = inputs
        half = _const_like(a, g, 0.5, "half")
        one = _const_like(a, g, 1.0, "one")
        if a.attrs["approximate"] == "none":      # 0.5 x (1 + erf(x / sqrt 2))
            inner = g.op("Erf", [g.op("Div", [x, _const_like(a, g, math.sqrt(2.0), "sqrt2")])])  # Div: ORT fuses it to Gelu
        else:                     # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            x3 = g.op("Mul", [g.op("Mul", [x, x]), x])
            u = g.op("Add", [x, g.op("Mul", [x3, _const_like(a, g, 0.044715, "c")])])
            inner = g.op("Tanh", [g.op("Mul", [u, _const_like(a, g, math.sqrt(2.0 / math.pi), "k")])])
        return [g.op("Mul", [g.op("Mul", [x, half]), g.op("Add", [inner, one])])]

    def forward(self, a, ctx, inputs, params):
        return [F.gelu(inputs[0], a.attrs["approximate"])]


class Identity(Op):
    """Passes its input through (any dtype); exports no node."""
    name = "Identity"
    family = "activation"
    samples = (Sample("x: f32[N, 4] -> Identity"), Sample("x: i64[N, T] -> Identity", grad=False))

    def time_local(self, a):
        return True

    def infer(self, a):
        return [a.x]

    def lower(self, a, g, inputs):
        return [inputs[0]]

    def forward(self, a, ctx, inputs, params):
        return [inputs[0]]
