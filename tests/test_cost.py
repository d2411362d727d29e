"""Cost model and summary: exact totals on small hand-built models."""
from __future__ import annotations

import json

import pytest

from archdsl.ir.graph import Model, Node, Param, ParamSpec, Scope, Value
from archdsl.ir.types import Sym, TensorType
from archdsl.ops.base import Arg, Op
from archdsl.passes.cost import analyze
from archdsl.summary import format_summary, human_bytes, human_count, summary_json

N, T = Sym.named("N"), Sym.named("T")


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


# Test ops, kept out of the registry (a class with an empty name is not registered).
class TLinear(Op):
    family = "test"
    args = (Arg("out_features", "int"), Arg("bias", "bool", True))

    def infer(self, a):
        return [a.x.with_shape(a.x.shape[:-1] + (a.attrs["out_features"],))]

    def params(self, a):
        fan_in, out = int(a.x.shape[-1]), a.attrs["out_features"]
        p = {"weight": ParamSpec((out, fan_in), "uniform", bound=0.1)}
        if a.attrs["bias"]:
            p["bias"] = ParamSpec((out,))
        return p

    def macs(self, a, in_shapes, out_shapes):
        return _numel(out_shapes[0]) * in_shapes[0][-1]


class TNorm(Op):
    family = "test"
    args = (Arg("features", "int"),)

    def infer(self, a):
        return [a.x]

    def params(self, a):
        c = a.attrs["features"]
        return {"weight": ParamSpec((c,), "ones"), "bias": ParamSpec((c,)),
                "running_mean": ParamSpec((c,), buffer=True), "running_var": ParamSpec((c,), "ones", buffer=True)}


class TReLU(Op):
    family = "test"

    def infer(self, a):
        return [a.x]

    def macs(self, a, in_shapes, out_shapes):
        return _numel(out_shapes[0])


class TAdd(Op):
    family = "test"
    n_inputs = 2

    def infer(self, a):
        return [a.x]


