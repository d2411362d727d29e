"""The initialisers a spec can choose (init=, bias_init=, a param's value) against torch.nn.init:
the same fans, gains and distributions (compared by their statistics on large draws with fixed
seeds, so the checks are deterministic)."""
import math

import numpy as np
import pytest

import archdsl
from archdsl.errors import ArchError
from archdsl.ir.initializers import SCHEMAS, Initializer, fans, gain, make
from archdsl.passes.init import draw

SHAPE = (96, 64, 3, 3)

CASES = [
    ("zeros", {}), ("ones", {}), ("constant", {"value": 0.25}),
    ("normal", {"mean": 0.5, "std": 0.02}), ("uniform", {"a": -0.3, "b": 0.1}),
    ("trunc_normal", {"std": 0.02}), ("trunc_normal", {"mean": 0.1, "std": 1.0, "a": -0.5, "b": 1.0}),
    ("kaiming_normal", {}), ("kaiming_normal", {"mode": "fan_out", "nonlinearity": "relu"}),
    ("kaiming_uniform", {"a": math.sqrt(5)}), ("kaiming_uniform", {"mode": "fan_out", "nonlinearity": "tanh"}),
    ("xavier_normal", {}), ("xavier_uniform", {"gain": 2.0}),
]


def _torch_init(torch, kind, kwargs, shape):
    t = torch.empty(shape, dtype=torch.float64)
    torch.manual_seed(0)
    fn = getattr(torch.nn.init, kind + "_")
    if kind == "constant":
        return fn(t, kwargs["value"]).numpy()
    return fn(t, **kwargs).numpy()


@pytest.mark.parametrize("kind,kwargs", CASES, ids=[f"{k}-{v}" for k, v in CASES])
def test_distributions_match_torch_nn_init(kind, kwargs):
    torch = pytest.importorskip("torch")
    init = make(kind, [kwargs["value"]] if kind == "constant" else [], {k: v for k, v in kwargs.items() if k != "value"})
    ours = draw(init, SHAPE, np.random.default_rng(0))
    theirs = _torch_init(torch, kind, kwargs, SHAPE)
    assert ours.shape == theirs.shape
    assert ours.mean() == pytest.approx(theirs.mean(), abs=0.01 * max(theirs.std(), 1e-3) + 1e-12)
    assert ours.std() == pytest.approx(theirs.std(), rel=0.02, abs=1e-12)
    if kind == "trunc_normal":
        lo, hi = kwargs.get("a", -2.0), kwargs.get("b", 2.0)
        assert lo <= ours.min() and ours.max() <= hi and (ours.min() < lo + 0.01) == (theirs.min() < lo + 0.01)
    if "uniform" in kind:       # the same bounds
        assert ours.min() == pytest.approx(theirs.min(), rel=0.02, abs=1e-3 * theirs.std())
        assert ours.max() == pytest.approx(theirs.max(), rel=0.02, abs=1e-3 * theirs.std())


@pytest.mark.parametrize("shape", [(5, 3), (8, 4, 3), (16, 2, 3, 5), (4, 6, 2, 2, 2)])
def test_fans_are_torchs(shape):
    torch = pytest.importorskip("torch")
    assert fans(shape) == torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


@pytest.mark.parametrize("nl,a", [("linear", 0.0), ("conv2d", 0.0), ("sigmoid", 0.0), ("tanh", 0.0), ("relu", 0.0),
                                  ("leaky_relu", 0.2), ("selu", 0.0)])
def test_gains_are_torchs(nl, a):
    torch = pytest.importorskip("torch")
    assert gain(nl, a) == pytest.approx(torch.nn.init.calculate_gain(nl, a))


def test_schema_and_spelling():
    assert set(SCHEMAS) == {"zeros", "ones", "constant", "normal", "uniform", "trunc_normal", "kaiming_normal",
                            "kaiming_uniform", "xavier_normal", "xavier_uniform"}
    assert str(make("kaiming_normal", [], {"mode": "fan_out", "nonlinearity": "relu"})) == \
        "kaiming_normal(mode='fan_out', nonlinearity='relu')"
    assert str(make("normal", [], {"std": 0.02})) == "normal(std=0.02)" and str(make("zeros", [], {})) == "zeros"
    assert str(make("constant", [1e-6], {})) == "constant(1e-06)"
    assert make("normal", [], {"std": 1}) == Initializer("normal", (("mean", 0.0), ("std", 1.0)))
    with pytest.raises(ArchError, match="normal\\(\\) takes no positional arguments"):
        make("normal", [0.02], {})


def test_a_deep_cnn_with_fan_out_init_keeps_its_input_in_its_output():
    """The issue's finding: with PyTorch's default init (kaiming_uniform, a=sqrt(5)) a deep plain CNN
    shrinks its activations to nothing, so the batch rows of its output agree to 1e-7 and a check of
    a fresh export checks nothing; with kaiming_normal(mode='fan_out') as torchvision's CNNs use,
    the output still depends on the input."""
    def spec(init):
        return f"""
block Unit(c: int) {{
  input x
  output x -> Conv2d(c, 3, padding=1, bias=false{init}) -> BatchNorm2d(c) -> ReLU
}}
model Deep {{
  input image: f32[N, 3, 16, 16]
  output y = image -> repeat 40 {{ Unit(16) }} -> Flatten
}}"""
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    spread = {}
    for name, init in (("default", ""), ("fan_out", ", init=kaiming_normal(mode='fan_out', nonlinearity='relu')")):
        m = archdsl.compile(spec(init)).model()
        y = m.executor().run({"image": x})["y"]
        spread[name] = float(np.abs(y - y.mean(axis=0)).max())
    assert spread["default"] < 1e-12 and spread["fan_out"] > 1e-3, spread
