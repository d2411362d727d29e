"""The typed IR: one Model per `model` in a spec.

Nodes are op applications in topological (creation) order; values are the tensors between
them. `Model.graph` is the same structure as a networkx.MultiDiGraph (node = op application,
edge = tensor with its TensorType) for analyses and drawing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import networkx as nx

from ..errors import Span
from .types import TensorType

if TYPE_CHECKING:
    from ..ops.base import Application, Op


@dataclass(eq=False)
class Value:
    """One tensor: produced by one node output (or a model input), consumed by any number."""
    name: str
    type: TensorType
    producer: "Node | None" = None   # None for model inputs
    index: int = 0
    span: Span | None = None

    def __repr__(self):
        return f"Value({self.name}: {self.type})"


# The largest std a normal initialiser may ask for: draws beyond float32's range (3.4e38) would
# be inf weights, and anything near this is already useless for training.
MAX_INIT_STD = 1e6


@dataclass(eq=False)
class ParamSpec:
    """A parameter an op needs, declared by the op: shape and initialiser.

    init: 'uniform' (U(-bound, bound)), 'normal' (N(0, std)), 'zeros', 'ones', 'constant' (every
    element `value`: PReLU's 0.25), 'xavier_uniform', 'unit_normal' (N(0, 1) scaled to length 1).
    buffer: state that is not trained and not counted as a parameter (BatchNorm running stats,
    spectral norm's singular-vector estimates).
    zero_row: a row set to zeros after initialising (an embedding's padding id).

    initializer: a spec's own choice (`init=`, `bias_init=`, a `param`'s value: an
    ir.initializers.Initializer); it replaces `init` when set.
    """
    shape: tuple
    init: str = "zeros"
    initializer: Any = field(default=None, kw_only=True)
    bound: float = 0.0
    std: float = 0.0
    fan_in: int = 0
    fan_out: int = 0
    buffer: bool = False
    zero_row: int | None = None
    value: float = 0.0


@dataclass(eq=False)
class Param:
    name: str            # qualified, e.g. "layer1.0.conv2d_1.weight"
    spec: ParamSpec
    trainable: bool = True

    @property
    def shape(self) -> tuple:
        return self.spec.shape

    @property
    def numel(self) -> int:
        n = 1
        for d in self.spec.shape:
            n *= int(d)
        return n


@dataclass(eq=False)
class Node:
    name: str                       # qualified name of this application, unique in the model
    app: "Application"              # the op application, bound once (ops/base.py)
    inputs: list[Value]
    outputs: list[Value] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)   # op's local name -> Param.name
    span: Span | None = None
    scope: tuple[str, ...] = ()     # enclosing block instances, outermost first
    instance: str = ""              # layer instance (shared by every application of it)

    @property
    def op(self) -> "Op":
        return self.app.op

    @property
    def attrs(self) -> dict[str, Any]:
        return self.app.attrs

    @property
    def kind(self) -> str:
        return self.app.op.name

    def __repr__(self):
        return f"Node({self.name}: {self.op.name})"


@dataclass(eq=False)
class Scope:
    """A block instance (or repeat copy): drawn as a cluster."""
    path: str
    label: str
    span: Span | None = None


@dataclass(eq=False)
class Model:
    name: str
    file: str
    span: Span | None
    args: dict[str, Any]                     # model parameters after defaults and --set
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    parameters: dict[str, Param] = field(default_factory=dict)
    scopes: dict[str, Scope] = field(default_factory=dict)
    # conditions on the input sizes the shape rules recorded (ir/constraints.py)
    constraints: list = field(default_factory=list)

    @property
    def graph(self) -> nx.MultiDiGraph:
        g = nx.MultiDiGraph(name=self.name)
        for v in self.inputs:
            g.add_node(f"input:{v.name}", kind="input", value=v)
        for n in self.nodes:
            g.add_node(n.name, kind="op", node=n)
            for i, v in enumerate(n.inputs):
                src = n_src(v)
                g.add_edge(src, n.name, value=v, type=v.type, dst_index=i)
        for v in self.outputs:
            g.add_node(f"output:{v.name}", kind="output", value=v)
            g.add_edge(n_src(v), f"output:{v.name}", value=v, type=v.type, dst_index=0)
        return g

    def param_count(self, trainable_only: bool = False) -> int:
        return sum(p.numel for p in self.parameters.values()
                   if not p.spec.buffer and (p.trainable or not trainable_only))

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def value_slots(self) -> dict[int, int]:
        """Each value's place in a flat list, keyed by id(): the inputs first, then every node's
        outputs in order (how the executors lay out a forward's values)."""
        slot: dict[int, int] = {}
        for v in self.inputs:
            slot[id(v)] = len(slot)
        for n in self.nodes:
            for v in n.outputs:
                slot[id(v)] = len(slot)
        return slot

    def symbols(self) -> list[str]:
        """Symbolic dims of the inputs, in order of first appearance."""
        seen: list[str] = []
        for v in self.inputs:
            for d in v.type.shape:
                if not isinstance(d, int):
                    for s in d.symbols():
                        if s not in seen:
                            seen.append(s)
        return seen


def n_src(v: Value) -> str:
    return v.producer.name if v.producer is not None else f"input:{v.name}"