class THalve(Op):
    """Halves dim 1 after dropping 2 (T -> (T-2)//2): a non-affine symbolic dim."""
    family = "test"

    def infer(self, a):
        s = a.x.shape
        return [a.x.with_shape((s[0], (s[1] - 2) // 2) + tuple(s[2:]))]

    def macs(self, a, in_shapes, out_shapes):
        return _numel(out_shapes[0])


for _cls in (TLinear, TNorm, TReLU, TAdd, THalve):
    _cls.name = _cls.__name__
OPS = {c.__name__: c() for c in (TLinear, TNorm, TReLU, TAdd, THalve)}


class Builder:
    """Hand-built IR: `add` applies an op, allocating its parameters (or reusing `share`d ones)."""

    def __init__(self, name="M"):
        self.m = Model(name=name, file="<test>", span=None, args={})

    def input(self, name, dtype, *shape):
        v = Value(name, TensorType(dtype, tuple(shape)))
        self.m.inputs.append(v)
        return v

    def scope(self, path, label):
        self.m.scopes[path] = Scope(path, label)

    def add(self, name, kind, inputs, scope=(), instance=None, share=None, trainable=True, **attrs):
        op = OPS[kind]
        full = {a.name: a.default for a in op.args if not a.required}
        full.update(attrs)
        app = op.bind(full, [v.type for v in inputs])
        n = Node(name=name, app=app, inputs=list(inputs), scope=tuple(scope), instance=instance or name)
        n.outputs = [Value(f"{name}:{i}", t, n, i) for i, t in enumerate(app.out_types)]
        share = share or {}
        for local, spec in app.params.items():
            if local in share:
                n.params[local] = share[local]
                continue
            pname = f"{instance or name}.{local}"
            if pname not in self.m.parameters:
                self.m.parameters[pname] = Param(pname, spec, trainable=trainable)
            n.params[local] = pname
        self.m.nodes.append(n)
        return n.outputs[0]

    def output(self, *vs):
        self.m.outputs.extend(vs)
        return self.m


def small_model() -> Model:
    """x f32[N, 8] -> fc1 -> [blk: norm -> [blk.inner: relu]] -> fc2 -> fc2 (shared) + skip
    -> head (frozen)."""
    b = Builder("Small")
    x = b.input("x", "f32", N, 8)
    b.scope("blk", "Block(16)")
    b.scope("blk.inner", "Inner()")
    h = b.add("fc1", "TLinear", [x], out_features=16)                       # 144 params, 128 MACs
    h = b.add("blk.norm", "TNorm", [h], scope=("blk",), features=16)        # 32 params + 32 buffer
    a = b.add("blk.inner.relu", "TReLU", [h], scope=("blk", "blk.inner"))  # 16 MACs
    y = b.add("fc2a", "TLinear", [a], instance="fc2", out_features=16)      # 272 params, 256 MACs
    y = b.add("fc2b", "TLinear", [y], instance="fc2", out_features=16)      # shared: 0, 256 MACs
    y = b.add("add", "TAdd", [y, a])
    y = b.add("head", "TLinear", [y], trainable=False, out_features=4)      # 68 frozen, 64 MACs
    return b.output(y)


def test_exact_totals_shared_counted_once_buffers_excluded():
    m = small_model()
    r = analyze(m)
    assert r.total_params == 144 + 32 + 272 + 68 == 516
    assert r.trainable_params == 448
    assert r.non_trainable_params == 68
    assert r.buffer_elements == 32
    assert r.macs == 128 + 16 + 256 + 256 + 64 == 720
    assert r.activation_bytes == (16 * 6 + 4) * 4
    assert r.input_bytes == 8 * 4
    assert r.param_bytes == 516 * 4 and r.buffer_bytes == 32 * 4
    assert r.total_params == m.param_count()
    assert [row.params for row in r.rows] == [144, 32, 0, 272, 0, 0, 68]
    assert r.row("fc2b").shared_with == "fc2a" and r.row("fc2b").macs == 256
    assert r.row("fc2a").shared_with is None
    assert r.row("blk.norm").buffers == 32
    assert r.row("fc1").out_types == ["f32[N, 16]"]
    assert sum(row.params for row in r.rows) == r.total_params


def test_batch_scales_macs_and_memory():
    r1, r3 = analyze(small_model()), analyze(small_model(), batch=3)
    assert r3.batch == 3 and r3.dims == {"N": 3}
    assert r3.macs == 3 * r1.macs
    assert r3.activation_bytes == 3 * r1.activation_bytes
    assert r3.total_params == r1.total_params
    assert analyze(small_model(), dims={"N": 5}, batch=2).batch == 5   # explicit N wins


def test_scope_subtotals_nest():
    r = analyze(small_model())
    blk, inner = r.scopes["blk"], r.scopes["blk.inner"]
    assert (blk.label, blk.depth, blk.params, blk.macs, blk.nodes) == ("Block(16)", 0, 32, 16, 2)
    assert (inner.label, inner.depth, inner.params, inner.macs, inner.nodes) == ("Inner()", 1, 0, 16, 1)


def test_tied_weight_counted_once():
    b = Builder("Tied")
    x = b.input("x", "f32", N, 4)
    h = b.add("a", "TLinear", [x], out_features=4)                       # 16 + 4
    y = b.add("b", "TLinear", [h], share={"weight": "a.weight"}, out_features=4)   # + 4
    r = analyze(b.output(y))
    assert r.total_params == 24
    assert r.row("b").params == 4 and r.row("b").reused_params == ["a.weight"]
    assert r.macs == 32


def _seq_model():
    b = Builder("Seq")
    x = b.input("tokens", "f32", N, T, 8)
    h = b.add("proj", "TLinear", [x], out_features=16)
    h = b.add("halve", "THalve", [h])
    return b.output(h)


def test_symbolic_dims_resolved():
    m = _seq_model()
    assert str(m.nodes[1].outputs[0].type) == "f32[N, (T-2)//2, 16]"
    r = analyze(m, dims={"T": 10}, batch=2)
    assert r.assumed == [] and r.dims == {"N": 2, "T": 10}
    assert r.row("proj").macs == 2 * 10 * 16 * 8
    assert r.row("halve").out_shapes == [[2, 4, 16]]       # (10-2)//2 evaluated
    assert r.macs == 2560 + 2 * 4 * 16
    assert r.activation_bytes == (2 * 10 * 16 + 2 * 4 * 16) * 4
    assert r.row("halve").out_types == ["f32[N, (T-2)//2, 16]"]


def test_unresolved_dims_default_to_one_and_are_listed():
    r = analyze(_seq_model())
    assert r.assumed == ["T"]
    assert r.row("proj").macs == 16 * 8
    assert r.row("halve").out_shapes == [[1, 1, 16]]
    s = format_summary(r, _seq_model(), color=False)
    assert "Symbolic dims: N=1; assumed 1: T" in s


def test_summary_text():
    m = small_model()
    s = format_summary(analyze(m), m, color=False)
    lines = s.splitlines()
    for want in ("Total params: 516", "Trainable params: 448", "Non-trainable params: 68",
                 "MACs: 720 (0.00 M)", "Activation memory (batch 1, forward): 0.00 MB"):
        assert want in lines
    assert lines.index("Total params: 516") < lines.index("MACs: 720 (0.00 M)")
    assert 'Model: "Small"' in s
    for col in ("Layer", "Op", "Output shape", "Params", "MACs"):
        assert col in lines[1]
    assert "\x1b[" not in s                       # no colour when asked for none
    assert "Block(16)" in s and "Inner()" in s
    assert "TLinear(16)" in s and "shared with fc2a" in s
    relu = next(l for l in lines if "TReLU" in l)
    blk = next(l for l in lines if "Block(16)" in l)
    assert len(relu) - len(relu.lstrip()) > len(blk) - len(blk.lstrip())   # indented by depth


def test_summary_long_names_do_not_wrap():
    b = Builder("Long")
    x = b.input("x", "f32", N, 3)
    long = "a_really_" * 20 + "long_layer_name"
    y = b.add(long, "TLinear", [x], out_features=1000)
    m = b.output(y)
    s = format_summary(analyze(m), m, color=False)
    assert any(long in line and "TLinear(1000)" in line and "4,000" in line for line in s.splitlines())


def test_human_figures():
    assert human_count(416_520) == "0.42 M"
    assert human_count(1_820_000_000) == "1.82 G"
    assert human_bytes(210_000) == "0.21 MB"
    assert human_bytes(3_500_000_000) == "3.50 GB"


def test_summary_json():
    m = small_model()
    d = summary_json(analyze(m, batch=2), m)
    json.dumps(d)
    assert {"model", "batch", "dims", "assumed_dims", "inputs", "outputs", "layers", "scopes",
            "total_params", "trainable_params", "non_trainable_params", "macs",
            "activation_bytes", "param_bytes"} <= set(d)
    assert d["total_params"] == 516 and d["macs"] == 1440 and d["batch"] == 2
    assert d["layers"][0]["name"] == "fc1" and d["layers"][0]["out_types"] == ["f32[N, 16]"]
    assert d["layers"][0]["out_shapes"] == [[2, 16]]
    assert {s["path"]: s["params"] for s in d["scopes"]} == {"blk": 32, "blk.inner": 0}


@pytest.mark.parametrize("batch", [1, 4])
def test_param_count_matches_model(batch):
    m = small_model()
    assert analyze(m, batch=batch).trainable_params == m.param_count(trainable_only=True)
