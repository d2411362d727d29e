"""Elementwise math on tensors, and the matrix product: what expressions over tensors make.

    -x                          Neg
    exp(x) log(x) sqrt(x)       Exp, Log, Sqrt, Rsqrt (rsqrt(x)), Abs (abs(x)); tanh(x) and
    rsqrt(x) abs(x)             sigmoid(x) make the activations Tanh and Sigmoid
    a / b, x / 2, 1 / x         Div              (a + b, a - b, a * b: Add, Sub, Mul, structural.py)
    x ** 2, 2 ** x, a ** b      Pow
    a < b, x >= 0, a == b ...   Less, GreaterOrEqual, Equal, NotEqual, LessOrEqual, Greater (bool)
    where(mask, a, b)           Where
    a @ b                       MatMul (batched, broadcast like NumPy)

Dtypes: tensor operands share one dtype; a number takes the tensor's dtype (an integer tensor
takes whole numbers only); comparisons give bool. Exp, Log, Sqrt, Rsqrt, Div, Pow and MatMul take
floating-point tensors; Neg, Abs and the ordering comparisons take numbers (not bool), Equal and
NotEqual any dtype. Shapes broadcast as in NumPy, checked with their symbolic dims.
"""
from __future__ import annotations

import operator

import numpy as np

from ..autodiff import Tensor
from ..autodiff import functional as F
from ..backends.torch.lazy import torch
from ..ir.types import TensorType, fit_number
from .base import Arg, Op, Sample, numel
from .structural import _Binary, _dims, _num


class _Unary(Op):
    """A shape-preserving elementwise function."""
    family = "math"
    dtypes = "float"          # 'float' or 'numeric'
    onnx_op = ""
    engine_fn = None

    def time_local(self, a):
        return True

    def infer(self, a):
        x = a.x
        if self.dtypes == "float":
            self.expect_float(x)
        elif x.dtype == "bool":
            raise self.fail(f"takes numbers, not the bool tensor {x}", "a mask selects values with where(mask, a, b)")
        return [x]

    def lower(self, a, g, inputs):
        return [g.op(self.onnx_op, inputs)]

    def forward(self, a, ctx, inputs, params):
        return [type(self).engine_fn(inputs[0])]


class Neg(_Unary):
    """-x (what unary minus on a tensor makes)."""
    name = "Neg"
    dtypes = "numeric"
    onnx_op = "Neg"
    engine_fn = F.neg
    samples = (Sample("x: f32[N, 3] -> Neg"), Sample("x: i64[N, T] -> Neg", grad=False))

    def torch_forward(self, a, ctx, inputs, params):
        return [torch.neg(inputs[0])]


class Abs(_Unary):
    """|x| (what abs(x) makes of a tensor); the gradient at 0 is 0, as in PyTorch."""
    name = "Abs"
    dtypes = "numeric"
    onnx_op = "Abs"
    engine_fn = F.abs
    samples = (Sample("x: f32[N, 2, 3] -> Abs"),)

    def torch_forward(self, a, ctx, inputs, params):
        return [torch.abs(inputs[0])]


class Exp(_Unary):
    """e to the power x (exp(x))."""
    name = "Exp"
    onnx_op = "Exp"
    engine_fn = F.exp
    samples = (Sample("x: f32[N, 4] -> Exp"),)

    def torch_forward(self, a, ctx, inputs, params):
        return [torch.exp(inputs[0])]


class Log(_Unary):
    """The natural logarithm (log(x)); -inf at 0, NaN below, as in PyTorch."""
    name = "Log"
    onnx_op = "Log"
    engine_fn = F.log
    samples = (Sample("x: f32[N, 4] -> Log", values={"x": (1, 9)}),)

    def torch_forward(self, a, ctx, inputs, params):
        return [torch.log(inputs[0])]


class Sqrt(_Unary):
    """The square root (sqrt(x)); NaN below 0."""
    name = "Sqrt"
    onnx_op = "Sqrt"
    engine_fn = F.sqrt
    samples = (Sample("x: f32[N, T, 3] -> Sqrt", values={"x": (1, 9)}),)

    def torch_forward(self, a, ctx, inputs, params):
        return [torch.sqrt(inputs[0])]


