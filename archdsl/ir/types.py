"""Tensor types: a dtype and a shape whose entries are ints or symbolic dims (N, T, T-2, ...)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

# dtype spelling in .arch -> (numpy dtype, ONNX TensorProto enum value)
DTYPES: dict[str, tuple[np.dtype, int]] = {
    "f32": (np.dtype(np.float32), 1),
    "f16": (np.dtype(np.float16), 10),
    "f64": (np.dtype(np.float64), 11),
    "i32": (np.dtype(np.int32), 6),
    "i64": (np.dtype(np.int64), 7),
    "bool": (np.dtype(np.bool_), 9),
}
FLOAT_DTYPES = ("f32", "f16", "f64")
INT_DTYPES = ("i32", "i64")


MAX_OPAQUE_NAME = 200      # characters in the name of a symbol standing for an expression


class DimExpr:
    """A non-affine expression over dims, kept as an expression so it can be evaluated once its
    symbols are bound: 'floordiv' (a // b), 'mul' (a * b), or 'ceil_pool' (the output size of a
    ceil-mode pool: size, window span, stride, begin padding; PyTorch's rule drops a last window
    that would start in the right padding)."""
    __slots__ = ("op", "args")

    def __init__(self, op: str, *args):
        self.op, self.args = op, args

    def value(self, resolve) -> int | None:
        """The value, with `resolve(dim) -> int | None` for the arguments."""
        vals = [resolve(a) for a in self.args]
        if any(v is None for v in vals):
            return None
        if self.op == "mul":
            return vals[0] * vals[1]
        if self.op == "floordiv":
            return vals[0] // vals[1] if vals[1] else None
        size, span, stride, pb = vals
        out = (size + 2 * pb - span + 2 * stride - 1) // stride
        return out - 1 if (out - 1) * stride >= size + pb else out

    def symbols(self) -> list[str]:
        out: list[str] = []
        for a in self.args:
            if isinstance(a, Sym):
                out += [s for s in a.symbols() if s not in out]
        return out

    def text(self) -> str:
        a = self.args
        if self.op == "mul":
            return f"({a[0]})*({a[1]})"
        if self.op == "floordiv":
            return f"({a[0]})//{a[1]}" if not isinstance(a[1], Sym) else f"({a[0]})//({a[1]})"
        return f"ceil_pool({a[0]}; k={a[1]}, s={a[2]}, p={a[3]})"


class ExprName(str):
    """The name of a symbol that stands for a DimExpr: a str (so it sorts, hashes and prints as
    the expression's text), carrying the expression itself for evaluation."""
    __slots__ = ("expr",)

    def __new__(cls, text: str, expr: DimExpr):
        self = super().__new__(cls, text)
        self.expr = expr
        return self


class Sym:
    """A symbolic dimension: an affine combination of named symbols plus a constant.

    Affine arithmetic covers what shape rules need (T+2p-k, 2*T, T-2); anything else
    (floor division that does not divide, products of symbols, ceil-mode pools) becomes a new
    symbol standing for that expression (a DimExpr, named after it), so equal expressions still
    compare equal and the cost model evaluates them once their symbols are bound.
    """
    __slots__ = ("terms", "const")

    def __init__(self, terms: dict[str, int], const: int = 0):
        self.terms = {k: v for k, v in terms.items() if v != 0}
        self.const = const

    @staticmethod
    def named(name: str) -> "Sym":
        return Sym({name: 1})

    @staticmethod
    def opaque(expr: DimExpr) -> "Sym":
        """A new symbol standing for a non-affine expression, named after it. Past
        MAX_OPAQUE_NAME characters the name becomes a digest of the expression (equal expressions
        still give equal symbols): otherwise 10,000 strided layers on a symbolic length would
        nest their names 10,000 deep, costing time and memory quadratic in the layer count."""
        text = expr.text()
        if len(text) > MAX_OPAQUE_NAME:
            text = "dim_" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        return Sym({ExprName(text, expr): 1})

    def symbols(self) -> list[str]:
        """The named symbols this dim depends on (through its expressions too)."""
        out: list[str] = []
        for k in self.terms:
            for s in (k.expr.symbols() if isinstance(k, ExprName) else [k]):
                if s not in out:
                    out.append(s)
        return out

    @staticmethod
    def _norm(terms, const):
        s = Sym(terms, const)
        return s.const if not s.terms else s

    def __add__(self, other):
        if isinstance(other, Sym):
            t = dict(self.terms)
            for k, v in other.terms.items():
                t[k] = t.get(k, 0) + v
            return Sym._norm(t, self.const + other.const)
        return Sym._norm(dict(self.terms), self.const + int(other))

    __radd__ = __add__

    def __neg__(self):
        return Sym._norm({k: -v for k, v in self.terms.items()}, -self.const)

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return (-self) + other

    def __mul__(self, other):
        if isinstance(other, Sym):
            return Sym.opaque(DimExpr("mul", self, other))
        k = int(other)
        return Sym._norm({n: v * k for n, v in self.terms.items()}, self.const * k)

    __rmul__ = __mul__

    def __floordiv__(self, other):
        if isinstance(other, Sym):
            return Sym.opaque(DimExpr("floordiv", self, other))
        k = int(other)
        if k == 1:
            return self
        if all(v % k == 0 for v in self.terms.values()) and self.const % k == 0:
            return Sym._norm({n: v // k for n, v in self.terms.items()}, self.const // k)
        return Sym.opaque(DimExpr("floordiv", self, k))

    def __rfloordiv__(self, other):
        return Sym.opaque(DimExpr("floordiv", int(other), self))

    def __eq__(self, other):
        return isinstance(other, Sym) and self.terms == other.terms and self.const == other.const

    def __hash__(self):
        return hash((tuple(sorted(self.terms.items())), self.const))

    def __str__(self):
        parts = []
        for name, c in sorted(self.terms.items()):
            term = name if c == 1 else f"-{name}" if c == -1 else f"{c}*{name}"
            parts.append(term)
        s = parts[0]
        for p in parts[1:]:
            s += p if p.startswith("-") else "+" + p
        if self.const:
            s += f"{self.const:+d}"
        return s

    __repr__ = __str__


Dim = int | Sym


def is_static(d) -> bool:
    return isinstance(d, (int, np.integer))


def dim_str(d) -> str:
    return str(d)


@dataclass(frozen=True)
class TensorType:
    dtype: str          # key of DTYPES
    shape: tuple        # of Dim

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype][0]

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def numel(self, bindings: dict[str, int] | None = None) -> int | None:
        """Element count; symbolic dims resolved through `bindings` (None if unresolved)."""
        n = 1
        for d in self.shape:
            v = resolve_dim(d, bindings or {})
            if v is None:
                return None
            n *= v
        return n

    def with_shape(self, shape) -> "TensorType":
        return TensorType(self.dtype, tuple(shape))

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(map(str, self.shape))}]"


