"""The op contract. Every layer kind is one `Op` subclass in its family module; defining the
class registers it. An op declares:

- `name` (its spelling in .arch), `family`, and `args`: the schema (names, types, defaults)
  that drives argument checking and "did you mean" errors;
- `infer(attrs, in_types) -> [TensorType]`: the shape rule; raise `self.fail(...)`;
- `params(attrs, in_types) -> {local: ParamSpec}`: parameters and their initialisers;
- `macs(attrs, in_shapes, out_shapes) -> int`: multiply-accumulates (concrete shapes);
- `lower(node, b, inputs) -> [onnx value names]`: ONNX lowering through the builder `b`;
- `forward(node, ctx, inputs, params) -> [Tensor]`: NumPy forward on the autodiff engine.

Adding a layer means one class, one spec that uses it, one parity test: nothing else edited.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any

from ..errors import ArchError, ShapeError
from ..ir.graph import ParamSpec
from ..ir.types import TensorType

REQUIRED = object()

# Argument kinds an op schema may declare; the elaborator checks values against them.
#   int, float, bool, str, ints (int or tuple of ints), shape (tuple of ints, -1 allowed),
#   padding (int, tuple or 'same'/'valid'), layer (a layer instance, for tying), any
ARG_KINDS = ("int", "float", "bool", "str", "ints", "shape", "padding", "layer", "any", "dtype")


@dataclass(frozen=True)
class Arg:
    name: str
    kind: str
    default: Any = REQUIRED
    choices: tuple | None = None
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


OPS: dict[str, "Op"] = {}


class Op:
    name: str = ""
    family: str = ""
    args: tuple[Arg, ...] = ()
    n_inputs: int | tuple[int, int] = 1     # exact count, or (min, max); max -1 = unbounded
    doc: str = ""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.name:
            if cls.name in OPS:
                raise RuntimeError(f"op {cls.name} defined twice")
            OPS[cls.name] = cls()

    # -- the contract -------------------------------------------------------------------
    def infer(self, attrs: dict, in_types: list[TensorType]) -> list[TensorType]:
        raise NotImplementedError(self.name)

    def params(self, attrs: dict, in_types: list[TensorType]) -> dict[str, ParamSpec]:
        return {}

    def macs(self, attrs: dict, in_shapes: list[tuple], out_shapes: list[tuple]) -> int:
        return 0

    def lower(self, node, b, inputs: list[str]) -> list[str]:
        raise ArchError(f"{self.name} cannot be exported to ONNX yet", node.span)

    def forward(self, node, ctx, inputs: list, params: dict) -> list:
        raise ArchError(f"{self.name} cannot run on the NumPy engine yet", node.span)

    def describe(self, attrs: dict) -> str:
        """Key attributes for drawings and summaries, e.g. '6, k=5, s=1'."""
        parts = []
        for a in self.args:
            if a.name not in attrs or a.kind == "layer":
                continue
            v = attrs[a.name]
            if a.required:
                parts.append(_fmt(v))
            elif v != a.default:
                parts.append(f"{a.name}={_fmt(v)}")
        return ", ".join(parts)

    def explain(self, attrs: dict, in_types: list[TensorType], out_types: list[TensorType]) -> list[str]:
        """How this application's output shape and parameter count come about, as lines a student
        can follow (`archdsl summary --explain`): the shape arithmetic first, then, when the
        layer has parameters, one line starting 'params: '. This generic version says that the
        shape is unchanged, or shows the elements a reshape keeps (16·5·5 = 400), or the types
        in and out, and multiplies out each parameter's shape; families override it with their
        own formulas (conv.py: H = (32 + 2·0 − 5)/1 + 1 = 28)."""
        return [explain_shape(self, in_types, out_types)] + explain_params(self.params(attrs, in_types))

    # -- helpers for shape rules -----------------------------------------------------------
    def fail(self, message: str, hint: str | None = None) -> ShapeError:
        """An error for the op application being checked (the elaborator adds the span)."""
        return ShapeError(f"{self.name}: {message}", None, hint)

    def expect_rank(self, t: TensorType, ranks, what: str = "input") -> None:
        ranks = (ranks,) if isinstance(ranks, int) else tuple(ranks)
        if t.rank not in ranks:
            want = " or ".join(f"{r}-D" for r in ranks)
            raise self.fail(f"expects a {want} {what}, got {t}",
                            "did you mean to Flatten first?" if t.rank > max(ranks) else None)

    def expect_float(self, t: TensorType, what: str = "input") -> None:
        if not t.is_float:
            raise self.fail(f"expects a floating-point {what}, got {t}",
                            "integer token ids go through an Embedding first" if t.dtype.startswith("i") else None)


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f"'{v}'"
    return str(v)


def tup(v, n: int) -> tuple:
    """An int or tuple argument as an n-tuple (kernel sizes, strides, ...)."""
    if isinstance(v, (tuple, list)):
        if len(v) != n:
            raise ShapeError(f"expected {n} values, got {len(v)}: {v}")
        return tuple(int(x) for x in v)
    return (int(v),) * n


# -- explanations (`archdsl summary --explain`) --------------------------------------------------
DOT, MINUS = "\u00b7", "\u2212"       # · and − as a lecture writes them


def product(dims) -> str:
    """(6, 1, 5, 5) -> '6·1·5·5'."""
    return DOT.join(str(d) for d in dims)


def explain_shape(op: "Op", in_types: list[TensorType], out_types: list[TensorType]) -> str:
    """The generic shape line: unchanged, a reshape's element count, or types in -> out."""
    if len(in_types) == 1 and len(out_types) == 1:
        a, b = in_types[0].shape, out_types[0].shape
        if a == b:
            return f"{op.name}: shape unchanged"
        i = 0
        while i < min(len(a), len(b)) and a[i] == b[i]:
            i += 1
        ra, rb = a[i:], b[i:]
        if (ra and rb and max(len(ra), len(rb)) > 1 and all(isinstance(d, int) for d in ra + rb)
                and _prod(ra) == _prod(rb)):
            rhs = f"{product(rb)} = {_prod(rb):,}" if len(rb) > 1 else f"{_prod(rb):,}"
            return (f"{op.name}: [{', '.join(map(str, ra))}] \u2192 [{', '.join(map(str, rb))}] keeps every "
                    f"element: {product(ra)} = {rhs}")
    ins = ", ".join(map(str, in_types))
    outs = ", ".join(map(str, out_types))
    return f"{op.name}: {ins} \u2192 {outs}"


