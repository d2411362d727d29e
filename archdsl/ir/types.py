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


class Sym:
    """A symbolic dimension: an affine combination of named symbols plus a constant.

    Affine arithmetic covers what shape rules need (T+2p-k, 2*T, T-2); anything else
    (floor division that does not divide, products of symbols) becomes a new opaque
    symbol named after its expression, so equal expressions still compare equal.
    """
    __slots__ = ("terms", "const")

    def __init__(self, terms: dict[str, int], const: int = 0):
        self.terms = {k: v for k, v in terms.items() if v != 0}
        self.const = const

    @staticmethod
    def named(name: str) -> "Sym":
        return Sym({name: 1})

    @staticmethod
    def opaque(expr: str) -> "Sym":
        """A new symbol standing for a non-affine expression, named after it. Past
        MAX_OPAQUE_NAME characters the name becomes a digest of the expression (equal expressions
        still give equal symbols): otherwise 10,000 strided layers on a symbolic length would
        nest their names 10,000 deep, costing time and memory quadratic in the layer count."""
        if len(expr) > MAX_OPAQUE_NAME:
            expr = "dim_" + hashlib.sha1(expr.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        return Sym({expr: 1})

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
            return Sym.opaque(f"({self})*({other})")
        k = int(other)
        return Sym._norm({n: v * k for n, v in self.terms.items()}, self.const * k)

    __rmul__ = __mul__

    def __floordiv__(self, other):
        if isinstance(other, Sym):
            return Sym.opaque(f"({self})//({other})")
        k = int(other)
        if k == 1:
            return self
        if all(v % k == 0 for v in self.terms.values()) and self.const % k == 0:
            return Sym._norm({n: v // k for n, v in self.terms.items()}, self.const // k)
        return Sym.opaque(f"({self})//{k}")

    def __rfloordiv__(self, other):
        return Sym.opaque(f"{other}//({self})")

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


def resolve_dim(d, bindings: dict[str, int]) -> int | None:
    """Value of a dim given values for its symbols, or None when one is unbound or opaque."""
    if is_static(d):
        return int(d)
    total = d.const
    for name, c in d.terms.items():
        if name not in bindings:
            return None
        total += c * bindings[name]
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
