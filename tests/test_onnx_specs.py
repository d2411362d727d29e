"""Every model of every shipped spec exports to ONNX, passes the checker (full_check) and strict
shape inference, runs on ONNX Runtime at two batch sizes (and two sequence lengths where T is
symbolic), at opset 17 and at the newest opset, and matches the NumPy engine. Symbolic sizes
are the smallest the model's shape constraints allow (a U-Net's H and W: multiples of 16).

Cost control (this file runs on one xdist worker): weights, inputs and NumPy reference outputs
are computed once per model and shared by both opsets; each opset's file is exported once and
its ONNX Runtime session runs every input size. The second batch size is 64 for small models and
2 for heavy ones (>= 0.1 GMACs per sample: alexnet, vgg16, resnet18/50, the BERT/GPT-2/
Transformer base models), where the NumPy reference at batch 64 would take minutes; the shipped
small models are all under 0.01 GMACs. BatchNorm running statistics are randomised so the
export-time Conv+BatchNorm folding is exercised with non-trivial values.

`check_model(full_check=True)` runs on the complete proto (full_check already includes strict,
type-checked shape inference). The explicit `infer_shapes(strict_mode=True, check_type=True)`
whose result we compare with the declared outputs runs on a view of the same graph whose large
initializers (>= 1 KiB) are declared as external data: shape inference reads no weight values
(only small constants such as Reshape shapes, which stay inline), and this avoids serialising
and re-parsing hundreds of MB twice more (3 s of CPU per opset for BERT-base; measured).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import archdsl
from archdsl.backends.onnx.export import DEFAULT_OPSET, max_opset, to_onnx
from archdsl.ir.constraints import violated
from archdsl.backends.onnx.placement import shape_view as _shape_view
from archdsl.ir.types import is_static

SPECS = sorted(Path(__file__).resolve().parent.parent.joinpath("specs").glob("*.arch"))
OPSETS = sorted({DEFAULT_OPSET, max_opset()})
HEAVY_MACS = 1e8             # per sample (at the longer T); above it the second batch is 2, not 64
SEQ_LENS = (7, 16)           # for a symbolic T (the widest TextCNN filter needs T >= 5)
# Two of the identical layers of the largest new models (Llama at SmolLM-135M's shape, ViT-B/16):
# at full depth each export is hundreds of MB and adds a minute to this file; test_specs.py
# asserts their full-size counts, test_modern_specs.py their full-depth outputs.
SHALLOWER = {"Llama": {"layers": 2}, "ViT_B_16": {"layers": 2}}
ATOL = RTOL = 1e-4


def _cases():
    out = []
    for path in SPECS:
        spec = archdsl.compile(path)
        for name in spec.model_names:
            out.append((path, name))
    return out


CASES = _cases()


class _Model:
    """One model's weights, inputs and NumPy reference outputs, shared by its opsets."""

    def __init__(self, path: Path, name: str):
        self.cm = archdsl.compile(path).model(name, **SHALLOWER.get(name, {}))
        self.ir = self.cm.ir
        self.weights = _randomise_batchnorm(self.ir, self.cm.init_weights(seed=0))
        # Sequence dims (T, and S where a model has two) get distinct lengths: S=7, T=10, ...
        seq_syms = [s for s in self.ir.symbols() if s != "N"]
        lens = (lambda t: _fitting(self.ir, {s: t + 3 * i for i, s in enumerate(seq_syms)}))
        macs = self.cm.cost(dims=lens(max(SEQ_LENS)), batch=1).macs
        batches = (1, 2 if macs >= HEAVY_MACS else 64)
        if seq_syms:   # the second length at both batch sizes, the first at batch 1
            self.sizes = [(1, SEQ_LENS[0]), (1, SEQ_LENS[1]), (batches[1], SEQ_LENS[1])]
        else:
            self.sizes = [(n, None) for n in batches]
        ex = self.cm.executor(self.weights)
        self.feeds, self.refs = [], []
        for i, (n, t) in enumerate(self.sizes):
            dims = lens(t) if t is not None else {}
            feed = _inputs(self.ir, {"N": n, **dims}, seed=i)
            self.feeds.append(feed)
            self.refs.append(ex.run(feed))


