"""Where ONNX Runtime would run each node of an exported model: the execution providers archdsl
exports for (targets), and which nodes a CUDA session would leave to the CPU, worked out from
the model alone (no GPU needed), as ONNX Runtime's partitioner decides it:

1. a node whose op version (and float type) has no CUDA kernel (cuda_kernels.CUDA);
2. a node the CUDA provider declines in GetCapability: a ConvTranspose with asymmetric pads or
   auto_pad SAME (cuDNN), an RNN/LSTM/GRU with activations, clipping or options cuDNN lacks;
3. "CPU-preferred" nodes (onnxruntime/core/framework/fallback_cpu_capability.cc): starting at
   the consumers of host-memory outputs (Shape, Size, and nodes already on the CPU), a node all
   of whose inputs are host tensors, graph inputs or small initializers (<= 100 elements), none
   of them read from host memory by its CUDA kernel and none float16/bfloat16, runs on the CPU:
   a Gather picking a dim out of a Shape output, a Concat of dims, arithmetic on them.

`cuda_fallbacks(proto)` lists those nodes; tests/test_deploy.py asserts there are none for every
shipped model, and tools/gpu_check.py compares with what a real CUDA session does.
"""
from __future__ import annotations

import heapq
from typing import NamedTuple

import numpy as np
import onnx
import onnx.defs

from ...ops.base import CPU_PROVIDER as CPU
from ...ops.base import CUDA_PROVIDER as CUDA
from . import cuda_kernels

TARGETS = {"cpu": CPU, "cuda": CUDA}

SMALL_INITIALIZER = 100          # elements (kSmallInitializerThreshold in fallback_cpu_capability.cc)

_FLOATS = {onnx.TensorProto.FLOAT: "f32", onnx.TensorProto.FLOAT16: "f16", onnx.TensorProto.BFLOAT16: "bf16",
           onnx.TensorProto.DOUBLE: "f64"}
_HALF = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


class Fallback(NamedTuple):
    """A node a CUDA session would run on the CPU, and why."""
    node: str
    op_type: str
    reason: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op_type}): {self.reason}"


def since_version(op_type: str, opset: int, domain: str = "") -> int | None:
    """The version of `op_type` a model at `opset` uses (ONNX's rule: the newest not newer)."""
    try:
        return onnx.defs.get_schema(op_type, opset, domain).since_version
    except Exception:       # onnx.defs.SchemaError: no such op at that opset
        return None


def cuda_kernel(op_type: str, version: int, dtype: str | None = None):
    """The CUDA kernel row (first, last, types) that runs `op_type` version `version` (with float
    element type dtype: 'f32', 'f16', 'bf16'), or None."""
    for first, last, types in cuda_kernels.CUDA.get(op_type, ()):
        if version == first or (last is not None and first <= version <= last):
            if dtype is None or types == cuda_kernels.ANY or dtype == "f64" or dtype in types.split():
                return first, last, types
    return None


def _kernel_versions(op_type: str, version: int | None) -> str:
    rows = cuda_kernels.CUDA.get(op_type)
    if not rows:
        return "the CUDA provider has no kernel for it"
    spans = [f"{f}" if l in (f, None) else f"{f}-{l}" for f, l, _ in sorted(rows)]
    return f"the CUDA provider's kernels cover versions {', '.join(spans)}, not {version}"


def cuda_opset_ok(op_types, opset: int) -> list[str]:
    """The op types (domain ai.onnx) whose version at `opset` has no CUDA kernel (any float type)."""
    bad = []
    for t in sorted(set(op_types)):
        v = since_version(t, opset)
        if v is None or cuda_kernel(t, v) is None:
            bad.append(t)
    return bad


def newest_cuda_opset(op_types, top: int, bottom: int) -> int | None:
    """The newest opset in bottom..top at which every op type has a CUDA kernel (None if none)."""
    for opset in range(top, bottom - 1, -1):
        if not cuda_opset_ok(op_types, opset):
            return opset
    return None


# -- the analysis ----------------------------------------------------------------------------------