class Rsqrt(_Unary):
    """1 / sqrt(x) (rsqrt(x)), as RMSNorm and attention scales write it."""
    name = "Rsqrt"
    samples = (Sample("x: f32[N, 4] -> Rsqrt", values={"x": (1, 9)}),)

    def lower(self, a, g, inputs):      # ONNX has no Rsqrt
        return [g.op("Reciprocal", [g.op("Sqrt", inputs)])]

    def forward(self, a, ctx, inputs, params):
        return [F.pow(inputs[0], -0.5)]

    def torch_forward(self, a, ctx, inputs, params):
        return [torch.rsqrt(inputs[0])]


class Div(_Binary):
    """a / b between floating-point tensors, or with a number on either side (`x / 2`, `1 / x`)."""
    name = "Div"
    family = "math"
    onnx_op = "Div"
    symbol = "/"
    engine_fn = F.div
    torch_fn = operator.truediv
    dtypes = "float"
    samples = (Sample("(a: f32[N, 3, 4], b: f32[4]) -> Div", values={"b": (1, 4)}),
               Sample("x: f32[N, 3] -> Div(value=2.0)"),
               Sample("x: f32[N, 3] -> Div(value=1.0, reverse=true)", values={"x": (1, 5)}))


class Pow(_Binary):
    """x ** p: a floating-point tensor to the power of a number (`x ** 2`), a number to the power
    of a tensor (`2 ** x`), or a tensor to the power of a tensor."""
    name = "Pow"
    family = "math"
    onnx_op = "Pow"
    symbol = "**"
    engine_fn = F.pow
    torch_fn = operator.pow
    dtypes = "float"
    samples = (Sample("x: f32[N, 3] -> Pow(value=2.0)"),
               Sample("x: f32[N, 3] -> Pow(value=0.5)", values={"x": (1, 9)}),
               Sample("x: f32[N, 4] -> Pow(value=2.0, reverse=true)"),
               Sample("(a: f32[N, 3], b: f32[3]) -> Pow", values={"a": (1, 4)}))

    def forward(self, a, ctx, inputs, params):
        # a number base needs the tensor's dtype: the engine's own scalar would be float64
        base = lambda v: np.asarray(v, inputs[0].data.dtype)     # noqa: E731
        return [F.pow(*self.operands(a, inputs, base if a.attrs["reverse"] else (lambda v: v)))]


def _data(v):
    return v.data if isinstance(v, Tensor) else v


class _Compare(_Binary):
    """A comparison: a bool tensor, no gradient."""
    family = "math"
    out_dtype = "bool"
    np_fn = None

    def forward(self, a, ctx, inputs, params):
        x, y = self.operands(a, inputs, lambda v: v)
        return [Tensor(type(self).np_fn(_data(x), _data(y)))]


class Equal(_Compare):
    """a == b elementwise: a bool mask (any dtype)."""
    name = "Equal"
    onnx_op = "Equal"
    symbol = "=="
    np_fn = np.equal
    torch_fn = operator.eq
    dtypes = "any"
    samples = (Sample("(a: i64[N, T], b: i64[N, T]) -> Equal", values={"a": (0, 2), "b": (0, 2)}, grad=False),
               Sample("x: i64[N, T] -> Equal(value=0)", values={"x": (0, 2)}, grad=False))


class NotEqual(_Compare):
    """a != b elementwise: a bool mask (any dtype)."""
    name = "NotEqual"
    symbol = "!="
    np_fn = np.not_equal
    torch_fn = operator.ne
    dtypes = "any"
    samples = (Sample("x: i64[N, T] -> NotEqual(value=0)", values={"x": (0, 3)}, grad=False),)

    def lower(self, a, g, inputs):        # ONNX has no NotEqual
        const = lambda v: g.const(v, dtype=a.x.np_dtype, hint="value")     # noqa: E731
        return [g.op("Not", [g.op("Equal", self.operands(a, inputs, const))])]


