"""Lowering a model's IR to an ONNX ModelProto: each op lowers itself through OnnxBuilder."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...errors import ArchError
from ...ir.graph import Model
from ...ir.types import DTYPES, is_static
from .builder import OnnxBuilder

DEFAULT_OPSET = 17
MIN_OPSET = 13


def max_opset() -> int:
    """The newest ai.onnx opset that both the onnx package and the installed onnxruntime run."""
    newest = onnx.defs.onnx_opset_version()
    try:
        import onnxruntime as ort
        # onnxruntime documents its supported opset per release; map the few we know.
        v = tuple(int(x) for x in ort.__version__.split(".")[:2])
        ort_max = 25 if v >= (1, 24) else 23 if v >= (1, 22) else 22 if v >= (1, 20) else 21 if v >= (1, 18) else 20
        newest = min(newest, ort_max)
    except ImportError:
        pass
    return newest


def _value_info(name: str, t) -> onnx.ValueInfoProto:
    dims = [int(d) if is_static(d) else str(d) for d in t.shape]
    return helper.make_tensor_value_info(name, DTYPES[t.dtype][1], dims)


def to_onnx(model: Model, weights: dict[str, np.ndarray], opset: int = DEFAULT_OPSET,
            metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    top = max_opset()
    if not MIN_OPSET <= opset <= top:
        raise ArchError(f"opset {opset} is not supported: choose {MIN_OPSET}..{top}",
                        hint=f"the installed onnxruntime runs opsets up to {top}")
    b = OnnxBuilder(opset)
    b.weights = weights
    names: dict[int, str] = {}
    for v in model.inputs:
        names[id(v)] = b.fresh(v.name)
    used_params: set[str] = set()
    for node in model.nodes:
        b.node = node
        b.param_names = dict(node.params)
        outs = node.op.lower(node, b, [names[id(v)] for v in node.inputs])
        if len(outs) != len(node.outputs):
            raise AssertionError(f"{node.op.name}.lower returned {len(outs)} outputs, expected {len(node.outputs)}")
        for v, o in zip(node.outputs, outs):
            names[id(v)] = o
        used_params.update(node.params.values())
    b.node = None

    # Graph outputs take the model's output names: rename producers (or add Identity when an
    # output is a graph input or appears twice).
    rename: dict[str, str] = {}
    graph_outputs = []
    for v in model.outputs:
        src = names[id(v)]
        if src in rename or src in {names[id(i)] for i in model.inputs} or src in rename.values():
            out = b.fresh(v.name)
            b.nodes.append(helper.make_node("Identity", [src], [out], name=f"{out}/Identity"))
        else:
            out = v.name if v.name not in b._used or v.name == src else b.fresh(v.name)
            rename[src] = out
        graph_outputs.append(_value_info(out, v.type))
    for n in b.nodes:
        n.output[:] = [rename.get(o, o) for o in n.output]
        n.input[:] = [rename.get(i, i) for i in n.input]

    # No dead nodes: keep only what the outputs need.
    needed = {o.name for o in graph_outputs}
    live = []
    for n in reversed(b.nodes):
        if any(o in needed for o in n.output):
            live.append(n)
            needed.update(i for i in n.input if i)
    live.reverse()

    inits = []
    for pname in sorted(used_params):
        if pname in needed:
            inits.append(numpy_helper.from_array(np.asarray(weights[pname], dtype=np.float32), pname))
    inits += [t for name, t in b.initializers.items() if name in needed]

    graph = helper.make_graph(live, model.name, [_value_info(names[id(v)], v.type) for v in model.inputs],
                              graph_outputs, initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="archdsl", producer_version=_version())
    m.ir_version = min(m.ir_version, 10)   # what current onnxruntime releases accept
    meta = {"archdsl_version": _version(), "spec_file": model.file, "model": model.name}
    meta.update({f"param.{k}": str(v) for k, v in model.args.items()})
    meta.update(metadata or {})
    helper.set_model_props(m, meta)
    return m


def _version() -> str:
    from ... import __version__
    return __version__


def save(proto: onnx.ModelProto, path) -> None:
    """Write atomically; models over 2 GB keep their weights as external data beside the file."""
    from pathlib import Path

    from ...fileio import atomic_path
    path = Path(path)
    big = proto.ByteSize() > 2_000_000_000 if _fits_protobuf(proto) else True
    with atomic_path(path) as tmp:
        if big:
            data_name = path.name + ".data"
            onnx.save_model(proto, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
        else:
            onnx.save_model(proto, str(tmp))


def _fits_protobuf(proto) -> bool:
    try:
        proto.ByteSize()
        return True
    except Exception:
        return False
