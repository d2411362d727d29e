"""Lowering a model's IR to an ONNX ModelProto: each op lowers itself through OnnxBuilder.

The exporter itself knows no op kinds except in one graph-level rewrite: an inference-mode
BatchNormalization that directly follows a Conv / ConvTranspose / Gemm (whose output feeds
nothing else) is folded into that op's weight and bias at export time, as PyTorch's exporter
does. The runtime then does no work for it, and the graph has no more nodes than torch's.

Files are written by `save`: inline below `EXTERNAL_DATA_THRESHOLD` bytes of tensor data, and
with the tensors in `<file>.data` beside the model above it (protobuf cannot serialise a message
of 2 GiB or more).
"""
from __future__ import annotations

import contextlib
import functools
import numbers
import os
import sys

import numpy as np
import onnx
from onnx import helper

from ...errors import ArchError
from ...ir.constraints import METADATA_KEY as CONSTRAINTS_KEY
from ...ir.constraints import dumps as dump_constraints
from ...ir.graph import Model
from ...ops.base import MIN_OPSET
from .builder import OnnxBuilder, stand_in, value_info

DEFAULT_OPSET = 17

# Tensor bytes above which `save` writes the weights as external data (protobuf's hard limit on
# one serialised message is 2 GiB; keep a margin for the graph itself). Module constant so tests
# can lower it.
EXTERNAL_DATA_THRESHOLD = 2_000_000_000
# Tensors smaller than this stay inline even in an external-data model (shapes, small constants).
EXTERNAL_MIN_TENSOR_BYTES = 1024
# Offsets of tensors in the .data file are aligned (lets ONNX Runtime memory-map them).
EXTERNAL_ALIGNMENT = 4096


@functools.lru_cache(maxsize=None)
def max_opset() -> int:
    """The newest ai.onnx opset that both the onnx package and the installed onnxruntime run.

    Asked of onnxruntime itself (it refuses to load a model stamped with an opset newer than it
    knows), so it stays right as either package is upgraded.
    """
    newest = onnx.defs.onnx_opset_version()
    try:
        import onnxruntime as ort
    except ImportError:
        return newest
    so = ort.SessionOptions()
    so.log_severity_level = 4
    for opset in range(newest, MIN_OPSET, -1):
        if _ort_loads(ort, so, opset):
            return opset
    return MIN_OPSET


def _ort_loads(ort, so, opset: int) -> bool:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = _ir_version(opset)
    try:
        ort.InferenceSession(m.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])
        return True
    except Exception:
        return False


def _ir_version(opset: int) -> int:
    """The oldest IR version that can carry `opset`: what the widest range of runtimes accepts."""
    return max(7, helper.find_min_ir_version_for([helper.make_opsetid("", opset)]))


def _source_namer(main_file: str):
    """span -> 'FILE:LINE'. Files imported by the spec are named relative to the main spec's
    directory as the user gave it, so the exported bytes do not depend on where the checkout
    lives (byte-identical files from the same spec and seed, on any machine)."""
    main_dir = os.path.dirname(main_file)
    try:
        main_abs = os.path.dirname(os.path.abspath(main_file))
    except Exception:       # pragma: no cover
        main_abs = None
    cache: dict[str, str] = {}

    def name(span) -> str:
        f = span.file
        if f not in cache:
            shown = f
            if main_abs is not None and os.path.isabs(f) and not f.startswith("<"):
                try:
                    rel = os.path.relpath(f, main_abs)
                    shown = os.path.join(main_dir, rel) if main_dir else rel
                except ValueError:   # another drive on Windows
                    shown = f
            cache[f] = shown.replace(os.sep, "/")
        return f"{cache[f]}:{span.line}"

    return name


