"""Half-precision copies of an exported model: `to_half(proto, "fp16" | "bf16", half_io=False)`.

float16 is ONNX Runtime's own converter (onnxruntime.transformers.float16.convert_float_to_float16):
weights and compute in float16, every float input and output kept float32 (a Cast at the edge)
unless half_io. The ops in `KEEP_FLOAT32` stay float32 between Casts: the converter's default list
(Range, CumSum, TopK, Min, Max, ...: ops without float16 kernels or that index with their values)
plus those where float16 loses what the model needs (see FP16_TOLERANCE). Normalisation and
softmax keep float16 tensors: ONNX Runtime's float16 kernels for LayerNormalization, Softmax,
BatchNormalization and InstanceNormalization accumulate in float32 (their statistics are float32,
the `U` type of LayerNormalization), so moving the data in float16 costs no accuracy there.

bfloat16 is the float16 conversion with every float16 tensor retyped to bfloat16 (values
rounded to nearest even from float32): same structure, same Casts. ONNX Runtime runs bfloat16
on the CUDA provider only, and for fewer ops (cuda_kernels: the `bf16` column); export checks
the model against that table (placement.cuda_fallbacks), no CPU run is possible.

FP16_TOLERANCE is what tests/test_precision.py measures against the float32 model on the CPU
provider for the shipped specs it runs (relative to the output's scale: max |fp16 - fp32| /
max |fp32|); tools/gpu_check.py measures the same on CUDA.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from ...errors import ArchError
from .placement import shape_view

PRECISIONS = ("fp32", "fp16", "bf16")
FP16_TOLERANCE = 1e-2

# Ops left in float32: onnxruntime's DEFAULT_OP_BLOCK_LIST, plus the random ops (their float16
# draws would differ from the float32 model's) and Pow (squares overflow float16's 65504).
EXTRA_FLOAT32 = ("RandomNormalLike", "RandomUniformLike", "Pow")


def keep_float32() -> list[str]:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST
    return sorted(set(DEFAULT_OP_BLOCK_LIST) | set(EXTRA_FLOAT32))


def to_half(proto: onnx.ModelProto, precision: str = "fp16", half_io: bool = False) -> onnx.ModelProto:
    """A float16 (or bfloat16) copy of `proto`; `proto` itself is left as it was."""
    if precision not in PRECISIONS:
        raise ArchError(f"unknown precision '{precision}'", hint="choose fp32, fp16 or bf16")
    if precision == "fp32":
        return proto
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as e:      # pragma: no cover - onnxruntime always ships it
        raise ArchError(f"half precision needs onnxruntime.transformers ({e})") from None
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    # types of every intermediate value, from shape inference on a weightless view (the converter
    # would otherwise serialise the whole model for it, which fails past protobuf's 2 GiB)
    typed = onnx.shape_inference.infer_shapes(shape_view(m)).graph
    known = {v.name for v in m.graph.value_info}
    m.graph.value_info.extend(v for v in typed.value_info if v.name not in known)
    m = convert_float_to_float16(m, keep_io_types=not half_io, disable_shape_infer=True,
                                 op_block_list=keep_float32())
    _topological(m.graph)
    del m.graph.value_info[:]          # stale shapes would only mislead; ONNX Runtime infers its own
    if precision == "bf16":
        _retype_bf16(m.graph, {t.name: t for t in proto.graph.initializer})
    helper.set_model_props(m, {**{p.key: p.value for p in m.metadata_props}, "archdsl.precision": precision,
                               "archdsl.half_io": str(bool(half_io)).lower()})
    return m


def _topological(g: onnx.GraphProto) -> None:
    """The converter appends its Casts at the end; ONNX wants producers before consumers."""
    produced = {o: i for i, n in enumerate(g.node) for o in n.output}
    order, state = [], {}

    def visit(i):
        if state.get(i) == 2:
            return
        stack = [(i, False)]
        while stack:
            j, done = stack.pop()
            if done:
                state[j] = 2
                order.append(j)
                continue
            if state.get(j):
                continue
            state[j] = 1
            stack.append((j, True))
            for x in g.node[j].input:
                k = produced.get(x)
                if k is not None and not state.get(k):
                    stack.append((k, False))

    for i in range(len(g.node)):
        visit(i)
    nodes = [g.node[i] for i in order]
    copies = [onnx.NodeProto() for _ in nodes]
    for c, n in zip(copies, nodes):
        c.CopyFrom(n)
    del g.node[:]
    g.node.extend(copies)


def _to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = u + 0x7FFF + ((u >> 16) & 1)
    bits = (rounded >> 16).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        bits[nan] = 0x7FC0
    return bits


def _retype_bf16(g: onnx.GraphProto, source: dict) -> None:
    """float16 -> bfloat16 everywhere; weights rounded from their float32 values in `source`."""
    from onnx import numpy_helper
    for t in g.initializer:
        if t.data_type == TensorProto.FLOAT16:
            src = source.get(t.name)
            values = numpy_helper.to_array(src if src is not None and src.data_type == TensorProto.FLOAT else t)
            bits = _to_bf16_bits(values.astype(np.float32))
            t.ClearField("raw_data")
            t.ClearField("int32_data")
            t.data_type = TensorProto.BFLOAT16
            t.raw_data = bits.tobytes()
    for v in list(g.input) + list(g.output) + list(g.value_info):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT16:
            v.type.tensor_type.elem_type = TensorProto.BFLOAT16
    for n in g.node:
        for a in n.attribute:
            if a.name in ("to", "dtype") and a.type == onnx.AttributeProto.INT and a.i == TensorProto.FLOAT16:
                a.i = TensorProto.BFLOAT16
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT16:
                bits = _to_bf16_bits(onnx.numpy_helper.to_array(a.t).astype(np.float32))
                a.t.ClearField("raw_data")
                a.t.ClearField("int32_data")
                a.t.data_type = TensorProto.BFLOAT16
                a.t.raw_data = bits.tobytes()
