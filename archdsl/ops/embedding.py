"""Embedding: integer ids of any shape -> [..., embedding_dim] rows of a learned table."""
from __future__ import annotations

import numpy as np

from ..autodiff import Tensor
from ..autodiff import functional as F
from ..backends.torch.lazy import TF
from ..ir.graph import MAX_INIT_STD, ParamSpec
from ..ir.types import INT_DTYPES, TensorType
from .base import DOT, Arg, Op, Sample


class Embedding(Op):
    """A lookup table weight [num_embeddings, embedding_dim], initialised N(0, std²) (std=1 as in
    PyTorch).

    `padding_idx`: as in PyTorch, that row starts at zeros and the lookup gives it no gradient,
    so it stays zero through training and the ONNX lowering is a plain Gather.
    """
    name = "Embedding"
    family = "embedding"
    args = (Arg("num_embeddings", "int"), Arg("embedding_dim", "int"), Arg("padding_idx", "int", None),
            Arg("std", "float", 1.0, keyword_only=True, doc="init N(0, std); GPT/BERT use 0.02 so tied output heads start small"))
    samples = (Sample("ids: i64[N, T] -> Embedding(7, 4)", values={"ids": (0, 7)}),
               Sample("ids: i32[N] -> Embedding(5, 3, padding_idx=0)", values={"ids": (0, 5)}))

    def time_local(self, a):
        return True

    def derive(self, a):
        """The padding row as a non-negative index, or None."""
        p, n = a.attrs["padding_idx"], a.attrs["num_embeddings"]
        return None if p is None or not -n <= p < n else p % n

    def infer(self, a):
        x = a.x
        if x.dtype not in INT_DTYPES:
            raise self.fail(f"expects integer ids (i32 or i64), got {x}",
                            "declare the input as i64[...] token ids; for float features use Linear"
                            if x.is_float else None)
        n, d = a.attrs["num_embeddings"], a.attrs["embedding_dim"]
        if n <= 0 or d <= 0:
            raise self.fail(f"num_embeddings and embedding_dim must be positive, got {n} and {d}")
        p = a.attrs["padding_idx"]
        if p is not None and not -n <= p < n:
            raise self.fail(f"padding_idx {p} is out of range for {n} embeddings",
                            f"choose an id in 0..{n - 1}")
        return [TensorType("f32", x.shape + (d,))]

    def params(self, a):
        n, d = a.attrs["num_embeddings"], a.attrs["embedding_dim"]
        if not 0 < a.attrs["std"] <= MAX_INIT_STD:
            raise self.fail(f"std must be in (0, {MAX_INIT_STD:g}], got {a.attrs['std']}",
                            "a larger std overflows float32 weights; 1 (default) or 0.02 are usual")
        return {"weight": ParamSpec((n, d), "normal", std=a.attrs["std"], fan_in=n, fan_out=d,
                                    zero_row=a.derived)}

    def explain(self, a):
        n, d = a.attrs["num_embeddings"], a.attrs["embedding_dim"]
        return [f"Embedding: each id in {a.x} picks one of {n} rows of {d} numbers: "
                f"{a.x} \u2192 {a.out_types[0]}",
                f"params: {n}{DOT}{d} = {n * d:,}  (weight [{n}, {d}]: one row per id)"]

    def lower(self, a, g, inputs):
        return [g.op("Gather", [g.param("weight"), inputs[0]], axis=0)]

    def forward(self, a, ctx, inputs, params):
        ids, w = inputs[0], params["weight"]
        idx = ids.data if isinstance(ids, Tensor) else np.asarray(ids)
        y = F.take(w, idx, axis=0)
        if a.derived is None:
            return [y]
        keep = (idx != a.derived)[..., None].astype(w.data.dtype)   # no gradient into the padding row
        return [y * Tensor(keep)]

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.embedding(inputs[0], params["weight"], padding_idx=a.derived)]
