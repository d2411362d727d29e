"""Attention: MultiHeadAttention, ScaledDotProductAttention and AdditiveAttention (Bahdanau).

Input conventions (the attributes decide what the inputs are; a mismatch is a shape error that
says which inputs were expected):

    MultiHeadAttention(d_model, heads, cross=false, mask='none')
      self-attention   x: f32[N, T, d_model]                      x -> MultiHeadAttention(d, h)
      cross-attention  (query [N, T, d_model], memory [N, S, m])  (q, mem) -> MultiHeadAttention(d, h, cross=true)
                       or (query, key [N, S, kdim], value [N, S, vdim]) with separate key and value
      + mask='padding' one more input LAST: keep: bool[N, S], true = attend to that key (a real
                       token), false = padding. NOTE: the opposite of PyTorch's key_padding_mask
                       (true = ignore); this is ONNX Attention's boolean-mask convention.
      + mask='lengths' one more input LAST: lengths: i32/i64[N], keys 0..lengths[n]-1 are real.
    ScaledDotProductAttention: (q [N, H, T, dk], k [N, H, S, dk], v [N, H, S, dv]) plus the same
      optional last mask input; no parameters.
    AdditiveAttention(units): (query [N, T, dq], keys [N, S, dk]) plus the same optional mask
      input -> context [N, T, dk]; the keys are also the values (Bahdanau).

`causal=true` lets query i attend keys j <= i (top-left aligned when T != S, as PyTorch's
`is_causal` and ONNX Attention without a cache). `need_weights=true` adds a second output with
the attention weights (after softmax, before dropout): [N, heads, T, S] for the dot-product
ops, [N, T, S] for AdditiveAttention. A query row with no key left to attend to (every key
padded, or causal + padding masking every earlier key) gives a zero output row and zero
weights, not NaN: ONNX Attention's rule, used by every path here.

Parameters of MultiHeadAttention follow PyTorch's nn.MultiheadAttention, with its packed
in_proj_weight [3d, d] kept as three matrices: q_weight [d, d], k_weight [d, kdim], v_weight
[d, vdim], q_bias/k_bias/v_bias [d], out_weight [d, d], out_bias [d] (no biases with
bias=false). Counts therefore match nn.MultiheadAttention, BERT and GPT-2
(4 d^2 + 4 d with biases). Initialisation as PyTorch: Xavier-uniform over the packed
projection, zero biases, out_weight U(+-1/sqrt(d)).

ONNX: at opset >= 23 the attention core lowers to the native `Attention` op (3-D inputs with
q_num_heads for MultiHeadAttention, 4-D for ScaledDotProductAttention); below 23 to MatMul /
Softmax. Findings with ONNX Runtime 1.31 (CPU), each covered by a parity test:
  * a boolean attn_mask must have the full query length in its second-last dim (ORT rejects
    [N, 1, 1, S] although the spec allows broadcasting), so the padding mask is Expand-ed to
    [N, 1, T, S];
  * `nonpad_kv_seqlen` (opset >= 24) is used for mask='lengths' without causal masking; with
    is_causal it switches the causal mask to "bottom-right, offset = length - T" (the KV-cache
    meaning), not what a padded batch means, so causal + lengths lowers the lengths to a
    boolean mask instead (so does opset 23, which has no nonpad_kv_seqlen);
  * qk_matmul_output_mode=3 gives the post-softmax weights (need_weights), but ONNX's shape
    inference types that output with a key length of 0 when the key length is symbolic, and ORT
    warns about the mismatch on every run: need_weights with a dynamic key length therefore
    lowers to the decomposition (a static key length keeps the native op);
  * fully-masked query rows come out as zeros, as the spec says.
The decomposition folds the 1/sqrt(dk) scale into the exported query projection, fills masked
scores with the most negative float (Where, not Add: no overflow), and zeroes fully-masked
rows after Softmax, so it agrees with the native op.

NumPy: one fused primitive per op with a hand-written VJP, in archdsl/autodiff/attention.py.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..autodiff.attention import MASK_MODES, additive_attention, dropout_mask, keep_from, mask_arrays, mha, sdpa
from ..ir.graph import ParamSpec
from ..ir.types import INT_DTYPES, TensorType, is_static
from .base import Arg, Op, Sample, explain_params, explain_shape, lowering


# =================================================================================================
# ONNX helpers
# =================================================================================================

def _dim(b, x, axis: int, keep_1d: bool = False) -> str:
    """The runtime size of dim `axis` of x: a scalar (or a 1-element 1-D tensor)."""
    idx = b.ints([axis] if keep_1d else axis, hint=f"dim{axis}")
    return b.op("Gather", [b.op("Shape", [x]), idx], axis=0)


def _range(b, n_scalar: str) -> str:
    zero = b.const(np.asarray(0, np.int64), hint="zero")
    one = b.const(np.asarray(1, np.int64), hint="one")
    return b.op("Range", [zero, n_scalar, one])


def _keep_from_lengths(b, lengths: str, dtype: str, key_src: str, key_axis: int) -> str:
    """[N, S] bool from lengths [N]: arange(S) < lengths[:, None]."""
    if dtype != "i64":
        lengths = b.op("Cast", [lengths], to=7)
    rs = b.op("Unsqueeze", [_range(b, _dim(b, key_src, key_axis)), b.ints([0], "axes")])
    return b.op("Less", [rs, b.op("Unsqueeze", [lengths, b.ints([1], "axes")])])


def _causal_allow(b, q_src: str, q_axis: int, k_src: str, k_axis: int) -> str:
    """[T, S] bool: key j <= query i."""
    rt = b.op("Unsqueeze", [_range(b, _dim(b, q_src, q_axis)), b.ints([1], "axes")])
    rs = b.op("Unsqueeze", [_range(b, _dim(b, k_src, k_axis)), b.ints([0], "axes")])
    return b.op("GreaterOrEqual", [rt, rs])


def native_fits(a) -> bool:
    """Whether ONNX's native Attention (opset >= 23) fits the application. ONNX's shape inference
    gives qk_matmul_output a last dim of 0 when the key length is symbolic (it reads dim_value of
    a dim_param) and ORT then warns on every run: with a dynamic key length, need_weights lowers
    to the decomposition instead, which yields the weights anyway."""
    return not (a.attrs["need_weights"] and not is_static(a.derived.key.shape[-2]))


def _lower_core(b, *, native, q, k, v, q_src, k_src, layout, heads, t_axis, s_axis, causal, mask_mode,
                mask, mask_dtype, need_weights, scale=None, np_dtype=np.float32, nonpad_ok=False):
    """The attention core. layout '3d': q [N, T, H*dk], k/v [N, S, H*d*] (q already scaled on
    the decomposition path); '4d': [N, H, T, dk] etc. nonpad_ok: the native op takes lengths as
    `nonpad_kv_seqlen` (opset >= 24). Returns (y, weights or None) with y in the same layout as q."""
    keep = None
    nonpad = ""
    if mask_mode == "lengths":
        if native and nonpad_ok and not causal:
            nonpad = mask if mask_dtype == "i64" else b.op("Cast", [mask], to=7)
        else:
            keep = _keep_from_lengths(b, mask, mask_dtype, k_src, s_axis)
    elif mask_mode == "padding":
        keep = mask
    if native:
        attn_mask = ""
        if keep is not None:    # ORT wants the query length in the mask: [N, 1, T, S]
            k4 = b.op("Unsqueeze", [keep, b.ints([1, 2], "axes")])
            shape = b.op("Concat", [b.ints([1, 1], "ones"), _dim(b, q_src, t_axis, keep_1d=True),
                                    b.ints([1], "one")], axis=0)
            attn_mask = b.op("Expand", [k4, shape])
        ins = [q, k, v, attn_mask, "", "", nonpad]
        while ins and ins[-1] == "":
            ins.pop()
        attrs = {"is_causal": 1 if causal else None}
        if layout == "3d":
            attrs.update(q_num_heads=heads, kv_num_heads=heads)
        if scale is not None:
            attrs["scale"] = float(scale)
        if need_weights:
            base = b.fresh(f"{b._prefix()}/Attention")
            y, w = b.fresh(f"{base}:0"), b.fresh(f"{base}:3")
            b.op("Attention", ins, n_out=4, outputs=[y, "", "", w], qk_matmul_output_mode=3, **attrs)
            return y, w
        return b.op("Attention", ins, **attrs), None

    # ---- decomposition: MatMul / Softmax ----
    if layout == "3d":
        qh = b.op("Transpose", [b.op("Reshape", [q, b.ints([0, 0, heads, -1])])], perm=[0, 2, 1, 3])
        kt = b.op("Transpose", [b.op("Reshape", [k, b.ints([0, 0, heads, -1])])], perm=[0, 2, 3, 1])
        vh = b.op("Transpose", [b.op("Reshape", [v, b.ints([0, 0, heads, -1])])], perm=[0, 2, 1, 3])
    else:
        qh = q if scale is None or scale == 1.0 else \
            b.op("Mul", [q, b.const(np.asarray(scale, np_dtype), hint="scale")])
        kt = b.op("Transpose", [k], perm=[0, 1, 3, 2])
        vh = v
    scores = b.op("MatMul", [qh, kt])                                        # [N, H, T, S]
    allow = None
    if causal:
        allow = _causal_allow(b, q_src, t_axis, k_src, s_axis)              # [T, S]
    if keep is not None:
        k4 = b.op("Unsqueeze", [keep, b.ints([1, 2], "axes")])              # [N, 1, 1, S]
        allow = k4 if allow is None else b.op("And", [k4, allow])
    if allow is not None:
        neg = b.const(np.asarray(np.finfo(np_dtype).min, np_dtype), hint="neg")
        scores = b.op("Where", [allow, scores, neg])
    p = b.op("Softmax", [scores], axis=-1)
    if keep is not None:     # rows with every key masked: zero (as ONNX Attention), not uniform
        p = b.op("Where", [allow, p, b.const(np.asarray(0.0, np_dtype), hint="zero_f")])
    o = b.op("MatMul", [p, vh])
    if layout == "3d":
        o = b.op("Reshape", [b.op("Transpose", [o], perm=[0, 2, 1, 3]), b.ints([0, 0, -1])])
    return o, (p if need_weights else None)


# =================================================================================================
# Ops
# =================================================================================================

class AttentionLayout(NamedTuple):
    """What an attention application's inputs are, worked out once from its attributes and types."""
    kind: str              # MultiHeadAttention: 'self' | 'memory' | 'kv'; the others: 'qkv'
    has_mask: bool
    query: TensorType
    key: TensorType
    value: TensorType
    mask: TensorType | None

    @property
    def n_float(self) -> int:
        return {"self": 1, "memory": 2, "kv": 3}.get(self.kind, 3)


