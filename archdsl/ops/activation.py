"""Activations: ReLU, ReLU6, Hardtanh, LeakyReLU, PReLU, ELU, Tanh, Sigmoid, Hardsigmoid, SiLU
(alias Swish), Hardswish, Mish, Softplus, Softsign, LogSigmoid, Softmax, LogSoftmax, GELU, Identity.

All are shape-preserving and take floating-point inputs (Identity takes anything); arguments
and formulas are PyTorch's. Each lowers to its native ONNX op where ONNX has one with the same
meaning; GELU (opset 20) and Mish (18) are native only from those opsets and are decomposed
below them (ONNX Runtime has no kernel for ONNX's Swish: SiLU is Mul(x, Sigmoid(x))); ReLU6 and
Hardtanh are Clip; Softplus with PyTorch's beta and threshold, and LogSigmoid, are built from
ONNX's Softplus.
"""
from __future__ import annotations

import math

import numpy as np

from ..autodiff import functional as F
from ..backends.torch.lazy import TF, torch
from ..ir.graph import ParamSpec
from ..ir.types import is_static
from .base import CUDA_PROVIDER, Arg, Op, Sample, lowering


class _Elementwise(Op):
    """A float -> float op that keeps the shape."""
    family = "activation"

    def time_local(self, a):
        return True

    def infer(self, a):
        self.expect_float(a.x)
        return [a.x]


def _const_like(a, g, value, hint="const"):
    """A scalar constant with the dtype of the first input (ONNX does not promote); a value beyond
    the dtype's range becomes its largest finite value (a clip bound of 1e300 on f32 means none)."""
    dt = a.x.np_dtype
    if np.issubdtype(dt, np.floating):
        big = float(np.finfo(dt).max)
        value = min(max(float(value), -big), big)
    return g.const(np.asarray(value, dtype=dt), hint=hint)


class ReLU(_Elementwise):
    """max(x, 0)."""
    name = "ReLU"
    samples = (Sample("x: f32[N, 3, 4] -> ReLU"),)

    def lower(self, a, g, inputs):
        return [g.op("Relu", inputs)]

    def forward(self, a, ctx, inputs, params):
        return [F.relu(inputs[0])]

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.relu(inputs[0])]


def _clip(a, g, x, lo: float, hi: float):
    return g.op("Clip", [x, _const_like(a, g, lo, "min"), _const_like(a, g, hi, "max")])


class ReLU6(_Elementwise):
    """min(max(x, 0), 6) (MobileNet)."""
    name = "ReLU6"
    samples = (Sample("x: f32[N, 3, 4] -> ReLU6"),)

    def lower(self, a, g, inputs):
        return [_clip(a, g, inputs[0], 0.0, 6.0)]

    def forward(self, a, ctx, inputs, params):
        return [F.clip(inputs[0], 0.0, 6.0)]

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.relu6(inputs[0])]


class Hardtanh(_Elementwise):
    """x clamped to [min_val, max_val] (PyTorch's Hardtanh; ONNX's Clip)."""
    name = "Hardtanh"
    args = (Arg("min_val", "float", -1.0), Arg("max_val", "float", 1.0))
    samples = (Sample("x: f32[N, 7] -> Hardtanh"), Sample("x: f32[N, 2, 4] -> Hardtanh(-0.5, 2.0)"))

    def derive(self, a):
        lo, hi = a.attrs["min_val"], a.attrs["max_val"]
        if not lo < hi:
            raise self.fail(f"min_val {lo} must be below max_val {hi}")

    def lower(self, a, g, inputs):
        return [_clip(a, g, inputs[0], a.attrs["min_val"], a.attrs["max_val"])]

    def forward(self, a, ctx, inputs, params):
        return [F.clip(inputs[0], a.attrs["min_val"], a.attrs["max_val"])]

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.hardtanh(inputs[0], a.attrs["min_val"], a.attrs["max_val"])]


class LeakyReLU(_Elementwise):
    """x for x >= 0, negative_slope * x below."""
    name = "LeakyReLU"
    args = (Arg("negative_slope", "float", 0.01),)
    samples = (Sample("x: f32[N, 7] -> LeakyReLU(negative_slope=0.2)"),)

    def lower(self, a, g, inputs):
        return [g.op("LeakyRelu", inputs, alpha=float(a.attrs["negative_slope"]))]

    def forward(self, a, ctx, inputs, params):
        return [F.leaky_relu(inputs[0], a.attrs["negative_slope"])]

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.leaky_relu(inputs[0], a.attrs["negative_slope"])]


class ELU(_Elementwise):
    """x for x > 0, alpha * (exp(x) - 1) below."""
    name = "ELU"
    args = (Arg("alpha", "float", 1.0),)
    samples = (Sample("x: f32[N, 7] -> ELU(alpha=0.5)"),)

    def lower(self, a, g, inputs):
        return [g.op("Elu", inputs, alpha=float(a.attrs["alpha"]))]

    def forward(self, a, ctx, inputs, params):
        return [F.elu(inputs[0], a.attrs["alpha"])]

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.elu(inputs[0], a.attrs["alpha"])]