def to_onnx(model: Model, weights: dict[str, np.ndarray] | None, opset: int = DEFAULT_OPSET,
            metadata: dict[str, str] | None = None, fold: bool = True,
            provider: str | None = None, data: bool = True) -> onnx.ModelProto:
    """Lower `model` with `weights` (parameter name -> array) to an ONNX ModelProto.

    fold: fold inference-mode BatchNorm into the preceding Conv/ConvTranspose/Gemm (default).
    provider: the execution provider the file is for ("CUDAExecutionProvider", ...): lowerings
    declared for providers apply only to theirs; None (the default) exports the portable ones.
    Choosing an opset per provider is deploy.export's job.
    data=False: the graph alone, fast, for analysis (placement, the opset search): tensors of
    1 KiB or more carry their name, type and dims but no values (declared as external data that
    does not exist), and weights may be None (stand-ins of the parameters' shapes).
    """
    if weights is None:
        if data:
            raise ValueError("to_onnx needs the weights unless data=False")
        weights = {name: stand_in(p.spec.shape) for name, p in model.parameters.items()}
    m, tensors = _lower(model, weights, opset, metadata, fold, provider, lazy=not data)
    for name, value, _ in tensors:
        _add_initializer(m.graph, name, value(), data)
    return m


def _lower(model: Model, weights, opset, metadata, fold, provider=None, lazy=False) -> tuple[onnx.ModelProto, list]:
    """The model without its initializers, and the initializers as (name, function giving the
    array, bytes), in order: their data is fetched (a seeded weight generated) only when it is
    written."""
    top = max_opset()
    if not isinstance(opset, numbers.Integral) or isinstance(opset, bool) or not MIN_OPSET <= opset <= top:
        raise ArchError(f"opset {opset} is not supported: choose {MIN_OPSET}..{top}",
                        hint=f"the installed onnxruntime runs opsets up to {top}")
    opset = int(opset)
    b = OnnxBuilder(opset)
    b.weights, b.provider, b.lazy = weights, provider, lazy
    b.source = _source_namer(model.file)
    b._used.update(model.parameters)
    names: dict[int, str] = {}
    for v in model.inputs:
        names[id(v)] = b.fresh(v.name)
    b.lower_nodes(model, names)
    used_params = {p for node in model.nodes for p in node.params.values()}

    # Graph outputs take the model's output names: rename producers (or add Identity when an
    # output is a graph input, an initializer, or appears twice).
    input_names = {names[id(i)] for i in model.inputs}
    rename: dict[str, str] = {}
    graph_outputs = []
    for v in model.outputs:
        src = names[id(v)]
        if src in rename or src in input_names or src in rename.values() or b.value(src) is not None:
            out = b.fresh(v.name)
            b.nodes.append(helper.make_node("Identity", [src], [out], name=f"{out}/Identity"))
        else:
            out = v.name if v.name not in b._used or v.name == src else b.fresh(v.name)
            rename[src] = out
        graph_outputs.append(value_info(out, v.type))
    if rename:
        for n in b.nodes:
            if any(o in rename for o in n.output):
                n.output[:] = [rename.get(o, o) for o in n.output]
            _rename_inputs(n, rename)

    nodes = b.nodes
    if fold:
        nodes = _fold_batchnorm(b, nodes, {o.name for o in graph_outputs})

    # No dead nodes: keep only what the outputs need.
    needed = {o.name for o in graph_outputs}
    live = []
    for n in reversed(nodes):
        if any(o in needed for o in n.output):
            live.append(n)
            needed.update(i for i in reads(n) if i)
    live.reverse()

    m = onnx.ModelProto()
    m.ir_version = _ir_version(opset)
    m.producer_name = "archdsl"
    m.producer_version = _version()
    m.opset_import.add(domain="", version=opset)
    g = m.graph
    g.name = model.name
    g.node.extend(live)
    g.input.extend(value_info(names[id(v)], v.type) for v in model.inputs)
    g.output.extend(graph_outputs)
    tensors = [(p, functools.partial(_param_array, weights, p), 4 * int(model.parameters[p].numel))
               for p in sorted(used_params) if p in needed and p not in b.arrays]
    tensors += [(name, functools.partial(b.arrays.get, name), b.arrays[name].nbytes)
                for name in b.arrays if name in needed]
    meta = {"archdsl_version": _version(), "spec_file": model.file, "model": model.name}
    meta.update({f"param.{k}": str(v) for k, v in model.args.items()})
    if model.constraints:       # checked by archdsl.runtime.Session before ONNX Runtime runs
        meta[CONSTRAINTS_KEY] = dump_constraints(model.constraints, b.source)
    meta.update(metadata or {})
    helper.set_model_props(m, meta)
    return m, tensors


def _param_array(weights, name: str) -> np.ndarray:
    return np.asarray(weights[name], dtype=np.float32)


