"""ScalarMix: ELMo's task-specific weighted combination of layer representations.

    ELMo_k = gamma * sum_j softmax(w)_j * h_{k,j}          (Peters et al., 2018, eq. 1)

Inputs: k >= 1 tensors of one type (the biLM's layers, e.g. [N, T, 2H] each); output: that type.
Parameters: `weights` [k] (zeros: softmax-normalised, so the mix starts as a plain average) and
`gamma` [1] (ones: the task scale). `count`, when given, must equal the number of inputs (a
check, as in AllenNLP's mixture_size).

`do_layer_norm=true` first normalises each input to zero mean and unit variance. AllenNLP does
that over all (unmasked) elements of the whole batch, which makes an example's result depend on
its batch mates; archdsl normalises each position over its feature dim (the last), eps 1e-12 as
in AllenNLP, with no affine parameters (LayerNormalization with scale 1).

ONNX: softmax(weights) * gamma is a constant of the trained weights, so it is computed at export
time: the graph is one Mul per input by its scalar coefficient and an Add chain (2k - 1 nodes;
plus one LayerNormalization per input with do_layer_norm, decomposed below opset 17).
"""
from __future__ import annotations

import numpy as np

from ..autodiff import functional as F
from ..backends.torch.lazy import TF, torch
from ..ir.graph import ParamSpec
from ..ir.types import is_static
from .base import Arg, Op, Sample, lowering, numel
from .norm import reduce_mean_last

_EPS = 1e-12


class ScalarMix(Op):
    """ELMo's mix: gamma times the softmax(weights)-weighted sum of k same-shaped inputs."""
    name = "ScalarMix"
    family = "mix"
    args = (Arg("count", "int", None, doc="number of inputs (inferred)"), Arg("do_layer_norm", "bool", False))
    n_inputs = (1, -1)
    samples = (Sample("(a: f32[N, T, 4], b: f32[N, T, 4], c: f32[N, T, 4]) -> ScalarMix"),
               Sample("(a: f32[N, 6], b: f32[N, 6]) -> ScalarMix(do_layer_norm=true)"))

    def time_local(self, a):
        return True

    def infer(self, a):
        in_types = a.in_types
        k = len(in_types)
        if a.attrs["count"] is not None and a.attrs["count"] != k:
            raise self.fail(f"count={a.attrs['count']} but {k} input{'s' if k != 1 else ''} were given",
                            "leave count out: it is inferred from the inputs")
        x0 = in_types[0]
        self.expect_float(x0, "input 0")
        for i, t in enumerate(in_types[1:], start=1):
            if t != x0:
                diff = [f"dim {d}: {p} vs {q}" for d, (p, q) in enumerate(zip(t.shape, x0.shape)) if p != q]
                raise self.fail(f"all inputs must have the same type; input {i} is {t} but input 0 is {x0}"
                                + (f" ({', '.join(diff)})" if diff and t.rank == x0.rank else ""),
                                "ELMo mixes layers of one width: concatenate both directions of every "
                                "layer (and duplicate the token embedding) to the same size")
        if a.attrs["do_layer_norm"] and (x0.rank == 0 or not is_static(x0.shape[-1])):
            raise self.fail(f"do_layer_norm needs a concrete last dim, got {x0}")
        return [x0]

    def params(self, a):
        return {"weights": ParamSpec((len(a.in_types),), "zeros"), "gamma": ParamSpec((1,), "ones")}

    def macs(self, a, in_shapes, out_shapes):
        return numel(out_shapes[0]) * len(in_shapes)

    @staticmethod
    def _coefficients(w: np.ndarray, gamma: np.ndarray) -> np.ndarray:
        e = np.exp(w - w.max())
        return gamma.reshape(()) * e / e.sum()

    def _mix(self, a, g, inputs, normalise):
        dt = a.x.np_dtype
        coef = self._coefficients(np.asarray(g.param_value("weights"), np.float64),
                                  np.asarray(g.param_value("gamma"), np.float64)).astype(dt)
        out = None
        for j, x in enumerate(inputs):
            if a.attrs["do_layer_norm"]:
                x = normalise(g, x, a.in_types[j], dt)
            term = g.op("Mul", [x, g.const(coef[j], hint=f"s{j}")])
            out = term if out is None else g.op("Add", [out, term])
        return [out]

    @lowering(since=17)
    def lower_native(self, a, g, inputs):
        def normalise(g, x, t, dt):
            scale = g.const(np.ones(int(t.shape[-1]), dt), hint="ones")
            return g.op("LayerNormalization", [x, scale], axis=-1, epsilon=_EPS)
        return self._mix(a, g, inputs, normalise)

    @lowering()
    def lower_decomposed(self, a, g, inputs):
        def normalise(g, x, t, dt):         # (x - mean) / sqrt(var + eps)
            d = g.op("Sub", [x, reduce_mean_last(g, x)])
            var = reduce_mean_last(g, g.op("Mul", [d, d]))
            return g.op("Div", [d, g.op("Sqrt", [g.op("Add", [var, g.const(np.asarray(_EPS, dt), hint="eps")])])])
        return self._mix(a, g, inputs, normalise)

    def forward(self, a, ctx, inputs, params):
        s = F.softmax(params["weights"]) * params["gamma"]
        out = None
        for j, x in enumerate(inputs):
            if a.attrs["do_layer_norm"]:
                x = F.layer_norm(x, axes=-1, eps=_EPS)
            term = x * F.getitem(s, j)
            out = term if out is None else out + term
        return [out]

    def torch_forward(self, a, ctx, inputs, params):
        s = torch.softmax(params["weights"], 0) * params["gamma"]
        out = None
        for j, x in enumerate(inputs):
            if a.attrs["do_layer_norm"]:
                x = TF.layer_norm(x, (int(a.in_types[j].shape[-1]),), eps=_EPS)
            term = x * s[j]
            out = term if out is None else out + term
        return [out]
