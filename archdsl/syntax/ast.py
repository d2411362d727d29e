"""The AST: frozen dataclasses, each with the source span it came from."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import Span


@dataclass(frozen=True)
class Node:
    span: Span


# -- expressions --------------------------------------------------------------------------
@dataclass(frozen=True)
class Num(Node):
    value: int | float


@dataclass(frozen=True)
class Str(Node):
    value: str


@dataclass(frozen=True)
class Bool(Node):
    value: bool


@dataclass(frozen=True)
class Name(Node):
    id: str


@dataclass(frozen=True)
class TupleExpr(Node):
    items: tuple


@dataclass(frozen=True)
class ListExpr(Node):
    items: tuple


@dataclass(frozen=True)
class BinOp(Node):
    op: str            # + - * / // % ** == != < <= > >= and or
    left: Node
    right: Node


@dataclass(frozen=True)
class UnaryOp(Node):
    op: str            # - + not
    operand: Node


@dataclass(frozen=True)
class IfExp(Node):
    then: Node
    cond: Node
    orelse: Node


@dataclass(frozen=True)
class Pipe(Node):
    """`left -> right`: apply the callable `right` to the tensor(s) `left` (or compose callables)."""
    left: Node
    right: Node


@dataclass(frozen=True)
class Arg(Node):
    name: str | None
    value: Node


@dataclass(frozen=True)
class Call(Node):
    func: Node
    args: tuple        # of Arg


@dataclass(frozen=True)
class Slice(Node):
    """`start:stop:step` in subscripts; any part may be None."""
    start: Node | None
    stop: Node | None
    step: Node | None


@dataclass(frozen=True)
class EllipsisExpr(Node):
    """`...` in subscripts: as many whole axes as needed."""


@dataclass(frozen=True)
class Index(Node):
    """`value[items]`: a tuple's element, or subscripts on a tensor (expressions, Slice, EllipsisExpr)."""
    value: Node
    items: tuple


@dataclass(frozen=True)
class Repeat(Node):
    """`repeat n [as i] { callable }`: n copies with distinct weights, chained."""
    count: Node
    var: str | None
    body: Node


# -- statements ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorTypeExpr(Node):
    dtype: str
    dtype_span: Span
    dims: tuple        # of expressions


@dataclass(frozen=True)
class Input(Node):
    name: str
    type: TensorTypeExpr | None


@dataclass(frozen=True)
class ParamDecl(Node):
    """`param name: f32[...] = initialiser`: a free learnable tensor."""
    name: str
    type: TensorTypeExpr
    init: Node | None


@dataclass(frozen=True)
class State(Node):
    """`state name: f32[...]` in a cell: the state from the step before; the name's last value
    in the body is the state this step passes on."""
    name: str
    type: TensorTypeExpr


@dataclass(frozen=True)
class Fixed(Node):
    """`fixed name[: f32[...]]` in a cell: a tensor that is the same at every step (encoder
    outputs to attend over, an image's feature map)."""
    name: str
    type: TensorTypeExpr | None


@dataclass(frozen=True)
class Output(Node):
    name: str | None
    value: Node


@dataclass(frozen=True)
class Assign(Node):
    targets: tuple     # of str
    value: Node


# -- definitions --------------------------------------------------------------------------
@dataclass(frozen=True)
class Param(Node):
    name: str
    type: str | None
    default: Node | None


@dataclass(frozen=True)
class Definition(Node):
    kind: str          # "model" | "block" | "cell"
    name: str
    name_span: Span
    params: tuple      # of Param
    body: tuple        # of statements


@dataclass(frozen=True)
class Entry(Node):
    key: str
    value: Node


@dataclass(frozen=True)
class Section(Node):
    kind: str          # "train" | "gan"
    name: str
    name_span: Span
    entries: tuple     # of Entry


@dataclass(frozen=True)
class Import(Node):
    path: str


@dataclass(frozen=True)
class Module:
    file: str
    source: str
    items: tuple       # Definition | Section | Import