def explain_params(specs: dict) -> list[str]:
    """'params: 6·1·5·5 + 6 = 156 (weight [6, 1, 5, 5], bias [6])', plus the buffers, if any."""
    trained = [(k, s) for k, s in specs.items() if not s.buffer]
    lines = []
    if trained:
        total = sum(_prod(s.shape) for _, s in trained)
        terms = " + ".join(product(s.shape) for _, s in trained)
        names = ", ".join(f"{k} [{', '.join(map(str, s.shape))}]" for k, s in trained)
        lines.append(f"params: {terms} = {total:,}  ({names})")
    buffers = [(k, s) for k, s in specs.items() if s.buffer]
    if buffers:
        lines.append("buffers (state, not parameters): "
                     + ", ".join(f"{k} [{', '.join(map(str, s.shape))}]" for k, s in buffers))
    return lines


def _prod(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


_loaded = False


def load_all() -> dict[str, Op]:
    """Import every family module in archdsl.ops (no hand-kept list)."""
    global _loaded
    if not _loaded:
        pkg = importlib.import_module("archdsl.ops")
        for m in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            if not m.name.startswith("_") and m.name != "base":
                importlib.import_module(f"archdsl.ops.{m.name}")
        _loaded = True
    return OPS


def get_op(name: str) -> Op | None:
    return load_all().get(name)