class Less(_Compare):
    """a < b elementwise: a bool mask."""
    name = "Less"
    onnx_op = "Less"
    symbol = "<"
    np_fn = np.less
    torch_fn = operator.lt
    samples = (Sample("(a: f32[N, 3], b: f32[3]) -> Less", grad=False),
               Sample("x: f32[N, 3] -> Less(value=0.0, reverse=true)", grad=False))


class LessOrEqual(_Compare):
    """a <= b elementwise: a bool mask."""
    name = "LessOrEqual"
    onnx_op = "LessOrEqual"
    symbol = "<="
    np_fn = np.less_equal
    torch_fn = operator.le
    samples = (Sample("x: i64[N, T] -> LessOrEqual(value=2)", grad=False),)


class Greater(_Compare):
    """a > b elementwise: a bool mask."""
    name = "Greater"
    onnx_op = "Greater"
    symbol = ">"
    np_fn = np.greater
    torch_fn = operator.gt
    samples = (Sample("x: f32[N, 4] -> Greater(value=0.0)", grad=False),)


class GreaterOrEqual(_Compare):
    """a >= b elementwise: a bool mask."""
    name = "GreaterOrEqual"
    onnx_op = "GreaterOrEqual"
    symbol = ">="
    np_fn = np.greater_equal
    torch_fn = operator.ge
    samples = (Sample("(a: f32[N, T, 1], b: f32[N, 1, 3]) -> GreaterOrEqual", grad=False),)


class Where(Op):
    """where(cond, a, b): a where the bool tensor cond holds, b elsewhere, broadcast like NumPy.
    a or b may be numbers (`x`, `y`: `where(mask, scores, -1e9)`); they take the other operand's
    dtype, or f32 when both are numbers."""
    name = "Where"
    family = "math"
    n_inputs = (1, 3)
    args = (Arg("x", "float", None, doc="a number in place of a", keyword_only=True),
            Arg("y", "float", None, doc="a number in place of b", keyword_only=True))
    samples = (Sample("(c: bool[N, 4], a: f32[N, 4], b: f32[4]) -> Where"),
               Sample("(c: bool[N, T, 1], a: f32[N, T, 3]) -> Where(y=-4.0)"),
               Sample("c: bool[N, 3] -> Where(x=1.0, y=0.0)", grad=False))

    def time_local(self, a):
        return True

    def derive(self, a) -> tuple:
        """The operands a and b: ('tensor', input index) or ('number', value)."""
        tensors = list(range(1, len(a.in_types)))
        slots = []
        for k in ("x", "y"):
            v = a.attrs[k]
            if v is not None:
                slots.append(("number", v))
            elif tensors:
                slots.append(("tensor", tensors.pop(0)))
            else:
                raise self.fail(f"needs a tensor or a number ({k}=) for each of a and b",
                                "write where(cond, a, b)")
        if tensors:
            raise self.fail(f"takes cond and two operands, got {len(a.in_types)} tensors and "
                            f"{sum(a.attrs[k] is not None for k in ('x', 'y'))} numbers", "write where(cond, a, b)")
        return tuple(slots)

    def _dtype(self, a) -> str:
        ts = [a.in_types[i] for kind, i in a.derived if kind == "tensor"]
        return ts[0].dtype if ts else "f32"

    def infer(self, a):
        cond = a.x
        if cond.dtype != "bool":
            raise self.fail(f"the condition must be a bool tensor, got {cond}",
                            "make a mask with a comparison: where(x > 0, x, 0.0)")
        ts = [a.in_types[i] for kind, i in a.derived if kind == "tensor"]
        if len(ts) == 2 and ts[0].dtype != ts[1].dtype:
            raise self.fail(f"a and b have different dtypes: {ts[0]} and {ts[1]}", "both must have the same dtype")
        dt = self._dtype(a)
        for kind, v in a.derived:
            if kind == "number" and fit_number(v, dt) is None:
                raise self.fail(f"the number {_num(v)} does not fit the {dt} operand",
                                "a number takes the other operand's dtype")
        shape = self.broadcast(a, [cond.shape] + [t.shape for t in ts], "condition and operands")
        if shape is None:
            raise self.fail(f"cannot broadcast the condition {cond} with "
                            + " and ".join(f"[{_dims(t.shape)}]" for t in ts),
                            "dims are matched from the right; each must be equal or 1")
        return [TensorType(dt, shape)]

    def _operands(self, a, inputs, const):
        return [inputs[v] if kind == "tensor" else const(fit_number(v, self._dtype(a)))
                for kind, v in a.derived]

    def lower(self, a, g, inputs):
        dt = TensorType(self._dtype(a), ()).np_dtype
        ops = self._operands(a, inputs, lambda v: g.const(v, dtype=dt, hint="value"))
        return [g.op("Where", [inputs[0]] + ops)]

    def forward(self, a, ctx, inputs, params):
        ts = [inputs[v] for kind, v in a.derived if kind == "tensor"]
        dt = ts[0].data.dtype if ts else TensorType(self._dtype(a), ()).np_dtype
        x, y = self._operands(a, inputs, lambda v: np.asarray(v, dt))
        return [F.where(_data(inputs[0]), x, y)]

    def torch_forward(self, a, ctx, inputs, params):
        return [torch.where(inputs[0], *self._operands(a, inputs, lambda v: v))]

    def describe(self, attrs):
        return ", ".join(f"{k}={_num(attrs[k])}" for k in ("x", "y") if attrs.get(k) is not None)