class _MaskedAttention(Op):
    """Shared input-convention logic: float inputs first, then the optional mask input."""
    family = "attention"

    def stochastic(self, a):
        return a.attrs.get("dropout", 0.0) > 0

    def _mask_type_check(self, attrs, mt: TensorType, key: TensorType, what_key: str):
        mode = attrs["mask"]
        if mode == "padding":
            if mt.dtype != "bool" or mt.rank != 2:
                raise self.fail(f"mask='padding' expects its last input to be a keep mask bool[N, S], got {mt}",
                                "true marks a real key (attend), false a padded one; for sequence lengths "
                                "use mask='lengths'" if mt.dtype in INT_DTYPES else
                                "true marks a real key (attend), false a padded one")
            _same(self, mt.shape[0], key.shape[0], f"the mask's batch dim ({mt})", f"the {what_key}'s ({key})")
            _same(self, mt.shape[1], key.shape[-2], f"the mask's length dim ({mt})",
                  f"the {what_key}'s sequence dim ({key})")
        elif mode == "lengths":
            if mt.dtype not in INT_DTYPES or mt.rank != 1:
                raise self.fail(f"mask='lengths' expects its last input to be lengths i64[N] (or i32), got {mt}",
                                "for a boolean keep mask use mask='padding'" if mt.dtype == "bool" else None)
            _same(self, mt.shape[0], key.shape[0], f"the lengths' batch dim ({mt})", f"the {what_key}'s ({key})")

    def _count_hint(self, attrs, in_types, n_float_expected):
        extra = in_types[n_float_expected:] if len(in_types) > n_float_expected else []
        if attrs["mask"] == "none" and extra:
            last = extra[-1]
            if last.dtype == "bool":
                return "for a key padding mask (true = keep) add mask='padding'"
            if last.dtype in INT_DTYPES:
                return "for sequence lengths add mask='lengths'"
        return None

    @staticmethod
    def _masks(a, ctx, inputs, t: int, s: int, heads: int, rank: int = 4):
        """(block, dead, dropout multiplier) for one forward."""
        lay = a.derived
        keep = keep_from(a.attrs["mask"], inputs[-1] if lay.has_mask else None, s)
        block, dead = mask_arrays(keep, a.attrs.get("causal", False), t, s, rank=rank)
        p = a.attrs.get("dropout", 0.0)
        n = inputs[0].shape[0]
        dmask = dropout_mask(ctx.rng, p, (n, heads, t, s), inputs[0].dtype) if ctx.training else None
        return block, dead, dmask