def shape_view(proto: onnx.ModelProto, inline_below: int = 1024) -> onnx.ModelProto:
    """The same graph with each initializer of `inline_below` bytes or more declared as external
    data (name, dtype and dims kept; no bytes copied): what shape inference needs, at no cost."""
    m = onnx.ModelProto()
    m.ir_version = proto.ir_version
    m.opset_import.extend(proto.opset_import)
    g, src = m.graph, proto.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    for t in src.initializer:
        n = int(np.prod(t.dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        if n < inline_below:
            g.initializer.add().CopyFrom(t)
            continue
        h = g.initializer.add()
        h.name, h.data_type = t.name, t.data_type
        h.dims.extend(t.dims)
        h.data_location = onnx.TensorProto.EXTERNAL
        h.external_data.add(key="location", value="weights.bin")
    return m


def element_types(proto: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> ONNX element type, for graph inputs, initializers and (by shape inference)
    every intermediate value it can type."""
    types: dict[str, int] = {}
    g = proto.graph
    for t in g.initializer:
        types[t.name] = t.data_type
    try:
        inferred = onnx.shape_inference.infer_shapes(shape_view(proto)).graph
    except Exception:       # an untypable graph: the dtype checks are skipped, versions still hold
        inferred = g
    for vi in list(inferred.input) + list(inferred.value_info) + list(inferred.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types.setdefault(vi.name, vi.type.tensor_type.elem_type)
    return types


def _float_of(node: onnx.NodeProto, types: dict) -> str | None:
    if node.op_type == "Cast":
        return None
    for name in list(node.input) + list(node.output):
        if name and types.get(name) in _FLOATS:
            return _FLOATS[types[name]]
    return None


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def declined(node: onnx.NodeProto) -> str | None:
    """Why the CUDA provider declines a node it has a kernel for (its GetCapability), or None."""
    if node.op_type == "ConvTranspose":
        pads = list(_attr(node, "pads", []) or [])
        half = len(pads) // 2
        if pads[:half] != pads[half:]:
            return f"asymmetric pads {pads} (cuDNN takes symmetric pads only)"
        auto = _attr(node, "auto_pad", b"NOTSET")
        if auto in (b"SAME_UPPER", b"SAME_LOWER"):
            return f"auto_pad {auto.decode()} (may need asymmetric pads)"
    if node.op_type in ("LSTM", "GRU", "RNN"):
        if any(_attr(node, k) is not None for k in ("activation_alpha", "activation_beta", "clip")):
            return "activation_alpha/beta or clip (cuDNN runs the default cell only)"
        default = {"LSTM": ["sigmoid", "tanh", "tanh"] * 2, "GRU": ["sigmoid", "tanh"] * 2,
                   "RNN": ["tanh", "tanh"]}[node.op_type]
        acts = [a.decode().lower() for a in (_attr(node, "activations") or [])]
        if any(a != default[i] for i, a in enumerate(acts)):
            return f"activations {acts} (cuDNN runs the default cell only)"
        if node.op_type == "LSTM" and (_attr(node, "input_forget", 0) or (len(node.input) > 7 and node.input[7])):
            return "input_forget or peepholes (not in cuDNN's LSTM)"
        if node.op_type == "GRU" and _attr(node, "linear_before_reset", 0) != 1:
            return "linear_before_reset=0 (cuDNN's GRU applies the reset gate after the matrix product)"
    return None


def cuda_fallbacks(proto: onnx.ModelProto, types: dict | None = None) -> list[Fallback]:
    """The nodes a session with the CUDA provider first would run on the CPU (module docstring),
    in graph order. An empty list: every node on the GPU."""
    g = proto.graph
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    types = element_types(proto) if types is None else types
    nodes = list(g.node)
    reasons: dict[int, str] = {}
    for i, n in enumerate(nodes):
        if n.domain not in ("", "ai.onnx"):
            reasons[i] = f"domain {n.domain} (archdsl keeps no table for it)"
            continue
        v = since_version(n.op_type, opset)
        dt = _float_of(n, types)
        if v is None or cuda_kernel(n.op_type, v) is None:
            reasons[i] = f"{n.op_type}-{v} at opset {opset}: {_kernel_versions(n.op_type, v)}"
        elif cuda_kernel(n.op_type, v, dt) is None:
            reasons[i] = f"{n.op_type}-{v} has no CUDA kernel for {dt}"
        else:
            why = declined(n)
            if why is not None:
                reasons[i] = why
    reasons.update(_cpu_preferred(g, nodes, set(reasons), types))
    return [Fallback(nodes[i].name, nodes[i].op_type, reasons[i]) for i in sorted(reasons)]


def _cpu_preferred(g: onnx.GraphProto, nodes: list, on_cpu: set, types: dict) -> dict[int, str]:
    """ONNX Runtime's GetCpuPreferredNodes, replayed: node index -> reason."""
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for x in n.input:
            if x:
                consumers.setdefault(x, []).append(i)
    small = {t.name for t in g.initializer if int(np.prod(t.dims, dtype=np.int64)) <= SMALL_INITIALIZER}
    graph_inputs = {v.name for v in g.input}
    host: set[str] = set()             # tensors in host memory
    queue: list[int] = []
    for i, n in enumerate(nodes):
        if i in on_cpu:
            continue
        for k in cuda_kernels.HOST_OUTPUTS.get(n.op_type, ()):
            if k < len(n.output) and n.output[k]:
                host.add(n.output[k])
                queue.extend(consumers.get(n.output[k], []))
    heapq.heapify(queue)
    visited: set[int] = set()
    found: dict[int, str] = {}
    while queue:
        i = heapq.heappop(queue)
        if i in visited:
            continue
        visited.add(i)
        n = nodes[i]
        if i in on_cpu:                     # already on the CPU: its outputs are host tensors
            for o in n.output:
                host.add(o)
                for c in consumers.get(o, []):
                    heapq.heappush(queue, c)
            continue
        reads_on_host = cuda_kernels.HOST_INPUTS.get(n.op_type, ())
        place, source = True, None
        for k, x in enumerate(n.input):
            if not x:
                continue
            if types.get(x) in _HALF:
                place = False
                break
            if x in small or x in graph_inputs:
                continue
            if x not in host or k in reads_on_host:
                place = False
                break
            source = source or x
        if place:
            found[i] = f"reads the host tensor {source} as data (ONNX Runtime runs such shape arithmetic on the CPU)"
            for o in n.output:
                host.add(o)
                for c in consumers.get(o, []):
                    heapq.heappush(queue, c)
    return found


def gathers_over_shape(proto: onnx.ModelProto) -> list[str]:
    """Gather nodes whose data input is a Shape output (the pattern the CUDA provider leaves to the CPU)."""
    shapes = {o for n in proto.graph.node if n.op_type == "Shape" for o in n.output}
    return [n.name for n in proto.graph.node if n.op_type == "Gather" and n.input[0] in shapes]


def asymmetric_conv_transposes(proto: onnx.ModelProto) -> list[str]:
    out = []
    for n in proto.graph.node:
        if n.op_type == "ConvTranspose":
            pads = list(_attr(n, "pads", []) or [])
            if pads[:len(pads) // 2] != pads[len(pads) // 2:]:
                out.append(n.name)
    return out
