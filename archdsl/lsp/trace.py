"""What the elaborator saw, by source span: the map from the text to the IR that hover and
inlay hints read.

`TracingElaborator` is the compiler's own Elaborator with a few methods wrapped: each records
what it produced under the span it came from (a name's value, a statement's bound tensors, the
IR nodes of a layer, a block application) and passes the result on unchanged, so the IR and
the errors are exactly those of `archdsl check`. `TracedSpec` is archdsl.api.Spec elaborating
with it. A block applied several times records once per application (each with the path of its
instance), which is how a hover inside a block can list every shape it is used with.

Errors get two extra attributes on the way out, for the diagnostics' related locations:
`related` (a shape error's input tensors and the layers that produced them) and `call_stack`
(the block applications an error happened inside, outermost first).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from ..api import Spec
from ..elaborate.elaborator import Elaborator
from ..elaborate.values import TensorRef
from ..errors import ArchError, ShapeError, Span
from ..ir.graph import Model, Node


@dataclass(eq=False)
class Seen:
    """One value as the elaborator met it: in which model, inside which block instance."""
    value: object
    model: str
    where: str          # the instance path ("" at the model's top level)


@dataclass(eq=False)
class Layer:
    """One application of a layer: its IR node in its model."""
    node: Node
    model: Model


@dataclass(eq=False)
class BlockUse:
    """One application of a block (or of a model used as a block)."""
    name: str               # the block's name
    path: str               # its instance path
    args: dict
    outputs: object         # what the application returned (a TensorRef, a tuple, or poison)
    model: Model


@dataclass(eq=False)
class Trace:
    uses: dict = field(default_factory=lambda: defaultdict(list))       # Name span -> [Seen]
    bindings: dict = field(default_factory=lambda: defaultdict(list))   # statement span -> [Seen of {name: value}]
    layers: dict = field(default_factory=lambda: defaultdict(list))     # span written -> [Layer]
    blocks: dict = field(default_factory=lambda: defaultdict(list))     # span written -> [BlockUse]
    models: list = field(default_factory=list)                          # every Model elaborated (some partial)


class TracingElaborator(Elaborator):
    def __init__(self, ns, trace: Trace):
        super().__init__(ns)
        self.trace = trace
        self._calls: list[Span] = []

    def _seen(self, value, frame) -> Seen:
        return Seen(value, self.m.name, frame.path)

    # -- names and statements -------------------------------------------------------------------
    def e_Name(self, e, frame, symbolic, defn, idx):
        v = super().e_Name(e, frame, symbolic, defn, idx)
        self.trace.uses[e.span].append(self._seen(v, frame))
        return v

    def model_input(self, stmt, frame):
        super().model_input(stmt, frame)
        self.trace.bindings[stmt.span].append(self._seen({stmt.name: frame.env[stmt.name]}, frame))

    def assign(self, stmt, frame, defn, idx):
        super().assign(stmt, frame, defn, idx)
        self.trace.bindings[stmt.span].append(self._seen({t: frame.env.get(t) for t in stmt.targets}, frame))

    def output(self, stmt, v, frame, is_model):
        out = super().output(stmt, v, frame, is_model)
        self.trace.bindings[stmt.span].append(self._seen({stmt.name: out}, frame))
        return out

    # -- applications ---------------------------------------------------------------------------
    def apply_layer(self, inst, tensors, frame, span):
        try:
            out = super().apply_layer(inst, tensors, frame, span)
        except ShapeError as err:
            if not hasattr(err, "related"):
                err.related = _producers(tensors)
            raise
        self.trace.layers[inst.span].append(Layer(self.m.nodes[-1], self.m))
        return out

    def apply_block(self, inst, tensors, frame, span):
        self._calls.append(span)
        try:
            out = super().apply_block(inst, tensors, frame, span)
        except ArchError as err:
            if not hasattr(err, "call_stack"):
                err.call_stack = list(self._calls)
            raise
        finally:
            self._calls.pop()
        self.trace.blocks[inst.span].append(BlockUse(inst.defn.name, inst.path, dict(inst.args), out, self.m))
        return out


def _producers(tensors) -> list[tuple[Span, str]]:
    """Where each input of a failed application came from."""
    out = []
    for i, t in enumerate(tensors):
        if not isinstance(t, TensorRef):
            continue
        v = t.value
        what = f"input {i + 1}" if len(tensors) > 1 else "the input"
        if v.producer is not None and v.producer.span is not None:
            out.append((v.producer.span, f"{what}, {v.type}, comes from {v.producer.name} ({v.producer.kind})"))
        elif v.span is not None:
            out.append((v.span, f"{what}, {v.type}, is the model input '{v.name}'"))
    return out


class TracedSpec(Spec):
    """archdsl.api.Spec whose models are elaborated by TracingElaborator into `trace`. Like Spec
    it raises the errors it collected; the trace keeps what was elaborated up to each one."""

    def __init__(self, ns, trace: Trace):
        self.trace = trace
        super().__init__(ns)

    def elaborate(self, name: str, overrides: dict) -> Model:
        el = TracingElaborator(self.ns, self.trace)
        try:
            return el.model(name, overrides)
        finally:
            if getattr(el, "m", None) is not None:
                self.trace.models.append(el.m)
