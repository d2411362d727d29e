"""Drawing: DOT source structure, .dot/.svg files, and the error without graphviz's `dot`."""
from __future__ import annotations

import re
import shutil

import pytest

from archdsl.backends.render import render, to_dot
from archdsl.errors import ArchError
from archdsl.ir.graph import Model, Node, Param, ParamSpec, Scope, Value
from archdsl.ir.types import Sym, TensorType
from archdsl.ops.base import Application, Arg, Op

N = Sym.named("N")


class RLinear(Op):
    family = "test"
    args = (Arg("out_features", "int"), Arg("bias", "bool", True))

    def infer(self, a):
        return [a.x.with_shape(a.x.shape[:-1] + (a.attrs["out_features"],))]

    def params(self, a):
        return {"weight": ParamSpec((a.attrs["out_features"], int(a.x.shape[-1])))}


class RReLU(Op):
    family = "test"


RLinear.name, RReLU.name = "Linear", "ReLU"       # set after class creation: not registered
LIN, RELU = RLinear(), RReLU()


def _node(m, name, op, inputs, out_type, scope=(), instance=None, params=None, **attrs):
    app = Application(op, attrs, tuple(v.type for v in inputs), out_types=(out_type,))
    n = Node(name=name, app=app, inputs=list(inputs), scope=scope, instance=instance or name,
             params=params or {})
    n.outputs = [Value(name, out_type, n, 0)]
    for pname in (params or {}).values():
        m.parameters.setdefault(pname, Param(pname, ParamSpec((1,))))
    m.nodes.append(n)
    return n.outputs[0]


def f32(*shape):
    return TensorType("f32", tuple(shape))


def residual_model(name="Res") -> Model:
    """x -> stem -> [stage1 [stage1.0: fc -> relu] + skip] -> head -> head (shared) -> logits."""
    m = Model(name=name, file="<test>", span=None, args={})
    x = Value("image", f32(N, 8))
    m.inputs = [x]
    m.scopes = {"stage1": Scope("stage1", "Stage(16)"), "stage1.0": Scope("stage1.0", "BasicBlock(16)")}
    h = _node(m, "stem", LIN, [x], f32(N, 16), params={"weight": "stem.weight"}, out_features=16)
    a = _node(m, "stage1.0.fc", LIN, [h], f32(N, 16), scope=("stage1", "stage1.0"),
              params={"weight": "stage1.0.fc.weight"}, out_features=16)
    a = _node(m, "stage1.0.relu", RELU, [a], f32(N, 16), scope=("stage1", "stage1.0"))
    s = _node(m, "stage1.add", RELU, [a, h], f32(N, 16), scope=("stage1",))
    y = _node(m, "head_1", LIN, [s], f32(N, 16), instance="head", params={"weight": "head.weight"},
              out_features=16)
    y = _node(m, "head_2", LIN, [y], f32(N, 16), instance="head", params={"weight": "head.weight"},
              out_features=16)
    y = _node(m, "proj", LIN, [y], f32(N, 10), params={"weight": "stem.weight"}, out_features=10, bias=False)
    y.name = "logits"
    m.outputs = [y]
    return m


def _clusters(src: str) -> list[str]:
    return re.findall(r"subgraph (cluster_\w+)", src)


def test_dot_nodes_edges_and_clusters():
    src = to_dot([residual_model()]).source
    assert "Linear(16)" in src and "stage1.0.fc" in src          # op + key args, and the name
    assert "Linear(10, bias=false)" in src
    assert "f32[N, 8]" in src and "image" in src and "logits" in src
    assert "label=\"f32[N, 16]\"" in src                           # edges carry types
    assert len(_clusters(src)) == 2                                # stage1 containing stage1.0
    assert "Stage(16)" in src and "BasicBlock(16)" in src
    # nesting: the BasicBlock cluster opens before the Stage cluster closes
    i_stage, i_block = src.index("Stage(16)"), src.index("BasicBlock(16)")
    assert i_stage < i_block and src[i_stage:i_block].count("}") == 0
    assert "shared: head" in src and "style=dashed" in src         # shared layer marked
    assert "tied: stem.weight" in src                              # tied weight marked
    assert "oval" in src and "box" in src


def test_collapse_top_level_blocks():
    src = to_dot([residual_model()], collapse=True).source
    assert _clusters(src) == []
    assert "stage1.0.fc" not in src and "Stage(16)" in src and "box3d" in src
    edges = re.findall(r"(\w+) -> (\w+) \[label=\"([^\"]*)\"", src)
    blk = re.search(r"(m0_blk\d+) \[", src).group(1)
    ins = [e for e in edges if e[1] == blk]
    outs = [e for e in edges if e[0] == blk]
    assert len(ins) == 1 and ins[0][2] == "f32[N, 16]"             # skip + main path: one tensor in
    assert len(outs) == 1 and outs[0][2] == "f32[N, 16]"
    assert not any(a == b for a, b, _ in edges)


def test_collapse_selected_block_by_name():
    src = to_dot([residual_model()], collapse={"BasicBlock"}).source
    assert len(_clusters(src)) == 1 and "stage1.0.fc" not in src and "BasicBlock(16)" in src
    assert "stage1.add" in src


def test_several_models_side_by_side():
    src = to_dot([residual_model("G"), residual_model("D")], rankdir="LR").source
    assert "rankdir=LR" in src
    assert "cluster_model0" in src and "cluster_model1" in src
    ids = set(re.findall(r"^\s*(\w+) \[label", src, re.M))
    assert {i.split("_")[0] for i in ids} == {"m0", "m1"}          # ids never clash
    assert len(ids) == 2 * 9


def test_render_dot_without_graphviz_binary(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = render([residual_model()], tmp_path / "g.dot")
    text = out.read_text()
    assert text.startswith("digraph") and "Stage(16)" in text
    assert [p.name for p in tmp_path.iterdir()] == ["g.dot"]


def test_missing_dot_program(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ArchError) as e:
        render([residual_model()], tmp_path / "g.svg")
    assert "rendering .svg needs graphviz's 'dot' program" in str(e.value)
    assert "apt-get install graphviz" in e.value.hint and ".dot output works without it" in e.value.hint
    assert not list(tmp_path.iterdir())


def test_unknown_format(tmp_path):
    with pytest.raises(ArchError) as e:
        render([residual_model()], tmp_path / "g.jpeg")
    assert ".svg" in e.value.hint and ".dot" in e.value.hint


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz 'dot' not installed")
def test_render_svg(tmp_path):
    out = render(residual_model(), tmp_path / "g.svg", collapse={"stage1.0"})
    svg = out.read_text()
    assert "<svg" in svg and "BasicBlock(16)" in svg and "f32[N, 16]" in svg
    old = out.read_bytes()
    render(residual_model(), tmp_path / "g.svg")        # overwrite in place, no leftovers
    assert out.read_bytes() != old and [p.name for p in tmp_path.iterdir()] == ["g.svg"]