def _same(op, a, b, what_a, what_b):
    if a != b and (is_static(a) == is_static(b)):
        raise op.fail(f"{what_a} does not match {what_b}: {a} vs {b}")


class MultiHeadAttention(_MaskedAttention):
    """Multi-head attention as nn.MultiheadAttention (batch first): self-attention on x, or
    cross-attention on (query, memory) or (query, key, value), with causal, padding and length
    masks. `kdim`/`vdim` are the feature sizes of the key and value inputs (default: the
    memory's, d_model for self-attention); the heads split d_model; the module docstring has the
    input conventions."""
    name = "MultiHeadAttention"
    args = (Arg("d_model", "int"), Arg("heads", "int"), Arg("kdim", "int", None), Arg("vdim", "int", None),
            Arg("cross", "bool", False), Arg("causal", "bool", False),
            Arg("mask", "str", "none", choices=MASK_MODES), Arg("dropout", "float", 0.0, keyword_only=True),
            Arg("bias", "bool", True), Arg("need_weights", "bool", False))
    n_inputs = (1, 4)
    samples = (Sample("x: f32[N, T, 8] -> MultiHeadAttention(8, 2, causal=true)"),
               Sample("(q: f32[N, T, 8], m: f32[N, S, 6], keep: bool[N, S]) -> "
                      "MultiHeadAttention(8, 4, cross=true, mask='padding', need_weights=true)"),
               Sample("(q: f32[N, T, 4], k: f32[N, S, 3], v: f32[N, S, 5], n: i64[N]) -> "
                      "MultiHeadAttention(4, 2, cross=true, mask='lengths', bias=false)", values={"n": (1, 5)}),
               Sample("(x: f32[N, T, 4], n: i32[N]) -> MultiHeadAttention(4, 1, causal=true, mask='lengths')",
                      values={"n": (1, 6)}))

    # -- the input convention --------------------------------------------------------------
    def _kind(self, attrs, n_in: int) -> tuple[str, bool]:
        """('self' | 'memory' | 'kv', has_mask) for n_in inputs, or a clear error."""
        has_mask = attrs["mask"] != "none"
        n_float = n_in - has_mask
        mask_name = {"padding": ", keep: bool[N, S]", "lengths": ", lengths: i64[N]"}.get(attrs["mask"], "")
        if not attrs["cross"]:
            if n_float == 1:
                return "self", has_mask
            want = f"(x: [N, T, d_model]{mask_name.replace('S]', 'T]')})"
        else:
            if n_float in (2, 3):
                return ("memory" if n_float == 2 else "kv"), has_mask
            want = f"(query, memory{mask_name}) or (query, key, value{mask_name})"
        raise self.fail(f"with cross={'true' if attrs['cross'] else 'false'}, mask='{attrs['mask']}' it takes "
                        f"{want}, got {n_in} input{'s' if n_in != 1 else ''}", None)

    def derive(self, a):
        attrs, in_types = a.attrs, a.in_types
        try:
            kind, has_mask = self._kind(attrs, len(in_types))
        except Exception as e:
            hint = self._count_hint(attrs, in_types, 1 if not attrs["cross"] else 2)
            if hint is None and not attrs["cross"] and len(in_types) >= 2 and in_types[1].is_float:
                hint = "for cross-attention on (query, memory) add cross=true"
            if hint is None and attrs["cross"] and len(in_types) == 1:
                hint = "pipe a tuple: (query, memory) -> MultiHeadAttention(..., cross=true)"
            if hint:
                e.hint = hint
            raise
        d, h = attrs["d_model"], attrs["heads"]
        if d <= 0 or h <= 0:
            raise self.fail(f"d_model and heads must be positive, got {d} and {h}")
        if d % h:
            raise self.fail(f"d_model {d} is not divisible by heads {h}",
                            f"choose heads among {', '.join(str(i) for i in range(1, d + 1) if d % i == 0)}"
                            if d <= 1024 else None)
        if not 0.0 <= attrs["dropout"] < 1.0:
            raise self.fail(f"dropout must be in [0, 1), got {attrs['dropout']}")
        floats = in_types[:len(in_types) - has_mask]
        q = floats[0]
        names = {"self": ["x"], "memory": ["query", "memory"], "kv": ["query", "key", "value"]}[kind]
        for nm, t in zip(names, floats):
            if t.rank != 3:
                raise self.fail(f"expects {nm} as [N, T, features], got {t}")
            self.expect_float(t, nm)
            if t.dtype != q.dtype:
                raise self.fail(f"{nm} has dtype {t.dtype} but the query has {q.dtype}")
            if not is_static(t.shape[-1]):
                raise self.fail(f"the feature dim of {nm} must be concrete, got {t}")
        if q.shape[-1] != d:
            raise self.fail(f"the {names[0]} has {q.shape[-1]} features but d_model is {d} ({q})",
                            f"use MultiHeadAttention({q.shape[-1]}, ...) or project the input with Linear({d})")
        for t, nm in zip(floats[1:], names[1:]):
            _same(self, t.shape[0], q.shape[0], f"the batch dim of {nm} ({t})", f"the query's ({q})")
        if kind == "kv":
            _same(self, floats[1].shape[1], floats[2].shape[1], f"the key's length ({floats[1]})",
                  f"the value's ({floats[2]})")
        key = floats[1] if kind != "self" else q
        val = floats[2] if kind == "kv" else key
        for arg, t, nm in (("kdim", key, "key"), ("vdim", val, "value")):
            if attrs[arg] is not None and attrs[arg] != t.shape[-1]:
                raise self.fail(f"{arg}={attrs[arg]} but the {nm} input has {t.shape[-1]} features ({t})")
        if has_mask:
            self._mask_type_check(attrs, in_types[-1], key, "key" if kind != "memory" else "memory")
        return AttentionLayout(kind, has_mask, q, key, val, in_types[-1] if has_mask else None)

    def infer(self, a):
        lay = a.derived
        q = lay.query
        out = [q]
        if a.attrs["need_weights"]:
            out.append(TensorType(q.dtype, (q.shape[0], a.attrs["heads"], q.shape[1], lay.key.shape[1])))
        return out

    def params(self, a):
        lay, d = a.derived, a.attrs["d_model"]
        kdim, vdim = int(lay.key.shape[-1]), int(lay.value.shape[-1])
        if kdim == d and vdim == d:     # PyTorch: xavier_uniform over the packed [3d, d] in_proj_weight
            packed = math.sqrt(6.0 / (d + 3 * d))
            p = {n: ParamSpec((d, d), "uniform", bound=packed, fan_in=d, fan_out=d)
                 for n in ("q_weight", "k_weight", "v_weight")}
        else:
            p = {n: ParamSpec((d, f), "xavier_uniform", fan_in=f, fan_out=d)
                 for n, f in (("q_weight", d), ("k_weight", kdim), ("v_weight", vdim))}
        p["out_weight"] = ParamSpec((d, d), "uniform", bound=1.0 / math.sqrt(d), fan_in=d, fan_out=d)
        if a.attrs["bias"]:
            for n in ("q_bias", "k_bias", "v_bias", "out_bias"):
                p[n] = ParamSpec((d,), "zeros")
        return p

    def macs(self, a, in_shapes, out_shapes):
        lay = a.derived
        floats = in_shapes[:lay.n_float]
        n, t, d = floats[0]
        key = floats[1] if lay.kind != "self" else floats[0]
        val = floats[-1] if lay.kind != "self" else floats[0]
        s = key[1]
        proj = n * t * d * d + n * s * d * key[2] + n * s * d * val[2] + n * t * d * d
        return proj + 2 * n * t * s * d

    def explain(self, a):
        d, h = a.attrs["d_model"], a.attrs["heads"]
        src = {"self": "x", "memory": "the memory", "kv": "key and value"}[a.derived.kind]
        return [explain_shape(a),
                f"{h} heads of {d} / {h} = {d // h} features: q from the query, k and v from {src}; "
                f"softmax(q k^T / sqrt({d // h})) v per head, heads concatenated, then out_weight"
                ] + explain_params(a.params)

    # -- NumPy ------------------------------------------------------------------------------
    def forward(self, a, ctx, inputs, params):
        lay, h = a.derived, a.attrs["heads"]
        xq = inputs[0]
        xk = inputs[1] if lay.kind != "self" else None
        xv = inputs[2] if lay.kind == "kv" else None
        t = xq.shape[1]
        s = t if xk is None else xk.shape[1]
        block, dead, dmask = self._masks(a, ctx, inputs, t, s, h)
        g = params.get
        out = mha(xq, xk, xv, params["q_weight"], params["k_weight"], params["v_weight"], g("q_bias"),
                  g("k_bias"), g("v_bias"), params["out_weight"], g("out_bias"), heads=h,
                  block=block, dead=dead, dmask=dmask, need_weights=a.attrs["need_weights"])
        return list(out) if a.attrs["need_weights"] else [out]

    # -- ONNX -------------------------------------------------------------------------------
    @lowering(since=24, when=native_fits)
    def lower_native_lengths(self, a, g, inputs):
        return self._lower(a, g, inputs, native=True, nonpad_ok=True)

    @lowering(since=23, when=native_fits)
    def lower_native(self, a, g, inputs):
        return self._lower(a, g, inputs, native=True)

    @lowering()
    def lower_decomposed(self, a, g, inputs):
        return self._lower(a, g, inputs, native=False)

    def _lower(self, a, b, inputs, native: bool, nonpad_ok: bool = False):
        attrs, lay = a.attrs, a.derived
        d, h = attrs["d_model"], attrs["heads"]
        dh = d // h
        dt = a.x.np_dtype
        qscale = 1.0 if native else 1.0 / math.sqrt(dh)     # folded into the query projection
        bias = attrs["bias"]
        W = {n: b.param_value(f"{n}_weight") for n in ("q", "k", "v")}
        B = {n: b.param_value(f"{n}_bias") for n in ("q", "k", "v")} if bias else None
        scaled = {"q": qscale, "k": 1.0, "v": 1.0}

        def project(x, which: list[str]):
            """x @ [W_which]^T (+ b): one MatMul for the packed projections, then Split."""
            wt = np.concatenate([W[n] * scaled[n] for n in which], axis=0).T.astype(dt)
            y = b.op("MatMul", [x, b.const(np.ascontiguousarray(wt), hint="_".join(which) + "_weight_T")])
            if bias:
                bb = np.concatenate([B[n] * scaled[n] for n in which]).astype(dt)
                y = b.op("Add", [y, b.const(bb, hint="_".join(which) + "_bias")])
            if len(which) == 1:
                return [y]
            return b.op("Split", [y, b.ints([d] * len(which), "split")], n_out=len(which), axis=2)

        x = inputs[0]
        if lay.kind == "self":
            q, k, v = project(x, ["q", "k", "v"])
            k_src = x
        elif lay.kind == "memory":
            (q,) = project(x, ["q"])
            k, v = project(inputs[1], ["k", "v"])
            k_src = inputs[1]
        else:
            (q,) = project(x, ["q"])
            (k,) = project(inputs[1], ["k"])
            (v,) = project(inputs[2], ["v"])
            k_src = inputs[1]
        y, w = _lower_core(b, q=q, k=k, v=v, q_src=x, k_src=k_src, native=native, layout="3d", heads=h,
                           t_axis=1, s_axis=1, causal=attrs["causal"], mask_mode=attrs["mask"],
                           mask=inputs[-1] if lay.has_mask else None,
                           mask_dtype=lay.mask.dtype if lay.has_mask else None,
                           need_weights=attrs["need_weights"], np_dtype=dt, nonpad_ok=nonpad_ok)
        out = b.op("MatMul", [y, b.derived("out_weight", lambda w_: w_.T, "T")])
        if bias:
            out = b.op("Add", [out, b.param("out_bias")])
        return [out, w] if attrs["need_weights"] else [out]


