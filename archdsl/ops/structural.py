"""Structural ops: Flatten, Reshape, Transpose (alias Permute), Concat, and the elementwise
binary Add, Sub, Mul that the elaborator makes of `a + b`, `a - b`, `a * b`.

Shape rules work with symbolic dims; negative axes are normalised against the input rank.
"""
from __future__ import annotations

from functools import reduce

from ..autodiff import functional as F
from ..ir.types import Sym, TensorType, fit_number, is_static
from .base import Arg, Op, Sample


def _prod(dims):
    return reduce(lambda a, b: a * b, dims, 1)


def _concrete(dims) -> list[int] | None:
    return [int(d) for d in dims] if all(is_static(d) for d in dims) else None


class Flatten(Op):
    """PyTorch's Flatten: merges dims start_dim..end_dim (inclusive) into one."""
    name = "Flatten"
    family = "structural"
    args = (Arg("start_dim", "int", 1), Arg("end_dim", "int", -1))
    samples = (Sample("x: f32[N, 2, 3, 4] -> Flatten"), Sample("x: f32[N, T, 2, 3] -> Flatten(start_dim=2)"),
               Sample("x: f32[N, 3, T] -> Flatten(start_dim=0, end_dim=1)"))

    def derive(self, a) -> tuple[int, int]:
        """(start, end): the merged dims, normalised against the rank."""
        x, attrs = a.x, a.attrs
        r = max(x.rank, 1)      # a 0-D input flattens like a 1-D one, as in PyTorch
        s, e = attrs["start_dim"], attrs["end_dim"]
        for what, v in (("start_dim", s), ("end_dim", e)):
            if not -r <= v < r:
                raise self.fail(f"{what}={v} is out of range for the {x.rank}-D input {x}",
                                f"choose a dim in {-r}..{r - 1}")
        s, e = s % r, e % r
        if s > e:
            raise self.fail(f"start_dim {attrs['start_dim']} (dim {s}) comes after end_dim "
                            f"{attrs['end_dim']} (dim {e}) for the {x.rank}-D input {x}")
        return s, e

    def infer(self, a):
        x = a.x
        s, e = a.derived
        if x.rank == 0:
            return [x.with_shape((1,))]
        return [x.with_shape(x.shape[:s] + (_prod(x.shape[s:e + 1]),) + x.shape[e + 1:])]

    def lower(self, a, g, inputs):
        (x,) = inputs
        t = a.x
        s, e = a.derived
        r = t.rank
        if r == 0:
            return [g.op("Reshape", [x, g.ints([1])])]
        if s == e:
            return [x]
        if s == 1 and e == r - 1:
            return [g.op("Flatten", [x], axis=1)]
        head = [0] * s + [-1]           # 0 copies the input dim at the same index
        tail = _concrete(t.shape[e + 1:])
        if tail is not None:
            return [g.op("Reshape", [x, g.ints(head + tail)])]
        # Symbolic trailing dims: take them from the runtime shape.
        shape = g.op("Shape", [x])
        tail_dims = g.op("Slice", [shape, g.ints([e + 1], "starts"), g.ints([r], "ends"), g.ints([0], "axes")])
        return [g.op("Reshape", [x, g.op("Concat", [g.ints(head), tail_dims], axis=0)])]

    def forward(self, a, ctx, inputs, params):
        (x,) = inputs
        if a.x.rank == 0:
            return [F.reshape(x, (1,))]
        s, e = a.derived
        shp = tuple(x.shape)
        return [F.reshape(x, shp[:s] + (-1,) + shp[e + 1:])]


