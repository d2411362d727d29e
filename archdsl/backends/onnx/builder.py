"""The small builder every op's `lower` writes ONNX through.

Nodes are named after the spec's own names (`<node.name>/<OpType>`), and each carries the
source position (`FILE:LINE`) in its doc_string, so Netron shows where it came from.

Constants and export-time derived tensors are kept as NumPy arrays (`arrays`) until the
exporter assembles the model, so each tensor is copied into the protobuf exactly once and
graph rewrites (e.g. folding BatchNorm into Conv) can read and replace values cheaply.

An op with a graph of its own (a scanned cell's step, ops/scan.py) lowers it through a `child`
builder: its nodes go into the subgraph, while names, constants and weights are the model's, so
every name stays unique and the subgraph reads constants and parameters as outer-scope values.

Runtime sizes (`dim`, `arange`, `sizes`). Under the CUDA execution provider a `Shape` output
lives in host memory, and ONNX Runtime runs every node that reads it as data (a Gather picking
one dim, a Concat of dims, arithmetic on them) on the CPU, with copies around it; a session that
forbids CPU fallback then fails. So a lowering reads runtime sizes only through these helpers,
which let a Shape output feed nothing but the inputs kernels take from host memory (Reshape's
and Expand's shape, Slice's bounds, Tile's repeats) and compute positions on the device. The
encoding depends on the opset (Shape's start/end exist from 15 on), which is why it lives here
and not in the lowerings.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ...ir.types import DTYPES, is_static


def value_info(name: str, t) -> onnx.ValueInfoProto:
    """A typed ONNX value: symbolic dims become named dynamic dims (N, T)."""
    dims = [int(d) if is_static(d) else str(d) for d in t.shape]
    return helper.make_tensor_value_info(name, DTYPES[t.dtype][1], dims)


def stand_in(shape, dtype=np.float32) -> np.ndarray:
    """A read-only array of `shape` that occupies one element (all strides 0): a weight's
    place in a graph-only export (export.to_onnx(data=False))."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape=tuple(int(d) for d in shape),
                                           strides=(0,) * len(shape), writeable=False)


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
        self.prefix = ""                 # the op a child builder lowers a subgraph for
        self.lazy = False                # a graph-only export: derived tensors keep their shape only
        self.provider = None             # the execution provider the file is for (to_onnx's provider)

    # -- naming ---------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        name, i = hint, 1
        while name in self._used:
            i += 1
            name = f"{hint}_{i}"
        self._used.add(name)
        return name

    def _prefix(self) -> str:
        if self.prefix:
            return f"{self.prefix}/{self.node.name}" if self.node is not None else self.prefix
        return self.node.name if self.node is not None else "graph"

    # -- lowering graphs ------------------------------------------------------------------
    def lower_nodes(self, model, names: dict, param_names: dict | None = None, nodes=None,
                    prefix: str | None = None) -> None:
        """Lower `model`'s nodes (or those of `nodes`) in order. names: id(Value) -> ONNX name,
        given for the values they read and filled in with every node output. param_names maps
        the model's parameter names to initializer names (a cell's relative names to the scan's);
        None: the same. prefix: put before the node names while lowering them."""
        from ...errors import ArchError
        saved = self.node, self.param_names, self.prefix
        if prefix is not None:
            self.prefix = prefix
        for node in (model.nodes if nodes is None else nodes):
            self.node = node
            self.param_names = {k: (v if param_names is None else param_names[v]) for k, v in node.params.items()}
            try:
                lower = node.op.lowering_for(node.app, self.opset, self.provider)
                outs = lower(node.app, self, [names[id(v)] for v in node.inputs])
            except MemoryError:     # a constant the op builds (e.g. a position table) cannot be allocated
                raise ArchError(f"not enough memory to export {node.name} ({node.op.name}) with inputs "
                                f"{', '.join(str(v.type) for v in node.inputs)}", node.span) from None
            if len(outs) != len(node.outputs):
                raise AssertionError(f"{node.op.name}.{lower.__name__} returned {len(outs)} outputs, "
                                     f"expected {len(node.outputs)}")
            for v, o in zip(node.outputs, outs):
                names[id(v)] = o
        self.node, self.param_names, self.prefix = saved

    def child(self, prefix: str) -> "OnnxBuilder":
        """A builder for a subgraph of the op being lowered (see the module docstring)."""
        sub = OnnxBuilder(self.opset)
        sub.arrays, sub._consts, sub._used = self.arrays, self._consts, self._used
        sub.weights, sub.source, sub.provider, sub.lazy = self.weights, self.source, self.provider, self.lazy
        sub.prefix = prefix
        return sub

    def graph(self, name: str, inputs: list, outputs: list) -> onnx.GraphProto:
        """This builder's nodes as a subgraph; inputs and outputs are (name, TensorType) pairs."""
        return helper.make_graph(self.nodes, self.fresh(name), [value_info(n, t) for n, t in inputs],
                                 [value_info(n, t) for n, t in outputs])

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
        arr = fn(self.weights[pname])
        arr = stand_in(arr.shape, arr.dtype) if self.lazy else np.ascontiguousarray(arr)
        name = self.fresh(f"{pname}.{suffix}")
        self.arrays[name] = arr
        self._consts[key] = name
        return name

    # -- runtime sizes (see the module docstring) -----------------------------------------------
    def dim(self, x: str, axis: int) -> str:
        """The runtime size of dim `axis` of x as a 1-element int64 vector: `Shape(start, end)`
        from opset 15 on (a Shape output, read from host memory by Slice/Expand/Reshape), a Gather
        over the whole Shape below it (which ONNX Runtime's CUDA provider places on the CPU)."""
        if self.opset >= 15:
            return self.op("Shape", [x], start=axis, end=axis + 1 if axis != -1 else None)
        return self.op("Gather", [self.op("Shape", [x]), self.ints([axis], f"dim{axis}")], axis=0)

    def arange(self, x: str, axis: int) -> str:
        """The positions 0, 1, ..., n-1 (int64 [n]) for n the runtime size of dim `axis` of x,
        computed on the device: an exclusive CumSum of ones expanded to [n]. (Range would need n
        as a scalar, which only a Gather over the Shape makes: below opset 15, that is used.)"""
        if self.opset >= 15:
            ones = self.op("Expand", [self.const(np.ones(1, np.int64), hint="one1"), self.dim(x, axis)])
            return self.op("CumSum", [ones, self.const(np.asarray(0, np.int64), hint="axis0")], exclusive=1)
        n = self.op("Gather", [self.op("Shape", [x]), self.const(np.asarray(axis, np.int64), hint=f"dim{axis}")],
                    axis=0)
        return self.op("Range", [self.const(np.asarray(0, np.int64), hint="zero"), n,
                                 self.const(np.asarray(1, np.int64), hint="one")])

    def sizes(self, x: str, rank_x: int, keep: dict[int, int], rank: int) -> str:
        """A shape vector of length `rank`: the runtime size of x's axis a at position keep[a],
        1 elsewhere (e.g. [1, 1, T, 1] to Expand a mask to). It is the Shape of x sliced to one
        element on every other axis and moved into place with Squeeze/Unsqueeze (tiny device
        ops), so host memory holds it as Shape's own output, never as a Concat of dims. The kept
        axes must keep their order (keep is increasing in both)."""
        assert list(keep) == sorted(keep) and list(keep.values()) == sorted(keep.values())
        drop = [i for i in range(rank_x) if i not in keep]
        y = x
        if drop:
            ends = self.ints([1] * len(drop), "ones")
            y = self.op("Slice", [y, self.ints([0] * len(drop), "zeros"), ends, self.ints(drop, "axes")])
            y = self.op("Squeeze", [y, self.ints(drop, "axes")])
        add = [i for i in range(rank) if i not in keep.values()]
        if add:
            y = self.op("Unsqueeze", [y, self.ints(add, "axes")])
        return self.op("Shape", [y])

    def expand_like(self, x: str, rank: int, dims) -> str:
        """x expanded along runtime sizes: `dims` lists (position, source, source rank, source
        axis), dim `position` of the result taking the size of the source's axis. One Expand per
        dim, each reading a Shape output (sizes): no Concat of dims, nothing for the CPU."""
        for pos, src, rank_src, axis in dims:
            x = self.op("Expand", [x, self.sizes(src, rank_src, {axis: pos}, rank)])
        return x

    def value(self, name: str) -> np.ndarray | None:
        """The export-time value of an initializer (a parameter or a constant), or None."""
        if name in self.arrays:
            return self.arrays[name]
        return self.weights.get(name)