class ScaledDotProductAttention(_MaskedAttention):
    """softmax(q k^T * scale + mask) v on (q [N, H, T, dk], k [N, H, S, dk], v [N, H, S, dv]);
    scale 0 means 1/sqrt(dk). No parameters."""
    name = "ScaledDotProductAttention"
    args = (Arg("causal", "bool", False), Arg("mask", "str", "none", choices=MASK_MODES),
            Arg("scale", "float", 0.0, keyword_only=True), Arg("dropout", "float", 0.0, keyword_only=True),
            Arg("need_weights", "bool", False))
    n_inputs = (3, 4)
    samples = (Sample("(q: f32[N, 2, T, 4], k: f32[N, 2, S, 4], v: f32[N, 2, S, 3]) -> ScaledDotProductAttention"),
               Sample("(q: f32[N, 1, T, 4], k: f32[N, 1, T, 4], v: f32[N, 1, T, 4], keep: bool[N, T]) -> "
                      "ScaledDotProductAttention(causal=true, mask='padding', scale=0.3, need_weights=true)"))

    def derive(self, a):
        attrs, in_types = a.attrs, a.in_types
        has_mask = attrs["mask"] != "none"
        if len(in_types) != 3 + has_mask:
            raise self.fail(f"with mask='{attrs['mask']}' it takes (q, k, v{', mask' if has_mask else ''}), "
                            f"got {len(in_types)} inputs", self._count_hint(attrs, in_types, 3))
        q, k, v = in_types[:3]
        for nm, t in (("q", q), ("k", k), ("v", v)):
            if t.rank != 4:
                raise self.fail(f"expects {nm} as [N, heads, length, dim], got {t}")
            self.expect_float(t, nm)
            if t.dtype != q.dtype:
                raise self.fail(f"{nm} has dtype {t.dtype} but q has {q.dtype}")
        for i, what in ((0, "batch"), (1, "heads")):
            for nm, t in (("k", k), ("v", v)):
                _same(self, t.shape[i], q.shape[i], f"the {what} dim of {nm} ({t})", f"q's ({q})")
        _same(self, k.shape[3], q.shape[3], f"k's feature dim ({k})", f"q's ({q})")
        _same(self, k.shape[2], v.shape[2], f"k's length ({k})", f"v's ({v})")
        if not 0.0 <= attrs["dropout"] < 1.0:
            raise self.fail(f"dropout must be in [0, 1), got {attrs['dropout']}")
        if attrs["scale"] < 0:
            raise self.fail(f"scale must be positive (0 = 1/sqrt(dk)), got {attrs['scale']}")
        if attrs["scale"] == 0 and not is_static(q.shape[3]):
            raise self.fail(f"the feature dim of q must be concrete for the default scale, got {q}")
        if has_mask:
            self._mask_type_check(attrs, in_types[3], k, "key")
        return AttentionLayout("qkv", has_mask, q, k, v, in_types[3] if has_mask else None)

    def infer(self, a):
        q, k, v = a.derived.query, a.derived.key, a.derived.value
        out = [q.with_shape(q.shape[:3] + (v.shape[3],))]
        if a.attrs["need_weights"]:
            out.append(q.with_shape(q.shape[:3] + (k.shape[2],)))
        return out

    def _scale(self, a) -> float:
        return a.attrs["scale"] or 1.0 / math.sqrt(int(a.derived.query.shape[3]))

    def macs(self, a, in_shapes, out_shapes):
        n, h, t, dk = in_shapes[0]
        s, dv = in_shapes[2][2], in_shapes[2][3]
        return n * h * t * s * (dk + dv)

    def forward(self, a, ctx, inputs, params):
        q, k, v = inputs[:3]
        block, dead, dmask = self._masks(a, ctx, inputs, q.shape[2], k.shape[2], q.shape[1])
        out = sdpa(q, k, v, scale=self._scale(a), block=block, dead=dead, dmask=dmask,
                   need_weights=a.attrs["need_weights"])
        return list(out) if a.attrs["need_weights"] else [out]

    @lowering(since=24, when=native_fits)
    def lower_native_lengths(self, a, g, inputs):
        return self._lower(a, g, inputs, native=True, nonpad_ok=True)

    @lowering(since=23, when=native_fits)
    def lower_native(self, a, g, inputs):
        return self._lower(a, g, inputs, native=True)

    @lowering()
    def lower_decomposed(self, a, g, inputs):
        return self._lower(a, g, inputs, native=False)

    def _lower(self, a, b, inputs, native: bool, nonpad_ok: bool = False):
        lay, attrs = a.derived, a.attrs
        q, k, v = inputs[:3]
        y, w = _lower_core(b, q=q, k=k, v=v, q_src=q, k_src=k, layout="4d", native=native, heads=None,
                           t_axis=2, s_axis=2, causal=attrs["causal"], mask_mode=attrs["mask"],
                           mask=inputs[3] if lay.has_mask else None,
                           mask_dtype=lay.mask.dtype if lay.has_mask else None,
                           need_weights=attrs["need_weights"], scale=self._scale(a),
                           np_dtype=a.x.np_dtype, nonpad_ok=nonpad_ok)
        return [y, w] if attrs["need_weights"] else [y]