def fit_number(v, dtype: str) -> int | float | None:
    """The number `v` as a value of `dtype` (a whole number for an integer dtype), or None when it
    does not fit: a fraction for an integer dtype, or beyond the dtype's range."""
    if dtype in INT_DTYPES:
        if not float(v).is_integer():
            return None
        info = np.iinfo(DTYPES[dtype][0])
        v = int(v)
        return v if info.min <= v <= info.max else None
    if dtype in FLOAT_DTYPES:
        return float(v) if abs(float(v)) <= float(np.finfo(DTYPES[dtype][0]).max) else None
    return None


def resolve_dim(d, bindings: dict[str, int]) -> int | None:
    """Value of a dim given values for its symbols (expressions evaluated), or None when a
    symbol it needs is unbound."""
    if is_static(d):
        return int(d)
    total = d.const
    for name, c in d.terms.items():
        if isinstance(name, ExprName):
            v = name.expr.value(lambda a: resolve_dim(a, bindings))
        else:
            v = bindings.get(name)
        if v is None:
            return None
        total += c * v
    return total


def broadcast_shapes(a: tuple, b: tuple) -> tuple | None:
    """NumPy broadcasting of two shapes with symbolic dims; None when incompatible."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x == y:
            out.append(x)
        elif x == 1:
            out.append(y)
        elif y == 1:
            out.append(x)
        else:
            return None
    return tuple(reversed(out))
