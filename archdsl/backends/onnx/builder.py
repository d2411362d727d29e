"""The small builder every op's `lower` writes ONNX through.

Nodes are named after the spec's own names (`<node.name>/<OpType>`), and each carries the
source position (`FILE:LINE`) in its doc_string, so Netron shows where it came from.

Constants and export-time derived tensors are kept as NumPy arrays (`arrays`) until the
exporter assembles the model, so each tensor is copied into the protobuf exactly once and
graph rewrites (e.g. folding BatchNorm into Conv) can read and replace values cheaply.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper


class OnnxBuilder:
    def __init__(self, opset: int):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.arrays: dict[str, np.ndarray] = {}     # constant / derived initializers, by name
        self._consts: dict[tuple, str] = {}
        self._used: set[str] = set()
        self.node = None                 # IR node being lowered (set by the exporter)
        self.param_names: dict[str, str] = {}
        self.weights: dict[str, np.ndarray] = {}
        self.source = None               # span -> "FILE:LINE" (set by the exporter)

    # -- naming ---------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        name, i = hint, 1
        while name in self._used:
            i += 1
            name = f"{hint}_{i}"
        self._used.add(name)
        return name

    def _prefix(self) -> str:
        return self.node.name if self.node is not None else "graph"

    # -- emitting -------------------------------------------------------------------------
    def op(self, op_type: str, inputs: list[str], n_out: int = 1, domain: str = "",
           outputs: list[str] | None = None, **attrs):
        """Append one ONNX node; returns its output name (or list of names if n_out > 1).

        Empty strings in `inputs` stand for omitted optional inputs, as in ONNX.
        """
        base = self.fresh(f"{self._prefix()}/{op_type}")
        outs = outputs or [self.fresh(f"{base}:{i}" if n_out > 1 else f"{base}:0") for i in range(n_out)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        node = helper.make_node(op_type, inputs, outs, name=base, domain=domain or None, **attrs)
        span = getattr(self.node, "span", None)
        if span is not None:
            node.doc_string = self.source(span) if self.source else f"{span.file}:{span.line}"
        self.nodes.append(node)
        return outs[0] if n_out == 1 else outs

    def const(self, value, dtype=None, hint: str = "const") -> str:
        """A constant initializer (deduplicated by value)."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key in self._consts:
            return self._consts[key]
        name = self.fresh(f"{self._prefix()}/{hint}")
        self.arrays[name] = arr
        self._consts[key] = name
        return name

    def ints(self, values, hint: str = "shape") -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint=hint)

    def param(self, local: str) -> str:
        """The initializer holding parameter `local` of the node being lowered."""
        return self.param_names[local]

    def has_param(self, local: str) -> bool:
        return local in self.param_names

    # -- parameter values (export always has weights: seeded or from a checkpoint) ----------
    def param_value(self, local: str) -> np.ndarray:
        return self.weights[self.param_names[local]]

    def derived(self, local: str, fn, suffix: str) -> str:
        """An initializer computed from a parameter at export time (e.g. a transposed weight),
        so the runtime does no work for it."""
        pname = self.param_names[local]
        key = ("derived", pname, suffix)
        if key in self._consts:
            return self._consts[key]
        arr = np.ascontiguousarray(fn(self.weights[pname]))
        name = self.fresh(f"{pname}.{suffix}")
        self.arrays[name] = arr
        self._consts[key] = name
        return name

    def value(self, name: str) -> np.ndarray | None:
        """The export-time value of an initializer (a parameter or a constant), or None."""
        if name in self.arrays:
            return self.arrays[name]
        return self.weights.get(name)