class Reshape(Op):
    """Reshape to `shape` (ONNX semantics): -1 infers one dim, 0 copies the input dim at the
    same index. The input may have symbolic dims; element counts are checked when static."""
    name = "Reshape"
    family = "structural"
    args = (Arg("shape", "shape"),)
    samples = (Sample("x: f32[N, 2, 6] -> Reshape((0, 3, -1))"), Sample("x: f32[N, T, 6] -> Reshape((0, 0, 2, 3))"))

    def infer(self, a):
        x = a.x
        shape = tuple(a.attrs["shape"])
        if sum(1 for v in shape if v == -1) > 1:
            raise self.fail(f"at most one dim of the target shape {shape} can be -1")
        out = []
        for i, v in enumerate(shape):
            if v == 0:
                if i >= x.rank:
                    raise self.fail(f"target dim {i} is 0 (copy the input dim), but the input {x} "
                                    f"has only {x.rank} dims")
                out.append(x.shape[i])
            elif v < -1:
                raise self.fail(f"target shape {shape} has the invalid dim {v}",
                                "use positive sizes, -1 to infer one dim, or 0 to copy an input dim")
            else:
                out.append(v)
        # Cancel dims the input and the target have in common (copied or equal), then compare.
        rest_in = list(x.shape)
        rest_out = []
        for d in out:
            if d == -1:
                continue
            if d in rest_in:
                rest_in.remove(d)
            else:
                rest_out.append(d)
        have, want = _prod(rest_in), _prod(rest_out)   # want is an int: rest_out holds no syms
        # (copied symbolic dims always cancel against the input dim they copy)
        if -1 in out:
            if want == 0:
                raise self.fail(f"cannot infer the -1 dim of {shape} next to a 0-sized dim")
            if is_static(have):
                if have % want:
                    raise self.fail(f"cannot reshape {x} ({_prod(x.shape)} elements) to {shape}: "
                                    f"{have} is not divisible by {want}")
                inferred = have // want
            else:
                inferred = have // want     # affine when divisible, else an opaque symbol
            out[out.index(-1)] = inferred
        elif have != want:
            if is_static(have):
                raise self.fail(f"cannot reshape {x} ({_prod(x.shape)} elements) to {shape} "
                                f"({_prod(out)} elements)")
            raise self.fail(f"cannot reshape {x} to {shape}: the symbolic dims "
                            f"{', '.join(str(d) for d in rest_in if isinstance(d, Sym))} have no place in it",
                            "use 0 to copy a dim of the input, or -1 to infer one")
        return [x.with_shape(tuple(out))]

    def lower(self, a, g, inputs):
        return [g.op("Reshape", [inputs[0], g.ints(list(a.attrs["shape"]))])]

    def forward(self, a, ctx, inputs, params):
        (x,) = inputs
        shp = tuple(x.shape)
        return [F.reshape(x, tuple(shp[i] if v == 0 else v for i, v in enumerate(a.attrs["shape"])))]


class Transpose(Op):
    """Permutes the dims: output dim i is input dim perm[i]."""
    name = "Transpose"
    family = "structural"
    args = (Arg("perm", "shape"),)
    samples = (Sample("x: f32[N, T, 4] -> Transpose((0, 2, 1))"),)

    def derive(self, a) -> tuple[int, ...]:
        """The permutation, normalised against the rank."""
        x, perm = a.x, tuple(a.attrs["perm"])
        if len(perm) != x.rank:
            raise self.fail(f"perm {perm} has {len(perm)} entries, but the input {x} has {x.rank} dims")
        if any(not -x.rank <= p < x.rank for p in perm):
            raise self.fail(f"perm {perm} has a dim out of range for the {x.rank}-D input {x}")
        norm = tuple(p % x.rank for p in perm)
        if sorted(norm) != list(range(x.rank)):
            raise self.fail(f"perm {perm} is not a permutation of the dims 0..{x.rank - 1} of {x}",
                            "each dim must appear exactly once")
        return norm

    def infer(self, a):
        return [a.x.with_shape(tuple(a.x.shape[p] for p in a.derived))]

    def lower(self, a, g, inputs):
        if not a.derived:        # a 0-D tensor: ONNX cannot carry an empty `perm` attribute
            return [g.op("Identity", inputs)]
        return [g.op("Transpose", inputs, perm=list(a.derived))]

    def forward(self, a, ctx, inputs, params):
        return [F.transpose(inputs[0], a.derived)]


class Permute(Transpose):
    """Transpose under PyTorch's other name."""
    name = "Permute"
    samples = (Sample("x: f32[N, 2, 3, 4] -> Permute((0, 2, 3, 1))"),)


