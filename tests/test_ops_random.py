"""Noise inside a model (archdsl/ops/random.py): drawn from the run's stream in training (so
runs are reproducible), the mean at inference unless sample=true, ONNX lowerings of both."""
from __future__ import annotations

import numpy as np
import pytest

import archdsl
from archdsl.backends.numpy.executor import NumpyExecutor
from harness import ort_run

SPEC = """model M {{
  input x: f32[N, 200, 50]
  output y = x -> {op}
}}"""


@pytest.mark.parametrize("op, mean, std", [("NormalLike(mean=0.5, std=2.0)", 0.5, 2.0),
                                           ("UniformLike(low=-1.0, high=3.0)", 1.0, 4 / 12 ** 0.5),
                                           ("BernoulliLike(0.3)", 0.3, (0.3 * 0.7) ** 0.5)])
def test_training_draws_from_the_run_stream_and_inference_gives_the_mean(op, mean, std):
    m = archdsl.compile(SPEC.format(op=op)).model()
    x = {"x": np.zeros((4, 200, 50), np.float32)}
    a = NumpyExecutor(m.ir, {}, seed=3).run(x, training=True)["y"]
    b = NumpyExecutor(m.ir, {}, seed=3).run(x, training=True)["y"]
    np.testing.assert_array_equal(a, b)                           # the same stream, the same draw
    assert abs(a.mean() - mean) < 0.02 and abs(a.std() - std) < 0.02
    inf = NumpyExecutor(m.ir, {}, seed=3).run(x)["y"]
    np.testing.assert_allclose(inf, mean, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ort_run(m.to_onnx(), x)["y"], mean, rtol=0, atol=1e-6)


@pytest.mark.parametrize("op, mean, std", [("NormalLike(std=2.0, sample=true)", 0.0, 2.0),
                                           ("UniformLike(sample=true)", 0.5, 1 / 12 ** 0.5),
                                           ("BernoulliLike(0.8, sample=true)", 0.8, 0.4)])
def test_sample_true_draws_at_inference_on_both_engines(op, mean, std):
    m = archdsl.compile(SPEC.format(op=op)).model()
    x = {"x": np.zeros((4, 200, 50), np.float32)}
    for y in (NumpyExecutor(m.ir, {}).run(x)["y"], ort_run(m.to_onnx(), x)["y"]):
        assert y.shape == (4, 200, 50) and y.dtype == np.float32
        # unseeded draws (ONNX Runtime's): within 6 standard errors, false alarms about 1 in 10^9
        se = std / y.size ** 0.5
        assert abs(y.mean() - mean) < 6 * se and abs(y.std() - std) < 6 * se


def test_bad_arguments_are_positioned_errors():
    with pytest.raises(archdsl.ArchError, match="p must be a probability"):
        archdsl.compile(SPEC.format(op="BernoulliLike(1.5)"))
    with pytest.raises(archdsl.ArchError, match="low <= high"):
        archdsl.compile(SPEC.format(op="UniformLike(low=2.0, high=1.0)"))