class Tanh(_Elementwise):
    """The hyperbolic tangent, into (-1, 1)."""
    name = "Tanh"
    samples = (Sample("x: f32[N, T, 3] -> Tanh"),)

    def lower(self, a, g, inputs):
        return [g.op("Tanh", inputs)]

    def forward(self, a, ctx, inputs, params):
        return [F.tanh(inputs[0])]

    def torch_forward(self, a, ctx, inputs, params):
        return [torch.tanh(inputs[0])]


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x)), into (0, 1)."""
    name = "Sigmoid"
    samples = (Sample("x: f32[N, 6] -> Sigmoid"),)

    def lower(self, a, g, inputs):
        return [g.op("Sigmoid", inputs)]

    def forward(self, a, ctx, inputs, params):
        return [F.sigmoid(inputs[0])]

    def torch_forward(self, a, ctx, inputs, params):
        return [torch.sigmoid(inputs[0])]


class PReLU(_Elementwise):
    """x for x >= 0, a * x below, with learned slopes a: one shared (num_parameters=1) or one per
    channel (dim 1), initialised to `init` (PyTorch's nn.PReLU)."""
    name = "PReLU"
    args = (Arg("num_parameters", "int", 1, doc="1 (one shared slope) or the channels (dim 1)"),
            Arg("init", "float", 0.25, doc="the slopes' initial value"))
    samples = (Sample("x: f32[N, 3, 4, 4] -> PReLU(3)"), Sample("x: f32[N, T, 5] -> PReLU(init=0.1)"),
               Sample("x: f32[N, 6] -> PReLU(6)"))

    def derive(self, a):
        x, n = a.x, a.attrs["num_parameters"]
        if n < 1:
            raise self.fail(f"num_parameters must be positive, got {n}")
        if n != 1:
            if x.rank < 2:
                raise self.fail(f"one slope per channel needs an input with a channel dim (dim 1), got {x}",
                                "write PReLU() for one shared slope")
            c = x.shape[1]
            if not is_static(c) or c != n:
                raise self.fail(f"num_parameters is {n} but the input has {c} channels (dim 1 of {x})",
                                f"write PReLU({c}) for one slope per channel, or PReLU() for one shared slope"
                                if is_static(c) else "write PReLU() for one shared slope")

    def params(self, a):
        return {"weight": ParamSpec((a.attrs["num_parameters"],), "constant", value=float(a.attrs["init"]))}

    def lower(self, a, g, inputs):
        # ONNX broadcasts the slope from the right: [C] becomes [C, 1, ...] for dims after the channel
        n, r = a.attrs["num_parameters"], a.x.rank
        slope = g.param("weight") if n == 1 or r == 2 else \
            g.derived("weight", lambda w: w.reshape((n,) + (1,) * (r - 2)), "bcast")
        return [g.op("PRelu", [inputs[0], slope])]

    def forward(self, a, ctx, inputs, params):
        return [F.prelu(inputs[0], params["weight"])]

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.prelu(inputs[0], params["weight"])]


class SiLU(_Elementwise):
    """x * sigmoid(x), the sigmoid-weighted linear unit (EfficientNet, Llama's SwiGLU)."""
    name = "SiLU"
    samples = (Sample("x: f32[N, 3, 4] -> SiLU"),)

    def lower(self, a, g, inputs):
        # ONNX's own Swish (opset 24) has no ONNX Runtime kernel (1.32); Mul(x, Sigmoid(x)) is what
        # ONNX Runtime fuses into its QuickGelu-style kernel anyway.
        return [g.op("Mul", [inputs[0], g.op("Sigmoid", inputs)])]

    def forward(self, a, ctx, inputs, params):
        return [F.silu(inputs[0])]

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.silu(inputs[0])]


class Swish(SiLU):
    """SiLU under its other name: x * sigmoid(x)."""
    name = "Swish"
    samples = (Sample("x: f32[N, T, 4] -> Swish"),)


class Hardswish(_Elementwise):
    """x * relu6(x + 3) / 6 (MobileNetV3)."""
    name = "Hardswish"
    samples = (Sample("x: f32[N, 2, 5] -> Hardswish"),)

    def lower(self, a, g, inputs):
        return [g.op("HardSwish", inputs)]

    def forward(self, a, ctx, inputs, params):
        return [F.hardswish(inputs[0])]

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.hardswish(inputs[0])]