class Concat(Op):
    """Concatenates 2 or more inputs along `axis`; every other dim must agree."""
    name = "Concat"
    family = "structural"
    args = (Arg("axis", "int", 1),)
    n_inputs = (2, -1)
    samples = (Sample("(a: f32[N, 2, 3], b: f32[N, 4, 3]) -> Concat"),
               Sample("(a: f32[N, T, 3], b: f32[N, T, 2], c: f32[N, T, 1]) -> Concat(axis=-1)"))

    def derive(self, a) -> int:
        """The concat axis, normalised against the rank."""
        x, ax = a.x, a.attrs["axis"]
        if not -x.rank <= ax < x.rank:
            raise self.fail(f"axis {ax} is out of range for the {x.rank}-D input {x}",
                            f"choose an axis in {-x.rank}..{x.rank - 1}" if x.rank else None)
        return ax % x.rank

    def time_local(self, a):
        return a.x.rank >= 3 and a.derived >= 2

    def infer(self, a):
        in_types = a.in_types
        if len(in_types) < 2:
            raise self.fail(f"needs at least 2 inputs, got {len(in_types)}")
        x0, ax = in_types[0], a.derived
        total = x0.shape[ax]
        for i, t in enumerate(in_types[1:], start=1):
            if t.dtype != x0.dtype:
                raise self.fail(f"input {i} has dtype {t.dtype} but input 0 has {x0.dtype} ({t} vs {x0})")
            if t.rank != x0.rank:
                raise self.fail(f"input {i} {t} has {t.rank} dims but input 0 {x0} has {x0.rank}")
            for d in range(x0.rank):
                if d != ax and not self.same_dim(a, t.shape[d], x0.shape[d],
                                                 f"input {i} must agree with input 0 in dim {d}"):
                    raise self.fail(f"input {i} {t} differs from input 0 {x0} in dim {d} "
                                    f"({t.shape[d]} vs {x0.shape[d]}); only dim {ax} (the concat axis) may differ")
            total = total + t.shape[ax]
        return [x0.with_shape(x0.shape[:ax] + (total,) + x0.shape[ax + 1:])]

    def lower(self, a, g, inputs):
        return [g.op("Concat", inputs, axis=a.derived)]

    def forward(self, a, ctx, inputs, params):
        return [F.concat(list(inputs), a.derived)]


