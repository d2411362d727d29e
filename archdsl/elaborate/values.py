"""What expressions evaluate to during elaboration, besides ints, floats, bools, strings, tuples."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import Span
from ..ir.graph import Value
from ..ops.base import Op
from ..syntax import ast as A


@dataclass(eq=False)
class TensorRef:
    value: Value
    origin: str = ""          # "Conv2d at line 6", for hints in shape errors

    def describe_value(self) -> str:
        return f"tensor {self.value.type}"


@dataclass(eq=False)
class OpKind:
    """A bare op name (`ReLU`): applying it makes a fresh instance with default arguments."""
    op: Op

    def describe_value(self) -> str:
        return f"layer kind {self.op.name}"


@dataclass(eq=False)
class LayerInstance:
    """One layer with its own weights; every application of the same instance shares them."""
    op: Op
    attrs: dict
    span: Span
    name: str | None = None    # from `name=` or an assignment
    path: str | None = None    # qualified, fixed at first application
    applied: int = 0
    params: dict = field(default_factory=dict)    # local -> Param.name
    init: Any = None           # `init=`: an Initializer for the layer's weights
    bias_init: Any = None      # `bias_init=`: one for its biases
    init_spans: dict = field(default_factory=dict)
    is_layer_instance = True

    def describe_value(self) -> str:
        return f"{self.op.name} layer"


@dataclass(eq=False)
class BlockInstance:
    """A block (or a model used as a block) with its arguments bound."""
    defn: A.Definition
    args: dict
    span: Span
    module: Any                # the Namespace the definition lives in
    name: str | None = None
    path: str | None = None
    applied: int = 0
    cell: Any = None           # a cell's ir.cell.Cell, made at its first scan

    def describe_value(self) -> str:
        return f"{self.defn.name} {self.defn.kind}"

    @property
    def is_cell(self) -> bool:
        return self.defn.kind == "cell"

    @property
    def label(self) -> str:
        shown = ", ".join(_fmt(v) for v in self.args.values())
        return f"{self.defn.name}({shown})"


@dataclass(eq=False)
class BlockKind:
    """A bare block name: applying it uses the defaults of every parameter."""
    defn: A.Definition
    module: Any

    def describe_value(self) -> str:
        return f"{self.defn.kind} {self.defn.name}"

    @property
    def is_cell(self) -> bool:
        return self.defn.kind == "cell"


@dataclass(eq=False)
class Composed:
    first: Any
    second: Any

    def describe_value(self) -> str:
        return "composed layers"


@dataclass(eq=False)
class RepeatCallable:
    count: int
    var: str | None
    body: A.Node
    env: dict
    span: Span
    name: str | None = None
    path: str | None = None
    applied: int = 0

    def describe_value(self) -> str:
        return f"repeat {self.count}"


@dataclass(eq=False)
class Builtin:
    """A function of the language. `tensor`: what it makes of a tensor argument (an op name, or
    'where'); None for functions of numbers only."""
    name: str
    fn: Any
    tensor: str | None = None

    def describe_value(self) -> str:
        return f"function {self.name}"


@dataclass(eq=False)
class InitFactory:
    """An initialiser's name (`kaiming_normal`); called, it makes an Initializer, and standing
    alone it means the initialiser with its defaults (`init=zeros`)."""
    kind: str

    def describe_value(self) -> str:
        return f"initialiser {self.kind}"


class Poison:
    """The value of a statement that already reported an error: uses of it stay quiet."""

    def describe_value(self) -> str:
        return "invalid value"


POISON = Poison()
CALLABLES = (OpKind, LayerInstance, BlockInstance, BlockKind, Composed, RepeatCallable)


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    if hasattr(v, "describe_value"):
        return v.describe_value()
    return str(v)


def show(v) -> str:
    return _fmt(v)
