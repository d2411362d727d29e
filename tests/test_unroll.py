"""`archdsl render --unroll K` (recurrent models over time steps) and `--receptive-field LAYER`."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import archdsl
from archdsl.authoring.views import render_special
from archdsl.authoring.receptive import (receptive_cone, receptive_field_dot, receptive_field_text,
                                         receptive_fields)
from archdsl.authoring.unroll import recurrence, unroll_dot
from archdsl.errors import ArchError

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(ROOT.joinpath("specs").glob("*.arch"))
HAS_DOT = shutil.which("dot") is not None


def compiled(path):
    try:
        return archdsl.compile(path)
    except ArchError as err:
        pytest.skip(f"{Path(path).name} does not compile: {err.message}")


def model(src: str):
    return archdsl.compile(src).model()


def all_models():
    out = []
    for p in SPECS:
        try:
            out += [(p.stem, m) for m in archdsl.compile(p).models()]
        except ArchError:
            pass
    return out


MODELS = all_models()
RECURRENT_MODELS = [(s, m) for s, m in MODELS if any(recurrence(n) is not None for n in m.ir.nodes)]
CONV_MODELS = [(s, m) for s, m in MODELS
               if any(v.type.rank >= 3 for v in m.ir.inputs) and any("kernel_size" in n.attrs for n in m.ir.nodes)]


# -- unrolling -------------------------------------------------------------------------------
def test_shipped_recurrent_specs_exist():
    assert RECURRENT_MODELS, "no shipped spec has an RNN/LSTM/GRU layer"


@pytest.mark.parametrize("name,m", RECURRENT_MODELS, ids=[f"{s}-{m.name}" for s, m in RECURRENT_MODELS])
def test_every_recurrent_spec_unrolls(name, m, tmp_path):
    g = unroll_dot(m, 3)
    src = g.source
    layers = sum(1 for n in m.ir.nodes if recurrence(n) is not None)
    # a cell per step (per layer and direction); a user cell's step is a cluster titled by the cell
    steps = src.count(" cell</B>") + sum(src.count(f"<B>{recurrence(n).cell} \u00b7 t=") for n in m.ir.nodes
                                        if recurrence(n) is not None and recurrence(n).body is not None)
    assert steps >= 3 * layers
    assert "shared weights" in src and "style=dashed" in src
    if HAS_DOT:
        out = render_special(m, tmp_path / f"{m.name}.svg", unroll=3)
        assert out.read_text().count("<svg") == 1


def test_elman_lm_as_the_lecture_draws_it():
    m = compiled(ROOT / "specs" / "elman_lm.arch").model()
    g = unroll_dot(m, 4)
    src = g.source
    assert src.count("<B>RNN cell</B>") == 4
    for s in ("1", "2", "3", "T"):                           # T symbolic: 1, 2, 3, ..., T
        assert f"tokens<SUB>{s}</SUB>" in src and f"logits<SUB>{s}</SUB>" in src
    assert "\u22ef" in src
    for s in ("1", "2", "3", "T-1"):                         # the hidden state passed along
        assert f"label=<h<SUB>{s}</SUB>>" in src
    assert src.count("<B>Linear(64)</B>") == 4 and src.count("<B>Embedding(64, 32)</B>") == 4
    # one note per layer, tied to each of its 4 copies by a dashed edge
    assert src.count("rnn_1: shared weights") == 1
    assert "weight_hh_l0 [128, 128]" in src
    notes = re.findall(r"(\w+) \[label=<<B>rnn_1: shared weights", src)
    assert len(notes) == 1
    assert len(re.findall(rf"\t{notes[0]} -> \w+ \[[^\]]*style=dashed", src)) == 4


def test_concrete_length_and_too_many_steps():
    src = "model M {\n  input x: f32[N, 4, 8]\n  output y = x -> GRU(16)\n}\n"
    g = unroll_dot(model(src), 4)
    assert g.source.count("<B>GRU cell</B>") == 4 and "\u22ef" not in g.source
    assert "x<SUB>4</SUB>" in g.source and "label=<h<SUB>3</SUB>>" in g.source
    with pytest.raises(ArchError, match="sequences of 4 steps: cannot unroll 5"):
        unroll_dot(model(src), 5)
    with pytest.raises(ArchError, match="at least 1"):
        unroll_dot(model(src), 0)


def test_bidirectional_rows_flow_both_ways():
    src = "model M {\n  input x: f32[N, T, 8]\n  output y = x -> LSTM(16, bidirectional=true)\n}\n"
    g = unroll_dot(model(src), 3).source
    assert g.count("<B>LSTM cell</B>") == 6
    assert "dir=back" in g and "label=<h<SUB>2</SUB>, c<SUB>2</SUB>>" in g
    assert "weight_ih_l0_reverse" in g and "&#8853;" in g      # the directions, concatenated per step


def test_many_to_one_leaves_from_the_last_step():
    src = ("model M {\n  input x: f32[N, T, 8]\n"
           "  output y = x -> LSTM(16, return_sequences=false) -> Linear(2)\n}\n")
    g = unroll_dot(model(src), 3).source
    assert "label=<h<SUB>T</SUB>>" in g
    assert g.count("<B>Linear(2)</B>") == 1


def test_initial_states_enter_the_first_step():
    m = compiled(ROOT / "specs" / "seq2seq.arch").model()
    g = unroll_dot(m, 3).source
    assert "label=<h<SUB>0</SUB>>" in g and "label=<c<SUB>0</SUB>>" in g
    assert "src<SUB>S</SUB>" in g and "tgt_in<SUB>T</SUB>" in g       # two time axes, each unrolled


def test_unroll_needs_a_recurrent_layer():
    with pytest.raises(ArchError, match="no recurrent layer") as err:
        unroll_dot(compiled(ROOT / "specs" / "lenet5.arch").model(), 3)
    assert "RNN, LSTM and GRU" in err.value.hint


# -- receptive fields --------------------------------------------------------------------------
def test_lenet5_receptive_fields():
    m = compiled(ROOT / "specs" / "lenet5.arch").model()
    rf = receptive_fields(m)
    got = {k: (v.size, tuple(map(int, v.jump)) if v.size else None) for k, v in rf.items()}
    assert got["conv2d_1"] == ((5, 5), (1, 1))
    assert got["avgpool2d_1"] == ((6, 6), (2, 2))
    assert got["conv2d_2"] == ((14, 14), (2, 2))
    assert got["avgpool2d_2"] == ((16, 16), (4, 4))
    assert rf["linear_1"].size is None
    cone = receptive_cone(m, "conv2d_2")
    assert cone == {"conv2d_2": (1, 1), "avgpool2d_1": (5, 5), "tanh_1": (10, 10), "conv2d_1": (10, 10),
                    "image": (14, 14)}


@pytest.mark.parametrize("spec,layer,size", [
    ("vgg16", "stage_5.maxpool2d_1", 212),     # the classic figures
    ("alexnet", "conv2d_5", 163),
    ("alexnet", "maxpool2d_3", 195),
    ("resnet18", "layer4", 435),
])
def test_published_receptive_fields(spec, layer, size):
    m = compiled(ROOT / "specs" / f"{spec}.arch").model()
    assert receptive_cone(m, layer)["image"] == (size, size)
    target = [n for n in m.ir.nodes if layer in (n.name, *n.scope)][-1]
    assert receptive_fields(m)[target.name].size == (size, size)


@pytest.mark.parametrize("name,m", CONV_MODELS, ids=[f"{s}-{m.name}" for s, m in CONV_MODELS])
def test_every_conv_spec_gets_receptive_fields(name, m, tmp_path):
    convs = [n for n in m.ir.nodes if "kernel_size" in n.attrs]
    last = convs[-1].name
    g = receptive_field_dot(m, last)
    assert "RF " in g.source and "penwidth=2.5" in g.source
    assert receptive_field_text(m)
    out = render_special(m, tmp_path / "rf.dot", receptive_field=last)
    assert out.read_text() == g.source


def test_layer_lookup_and_errors():
    m = compiled(ROOT / "specs" / "resnet18.arch").model()
    last = [n for n in m.ir.nodes if "layer1" in n.scope][-1].name         # a block stands for its last layer
    assert receptive_cone(m, "layer1") == receptive_cone(m, last)
    with pytest.raises(ArchError, match="no layer 'conv2d_9'"):
        receptive_field_dot(m, "conv2d_9")
    with pytest.raises(ArchError, match="names several layers"):
        receptive_field_dot(m, "conv2d_1")
    with pytest.raises(ArchError, match="no spatial output"):
        receptive_field_dot(m, "fc")
    mlp = compiled(ROOT / "specs" / "mlp_xor.arch").model()
    with pytest.raises(ArchError, match="no spatial input"):
        receptive_field_dot(mlp, "linear_1")


def test_render_special_rejects_both(tmp_path):
    m = compiled(ROOT / "specs" / "lenet5.arch").model()
    with pytest.raises(ArchError, match="choose one"):
        render_special(m, tmp_path / "x.svg", unroll=3, receptive_field="conv2d_1")
    with pytest.raises(ArchError, match="unknown format"):
        render_special(m, tmp_path / "x.txt", receptive_field="conv2d_1")


@pytest.mark.skipif(not HAS_DOT, reason="graphviz's dot is not installed")
def test_receptive_field_svg(tmp_path):
    m = compiled(ROOT / "specs" / "lenet5.arch").model()
    out = render_special(m, tmp_path / "rf.svg", receptive_field="conv2d_2")
    svg = out.read_text()
    assert "conv2d_2 sees 14\u00d714" in svg and "RF 16\u00d716" in svg


def _flag(command: str, flag: str) -> bool:
    from archdsl.cli import build_parser
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return any(flag in a.option_strings for a in sub.choices[command]._actions)


@pytest.mark.skipif(not (_flag("render", "--unroll") and _flag("render", "--receptive-field")),
                    reason="archdsl/cli.py has no `render --unroll / --receptive-field` yet")
def test_render_flags_end_to_end(tmp_path):
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "archdsl", "render", *map(str, args)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
    p = run("specs/elman_lm.arch", "--unroll", "3", "-o", tmp_path / "u.dot")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "u.dot").read_text().count("<B>RNN cell</B>") == 3
    p = run("specs/lenet5.arch", "--receptive-field", "conv2d_2", "-o", tmp_path / "rf.dot")
    assert p.returncode == 0, p.stderr
    assert "conv2d_2 sees 14" in (tmp_path / "rf.dot").read_text()
    p = run("specs/lenet5.arch", "--unroll", "3", "-o", tmp_path / "x.dot")
    assert p.returncode == 1 and "no recurrent layer" in p.stderr and "Traceback" not in p.stderr


def test_stacked_layers_and_a_sequence_made_once():
    src = """model M {
  input x: f32[N, 8, T]
  y = x -> Conv1d(16, 3, padding=1) -> Transpose((0, 2, 1)) -> GRU(32, num_layers=2, return_sequences=false)
  output z = y -> Linear(2)
}
"""
    g = unroll_dot(model(src), 3).source
    assert g.count("<B>GRU cell</B>") == 6
    assert "gru_1 layer 1 \u00b7 t=1" in g and "gru_1 layer 2 \u00b7 t=T" in g
    assert "weight_ih_l1 [96, 32]" in g and "weight_ih_l0 [96, 16]" in g
    assert "label=<step<SUB>1</SUB>>" in g          # step t of the transposed sequence
    assert g.count("<B>Transpose((0, 2, 1))</B>") == 1 and "label=<h<SUB>T</SUB>>" in g
