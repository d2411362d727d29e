"""Activations: ReLU, LeakyReLU, ELU, Tanh, Sigmoid, Softmax, LogSoftmax, GELU, Identity.

All are shape-preserving and take floating-point inputs (Identity takes anything). Each lowers
to its native ONNX op; GELU is native only from opset 20 and is decomposed below that.
"""
from __future__ import annotations

import math

import numpy as np

from ..autodiff import functional as F
from .base import Arg, Op


class _Elementwise(Op):
    """A float -> float op that keeps the shape."""
    family = "activation"

    def infer(self, attrs, in_types):
        (x,) = in_types
        self.expect_float(x)
        return [x]


def _const_like(node, b, value, hint="const"):
    """A scalar constant with the dtype of the node's first input (ONNX does not promote)."""
    return b.const(np.asarray(value, dtype=node.inputs[0].type.np_dtype), hint=hint)


class ReLU(_Elementwise):
    name = "ReLU"

    def lower(self, node, b, inputs):
        return [b.op("Relu", inputs)]

    def forward(self, node, ctx, inputs, params):
        return [F.relu(inputs[0])]


class LeakyReLU(_Elementwise):
    name = "LeakyReLU"
    args = (Arg("negative_slope", "float", 0.01),)

    def lower(self, node, b, inputs):
        return [b.op("LeakyRelu", inputs, alpha=float(node.attrs["negative_slope"]))]

    def forward(self, node, ctx, inputs, params):
        return [F.leaky_relu(inputs[0], node.attrs["negative_slope"])]


class ELU(_Elementwise):
    name = "ELU"
    args = (Arg("alpha", "float", 1.0),)

    def lower(self, node, b, inputs):
        return [b.op("Elu", inputs, alpha=float(node.attrs["alpha"]))]

    def forward(self, node, ctx, inputs, params):
        return [F.elu(inputs[0], node.attrs["alpha"])]


class Tanh(_Elementwise):
    name = "Tanh"

    def lower(self, node, b, inputs):
        return [b.op("Tanh", inputs)]

    def forward(self, node, ctx, inputs, params):
        return [F.tanh(inputs[0])]


class Sigmoid(_Elementwise):
    name = "Sigmoid"

    def lower(self, node, b, inputs):
        return [b.op("Sigmoid", inputs)]

    def forward(self, node, ctx, inputs, params):
        return [F.sigmoid(inputs[0])]


class _AxisSoftmax(_Elementwise):
    args = (Arg("axis", "int", -1),)
    onnx_op = ""

    def infer(self, attrs, in_types):
        (x,) = in_types
        self.expect_float(x)
        ax = attrs["axis"]
        if not -x.rank <= ax < x.rank:
            raise self.fail(f"axis {ax} is out of range for the {x.rank}-D input {x}",
                            f"choose an axis in {-x.rank}..{x.rank - 1}" if x.rank else None)
        return [x]

    def lower(self, node, b, inputs):
        # Opset >= 13 Softmax/LogSoftmax normalise along one axis (the older ones flattened).
        return [b.op(self.onnx_op, inputs, axis=node.attrs["axis"] % node.inputs[0].type.rank)]


class Softmax(_AxisSoftmax):
    name = "Softmax"
    onnx_op = "Softmax"

    def forward(self, node, ctx, inputs, params):
        return [F.softmax(inputs[0], node.attrs["axis"] % node.inputs[0].type.rank)]


class LogSoftmax(_AxisSoftmax):
    name = "LogSoftmax"
    onnx_op = "LogSoftmax"

    def forward(self, node, ctx, inputs, params):
        return [F.log_softmax(inputs[0], node.attrs["axis"] % node.inputs[0].type.rank)]


class GELU(_Elementwise):
    """x * Phi(x) ('none'), or PyTorch's tanh approximation ('tanh')."""
    name = "GELU"
    args = (Arg("approximate", "str", "none", choices=("none", "tanh")),)

    def lower(self, node, b, inputs):
        (x,) = inputs
        approx = node.attrs["approximate"]
        if b.opset >= 20:
            return [b.op("Gelu", [x], approximate=approx)]
        half = _const_like(node, b, 0.5, "half")
        one = _const_like(node, b, 1.0, "one")
        if approx == "none":      # 0.5 x (1 + erf(x / sqrt 2))
            inner = b.op("Erf", [b.op("Div", [x, _const_like(node, b, math.sqrt(2.0), "sqrt2")])])  # Div: ORT fuses it to Gelu
        else:                     # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            x3 = b.op("Mul", [b.op("Mul", [x, x]), x])
            u = b.op("Add", [x, b.op("Mul", [x3, _const_like(node, b, 0.044715, "c")])])
            inner = b.op("Tanh", [b.op("Mul", [u, _const_like(node, b, math.sqrt(2.0 / math.pi), "k")])])
        return [b.op("Mul", [b.op("Mul", [x, half]), b.op("Add", [inner, one])])]

    def forward(self, node, ctx, inputs, params):
        return [F.gelu(inputs[0], node.attrs["approximate"])]


class Identity(Op):
    """Passes its input through (any dtype); exports no node."""
    name = "Identity"
    family = "activation"

    def infer(self, attrs, in_types):
        return [in_types[0]]

    def lower(self, node, b, inputs):
        return [inputs[0]]

    def forward(self, node, ctx, inputs, params):
        return [inputs[0]]