def _little_endian(arr) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and sys.byteorder == "big"):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr if arr.flags.c_contiguous else arr.copy(order="C")    # (ascontiguousarray makes 0-d 1-d)


def _subgraphs(n: onnx.NodeProto):
    for a in n.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield from a.graphs


def reads(n: onnx.NodeProto) -> list[str]:
    """The names a node reads: its inputs, and the outer-scope values its subgraphs use (a Scan
    body reads the model's weights and the tensors its cell keeps fixed that way)."""
    out = list(n.input)
    for g in _subgraphs(n):
        defined = {i.name for i in g.input} | {t.name for t in g.initializer}
        for m in g.node:
            out += [i for i in reads(m) if i and i not in defined]
            defined.update(m.output)
    return out


def _rename_inputs(n: onnx.NodeProto, rename: dict) -> None:
    if any(i in rename for i in n.input):
        n.input[:] = [rename.get(i, i) for i in n.input]
    for g in _subgraphs(n):
        for m in g.node:
            _rename_inputs(m, rename)


def _add_initializer(g: onnx.GraphProto, name: str, arr: np.ndarray, data: bool = True) -> None:
    """Append `arr` as a raw-data TensorProto: one copy of the data into the message (without
    data: a tensor of EXTERNAL_MIN_TENSOR_BYTES or more is declared only, see to_onnx)."""
    arr = np.asarray(arr)
    if not data and arr.nbytes >= EXTERNAL_MIN_TENSOR_BYTES:
        t = g.initializer.add()
        t.name, t.data_type = name, helper.np_dtype_to_tensor_dtype(arr.dtype)
        t.dims.extend(arr.shape)
        t.data_location = onnx.TensorProto.EXTERNAL
        t.external_data.add(key="location", value="<no data: a graph-only export>")
        return
    arr = _little_endian(arr)
    t = g.initializer.add()
    t.name = name
    t.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
    t.dims.extend(arr.shape)
    t.raw_data = arr.tobytes()


# -- BatchNorm folding ------------------------------------------------------------------------

_FOLDABLE = ("Conv", "ConvTranspose", "Gemm")


def _fold_batchnorm(b: OnnxBuilder, nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """Fold each BatchNormalization whose input comes straight from a Conv, ConvTranspose or
    Gemm (used by nothing else) into that node's weight and bias:
        s = gamma / sqrt(var + eps);  W' = W * s (per output channel);  b' = (b - mean) * s + beta
    computed in float64 and stored in the weight's dtype. Where a rewrite does not apply (a
    tied weight shared with another node keeps its own copy; unknown values) the BN stays."""
    producer = {o: n for n in nodes for o in n.output}
    uses: dict[str, int] = {}
    for n in nodes:
        for i in reads(n):
            if i:
                uses[i] = uses.get(i, 0) + 1
    dropped: set[int] = set()
    alias: dict[str, str] = {}
    for bn in nodes:
        if bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx") or len(bn.output) != 1:
            continue
        x = bn.input[0]
        src = producer.get(x)
        if src is None or src.op_type not in _FOLDABLE or id(src) in dropped or len(src.output) != 1:
            continue
        if uses.get(x, 0) != 1 or x in outputs:
            continue
        if _attr(bn, "training_mode", 0):
            continue
        vals = [b.value(i) for i in bn.input[1:5]]
        w = b.value(src.input[1])
        bias_name = src.input[2] if len(src.input) > 2 and src.input[2] else None
        bias = b.value(bias_name) if bias_name else None
        if any(v is None for v in vals) or w is None or (bias_name and bias is None):
            continue
        gamma, beta, mean, var = (np.asarray(v, dtype=np.float64) for v in vals)
        scale = gamma / np.sqrt(var + _attr(bn, "epsilon", 1e-5))
        shape = _scale_shape(src, w)
        if shape is None or scale.shape != (w.shape[shape.index(-1)],):
            continue
        if b.lazy:              # a graph-only export: the folded values are not needed
            new_w, new_b = stand_in(w.shape, w.dtype), stand_in(scale.shape, w.dtype)
        else:
            new_w = (w.astype(np.float64) * scale.reshape(shape)).astype(w.dtype)
            b0 = np.zeros_like(scale) if bias is None else np.asarray(bias, dtype=np.float64)
            new_b = ((b0 - mean) * scale + beta).astype(w.dtype)
        # A weight (bias) used by this node alone keeps its name, now holding the folded values
        # (Netron still shows `<layer>.weight`); a shared one gets a folded copy of its own.
        owner = src.name.rsplit("/", 1)[0]
        wname = src.input[1]
        if uses.get(wname, 0) > 1 or wname in b.arrays:
            wname = b.fresh(f"{wname}.folded")
        if bias_name and uses.get(bias_name, 0) == 1 and bias_name not in b.arrays:
            bname = bias_name
        else:
            bname = b.fresh(f"{bias_name}.folded" if bias_name else f"{owner}.bias")
        b.arrays[wname] = new_w
        b.arrays[bname] = new_b
        src.input[:] = [src.input[0], wname, bname]
        if src.op_type == "Gemm" and any(a.name == "beta" for a in src.attribute):
            _set_attr(src, "beta", 1.0)
        if bn.output[0] in outputs:        # a graph output keeps its name
            src.output[:] = [bn.output[0]]
            producer[bn.output[0]] = src
        else:                               # consumers read the Conv's own output instead
            alias[bn.output[0]] = x
        dropped.add(id(bn))
    kept = [n for n in nodes if id(n) not in dropped]
    if alias:
        for n in kept:
            if any(i in alias for i in n.input):
                n.input[:] = [alias.get(i, i) for i in n.input]
    return kept


def _scale_shape(node: onnx.NodeProto, w: np.ndarray):
    """Broadcast shape putting the per-output-channel scale on the weight's output-channel axis
    (-1 marks that axis), or None where the fold does not apply."""
    if node.op_type == "Conv":
        return (-1,) + (1,) * (w.ndim - 1)
    if node.op_type == "ConvTranspose":
        if _attr(node, "group", 1) != 1 or w.ndim < 3:
            return None
        return (1, -1) + (1,) * (w.ndim - 2)
    if node.op_type == "Gemm":
        if w.ndim != 2 or _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "transA", 0):
            return None
        if len(node.input) > 2 and node.input[2] and _attr(node, "beta", 1.0) != 1.0:
            return None
        return (-1, 1) if _attr(node, "transB", 0) else (1, -1)
    return None


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