def _fitting(ir, dims: dict) -> dict:
    """The smallest sizes from `dims` up that the model's shape constraints allow (a U-Net's H
    and W must be multiples of 16)."""
    dims = dict(dims)
    for s in dims:
        while any(s in c.symbols() for c in violated(ir.constraints, {"N": 1, **dims})):
            dims[s] += 1
    return dims


_cache: dict = {}


def _model(path, name) -> _Model:
    key = (path, name)
    if key not in _cache:
        _cache.clear()          # one model at a time: the parametrisation is model-major
        _cache[key] = _Model(path, name)
    return _cache[key]


def _randomise_batchnorm(ir, weights):
    rng = np.random.default_rng(1234)
    w = dict(weights)
    for node in ir.nodes:
        if not node.kind.startswith("BatchNorm"):
            continue
        p = node.params
        c = w[p["weight"]].shape
        w[p["weight"]] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        w[p["bias"]] = rng.normal(0.0, 0.1, c).astype(np.float32)
        w[p["running_mean"]] = rng.normal(0.0, 0.1, c).astype(np.float32)
        w[p["running_var"]] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    return w


def _inputs(ir, dims: dict, seed: int) -> dict[str, np.ndarray]:
    """Random inputs; integer ids span the smallest embedding table (or 0..4)."""
    rng = np.random.default_rng(seed)
    tables = [n.attrs["num_embeddings"] for n in ir.nodes if "num_embeddings" in n.attrs]
    high = min(tables) if tables else 5
    out = {}
    for v in ir.inputs:
        shape = tuple(int(d) if is_static(d) else int(dims.get(str(d), 3)) for d in v.type.shape)
        if v.type.is_float:
            out[v.name] = rng.standard_normal(shape).astype(v.type.np_dtype)
        elif v.type.dtype == "bool":
            out[v.name] = rng.random(shape) < 0.5
        else:
            out[v.name] = rng.integers(0, high, shape).astype(v.type.np_dtype)
    return out


def _dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in vi.type.tensor_type.shape.dim]


PARAMS = [pytest.param(path, name, opset, id=f"{path.stem}-{name}-opset{opset}")
          for path, name in CASES for opset in OPSETS]


def test_every_spec_has_a_model():
    assert CASES, "no spec in specs/ defines a model"
    assert {"LeNet5", "ResNet18", "TextCNN"} <= {name for _, name in CASES}


@pytest.mark.parametrize("path, name, opset", PARAMS)
def test_spec_exports_checks_and_matches_numpy(path, name, opset):
    m = _model(path, name)
    proto = to_onnx(m.ir, m.weights, opset=opset)
    assert proto.opset_import[0].version == opset

    onnx.checker.check_model(proto, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(_shape_view(proto), strict_mode=True, check_type=True)
    # Shape inference agrees with the declared outputs, symbolic dims included.
    declared = {o.name: _dims(o) for o in proto.graph.output}
    for o in inferred.graph.output:
        assert _dims(o) == declared[o.name], f"{name}: output {o.name}"
    del inferred

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1          # two xdist workers share two cores
    so.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    del proto
    names = [o.name for o in sess.get_outputs()]
    assert names == [v.name for v in m.ir.outputs]
    for (n, t), feed, ref in zip(m.sizes, m.feeds, m.refs):
        got = dict(zip(names, sess.run(names, feed)))
        for v in m.ir.outputs:
            where = f"{name} output {v.name} at opset {opset}, N={n}" + (f", seq {t}" if t else "")
            assert got[v.name].shape == ref[v.name].shape, where
            assert got[v.name].dtype == ref[v.name].dtype, where
            np.testing.assert_allclose(got[v.name], ref[v.name], atol=ATOL, rtol=RTOL, err_msg=where)
