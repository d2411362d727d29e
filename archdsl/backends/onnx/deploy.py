"""Exporting for a deployment target: `export(model, weights, target=..., opset=..., precision=...)`.

target None: the portable file (opset 17 unless asked), as `to_onnx` writes it.
target "cpu": the CPU provider's lowerings; the opset defaults to the newest the installed ONNX
Runtime loads (its CPU provider implements every op version of the opsets it loads).
target "cuda": the CUDA provider's lowerings, and an opset at which the CUDA provider has a kernel
for every node's op version (cuda_kernels.py): without --opset the newest such opset (ONNX
Runtime matches an open-ended kernel to one op version only, so a newer opset can move a node to
the CPU: MaxPool-22, GlobalAveragePool-22, ...); with --opset the file is written at that opset
and `Export.fallbacks` lists the nodes a CUDA session would run on the CPU (placement.py), which
the CLI prints as a warning with the opset that avoids them.

precision "fp16" / "bf16" converts the chosen file (precision.py); a CUDA target then checks the
half-precision graph, whose float16/bfloat16 kernels the table lists separately.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from ...errors import ArchError, did_you_mean
from ...ops.base import MIN_OPSET
from . import placement
from .export import DEFAULT_OPSET, max_opset, to_onnx
from .precision import PRECISIONS, to_half


@dataclass
class Export:
    proto: onnx.ModelProto
    opset: int
    target: str | None
    precision: str
    fallbacks: list = field(default_factory=list)    # placement.Fallback: nodes a CUDA session puts on the CPU
    cuda_opset: int | None = None                      # the newest opset with no version fallback (cuda)

    def warnings(self) -> list[str]:
        """What a user should know about this file on its target."""
        if not self.fallbacks:
            return []
        shown = "; ".join(str(f) for f in self.fallbacks[:6]) + (" ..." if len(self.fallbacks) > 6 else "")
        msg = (f"a CUDA session would run {len(self.fallbacks)} node{'s' if len(self.fallbacks) != 1 else ''} "
               f"of this opset-{self.opset} file on the CPU: {shown}")
        if self.cuda_opset is not None and self.cuda_opset != self.opset:
            msg += f" (opset {self.cuda_opset} runs every op version on the GPU: --opset {self.cuda_opset})"
        return [msg]


def check_target(target: str | None) -> str | None:
    if target is not None and target not in placement.TARGETS:
        raise ArchError(f"unknown target '{target}'",
                        hint=did_you_mean(str(target), list(placement.TARGETS)) or "choose cpu or cuda")
    return target


def export(model, weights: dict | None, *, target: str | None = None, opset: int | None = None,
           precision: str = "fp32", half_io: bool = False, metadata: dict | None = None,
           data: bool = True) -> Export:
    """The ONNX file for `target` (module docstring). data=False: the graph only, weights may be
    None (export.to_onnx), for analysis: the opset choice and the fallbacks are the same."""
    check_target(target)
    if not data and precision != "fp32":
        raise ValueError("a graph-only export has no weights to convert to half precision")
    if precision not in PRECISIONS:
        raise ArchError(f"unknown precision '{precision}'", hint=did_you_mean(str(precision), list(PRECISIONS))
                        or "choose fp32, fp16 or bf16")
    if half_io and precision == "fp32":
        raise ArchError("--half-io makes the inputs and outputs float16/bfloat16; it needs --precision fp16 or bf16")
    meta = dict(metadata or {})
    if target is not None:
        meta["archdsl.target"] = target
    provider = placement.TARGETS.get(target)
    if target == "cuda":
        proto, chosen, newest = _cuda_opset(model, weights, opset, meta, data)
    else:
        chosen = opset if opset is not None else (max_opset() if target == "cpu" else DEFAULT_OPSET)
        proto, newest = to_onnx(model, weights, chosen, meta, provider=provider, data=data), None
    if precision != "fp32":
        proto = to_half(proto, precision, half_io)
    fallbacks = placement.cuda_fallbacks(proto) if target == "cuda" else []
    if precision == "bf16" and target != "cuda":
        raise ArchError("bfloat16 runs on ONNX Runtime's CUDA provider only",
                        hint="export with --target cuda --precision bf16, or use --precision fp16")
    return Export(proto, chosen, target, precision, fallbacks, newest)


def _cuda_opset(model, weights, opset, meta, data):
    """(proto, opset, newest fitting opset): at `opset` if given, else the newest opset at which
    every emitted op version has a CUDA kernel. Lowerings differ between opsets, so each step
    lowers the graph again (without weights: fast) and re-checks the op types it got."""
    at = opset if opset is not None else max_opset()
    newest = None
    while True:
        graph = to_onnx(model, None, at, meta, provider=placement.CUDA, data=False)
        types = {n.op_type for n in graph.graph.node}
        if not placement.cuda_opset_ok(types, at):
            newest = at
            break
        newest = placement.newest_cuda_opset(types, at - 1, MIN_OPSET)
        if opset is not None:        # asked for this opset: keep it, report what fits
            break
        if newest is None:           # these op types fit nowhere; a lower opset may lower to others
            if at - 1 < MIN_OPSET:
                break
            newest = at - 1
        at = newest
    proto = to_onnx(model, weights, at, meta, provider=placement.CUDA) if data else graph
    return proto, at, newest