class Hardsigmoid(_Elementwise):
    """relu6(x + 3) / 6, a piecewise-linear sigmoid (MobileNetV3's squeeze-excitation)."""
    name = "Hardsigmoid"
    samples = (Sample("x: f32[N, 8] -> Hardsigmoid"),)

    def lower(self, a, g, inputs):
        return [g.op("HardSigmoid", inputs, alpha=1.0 / 6.0, beta=0.5)]

    def forward(self, a, ctx, inputs, params):
        return [F.hardsigmoid(inputs[0])]

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.hardsigmoid(inputs[0])]


class Mish(_Elementwise):
    """x * tanh(softplus(x)) (Misra; YOLOv4)."""
    name = "Mish"
    samples = (Sample("x: f32[N, 3, 4] -> Mish"),)

    @lowering(since=18)
    def lower_native(self, a, g, inputs):
        return [g.op("Mish", inputs)]

    @lowering()
    def lower_decomposed(self, a, g, inputs):
        return [g.op("Mul", [inputs[0], g.op("Tanh", [g.op("Softplus", inputs)])])]

    @lowering(providers=(CUDA_PROVIDER,))
    def lower_cuda(self, a, g, inputs):
        # ONNX Runtime's CUDA provider has no Mish kernel, and its Softplus stops at Softplus-1:
        # softplus(x) = relu(x) + log(1 + exp(-|x|)), which never overflows, from ops it runs
        (x,) = inputs
        tail = g.op("Log", [g.op("Add", [g.op("Exp", [g.op("Neg", [g.op("Abs", [x])])]),
                                         _const_like(a, g, 1.0, "one")])])
        return [g.op("Mul", [x, g.op("Tanh", [g.op("Add", [g.op("Relu", [x]), tail])])])]

    def forward(self, a, ctx, inputs, params):
        return [F.mish(inputs[0])]

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.mish(inputs[0])]


class Softplus(_Elementwise):
    """log(1 + exp(beta x)) / beta, a smooth ReLU; x itself where beta x > threshold (PyTorch's)."""
    name = "Softplus"
    args = (Arg("beta", "float", 1.0), Arg("threshold", "float", 20.0))
    samples = (Sample("x: f32[N, 6] -> Softplus"), Sample("x: f32[N, 2, 3] -> Softplus(2.0, 1.0)"))

    def derive(self, a):
        if a.attrs["beta"] <= 0:
            raise self.fail(f"beta must be positive, got {a.attrs['beta']}")

    def lower(self, a, g, inputs):
        (x,) = inputs
        beta = float(a.attrs["beta"])
        z = x if beta == 1.0 else g.op("Mul", [x, _const_like(a, g, beta, "beta")])
        soft = g.op("Softplus", [z])
        if beta != 1.0:
            soft = g.op("Div", [soft, _const_like(a, g, beta, "beta")])
        lin = g.op("Greater", [z, _const_like(a, g, a.attrs["threshold"], "threshold")])
        return [g.op("Where", [lin, x, soft])]

    def forward(self, a, ctx, inputs, params):
        return [F.softplus(inputs[0], a.attrs["beta"], a.attrs["threshold"])]

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.softplus(inputs[0], a.attrs["beta"], a.attrs["threshold"])]


class Softsign(_Elementwise):
    """x / (1 + |x|), into (-1, 1)."""
    name = "Softsign"
    samples = (Sample("x: f32[N, 6] -> Softsign"),)

    def lower(self, a, g, inputs):
        return [g.op("Softsign", inputs)]

    def forward(self, a, ctx, inputs, params):
        return [F.softsign(inputs[0])]

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.softsign(inputs[0])]


class LogSigmoid(_Elementwise):
    """log(sigmoid(x)) = -softplus(-x), computed stably."""
    name = "LogSigmoid"
    samples = (Sample("x: f32[N, T, 3] -> LogSigmoid"),)

    def lower(self, a, g, inputs):
        return [g.op("Neg", [g.op("Softplus", [g.op("Neg", inputs)])])]

    def forward(self, a, ctx, inputs, params):
        return [F.log_sigmoid(inputs[0])]

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.logsigmoid(inputs[0])]


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

    def rowwise(self, a):
        return a.derived != 0 and not self.batch_coupled(a)

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

    def torch_forward(self, a, ctx, inputs, params):
        return [torch.softmax(inputs[0], a.derived)]


class LogSoftmax(_AxisSoftmax):
    """The logarithm of Softmax, computed stably: x - logsumexp(x) along `axis`."""
    name = "LogSoftmax"
    onnx_op = "LogSoftmax"
    samples = (Sample("x: f32[N, T, 5] -> LogSoftmax"),)

    def forward(self, a, ctx, inputs, params):
        return [F.log_softmax(inputs[0], a.derived)]

    def torch_forward(self, a, ctx, inputs, params):
        return [torch.log_softmax(inputs[0], a.derived)]


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

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.gelu(inputs[0], approximate=a.attrs["approximate"])]


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

    def torch_forward(self, a, ctx, inputs, params):
        return [inputs[0]]
