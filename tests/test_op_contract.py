"""The op contract, checked for every registered op over the sample applications it declares
(`samples` in its class; archdsl/ops/base.py):

- the bound output types equal what the NumPy forward produces (shape and dtype);
- ONNX Runtime agrees with the NumPy engine at opset 17 and at the newest opset (full_check);
- NumPy gradients equal central differences in float64 (parameters and float inputs);
- explain, summary and render work on it;
- a fuzz probe of the op with edge-case inputs and arguments gives success or a positioned error.

An op without samples or without a doc fails here, so none can be added without them.
"""
from __future__ import annotations

import random

import numpy as np
import pytest

import archdsl
import fuzzlib
from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.backends.render import to_dot
from archdsl.errors import ArchError
from archdsl.ir.types import resolve_dim
from archdsl.ops.base import Op, load_all
from archdsl.passes.init import initialize
from harness import check_engines, check_grads, check_parity, random_inputs, run_exported

OPS = load_all()
DIMS = {"N": 2, "T": 5, "S": 4}
CASES = [(name, i) for name, op in sorted(OPS.items()) for i in range(len(op.samples))]


def _split_top(text: str, sep: str) -> list[str]:
    """Split at `sep` where no bracket is open."""
    parts, depth, cur, i = [], 0, "", 0
    while i < len(text):
        c = text[i]
        if text.startswith(sep, i) and depth == 0:
            parts.append(cur)
            cur, i = "", i + len(sep)
            continue
        depth += c in "([{"
        depth -= c in ")]}"
        cur += c
        i += 1
    return parts + [cur]


def sample_model(name: str, i: int):
    """The sample as a one-op model: its inputs, the call (or expression), every output of the op."""
    sample = OPS[name].samples[i]
    if sample.expr:       # an op the language writes with syntax: `x[:, 1:]`, a `param`
        lhs, call = sample.call.strip(), None
    else:
        lhs, call = (s.strip() for s in _split_top(sample.call, "->"))
    if lhs.startswith("("):
        lhs = lhs[1:-1]
    decls = [d.strip() for d in _split_top(lhs, ",")]
    names = [d.split(":")[0].strip() for d in decls]
    src = "(" + ", ".join(names) + ")" if len(names) > 1 else names[0]
    head = sample.defs + "\nmodel OpSample {\n" + "".join(f"  input {d}\n" for d in decls)
    head += "".join(f"  {line.strip()}\n" for line in sample.setup.splitlines() if line.strip())
    value = sample.expr or f"{src} -> {call}"
    probe = archdsl.compile(head + f"  r = {value}\n  output z = {names[0]}\n}}\n").model().ir
    k = len(next(n for n in probe.nodes if n.kind == name).outputs)
    outs = [f"y{j}" for j in range(k)]
    body = f"  {', '.join(outs)} = {value}\n" + "".join(f"  output {o}\n" for o in outs)
    return archdsl.compile(head + body + "}\n").model(), sample


def sample_inputs(model, sample, seed=0) -> dict:
    xs = random_inputs(model.ir, seed=seed, dims=DIMS)
    rng = np.random.default_rng(seed + 7)
    for k, (lo, hi) in sample.values.items():
        xs[k] = rng.integers(lo, hi, xs[k].shape).astype(xs[k].dtype)
    return xs


def test_every_op_declares_samples_and_a_doc():
    assert not [n for n, op in OPS.items() if not op.samples], "ops without sample applications"
    assert not [n for n, op in OPS.items() if not (op.doc or type(op).__doc__)], "ops without a doc"
    assert not [n for n, op in OPS.items() if not op.lowerings], "ops without an ONNX lowering"


