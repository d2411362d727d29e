"""`archdsl summary --explain`: the printed arithmetic is the lecture's, and it is right."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

import archdsl
from archdsl.authoring.explain import explain_layers, explain_model
from archdsl.ops.base import explain_params

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(ROOT.joinpath("specs").glob("*.arch"))


def models_of(path):
    try:
        spec = archdsl.compile(path)
    except archdsl.ArchError as err:
        pytest.skip(f"{path.name} does not compile: {err.message}")
    return spec.models()


def lenet():
    return archdsl.compile(ROOT / "specs" / "lenet5.arch").model()


def test_lenet5_first_layer_as_in_the_lecture():
    text = explain_model(lenet())
    assert "conv2d_1  Conv2d(6, k=5)  \u2192 f32[N, 6, 28, 28]" in text
    assert "Conv2d k=5 s=1 p=0: H = W = (32 + 2\u00b70 \u2212 5)/1 + 1 = 28; C: 1 \u2192 6" in text
    assert "params: 6\u00b7(1\u00b75\u00b75) + 6 = 156" in text
    assert "AvgPool2d k=2 s=2 p=0: H = W = (28 + 2\u00b70 \u2212 2)/2 + 1 = 14" in text
    assert "Flatten: [16, 5, 5] \u2192 [400] keeps every element: 16\u00b75\u00b75 = 400" in text
    assert "params: 120\u00b7400 + 120 = 48,120" in text
    assert text.rstrip().endswith("Total params: 156 + 2,416 + 48,120 + 10,164 + 850 = 61,706")


def test_strided_layers_show_the_floor():
    m = archdsl.compile(ROOT / "specs" / "alexnet.arch").model()
    text = explain_model(m)
    # (224 + 4 - 11)/4 + 1 = 55.25: the division floors
    assert "Conv2d k=11 s=4 p=2: H = W = \u230a(224 + 2\u00b72 \u2212 11)/4\u230b + 1 = 55; C: 3 \u2192 64" in text
    assert "params: 64\u00b7(3\u00b711\u00b711) + 64 = 23,296" in text


def _evaluate(expr: str) -> float:
    py = (expr.replace("\u00b7", "*").replace("\u2212", "-").replace("\u230a", "math.floor(")
          .replace("\u230b", ")").replace("\u2308", "math.ceil(").replace("\u2309", ")"))
    return eval(py, {"math": math})      # noqa: S307 - our own arithmetic


AXIS = re.compile(r"(?:[LDHW] = )+(.+?) = (\d+)(?: \(|$)")


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_spec_is_explained_and_the_arithmetic_is_right(path):
    for m in models_of(path):
        layers = explain_layers(m)
        assert [x["name"] for x in layers] == [n.name for n in m.ir.nodes]
        assert sum(x["params"] for x in layers) == m.param_count
        text = explain_model(m)
        assert "Total params: " in text and f"{m.param_count:,}" in text
        for node, layer in zip(m.ir.nodes, layers):
            assert layer["lines"], node.name
            for line in layer["lines"]:
                # shape arithmetic over concrete sizes evaluates to the size the shape rule gave
                head, _, formulas = line.partition(": ")
                if head.split(" ")[0] in ("Conv1d", "Conv2d", "MaxPool1d", "MaxPool2d", "AvgPool1d",
                                          "AvgPool2d", "MinPool1d", "MinPool2d", "ConvTranspose1d",
                                          "ConvTranspose2d") and " k=" in head:
                    for part in formulas.split("; "):
                        mt = AXIS.match(part)
                        if mt and not re.search(r"[A-Za-z]", mt.group(1)):
                            assert _evaluate(mt.group(1)) == int(mt.group(2)), (node.name, part)
                # parameter arithmetic evaluates to the parameters the op declares
                if line.startswith("params: ") and "none new" not in line:
                    expr, _, rest = line[len("params: "):].partition(" = ")
                    total = int(rest.split()[0].replace(",", ""))
                    assert _evaluate(expr) == total, (node.name, line)
                    declared = sum(math.prod(s.shape) for s in node.app.params.values() if not s.buffer)
                    assert total == declared, (node.name, line)


def test_transposed_and_dilated_and_grouped(tmp_path):
    src = """model M {
  input x: f32[N, 8, 14, 14]
  y = x -> ConvTranspose2d(4, 4, stride=2, padding=1) -> Conv2d(8, 3, dilation=2, groups=2, bias=false)
  output y -> MaxPool2d(3, stride=2, ceil_mode=true)
}
"""
    text = explain_model(archdsl.compile(src).model())
    assert ("ConvTranspose2d k=4 s=2 p=1: H = W = (14 \u2212 1)\u00b72 \u2212 2\u00b71 + (4 \u2212 1) + 1 = 28; "
            "C: 8 \u2192 4") in text
    assert "params: 8\u00b7(4\u00b74\u00b74) + 4 = 516" in text
    assert "Conv2d k=3 s=1 p=0 d=2 g=2: H = W = (28 + 2\u00b70 \u2212 2\u00b7(3 \u2212 1) \u2212 1)/1 + 1 = 24" in text
    assert "params: 8\u00b7(4/2\u00b73\u00b73) = 144" in text
    assert "MaxPool2d k=3 s=2 p=0 ceil: H = W = \u2308(24 + 2\u00b70 \u2212 3)/2\u2309 + 1 = 12" in text


def test_symbolic_sizes_stay_symbolic():
    text = explain_model(archdsl.compile(ROOT / "specs" / "textcnn.arch").model())
    assert "Conv1d k=3 s=1 p=0: L = (T + 2\u00b70 \u2212 3)/1 + 1 = T-2; C: 128 \u2192 100" in text
    assert "params: 5000\u00b7128 = 640,000" in text


def test_shared_and_tied_weights_are_counted_once():
    src = """model M {
  input a: f32[N, 8]
  input b: f32[N, 8]
  enc = Linear(4)
  output ya = a -> enc
  output yb = b -> enc
}
"""
    m = archdsl.compile(src).model()
    layers = explain_layers(m)
    assert layers[1]["lines"][-1].startswith("params: none new: the same layer as")
    assert sum(x["params"] for x in layers) == m.param_count == 36
    assert "Total params: 36" in explain_model(m)


def test_generic_explanations():
    src = """model M {
  input x: f32[N, 3, 4, 4]
  output y = x -> BatchNorm -> ReLU -> Reshape((-1, 48))
}
"""
    text = explain_model(archdsl.compile(src).model())
    assert "BatchNorm: shape unchanged" in text
    assert "params: 3 + 3 = 6  (weight [3], bias [3])" in text
    assert "buffers (state, not parameters): running_mean [3], running_var [3]" in text
    assert "Reshape: [3, 4, 4] \u2192 [48] keeps every element: 3\u00b74\u00b74 = 48" in text


def test_explain_params_helper():
    from archdsl.ir.graph import ParamSpec
    assert explain_params({}) == []
    assert explain_params({"w": ParamSpec((2, 3))}) == ["params: 2\u00b73 = 6  (w [2, 3])"]


def _flag(command: str, flag: str) -> bool:
    from archdsl.cli import build_parser
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return any(flag in a.option_strings for a in sub.choices[command]._actions)


@pytest.mark.skipif(not _flag("summary", "--explain"), reason="archdsl/cli.py has no `summary --explain` yet")
def test_summary_explain_end_to_end():
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "archdsl", "summary", "specs/lenet5.arch", "--explain"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "H = W = (32 + 2\u00b70 \u2212 5)/1 + 1 = 28" in p.stdout and "6\u00b7(1\u00b75\u00b75) + 6 = 156" in p.stdout