class MatMul(Op):
    """a @ b: the matrix product over the last two dims, the dims before them broadcast like
    NumPy (torch.matmul; a 1-D operand is a vector)."""
    name = "MatMul"
    family = "math"
    n_inputs = 2
    samples = (Sample("(a: f32[N, 3, 4], b: f32[4, 5]) -> MatMul"),
               Sample("(a: f32[N, 2, T, 4], b: f32[N, 2, 4, T]) -> MatMul"),
               Sample("(a: f32[N, 3, 4], b: f32[4]) -> MatMul"))

    def infer(self, a):
        x, y = a.in_types
        for t, what in ((x, "left"), (y, "right")):
            self.expect_float(t, f"{what} operand")
            if t.rank == 0:
                raise self.fail(f"the {what} operand must have at least 1 dim, got {t}",
                                "scale by a number with '*' instead")
        if x.dtype != y.dtype:
            raise self.fail(f"operands have different dtypes: {x} @ {y}", "both must have the same dtype")
        xs = x.shape if x.rank > 1 else (1,) + x.shape
        ys = y.shape if y.rank > 1 else y.shape + (1,)
        if not self.same_dim(a, xs[-1], ys[-2], "the last dim of the left operand must equal the "
                                                "second-to-last dim of the right one"):
            raise self.fail(f"cannot multiply {x} @ {y}: {xs[-1]} (last dim of the left) differs from "
                            f"{ys[-2]} ({'the only' if y.rank == 1 else 'second-to-last'} dim of the right)",
                            "a @ b contracts the last dim of a with the second-to-last of b")
        batch = self.broadcast(a, [xs[:-2], ys[:-2]], "batch dims of the operands")
        if batch is None:
            raise self.fail(f"cannot broadcast the batch dims [{_dims(xs[:-2])}] and [{_dims(ys[:-2])}] "
                            f"of {x} @ {y}", "the dims before the last two are matched from the right; "
                                             "each must be equal or 1")
        out = batch + ((xs[-2],) if x.rank > 1 else ()) + ((ys[-1],) if y.rank > 1 else ())
        return [x.with_shape(out)]

    def macs(self, a, in_shapes, out_shapes):
        return numel(out_shapes[0]) * int(in_shapes[0][-1])

    def lower(self, a, g, inputs):
        return [g.op("MatMul", inputs)]

    def forward(self, a, ctx, inputs, params):
        return [F.matmul(inputs[0], inputs[1])]

    def torch_forward(self, a, ctx, inputs, params):
        return [torch.matmul(inputs[0], inputs[1])]