@pytest.mark.parametrize("name,i", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_types_parity_and_gradients(name, i):
    m, sample = sample_model(name, i)
    ir = m.ir
    node = next(n for n in ir.nodes if n.kind == name)
    xs = sample_inputs(m, sample)
    weights = initialize(ir, 0)
    got = NumpyExecutor(ir, weights).run(xs)
    for v, t in zip(node.outputs, node.app.out_types):
        want = tuple(resolve_dim(d, DIMS) for d in t.shape)
        assert got[v.name].shape == want, (v.name, t, got[v.name].shape)
        assert got[v.name].dtype == t.np_dtype, (v.name, t, got[v.name].dtype)
    check_parity(ir, xs, weights)
    if sample.grad:
        check_grads(ir, xs, weights)


def test_every_op_has_a_pytorch_forward():
    missing = sorted(n for n, op in OPS.items() if type(op).torch_forward is Op.torch_forward)
    assert not missing, f"ops without torch_forward (the PyTorch engine's forward): {', '.join(missing)}"


@pytest.mark.parametrize("name,i", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_pytorch_engine_agrees(name, i):
    """The PyTorch forward against the NumPy one: outputs within 1e-5 in float32, gradients in
    float64, in inference and in training mode (the NumPy engine's masks and noise on both)."""
    pytest.importorskip("torch")
    if type(OPS[name]).torch_forward is Op.torch_forward:
        pytest.fail(f"{name} has no torch_forward")
    m, sample = sample_model(name, i)
    xs = sample_inputs(m, sample)
    weights = initialize(m.ir, 0)
    for training in (False, True):
        check_engines(m.ir, xs, weights, training=training, grad=sample.grad)


# ops the PyTorch engine runs but `export --format torch` refuses, with an ArchError that says so
# (a Scan's time loop runs the step graph's ops one step at a time: torch.fx cannot record it)
NOT_EXPORTED_TO_TORCH = {"Scan"}


@pytest.mark.parametrize("name,i", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_pytorch_export_runs_standalone(name, i):
    """`export --format torch` of the sample: the written module, run without archdsl on the
    same weights, gives the NumPy engine's outputs (in eval mode, and in train mode where no
    randomness is drawn: BatchNorm's batch statistics)."""
    pytest.importorskip("torch")
    from archdsl.backends.torch.export import module_source
    m, sample = sample_model(name, i)
    xs = sample_inputs(m, sample)
    weights = initialize(m.ir, 0)
    if name in NOT_EXPORTED_TO_TORCH:
        with pytest.raises(ArchError, match="export --format torch cannot write"):
            module_source(m.ir)
        return
    source = module_source(m.ir)
    random = any(n.op.stochastic(n.app) for n in m.ir.nodes)
    for training in (False,) if random else (False, True):
        want = NumpyExecutor(m.ir, weights).run(xs, training=training)
        got = run_exported(source, weights, [xs[v.name] for v in m.ir.inputs], training=training)
        for v, g in zip(m.ir.outputs, got):
            np.testing.assert_allclose(g, want[v.name], atol=1e-5, rtol=1e-5, err_msg=f"output {v.name}")


@pytest.mark.parametrize("name,i", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_explain_summary_render(name, i):
    m, _ = sample_model(name, i)
    node = next(n for n in m.ir.nodes if n.kind == name)
    lines = node.op.explain(node.app)
    assert lines and all(isinstance(s, str) and s for s in lines)
    if node.app.params and any(not s.buffer for s in node.app.params.values()):
        assert any(s.startswith("params: ") for s in lines), lines
    assert name in m.summary(batch=2)
    assert node.name in to_dot(m.ir).source


@pytest.mark.parametrize("name", sorted(OPS))
def test_fuzz_probe(name, tmp_path):
    """Edge-case inputs and arguments for this op: success or an ArchError inside the file."""
    rnd = random.Random(f"contract:{name}")
    for _ in range(12):
        text = fuzzlib.op_program(fuzzlib.Chooser(rnd=rnd), op_name=name)
        outcome, finding = fuzzlib.run_case(text.encode(), tmp_path, seconds=30.0)
        assert finding is None, f"{finding.kind}: {finding.summary}\n{text}\n{finding.detail}"


def test_readme_op_table_is_generated_from_the_registry():
    from pathlib import Path

    from archdsl.authoring.optable import block
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert block() in readme, "README's op table is stale: run python -m archdsl.authoring.optable README.md"