def _version() -> str:
    from ...version import __version__
    return __version__


# -- writing ----------------------------------------------------------------------------------

def tensor_bytes(proto: onnx.ModelProto) -> int:
    """Bytes of tensor data held inline in the model (computed from dims, without serialising)."""
    total = 0
    for t in _tensors(proto.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            continue
        n = 1
        for d in t.dims:
            n *= d
        total += n * _itemsize(t.data_type)
    return total


def _itemsize(data_type: int) -> int:
    try:
        return helper.tensor_dtype_to_np_dtype(data_type).itemsize
    except Exception:   # string, float8 …: count a byte each
        return 1


def _tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for n in graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                yield a.t
            elif a.type == onnx.AttributeProto.GRAPH:
                yield from _tensors(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sg in a.graphs:
                    yield from _tensors(sg)


def save(proto: onnx.ModelProto, path) -> None:
    """Write the model atomically. Models with more than EXTERNAL_DATA_THRESHOLD bytes of tensor
    data keep their weights in `<file>.data` beside the file (ONNX external data, offsets
    aligned); `proto` itself is left as it was (its tensors stay inline in memory)."""
    from pathlib import Path

    from ...fileio import atomic_path
    path = Path(path)
    if tensor_bytes(proto) <= EXTERNAL_DATA_THRESHOLD:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(proto.SerializeToString())
        return
    data_name = path.name + ".data"
    with atomic_path(path.with_name(data_name)) as data_tmp:
        with atomic_path(path) as tmp:
            moved = _externalize(proto, data_tmp, data_name)
            try:
                with open(tmp, "wb") as f:
                    f.write(proto.SerializeToString())
            finally:
                _restore(moved)


def write_onnx(model: Model, weights, path, opset: int = DEFAULT_OPSET, metadata: dict[str, str] | None = None,
               fold: bool = True) -> onnx.ModelProto:
    """Lower `model` and write it to `path` (atomically, as `save` does) without ever holding the
    whole model in memory: the graph is written first, then each initializer, its bytes going
    from the weight's own buffer to the file (or, above EXTERNAL_DATA_THRESHOLD bytes in all, to
    `<file>.data` as ONNX external data). With `weights` a mapping that makes each array when
    asked (passes/init.py: SeededWeights), the peak memory is about one weight, not the model
    (protobuf's own serialisation would need the model twice or more).

    Each initializer is written as a ModelProto fragment `{graph {initializer}}`: protobuf merges
    repeated embedded messages, so the file parses (onnx, ONNX Runtime) as the model `to_onnx`
    builds. Returns the model without its initializers (the graph, for a summary)."""
    from pathlib import Path

    from ...fileio import atomic_path, is_regular_output
    path = Path(path)
    m, tensors = _lower(model, weights, opset, metadata, fold)
    sizes = [size for _, _, size in tensors]
    external = sum(sizes) > EXTERNAL_DATA_THRESHOLD
    if external and not is_regular_output(path):
        raise ArchError(f"cannot write '{path}': the model's {sum(sizes):,} bytes of weights go to a '.data' "
                        "file beside the model file, and this is not a regular file",
                        hint="write to a regular file")
    with contextlib.ExitStack() as stack:
        data = None
        if external:
            data = open(stack.enter_context(atomic_path(path.with_name(path.name + ".data"))), "wb")
            stack.callback(data.close)
        tmp = stack.enter_context(atomic_path(path))
        with open(tmp, "wb") as f:
            f.write(m.SerializeToString())
            for name, value, size in tensors:
                to_data = data is not None and size >= EXTERNAL_MIN_TENSOR_BYTES
                _write_initializer(f, name, value(), data if to_data else None, path.name + ".data")
        if data is not None:
            data.flush()
    return m


_FIELD = {"model.graph": onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number,
          "graph.initializer": onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number,
          "tensor.raw_data": onnx.TensorProto.DESCRIPTOR.fields_by_name["raw_data"].number}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _length_delimited(field: int, length: int) -> bytes:
    """A protobuf field header of wire type 2 (bytes, embedded message) and its length."""
    return _varint(field << 3 | 2) + _varint(length)


def _write_initializer(f, name: str, arr: np.ndarray, data=None, location: str = "") -> None:
    """Append one initializer to the model file `f` (see write_onnx); its bytes are written from
    the array's buffer, into `f` as raw_data or into `data` (external data, aligned offset)."""
    arr = _little_endian(arr)
    t = onnx.TensorProto()
    t.name = name
    t.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
    t.dims.extend(arr.shape)
    raw = memoryview(arr.reshape(-1)).cast("B")
    if data is not None:
        offset = data.tell()
        pad = -offset % EXTERNAL_ALIGNMENT
        data.write(b"\0" * pad)
        data.write(raw)
        t.data_location = onnx.TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", str(offset + pad)), ("length", str(raw.nbytes))):
            e = t.external_data.add()
            e.key, e.value = k, v
        head, raw = t.SerializeToString(), memoryview(b"")
    else:
        head = t.SerializeToString() + _length_delimited(_FIELD["tensor.raw_data"], raw.nbytes)
    tensor = len(head) + raw.nbytes
    graph = len(_length_delimited(_FIELD["graph.initializer"], tensor)) + tensor
    f.write(_length_delimited(_FIELD["model.graph"], graph) + _length_delimited(_FIELD["graph.initializer"], tensor))
    f.write(head)
    f.write(raw)


def _externalize(proto: onnx.ModelProto, data_path: str, location: str) -> list:
    """Move each large tensor's raw data into `data_path`; returns what `_restore` puts back."""
    moved = []
    with open(data_path, "wb") as f:
        for t in _tensors(proto.graph):
            if not t.HasField("raw_data") or t.data_location == onnx.TensorProto.EXTERNAL:
                continue
            raw = t.raw_data
            if len(raw) < EXTERNAL_MIN_TENSOR_BYTES:
                continue
            offset = f.tell()
            pad = -offset % EXTERNAL_ALIGNMENT
            if pad:
                f.write(b"\0" * pad)
                offset += pad
            f.write(raw)
            moved.append((t, raw))
            t.ClearField("raw_data")
            t.data_location = onnx.TensorProto.EXTERNAL
            for k, v in (("location", location), ("offset", str(offset)), ("length", str(len(raw)))):
                e = t.external_data.add()
                e.key, e.value = k, v
    return moved


def _restore(moved: list) -> None:
    for t, raw in moved:
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT
        t.raw_data = raw
