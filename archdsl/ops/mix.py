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
from ..ir.graph import ParamSpec
from ..ir.types import is_static
from .base import Arg, Op

_EPS = 1e-12


class ScalarMix(Op):
    name = "ScalarMix"
    family = "mix"
    args = (Arg("count", "int", None, doc="number of inputs (inferred)"), Arg("do_layer_norm", "bool", False))
    n_inputs = (1, -1)

    def infer(self, attrs, in_types):
        k = len(in_types)
        if attrs["count"] is not None and attrs["count"] != k:
            raise self.fail(f"count={attrs['count']} but {k} input{'s' if k != 1 else ''} were given",
                            "leave count out: it is inferred from the inputs")
        x0 = in_types[0]
        self.expect_float(x0, "input 0")
        for i, t in enumerate(in_types[1:], start=1):
            if t != x0:
                diff = [f"dim {d}: {a} vs {b}" for d, (a, b) in enumerate(zip(t.shape, x0.shape)) if a != b]
                raise self.fail(f"all inputs must have the same type; input {i} is {t} but input 0 is {x0}"
                                + (f" ({', '.join(diff)})" if diff and t.rank == x0.rank else ""),
                                "ELMo mixes layers of one width: concatenate both directions of every "
                                "layer (and duplicate the token embedding) to the same size")
        if attrs["do_layer_norm"] and (x0.rank == 0 or not is_static(x0.shape[-1])):
            raise self.fail(f"do_layer_norm needs a concrete last dim, got {x0}")
        return [x0]

    def params(self, attrs, in_types):
        k = len(in_types)
        return {"weights": ParamSpec((k,), "zeros"), "gamma": ParamSpec((1,), "ones")}

    def macs(self, attrs, in_shapes, out_shapes):
        n = 1
        for d in out_shapes[0]:
            n *= d
        return n * len(in_shapes)

    @staticmethod
    def _coefficients(w: np.ndarray, gamma: np.ndarray) -> np.ndarray:
        e = np.exp(w - w.max())
        return gamma.reshape(()) * e / e.sum()

    def lower(self, node, b, inputs):
        dt = node.inputs[0].type.np_dtype
        coef = self._coefficients(np.asarray(b.param_value("weights"), np.float64),
                                  np.asarray(b.param_value("gamma"), np.float64)).astype(dt)
        out = None
        for j, x in enumerate(inputs):
            if node.attrs["do_layer_norm"]:
                x = self._layer_norm(b, x, node.inputs[j].type, dt)
            term = b.op("Mul", [x, b.const(coef[j], hint=f"s{j}")])
            out = term if out is None else b.op("Add", [out, term])
        return [out]

    @staticmethod
    def _layer_norm(b, x, t, dt):
        if b.opset >= 17:
            scale = b.const(np.ones(int(t.shape[-1]), dt), hint="ones")
            return b.op("LayerNormalization", [x, scale], axis=-1, epsilon=_EPS)
        # opset 13..16: (x - mean) / sqrt(var + eps), ReduceMean with the axes attribute
        mean = b.op("ReduceMean", [x], axes=[-1], keepdims=1)
        d = b.op("Sub", [x, mean])
        var = b.op("ReduceMean", [b.op("Mul", [d, d])], axes=[-1], keepdims=1)
        std = b.op("Sqrt", [b.op("Add", [var, b.const(np.asarray(_EPS, dt), hint="eps")])])
        return b.op("Div", [d, std])

    def forward(self, node, ctx, inputs, params):
        s = F.softmax(params["weights"]) * params["gamma"]
        out = None
        for j, x in enumerate(inputs):
            if node.attrs["do_layer_norm"]:
                x = F.layer_norm(x, axes=-1, eps=_EPS)
            term = x * F.getitem(s, j)
            out = term if out is None else out + term
        return [out]
