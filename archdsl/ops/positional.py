"""Positions in a sequence [N, T, d]: PositionalEncoding (sinusoidal, no parameters),
PositionalEmbedding (learned, added) and SelectStep (one time step, e.g. BERT's [CLS] token).

Both position ops add rows 0..T-1 of a [max_len, d] table to the input; T may be symbolic
(dynamic sequence length). When T is static it is checked against max_len; at run time a longer
sequence is an error in the NumPy engine (and fails to broadcast in ONNX Runtime).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ..autodiff import functional as F
from ..backends.torch.lazy import TK
from ..errors import ArchError
from ..ir.graph import MAX_INIT_STD, ParamSpec
from ..ir.types import is_static
from .base import Arg, Op, Sample


@functools.lru_cache(maxsize=16)
def sinusoid_table(max_len: int, d: int, dtype: str = "float32") -> np.ndarray:
    """pe[t, 2i] = sin(t / 10000^(2i/d)), pe[t, 2i+1] = cos(...): computed in float64 then cast,
    so the NumPy engine and the exported constant hold the same numbers."""
    pos = np.arange(max_len, dtype=np.float64)[:, None]
    div = np.exp(np.arange(0, d, 2, dtype=np.float64) * (-math.log(10000.0) / d))
    pe = np.zeros((max_len, d), dtype=np.float64)
    pe[:, 0::2] = np.sin(pos * div)
    pe[:, 1::2] = np.cos(pos * div[: d // 2])
    out = pe.astype(dtype)
    out.setflags(write=False)
    return out


# Above this many elements (max_len * d) an exported PositionalEncoding with a dynamic T computes
# its rows in the graph (Range, Sin, Cos) instead of carrying the [max_len, d] table. The rows are
# then float32 arithmetic: |error| ~ t * 6e-8 at position t (vs the float64-built table).
MAX_TABLE_ELEMENTS = 1 << 22

# The largest sinusoid table (rows x d) built at all: 4 GiB of float32.
MAX_POSITION_ELEMENTS = 1 << 30


def _sinusoid_graph(b, x: str, d: int, dt) -> str:
    """pe[:T] built from T = x.shape[1]: angle[t, i] = t * div[i]; sin and cos interleaved."""
    half = (d + 1) // 2
    div = np.exp(np.arange(0, d, 2, dtype=np.float64) * (-math.log(10000.0) / d)).astype(dt)
    to = {np.dtype(np.float16): 10, np.dtype(np.float64): 11}.get(np.dtype(dt), 1)
    pos = b.op("Cast", [b.arange(x, 1)], to=to)
    ang = b.op("Mul", [b.op("Unsqueeze", [pos, b.ints([1], "axes")]), b.const(div.reshape(1, half), hint="div")])
    both = b.op("Concat", [b.op("Unsqueeze", [b.op(f, [ang]), b.ints([2], "axes")]) for f in ("Sin", "Cos")], axis=2)
    pe = b.op("Reshape", [both, b.ints([0, 2 * half], "shape")])            # [T, 2*half]
    if 2 * half != d:
        pe = b.op("Slice", [pe, b.ints([0], "starts"), b.ints([d], "ends"), b.ints([1], "axes")])
    return pe


class _AddPositions(Op):
    family = "positional"

    def time_local(self, a):
        return True         # position t gets table row t (sampling feeds absolute positions)

    def context_length(self, a):
        return int(a.attrs["max_len"])

    def _check(self, attrs, x, d_attr=None):
        if x.rank != 3:
            raise self.fail(f"expects a sequence [N, T, d], got {x}",
                            "token ids go through an Embedding first" if x.rank == 2 else None)
        self.expect_float(x)
        if not is_static(x.shape[-1]):
            raise self.fail(f"the feature dim must be concrete, got {x}")
        if attrs["max_len"] <= 0:
            raise self.fail(f"max_len must be positive, got {attrs['max_len']}")
        t = x.shape[1]
        if is_static(t) and t > attrs["max_len"]:
            raise self.fail(f"the sequence has {t} steps but max_len is {attrs['max_len']} ({x})",
                            f"raise max_len to at least {t}")
        if d_attr is not None and d_attr != x.shape[-1]:
            raise self.fail(f"the input has {x.shape[-1]} features but the table has {d_attr} ({x})")
        return [x]

    @staticmethod
    def _runtime_len(a, t: int):
        if t > a.attrs["max_len"]:
            raise ArchError(f"{a.op.name}: the sequence has {t} steps but max_len is {a.attrs['max_len']}",
                            a.span, f"raise max_len to at least {t}")

    @staticmethod
    def _rows(a, g, table: str, x: str) -> str:
        """table[:T] for the runtime T of x."""
        t = a.x.shape[1]
        if is_static(t) and g.value(table) is not None and a.attrs["max_len"] == t:
            return table
        return g.op("Slice", [table, g.ints([0], "starts"), g.dim(x, 1), g.ints([0], "axes")])


class PositionalEncoding(_AddPositions):
    """x * scale + sinusoidal positions (Vaswani et al.), then dropout (training only). No
    parameters. `scale=sqrt(d)` is the paper's scaling of the embeddings before the sum."""
    name = "PositionalEncoding"
    args = (Arg("max_len", "int", 5000), Arg("dropout", "float", 0.0, keyword_only=True),
            Arg("scale", "float", 1.0, keyword_only=True))
    samples = (Sample("x: f32[N, T, 6] -> PositionalEncoding(max_len=16, scale=2.0)"),
               Sample("x: f32[N, 4, 5] -> PositionalEncoding(max_len=4)"))

    def stochastic(self, a):
        return a.attrs["dropout"] > 0

    def infer(self, a):
        attrs, x = a.attrs, a.x
        if not 0.0 <= attrs["dropout"] < 1.0:
            raise self.fail(f"dropout must be in [0, 1), got {attrs['dropout']}")
        out = self._check(attrs, x)
        self.expect_fits(a, ("scale",))
        t, d = x.shape[1], int(x.shape[-1])
        rows = int(t) if is_static(t) else 1
        if rows * d > MAX_POSITION_ELEMENTS:        # the table is built (NumPy) or stored (ONNX)
            raise self.fail(f"a position table of {rows} x {d} is over the limit of {MAX_POSITION_ELEMENTS:,} "
                            f"elements (archdsl.ops.positional.MAX_POSITION_ELEMENTS)",
                            "is the feature dim what you meant? raise the constant for a bigger table")
        return out

    def lower(self, a, g, inputs):
        t = a.x
        d, t_len = int(t.shape[-1]), t.shape[1]
        x = inputs[0]
        if is_static(t_len):                                    # static T: just T rows
            rows = g.const(sinusoid_table(int(t_len), d, t.np_dtype.name), hint="positions")
        elif a.attrs["max_len"] * d <= MAX_TABLE_ELEMENTS:   # dynamic T: the table, sliced
            table = g.const(sinusoid_table(a.attrs["max_len"], d, t.np_dtype.name), hint="positions")
            rows = self._rows(a, g, table, x)
        else:
            rows = _sinusoid_graph(g, x, d, t.np_dtype)
        if a.attrs["scale"] != 1.0:
            x = g.op("Mul", [x, g.const(np.asarray(a.attrs["scale"], t.np_dtype), hint="scale")])
        return [g.op("Add", [x, rows])]

    def forward(self, a, ctx, inputs, params):
        x = inputs[0]
        t = x.shape[1]
        self._runtime_len(a, t)
        if a.attrs["scale"] != 1.0:
            x = F.mul(x, a.attrs["scale"])
        y = F.add(x, sinusoid_table(t, x.shape[-1], x.dtype.name))
        p = a.attrs["dropout"]
        return [F.dropout(y, p, ctx.training, ctx.rng) if ctx.training and p > 0 else y]

    def torch_forward(self, a, ctx, inputs, params):
        x = inputs[0]
        if not ctx.tracing:
            self._runtime_len(a, x.shape[1])
        if a.attrs["scale"] != 1.0:
            x = x * a.attrs["scale"]
        return [ctx.dropout(x + TK.sinusoid(x.shape[1], int(a.x.shape[-1]), x), a.attrs["dropout"])]