class AdditiveAttention(_MaskedAttention):
    """Bahdanau attention: (query [N, T, dq], keys [N, S, dk]) -> context [N, T, dk].

    score[n, t, s] = v . tanh(W_q q[n, t] + W_k k[n, s] + b), weights = softmax over s,
    context = sum_s weights * k[n, s]. Parameters: query_weight [units, dq], key_weight
    [units, dk], bias [units] (one bias: a second one would be redundant), v [units].
    """
    name = "AdditiveAttention"
    args = (Arg("units", "int"), Arg("mask", "str", "none", choices=MASK_MODES),
            Arg("need_weights", "bool", False))
    n_inputs = (2, 3)
    samples = (Sample("(q: f32[N, T, 3], k: f32[N, S, 4]) -> AdditiveAttention(5)"),
               Sample("(q: f32[N, 2, 3], k: f32[N, S, 4], n: i64[N]) -> "
                      "AdditiveAttention(3, mask='lengths', need_weights=true)", values={"n": (1, 5)}))

    def derive(self, a):
        attrs, in_types = a.attrs, a.in_types
        has_mask = attrs["mask"] != "none"
        if len(in_types) != 2 + has_mask:
            raise self.fail(f"with mask='{attrs['mask']}' it takes (query, keys{', mask' if has_mask else ''}), "
                            f"got {len(in_types)} input{'s' if len(in_types) != 1 else ''}",
                            self._count_hint(attrs, in_types, 2)
                            or ("pipe a tuple: (decoder_states, encoder_states) -> AdditiveAttention(units)"
                                if len(in_types) == 1 else None))
        q, k = in_types[:2]
        for nm, t in (("query", q), ("keys", k)):
            if t.rank != 3:
                raise self.fail(f"expects {nm} as [N, length, features], got {t}")
            self.expect_float(t, nm)
            if not is_static(t.shape[-1]):
                raise self.fail(f"the feature dim of {nm} must be concrete, got {t}")
        if k.dtype != q.dtype:
            raise self.fail(f"keys have dtype {k.dtype} but the query has {q.dtype}")
        _same(self, k.shape[0], q.shape[0], f"the batch dim of the keys ({k})", f"the query's ({q})")
        if attrs["units"] <= 0:
            raise self.fail(f"units must be positive, got {attrs['units']}")
        if has_mask:
            self._mask_type_check(attrs, in_types[2], k, "keys")
        return AttentionLayout("qkv", has_mask, q, k, k, in_types[2] if has_mask else None)

    def infer(self, a):
        q, k = a.derived.query, a.derived.key
        out = [q.with_shape(q.shape[:2] + (k.shape[2],))]
        if a.attrs["need_weights"]:
            out.append(q.with_shape(q.shape[:2] + (k.shape[1],)))
        return out

    def params(self, a):
        u = a.attrs["units"]
        dq, dk = int(a.derived.query.shape[-1]), int(a.derived.key.shape[-1])
        return {"query_weight": ParamSpec((u, dq), "uniform", bound=1 / math.sqrt(dq), fan_in=dq, fan_out=u),
                "key_weight": ParamSpec((u, dk), "uniform", bound=1 / math.sqrt(dk), fan_in=dk, fan_out=u),
                "bias": ParamSpec((u,), "zeros"),
                "v": ParamSpec((u,), "uniform", bound=1 / math.sqrt(u), fan_in=u, fan_out=1)}

    def macs(self, a, in_shapes, out_shapes):
        n, t, dq = in_shapes[0]
        s, dk = in_shapes[1][1], in_shapes[1][2]
        u = a.attrs["units"]
        return n * t * u * dq + n * s * u * dk + n * t * s * (u + dk)

    def forward(self, a, ctx, inputs, params):
        q, k = inputs[:2]
        block, dead, _ = self._masks(a, ctx, inputs, q.shape[1], k.shape[1], 1, rank=3)
        out = additive_attention(q, k, params["query_weight"], params["key_weight"], params["bias"], params["v"],
                                 block=block, dead=dead, need_weights=a.attrs["need_weights"])
        return list(out) if a.attrs["need_weights"] else [out]

    def lower(self, a, b, inputs):
        attrs = a.attrs
        q, k = inputs[:2]
        dt = a.x.np_dtype
        qp = b.op("MatMul", [q, b.derived("query_weight", lambda w: w.T, "T")])             # [N, T, u]
        kp = b.op("Add", [b.op("MatMul", [k, b.derived("key_weight", lambda w: w.T, "T")]), b.param("bias")])
        e = b.op("Tanh", [b.op("Add", [b.op("Unsqueeze", [qp, b.ints([2], "axes")]),
                                       b.op("Unsqueeze", [kp, b.ints([1], "axes")])])])  # [N, T, S, u]
        scores = b.op("MatMul", [e, b.param("v")])                                         # [N, T, S]
        allow = None
        if attrs["mask"] != "none":
            m = inputs[2]
            keep = m if attrs["mask"] == "padding" else _keep_from_lengths(b, m, a.derived.mask.dtype, k, 1)
            allow = b.op("Unsqueeze", [keep, b.ints([1], "axes")])                          # [N, 1, S]
            scores = b.op("Where", [allow, scores, b.const(np.asarray(np.finfo(dt).min, dt), hint="neg")])
        p = b.op("Softmax", [scores], axis=-1)
        if allow is not None:
            p = b.op("Where", [allow, p, b.const(np.asarray(0.0, dt), hint="zero_f")])
        ctx = b.op("MatMul", [p, k])
        return [ctx, p] if attrs["need_weights"] else [ctx]