class _Binary(Op):
    """Elementwise binary op with NumPy broadcasting, between two tensors or between a tensor and a
    number (`value`; `reverse=true` when the number is the left operand, as in `1 - x`).

    Dtypes: two tensors must share one; a number takes the tensor's dtype (an integer tensor takes
    whole numbers only). Bool tensors take no arithmetic."""
    family = "structural"
    n_inputs = (1, 2)
    args = (Arg("value", "float", None, doc="a number in place of the second operand", keyword_only=True),
            Arg("reverse", "bool", False, doc="the number is the left operand", keyword_only=True))
    onnx_op = ""
    symbol = ""
    engine_fn = None      # the autodiff primitive computing it
    out_dtype = None      # None: the operands' dtype
    dtypes = "numeric"    # which operand dtypes it takes: 'numeric', 'float' or 'any'

    def time_local(self, a):
        return True

    def derive(self, a):
        """The number operand in the tensor's dtype (None between two tensors)."""
        v, x = a.attrs["value"], a.x
        if len(a.in_types) == 2:
            if v is not None or a.attrs["reverse"]:
                raise self.fail("takes either two tensors or one tensor and value=, not both",
                                f"write a {self.symbol} b, or x {self.symbol} 2.0")
            return None
        if v is None:
            raise self.fail("needs a second operand: two tensors, or one tensor and value=",
                            f"e.g. x {self.symbol} 2.0")
        self._check_dtype(x)
        n = fit_number(v, x.dtype)
        if n is None:
            raise self.fail(f"the number {_num(v)} does not fit the tensor {x}",
                            "a number takes the tensor's dtype: whole numbers for integer tensors, "
                            "and within the dtype's range")
        return n

    def infer(self, a):
        in_types = a.in_types
        x = in_types[0]
        if len(in_types) == 2:
            c = in_types[1]
            if x.dtype != c.dtype:
                raise self.fail(f"operands have different dtypes: {x} {self.symbol} {c}",
                                "both sides must have the same dtype")
        self._check_dtype(x)
        if len(in_types) == 1:
            return [TensorType(self.out_dtype or x.dtype, x.shape)]
        shape = self.broadcast(a, [x.shape, c.shape])
        if shape is None:
            raise self.fail(f"cannot broadcast {x} {self.symbol} {c}: shapes [{_dims(x.shape)}] and "
                            f"[{_dims(c.shape)}] differ in a dim where neither is 1",
                            "dims are matched from the right; each pair must be equal or contain a 1")
        return [TensorType(self.out_dtype or x.dtype, shape)]

    def _check_dtype(self, t):
        if self.dtypes == "float" and not t.is_float:
            raise self.fail(f"takes floating-point operands, got {t}",
                            "integer tensors take + - * ** and comparisons" if t.dtype != "bool" else
                            "a mask selects values with where(mask, a, b)")
        if self.dtypes == "numeric" and t.dtype == "bool":
            raise self.fail(f"takes numbers, not the bool tensor {t}",
                            "a mask selects values with where(mask, a, b)")

    def operands(self, a, inputs: list, const) -> list:
        """The two operands: both inputs, or the input and `const(number)` in the written order."""
        if len(inputs) == 2:
            return list(inputs)
        c = const(a.derived)
        return [c, inputs[0]] if a.attrs["reverse"] else [inputs[0], c]

    def forward(self, a, ctx, inputs, params):
        return [type(self).engine_fn(*self.operands(a, inputs, lambda v: v))]

    def lower(self, a, g, inputs):
        return [g.op(self.onnx_op, self.operands(a, inputs, lambda v: g.const(v, dtype=a.x.np_dtype, hint="value")))]

    def describe(self, attrs):
        if attrs.get("value") is None:
            return ""
        v = attrs["value"]
        return f"{_num(v)} {self.symbol} x" if attrs.get("reverse") else f"x {self.symbol} {_num(v)}"


def _num(v) -> str:
    """A number as a summary shows it: 2, 0.5, -1e+09."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _dims(shape) -> str:
    return ", ".join(str(d) for d in shape)


class Add(_Binary):
    """a + b, broadcast like NumPy, or a tensor plus a number (what `a + b` and `x + 1` make)."""
    name = "Add"
    onnx_op = "Add"
    samples = (Sample("(a: f32[N, 3, 4], b: f32[4]) -> Add"), Sample("(a: f32[N, T, 1], b: f32[N, 1, 3]) -> Add"),
               Sample("x: f32[N, 3] -> Add(value=0.5)"), Sample("x: i64[N, T] -> Add(value=1)", grad=False))
    symbol = "+"
    engine_fn = F.add


class Sub(_Binary):
    """a - b, broadcast like NumPy, or with a number on either side (what `a - b`, `1 - x` make)."""
    name = "Sub"
    onnx_op = "Sub"
    samples = (Sample("(a: f32[N, 3], b: f32[N, 3]) -> Sub"), Sample("(a: f32[3, 1], b: f32[N, 1, 4]) -> Sub"),
               Sample("x: f32[N, 3] -> Sub(value=1.0, reverse=true)"))
    symbol = "-"
    engine_fn = F.sub


class Mul(_Binary):
    """a * b, elementwise, broadcast like NumPy, or a tensor times a number (what `a * b`, `0.5 * x` make)."""
    name = "Mul"
    onnx_op = "Mul"
    samples = (Sample("(a: f32[N, 2, 5], b: f32[N, 2, 5]) -> Mul"), Sample("(a: f32[N, T, 4], b: f32[N, 1, 4]) -> Mul"),
               Sample("x: f32[N, T, 4] -> Mul(value=0.5)"))
    symbol = "*"
    engine_fn = F.mul