class PositionalEmbedding(_AddPositions):
    """x + weight[:T]: learned absolute positions (GPT-2's wpe, BERT's position embeddings).
    weight [max_len, d] ~ N(0, std) (0.02 as in BERT and GPT-2)."""
    name = "PositionalEmbedding"
    args = (Arg("max_len", "int"), Arg("d", "int", None), Arg("std", "float", 0.02, keyword_only=True))
    samples = (Sample("x: f32[N, T, 4] -> PositionalEmbedding(8)"),
               Sample("x: f32[N, 3, 2] -> PositionalEmbedding(3, d=2, std=0.5)"))

    def infer(self, a):
        attrs = a.attrs
        if not 0 <= attrs["std"] <= MAX_INIT_STD:
            raise self.fail(f"std must be in [0, {MAX_INIT_STD:g}], got {attrs['std']}",
                            "a larger std overflows float32 weights; 0.02 (default) is usual")
        return self._check(attrs, a.x, attrs["d"])

    def params(self, a):
        d = int(a.x.shape[-1])
        return {"weight": ParamSpec((a.attrs["max_len"], d), "normal", std=a.attrs["std"],
                                    fan_in=a.attrs["max_len"], fan_out=d)}

    def lower(self, a, g, inputs):
        return [g.op("Add", [inputs[0], self._rows(a, g, g.param("weight"), inputs[0])])]

    def forward(self, a, ctx, inputs, params):
        x = inputs[0]
        t = x.shape[1]
        self._runtime_len(a, t)
        w = params["weight"]
        return [F.add(x, w if t == w.shape[0] else F.getitem(w, slice(0, t)))]

    def torch_forward(self, a, ctx, inputs, params):
        x = inputs[0]
        if not ctx.tracing:
            self._runtime_len(a, x.shape[1])
        return [x + params["weight"][:x.shape[1]]]


