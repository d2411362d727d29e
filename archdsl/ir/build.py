"""Building IR programmatically (tests, tools): a model made of one op application."""
from __future__ import annotations

from ..errors import ArchError
from ..ops.base import get_op
from .graph import Model, Node, Param, Value
from .types import TensorType


def single_op_model(op_name: str, in_types: list[TensorType], *positional, **attrs) -> Model:
    from ..elaborate.bind import bind_args
    op = get_op(op_name)
    if op is None:
        raise ArchError(f"unknown op {op_name}")
    attrs = bind_args(op, list(positional), attrs)
    m = Model(name=op_name, file="<test>", span=None, args={})
    m.inputs = [Value(f"x{i}" if len(in_types) > 1 else "x", t) for i, t in enumerate(in_types)]
    app = op.bind(attrs, list(in_types))
    node = Node(name=op_name.lower(), app=app, inputs=list(m.inputs), instance=op_name.lower())
    outs = app.out_types
    node.outputs = [Value(f"y{i}" if len(outs) > 1 else "y", t, node, i) for i, t in enumerate(outs)]
    for local, spec in app.params.items():
        pname = f"{node.name}.{local}"
        m.parameters[pname] = Param(pname, spec)
        node.params[local] = pname
    m.nodes.append(node)
    m.outputs = list(node.outputs)
    return m
