"""User-defined cells in the IR: one step of a recurrence as a graph of its own.

A `cell` definition maps the input at one step and the states of the step before to the step's
outputs and next states, possibly reading tensors that are the same at every step (`fixed`).
The op that runs it over a sequence (ops/scan.py) holds a `Cell`, and asks it for the step
graph at the types it is applied to (`Cell.body`): the elaborator writes that graph, a `Model`
whose inputs are the step inputs, the fixed tensors and the states, in that order, and whose
outputs are the step's outputs, then the next states (`CellBody`). Its parameters are named
relative to the cell (`linear_1.weight`); the op applying the cell owns them under its own name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import ArchError, Span
from .graph import Model
from .types import TensorType


@dataclass(eq=False)
class CellBody:
    """One step of a cell at concrete input types (see the module docstring)."""
    model: Model
    inputs: tuple           # names of the step inputs (x_t)
    fixed: tuple            # names of the tensors that stay fixed over the steps
    states: tuple           # names of the states
    outputs: tuple          # names of the step's outputs
    state_spans: tuple = () # where each state is declared

    @property
    def state_types(self) -> tuple[TensorType, ...]:
        k = len(self.inputs) + len(self.fixed)
        return tuple(v.type for v in self.model.inputs[k:])

    @property
    def output_types(self) -> tuple[TensorType, ...]:
        return tuple(v.type for v in self.model.outputs[:len(self.outputs)])


@dataclass(eq=False)
class Cell:
    """A cell instance with its arguments bound (`LSTMCell(64)`), as an op attribute. `expand`
    (step types, fixed types) -> CellBody elaborates the step graph; bodies are kept by input
    types, so applying the cell again at the same types finds the same graph and weights."""
    name: str                       # the definition's name
    label: str                      # 'LSTMCell(64)'
    inputs: tuple
    fixed: tuple
    states: tuple
    span: Span | None
    expand: Callable | None = None
    bodies: dict = field(default_factory=dict)

    def body(self, step_types, fixed_types) -> CellBody:
        key = (tuple(step_types), tuple(fixed_types))
        found = self.bodies.get(key)
        if found is None:
            if self.expand is None:
                raise ArchError(f"cell {self.name} is applied at new types after compilation", self.span)
            found = self.bodies[key] = self.expand(list(step_types), list(fixed_types))
        return found

    def __repr__(self) -> str:
        return self.label

    def __eq__(self, other) -> bool:
        return self is other

    __hash__ = object.__hash__