class SelectStep(Op):
    """One position along `axis` (default 1, time): [N, T, d] -> [N, d]. index may be negative
    (-1 = the last step). BERT's pooler takes the first ([CLS]) token: SelectStep(0)."""
    name = "SelectStep"
    family = "positional"
    args = (Arg("index", "int", 0), Arg("axis", "int", 1))
    samples = (Sample("x: f32[N, T, 3] -> SelectStep(-1)"), Sample("x: f32[N, 4, 2, 3] -> SelectStep(1, axis=2)"))

    def derive(self, a) -> int:
        """The axis, normalised against the rank."""
        x, ax = a.x, a.attrs["axis"]
        if x.rank < 2:
            raise self.fail(f"expects an input with at least 2 dims, got {x}")
        if not -x.rank <= ax < x.rank:
            raise self.fail(f"axis {ax} is out of range for the {x.rank}-D input {x}")
        return ax % x.rank

    def infer(self, a):
        x, ax = a.x, a.derived
        n, i = x.shape[ax], a.attrs["index"]
        if is_static(n) and not -n <= i < n:
            raise self.fail(f"index {i} is out of range for dim {ax} of size {n} ({x})")
        return [x.with_shape(x.shape[:ax] + x.shape[ax + 1:])]

    def lower(self, a, g, inputs):
        return [g.op("Gather", [inputs[0], g.ints(a.attrs["index"], "index")], axis=a.derived)]

    def forward(self, a, ctx, inputs, params):
        idx = (slice(None),) * a.derived + (a.attrs["index"],)
        return [F.getitem(inputs[0], idx)]

    def torch_forward(self, a, ctx, inputs, params):
        return [inputs[0].select(a.derived, a.attrs["index"])]
