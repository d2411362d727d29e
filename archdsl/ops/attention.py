"""Attention: MultiHeadAttention, ScaledDotProductAttention, AdditiveAttention (Bahdanau),
RotaryEmbedding, and Swin's window biases (RelativePositionBias2d, ShiftedWindowMask).

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
      + attn_bias=true one more float input after the query/key/value inputs (before a mask),
                       added to the scaled scores: [H, T, S] relative positions or ALiBi, [T, S],
                       [N, H, T, S], ... (each dim 1 or the scores' size); a 4-D bias whose first
                       dim P is neither 1 nor the batch repeats every P rows of the batch (Swin's
                       shifted-window mask [windows, 1, T, T] over a batch of windows).
      kv_heads=k       grouped-query attention: k_weight/v_weight have k * d_model/heads rows;
                       query head i reads key/value head i // (heads/k) (1: multi-query).
      rotary=true      queries and keys rotated by position (RoPE; pairs (i, i + d/2), base
                       rope_theta), queries at 0..T-1, keys at 0..S-1.
      scale=s          the scores' factor instead of 1/sqrt(d_model/heads) (T5: 1).
    ScaledDotProductAttention: (q [N, H, T, dk], k [N, H, S, dk], v [N, H, S, dv]) plus the same
      optional bias (attn_bias=true) and last mask input; enable_gqa=true lets k and v have fewer
      heads than q; no parameters.
    RotaryEmbedding: x [N, H, T, d] -> the same, rotated by position (for attention by hand).
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
bias=false; with kv_heads, k and v have kv_heads * d/heads rows, as Llama's k_proj/v_proj). Counts therefore match nn.MultiheadAttention, BERT and GPT-2
(4 d^2 + 4 d with biases). Initialisation as PyTorch: Xavier-uniform over the packed
projection, zero biases, out_weight U(+-1/sqrt(d)).

ONNX: at opset >= 23 the attention core lowers to the native `Attention` op (3-D inputs with
q_num_heads and kv_num_heads for MultiHeadAttention, 4-D for ScaledDotProductAttention), a
float bias as its attn_mask, rotary=true to `RotaryEmbedding` (3-D, num_heads; the cos/sin
tables computed in the graph for the runtime length and expanded over the batch); below 23 to
MatMul / Softmax (key/value heads repeated for their query groups with Expand, the bias added
to the scores, a periodic bias tiled to the batch) and Split / Mul / Concat rotations. A float
bias beside a boolean mask (padding, or lengths that become one) lowers to the decomposition.
Findings with ONNX Runtime 1.31 (CPU), each covered by a parity test:
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

from ..autodiff.attention import (
    MASK_MODES, additive_attention, dropout_mask, keep_from, mask_arrays, mha, rope_tables, rotary, sdpa,
)
from ..autodiff import functional as F
from ..autodiff.tensor import Tensor
from ..backends.torch.lazy import TF, TK
from ..errors import ArchError
from ..ir.graph import ParamSpec
from ..ir.initializers import make as make_init
from ..ir.types import INT_DTYPES, TensorType, is_static
from .base import Arg, Op, Sample, explain_params, explain_shape, lowering


# =================================================================================================
# ONNX helpers
# =================================================================================================

def _keep_from_lengths(b, lengths: str, dtype: str, key_src: str, key_axis: int) -> str:
    """[N, S] bool from lengths [N]: arange(S) < lengths[:, None]."""
    if dtype != "i64":
        lengths = b.op("Cast", [lengths], to=7)
    rs = b.op("Unsqueeze", [b.arange(key_src, key_axis), b.ints([0], "axes")])
    return b.op("Less", [rs, b.op("Unsqueeze", [lengths, b.ints([1], "axes")])])


def _causal_allow(b, q_src: str, q_axis: int, k_src: str, k_axis: int) -> str:
    """[T, S] bool: key j <= query i."""
    rt = b.op("Unsqueeze", [b.arange(q_src, q_axis), b.ints([1], "axes")])
    rs = b.op("Unsqueeze", [b.arange(k_src, k_axis), b.ints([0], "axes")])
    return b.op("GreaterOrEqual", [rt, rs])


def native_fits(a) -> bool:
    """Whether ONNX's native Attention (opset >= 23) fits the application. ONNX's shape inference
    gives qk_matmul_output a last dim of 0 when the key length is symbolic (it reads dim_value of
    a dim_param) and ORT then warns on every run: with a dynamic key length, need_weights lowers
    to the decomposition instead, which yields the weights anyway. A float bias is the native
    op's attn_mask, so it cannot be combined there with a boolean mask (padding, or lengths made
    into one): those lower to the decomposition."""
    if a.attrs["need_weights"] and not is_static(a.derived.key.shape[-2]):
        return False
    return a.derived.bias is None or a.attrs["mask"] == "none"


def native_fits_24(a) -> bool:
    """At opset >= 24 lengths without causal masking are nonpad_kv_seqlen, beside a float bias."""
    if a.attrs["mask"] == "lengths" and not a.attrs["causal"] and a.derived.bias is not None:
        return not (a.attrs["need_weights"] and not is_static(a.derived.key.shape[-2]))
    return native_fits(a)


def rope_cos_sin(b, src: str, axis: int, dim: int, theta: float, np_dtype) -> tuple[str, str]:
    """[L, dim/2] cos and sin of the rotary angles for positions 0..L-1, L the runtime length of
    dim `axis` of src (computed in the graph: the length may be symbolic)."""
    inv = (1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)).astype(np_dtype)
    pos = b.op("Cast", [b.arange(src, axis)], to=onnx_dtype(np_dtype))
    ang = b.op("Mul", [b.op("Unsqueeze", [pos, b.ints([1], "axes")]), b.const(inv, hint="inv_freq")])
    return b.op("Cos", [ang]), b.op("Sin", [ang])


def rope_native(b, x: str, cos: str, sin: str, interleaved: bool, heads: int | None) -> str:
    """ONNX's RotaryEmbedding (opset >= 23) on x [N, T, heads*d] (heads given) or [N, H, T, d],
    with the [T, d/2] tables expanded over the batch (its caches without position ids)."""
    lead = b.sizes(x, 3 if heads is not None else 4, {0: 0}, 3)        # [N, 1, 1]
    c3, s3 = (b.op("Expand", [b.op("Unsqueeze", [t, b.ints([0], "axes")]), lead]) for t in (cos, sin))
    return b.op("RotaryEmbedding", [x, c3, s3], interleaved=1 if interleaved else None, num_heads=heads)


def rope_decomposed(b, x: str, cos: str, sin: str, interleaved: bool, heads: int | None, dim: int) -> str:
    """The same rotation from Split / Mul / Concat: on [N, H, T, d], or on [N, T, heads*d] seen as
    [N, T, heads, d] (the tables then broadcast as [T, 1, d/2])."""
    if heads is not None:
        x4 = b.op("Reshape", [x, b.ints([0, 0, heads, dim])])
        cos, sin = (b.op("Unsqueeze", [t, b.ints([1], "axes")]) for t in (cos, sin))
    else:
        x4 = x
    if interleaved:                      # pairs (2i, 2i + 1): [.., d/2, 2]
        xp = b.op("Reshape", [x4, b.ints([0, 0, 0, dim // 2, 2])])
        x1, x2 = b.op("Split", [xp, b.ints([1, 1], "split")], n_out=2, axis=-1)
        cos, sin = (b.op("Unsqueeze", [t, b.ints([-1], "axes")]) for t in (cos, sin))
    else:                                # pairs (i, i + d/2)
        x1, x2 = b.op("Split", [x4, b.ints([dim // 2, dim // 2], "split")], n_out=2, axis=-1)
    y1 = b.op("Sub", [b.op("Mul", [x1, cos]), b.op("Mul", [x2, sin])])
    y2 = b.op("Add", [b.op("Mul", [x2, cos]), b.op("Mul", [x1, sin])])
    y = b.op("Concat", [y1, y2], axis=-1)
    if interleaved:
        y = b.op("Reshape", [y, b.ints([0, 0, 0, dim], "shape")])
    return b.op("Reshape", [y, b.ints([0, 0, -1])]) if heads is not None else y


def onnx_dtype(np_dtype) -> int:
    return {np.dtype(np.float32): 1, np.dtype(np.float16): 10, np.dtype(np.float64): 11}[np.dtype(np_dtype)]


def _bias_4d(b, bias: str, rank: int) -> str:
    """The bias with leading 1s up to [B, H, T, S]."""
    return bias if rank == 4 else b.op("Unsqueeze", [bias, b.ints(list(range(4 - rank)), "axes")])


def _bias_to_batch(b, bias4: str, q_src: str, q_rank: int, period: int) -> str:
    """A periodic bias [P, H, T, S] tiled to the batch: [N, H, T, S] (N a multiple of P). Tile's
    repeats [N/P, 1, 1, 1] are the Shape of the query's batch column reshaped to [N/P, P] and cut
    to its first column (device ops; no arithmetic on a Shape output: builder.sizes)."""
    rest = list(range(1, q_rank))
    col = b.op("Slice", [q_src, b.ints([0] * len(rest), "zeros"), b.ints([1] * len(rest), "ones"),
                         b.ints(rest, "axes")])
    col = b.op("Reshape", [col, b.ints([-1, period], "by_period")])
    col = b.op("Slice", [col, b.ints([0], "zeros"), b.ints([1], "ones"), b.ints([1], "axes")])
    reps = b.op("Shape", [b.op("Reshape", [col, b.ints([-1, 1, 1, 1], "reps")])])
    return b.op("Tile", [bias4, reps])


def _lower_core(b, *, native, q, k, v, q_src, k_src, layout, heads, t_axis, s_axis, causal, mask_mode,
                mask, mask_dtype, need_weights, scale=None, np_dtype=np.float32, nonpad_ok=False,
                kv_heads=None, bias=None, bias_rank=0, period=None, head_dims=None):
    """The attention core. layout '3d': q [N, T, H*dk], k/v [N, S, KV*d*] (q already scaled on
    the decomposition path); '4d': [N, H, T, dk], [N, KV, S, d*] etc. nonpad_ok: the native op
    takes lengths as `nonpad_kv_seqlen` (opset >= 24). kv_heads < heads: grouped-query (the
    decomposition repeats each key/value head for its queries; head_dims (dk, dv) are then
    needed on the 4-D layout, where heads is None without grouping). bias: a float input added to the (scaled) scores. Returns
    (y, weights or None) with y in the same layout as q."""
    kvh = kv_heads or heads
    if bias is not None:
        bias = _bias_4d(b, bias, bias_rank)
        if period:
            bias = _bias_to_batch(b, bias, q_src, 3 if layout == "3d" else 4, period)
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
            q_rank = 3 if layout == "3d" else 4
            attn_mask = b.op("Expand", [k4, b.sizes(q_src, q_rank, {t_axis: 2}, 4)])   # [1, 1, T, 1]
        if bias is not None:
            attn_mask = bias
        ins = [q, k, v, attn_mask, "", "", nonpad]
        while ins and ins[-1] == "":
            ins.pop()
        attrs = {"is_causal": 1 if causal else None}
        if layout == "3d":
            attrs.update(q_num_heads=heads, kv_num_heads=kvh)
        if scale is not None:
            attrs["scale"] = float(scale)
        if need_weights:
            base = b.fresh(f"{b._prefix()}/Attention")
            y, w = b.fresh(f"{base}:0"), b.fresh(f"{base}:3")
            b.op("Attention", ins, n_out=4, outputs=[y, "", "", w], qk_matmul_output_mode=3, **attrs)
            return y, w
        return b.op("Attention", ins, **attrs), None

    # ---- decomposition: MatMul / Softmax ----
    group = heads // kvh if layout == "3d" else None
    if layout == "3d":
        def repeat(x):      # [N, S, KV, d] -> [N, S, H, d]: each key/value head for its query heads
            if kvh == heads:
                return x
            x = b.op("Expand", [b.op("Unsqueeze", [x, b.ints([3], "axes")]), b.ints([1, 1, 1, group, 1], "group")])
            return b.op("Reshape", [x, b.ints([0, 0, heads, -1])])
        qh = b.op("Transpose", [b.op("Reshape", [q, b.ints([0, 0, heads, -1])])], perm=[0, 2, 1, 3])
        kt = b.op("Transpose", [repeat(b.op("Reshape", [k, b.ints([0, 0, kvh, -1])]))], perm=[0, 2, 3, 1])
        vh = b.op("Transpose", [repeat(b.op("Reshape", [v, b.ints([0, 0, kvh, -1])]))], perm=[0, 2, 1, 3])
    else:
        qh = q if scale is None or scale == 1.0 else \
            b.op("Mul", [q, b.const(np.asarray(scale, np_dtype), hint="scale")])
        if kvh != heads:                 # grouped: [N, KV, S, d] -> [N, H, S, d]
            def repeat(x, d):
                x = b.op("Expand", [b.op("Unsqueeze", [x, b.ints([2], "axes")]),
                                    b.ints([1, 1, heads // kvh, 1, 1], "group")])
                return b.op("Reshape", [x, b.ints([0, heads, -1, d])])
            k, v = repeat(k, head_dims[0]), repeat(v, head_dims[1])
        kt = b.op("Transpose", [k], perm=[0, 1, 3, 2])
        vh = v
    scores = b.op("MatMul", [qh, kt])                                        # [N, H, T, S]
    if bias is not None:
        scores = b.op("Add", [scores, bias])
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
    bias: TensorType | None = None      # the additive float bias input (attn_bias=true)
    period: int | None = None           # the bias's first dim repeats every `period` batch rows
    kv_heads: int | None = None         # key/value heads (grouped-query attention)

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

    def _bias_check(self, bt: TensorType, q: TensorType, heads, t, s_len) -> int | None:
        """Check the additive bias input against the scores [N, heads, T, S]; returns the batch
        period (a static first dim that is neither 1 nor the batch: it repeats every P rows)."""
        if not bt.is_float or bt.dtype != q.dtype:
            raise self.fail(f"attn_bias=true expects a float bias input ({q.dtype}) added to the scores, got {bt}",
                            "a boolean keep mask goes last with mask='padding'" if bt.dtype == "bool" else None)
        if not 2 <= bt.rank <= 4:
            raise self.fail(f"the attention bias must broadcast against the scores [N, heads, T, S] "
                            f"(2 to 4 dims, e.g. [heads, T, S]), got {bt}")
        period = None
        for have, want, what in zip(reversed(bt.shape), (s_len, t, heads, q.shape[0]), ("S", "T", "heads", "N")):
            if have == 1 or have == want:
                continue
            if what == "N" and is_static(have) and (not is_static(want) or want % have == 0):
                period = int(have)
                continue
            raise self.fail(f"the bias {bt} does not broadcast against the scores [N, heads, T, S] = "
                            f"[{q.shape[0]}, {heads}, {t}, {s_len}]: its {what} dim is {have}",
                            "each bias dim is 1 or the scores' size (a first dim P that divides the batch "
                            "repeats every P rows)" + ("; a bias with a fixed length needs inputs declared with "
                                                       "that length" if is_static(have) != is_static(want) else ""))
        return period

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

    @staticmethod
    def _torch_keep(a, ctx, inputs, s):
        """The [N, S] keep mask of a PyTorch forward (None without a mask input); lengths are
        checked as the NumPy engine checks them (not while tracing for export)."""
        if not a.derived.has_mask:
            return None
        if a.attrs["mask"] == "lengths" and not ctx.tracing:
            keep_from("lengths", inputs[-1].cpu().numpy(), s)
        return TK.keep_mask(inputs[-1], a.attrs["mask"], s)


class _DotProductLowerings:
    """The three lowerings of the dot-product ops: ONNX's native Attention from opset 24 (lengths
    as nonpad_kv_seqlen) and 23, the MatMul/Softmax decomposition below; `_lower` builds each."""

    @lowering(since=24, when=native_fits_24)
    def lower_native_lengths(self, a, g, inputs):
        return self._lower(a, g, inputs, native=True, nonpad_ok=True)

    @lowering(since=23, when=native_fits)
    def lower_native(self, a, g, inputs):
        return self._lower(a, g, inputs, native=True)

    @lowering()
    def lower_decomposed(self, a, g, inputs):
        return self._lower(a, g, inputs, native=False)


def _same(op, a, b, what_a, what_b):
    if a != b and (is_static(a) == is_static(b)):
        raise op.fail(f"{what_a} does not match {what_b}: {a} vs {b}")


class MultiHeadAttention(_DotProductLowerings, _MaskedAttention):
    """Multi-head attention as nn.MultiheadAttention (batch first): self-attention on x, or
    cross-attention on (query, memory) or (query, key, value), with causal, padding and length
    masks. `kdim`/`vdim` are the feature sizes of the key and value inputs (default: the
    memory's, d_model for self-attention); the heads split d_model; the module docstring has the
    input conventions.

    For today's models: `kv_heads` key/value heads (grouped-query attention; 1 is multi-query;
    query head i reads key/value head i // (heads/kv_heads), as Llama's repeat_kv), `scale`
    instead of 1/sqrt(d_model/heads) (T5 uses 1), `attn_bias=true` for one more float input,
    after the key/value inputs and before a mask, added to the scores (relative positions,
    ALiBi, shifted-window masks; it broadcasts against [N, heads, T, S], or its first dim P
    repeats every P rows of the batch), and `rotary=true` to rotate queries and keys by their
    positions (RoPE, pairs (i, i + d/2) as Hugging Face's Llama; base `rope_theta`)."""
    name = "MultiHeadAttention"
    args = (Arg("d_model", "int"), Arg("heads", "int"), Arg("kdim", "int", None), Arg("vdim", "int", None),
            Arg("cross", "bool", False), Arg("causal", "bool", False),
            Arg("mask", "str", "none", choices=MASK_MODES), Arg("dropout", "float", 0.0, keyword_only=True),
            Arg("bias", "bool", True), Arg("need_weights", "bool", False),
            Arg("kv_heads", "int", None, keyword_only=True, doc="key/value heads (grouped-query); none: heads"),
            Arg("scale", "float", None, keyword_only=True, doc="multiplies the scores; none: 1/sqrt(head dim)"),
            Arg("attn_bias", "bool", False, keyword_only=True, doc="one more float input added to the scores"),
            Arg("rotary", "bool", False, keyword_only=True, doc="rotary position embeddings on queries and keys"),
            Arg("rope_theta", "float", 10000.0, keyword_only=True, doc="the rotary base"))
    n_inputs = (1, 5)
    samples = (Sample("x: f32[N, T, 8] -> MultiHeadAttention(8, 2, causal=true)"),
               Sample("(q: f32[N, T, 8], m: f32[N, S, 6], keep: bool[N, S]) -> "
                      "MultiHeadAttention(8, 4, cross=true, mask='padding', need_weights=true)"),
               Sample("(q: f32[N, T, 4], k: f32[N, S, 3], v: f32[N, S, 5], n: i64[N]) -> "
                      "MultiHeadAttention(4, 2, cross=true, mask='lengths', bias=false)", values={"n": (1, 5)}),
               Sample("(x: f32[N, T, 4], n: i32[N]) -> MultiHeadAttention(4, 1, causal=true, mask='lengths')",
                      values={"n": (1, 6)}),
               Sample("(x: f32[N, T, 8], rel: f32[4, T, T]) -> MultiHeadAttention(8, 4, causal=true, kv_heads=2, "
                      "attn_bias=true, rotary=true, scale=0.5, bias=false)"),
               Sample("(q: f32[N, T, 8], m: f32[N, S, 6], w: f32[2, 1, T, S], keep: bool[N, S]) -> "
                      "MultiHeadAttention(8, 2, cross=true, mask='padding', kv_heads=1, attn_bias=true, rotary=true)"))

    # -- the input convention --------------------------------------------------------------
    def _kind(self, attrs, n_in: int) -> tuple[str, bool]:
        """('self' | 'memory' | 'kv', has_mask) for n_in inputs, or a clear error."""
        has_mask = attrs["mask"] != "none"
        n_float = n_in - has_mask - attrs["attn_bias"]
        mask_name = {"padding": ", keep: bool[N, S]", "lengths": ", lengths: i64[N]"}.get(attrs["mask"], "")
        if attrs["attn_bias"]:
            mask_name = ", bias" + mask_name
        if not attrs["cross"]:
            if n_float == 1:
                return "self", has_mask
            want = f"(x: [N, T, d_model]{mask_name.replace('S]', 'T]')})"
        else:
            if n_float in (2, 3):
                return ("memory" if n_float == 2 else "kv"), has_mask
            want = f"(query, memory{mask_name}) or (query, key, value{mask_name})"
        flags = f"cross={'true' if attrs['cross'] else 'false'}, mask='{attrs['mask']}'" + \
            (", attn_bias=true" if attrs["attn_bias"] else "")
        raise self.fail(f"with {flags} it takes {want}, got {n_in} input{'s' if n_in != 1 else ''}", None)

    def derive(self, a):
        attrs, in_types = a.attrs, a.in_types
        try:
            kind, has_mask = self._kind(attrs, len(in_types))
        except Exception as e:
            hint = self._count_hint(attrs, in_types, 1 if not attrs["cross"] else 2)
            if hint is None and not attrs["cross"] and len(in_types) >= 2 and in_types[1].is_float:
                hint = ("for an additive bias of the scores add attn_bias=true" if in_types[1].rank == 3 and
                        len(in_types) == 2 and in_types[1].shape[-1] != in_types[0].shape[-1]
                        else "for cross-attention on (query, memory) add cross=true")
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
        kvh = h if attrs["kv_heads"] is None else attrs["kv_heads"]
        if kvh < 1 or h % kvh:
            raise self.fail(f"kv_heads={kvh} must divide heads={h} (each key/value head serves heads/kv_heads "
                            f"query heads)", f"choose kv_heads among {', '.join(str(i) for i in range(1, h + 1) if h % i == 0)}"
                            if h <= 1024 else None)
        if attrs["rotary"] and (d // h) % 2:
            raise self.fail(f"rotary embeddings turn pairs of features: the head dim d_model/heads = {d // h} must be even")
        if attrs["rope_theta"] <= 0:
            raise self.fail(f"rope_theta must be positive, got {attrs['rope_theta']}")
        if attrs["scale"] is not None and not attrs["scale"] > 0:
            raise self.fail(f"scale must be positive, got {attrs['scale']}")
        if not 0.0 <= attrs["dropout"] < 1.0:
            raise self.fail(f"dropout must be in [0, 1), got {attrs['dropout']}")
        n_float = len(in_types) - has_mask - attrs["attn_bias"]
        floats = in_types[:n_float]
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
        bias_t, period = None, None
        if attrs["attn_bias"]:
            bias_t = in_types[n_float]
            period = self._bias_check(bias_t, q, h, q.shape[1], key.shape[1])
        if has_mask:
            self._mask_type_check(attrs, in_types[-1], key, "key" if kind != "memory" else "memory")
        return AttentionLayout(kind, has_mask, q, key, val, in_types[-1] if has_mask else None, bias_t, period, kvh)

    def infer(self, a):
        lay = a.derived
        q = lay.query
        out = [q]
        if a.attrs["need_weights"]:
            out.append(TensorType(q.dtype, (q.shape[0], a.attrs["heads"], q.shape[1], lay.key.shape[1])))
        return out

    def params(self, a):
        lay, d, h = a.derived, a.attrs["d_model"], a.attrs["heads"]
        dkv = lay.kv_heads * (d // h)
        kdim, vdim = int(lay.key.shape[-1]), int(lay.value.shape[-1])
        if kdim == d and vdim == d and dkv == d:   # PyTorch: xavier_uniform over the packed [3d, d] in_proj_weight
            packed = math.sqrt(6.0 / (d + 3 * d))
            p = {n: ParamSpec((d, d), "uniform", bound=packed, fan_in=d, fan_out=d)
                 for n in ("q_weight", "k_weight", "v_weight")}
        else:
            p = {n: ParamSpec((rows, f), "xavier_uniform", fan_in=f, fan_out=rows)
                 for n, rows, f in (("q_weight", d, d), ("k_weight", dkv, kdim), ("v_weight", dkv, vdim))}
        p["out_weight"] = ParamSpec((d, d), "uniform", bound=1.0 / math.sqrt(d), fan_in=d, fan_out=d)
        if a.attrs["bias"]:
            for n, rows in (("q_bias", d), ("k_bias", dkv), ("v_bias", dkv), ("out_bias", d)):
                p[n] = ParamSpec((rows,), "zeros")
        return p

    def macs(self, a, in_shapes, out_shapes):
        lay = a.derived
        floats = in_shapes[:lay.n_float]
        n, t, d = floats[0]
        dkv = lay.kv_heads * (d // a.attrs["heads"])
        key = floats[1] if lay.kind != "self" else floats[0]
        val = floats[-1] if lay.kind != "self" else floats[0]
        s = key[1]
        proj = n * t * d * d + n * s * dkv * key[2] + n * s * dkv * val[2] + n * t * d * d
        return proj + 2 * n * t * s * d

    def explain(self, a):
        lay, attrs = a.derived, a.attrs
        d, h, kvh = attrs["d_model"], attrs["heads"], lay.kv_heads
        src = {"self": "x", "memory": "the memory", "kv": "key and value"}[lay.kind]
        scale = f"{attrs['scale']:g}" if attrs["scale"] is not None else f"1/sqrt({d // h})"
        kv = "" if kvh == h else (f"; {kvh} key/value head{'s' if kvh > 1 else ''}, each shared by "
                                  f"{h // kvh} query heads")
        lines = [explain_shape(a),
                 f"{h} heads of {d} / {h} = {d // h} features: q from the query, k and v from {src}{kv}; "
                 f"softmax(q k^T \u00b7 {scale}{' + bias' if lay.bias is not None else ''}) v per head, heads "
                 f"concatenated, then out_weight"]
        if attrs["rotary"]:
            lines.append(f"rotary: q and k turned by position \u00b7 {attrs['rope_theta']:g}^(\u22122i/{d // h}) "
                         f"in feature pairs (i, i + {d // h // 2})")
        return lines + explain_params(a.params)

    # -- NumPy ------------------------------------------------------------------------------
    def forward(self, a, ctx, inputs, params):
        lay, attrs, h = a.derived, a.attrs, a.attrs["heads"]
        xq = inputs[0]
        xk = inputs[1] if lay.kind != "self" else None
        xv = inputs[2] if lay.kind == "kv" else None
        t = xq.shape[1]
        s = t if xk is None else xk.shape[1]
        block, dead, dmask = self._masks(a, ctx, inputs, t, s, h)
        rope = (rope_tables(max(t, s), attrs["d_model"] // h, float(attrs["rope_theta"]), np.dtype(xq.dtype))
                if attrs["rotary"] else None)
        g = params.get
        out = mha(xq, xk, xv, params["q_weight"], params["k_weight"], params["v_weight"], g("q_bias"),
                  g("k_bias"), g("v_bias"), params["out_weight"], g("out_bias"),
                  inputs[lay.n_float] if lay.bias is not None else None, heads=h, kv_heads=lay.kv_heads,
                  scale=attrs["scale"], rope=rope, period=lay.period, block=block, dead=dead, dmask=dmask,
                  need_weights=attrs["need_weights"])
        return list(out) if attrs["need_weights"] else [out]

    def torch_forward(self, a, ctx, inputs, params):
        lay, attrs, p = a.derived, a.attrs, params.get
        h, dh = attrs["heads"], attrs["d_model"] // attrs["heads"]
        xq = inputs[0]
        xk = inputs[1] if lay.kind != "self" else xq
        xv = inputs[2] if lay.kind == "kv" else xk
        q, k, v = (TF.linear(x, params[f"{w}_weight"], p(f"{w}_bias")).unflatten(-1, (heads, dh)).transpose(1, 2)
                   for x, w, heads in ((xq, "q", h), (xk, "k", lay.kv_heads), (xv, "v", lay.kv_heads)))
        if attrs["rotary"]:
            q, k = TK.rotary(q, theta=attrs["rope_theta"]), TK.rotary(k, theta=attrs["rope_theta"])
        drop = ctx.dropout_mask((xq.shape[0], h, xq.shape[1], xk.shape[1]), attrs["dropout"], q)
        res = TK.attention(q, k, v, bias=inputs[lay.n_float] if lay.bias is not None else None,
                           keep=self._torch_keep(a, ctx, inputs, xk.shape[1]), causal=attrs["causal"],
                           scale=attrs["scale"] if attrs["scale"] is not None else 1.0 / math.sqrt(dh),
                           period=lay.period, drop=drop, need_weights=attrs["need_weights"])
        o = (res[0] if attrs["need_weights"] else res).transpose(1, 2).flatten(2)
        out = TF.linear(o, params["out_weight"], p("out_bias"))
        return [out, res[1]] if attrs["need_weights"] else [out]

    # -- ONNX -------------------------------------------------------------------------------

    def _lower(self, a, b, inputs, native: bool, nonpad_ok: bool = False):
        attrs, lay = a.attrs, a.derived
        d, h, kvh = attrs["d_model"], attrs["heads"], lay.kv_heads
        dh = d // h
        dkv = kvh * dh
        dt = a.x.np_dtype
        scale = attrs["scale"] if attrs["scale"] is not None else 1.0 / math.sqrt(dh)
        qscale = 1.0 if native else scale                   # folded into the query projection
        bias = attrs["bias"]
        W = {n: b.param_value(f"{n}_weight") for n in ("q", "k", "v")}
        B = {n: b.param_value(f"{n}_bias") for n in ("q", "k", "v")} if bias else None
        scaled = {"q": qscale, "k": 1.0, "v": 1.0}
        width = {"q": d, "k": dkv, "v": dkv}

        def project(x, which: list[str]):
            """x @ [W_which]^T (+ b): one MatMul for the packed projections, then Split."""
            wt = np.concatenate([W[n] * scaled[n] for n in which], axis=0).T.astype(dt)
            y = b.op("MatMul", [x, b.const(np.ascontiguousarray(wt), hint="_".join(which) + "_weight_T")])
            if bias:
                bb = np.concatenate([B[n] * scaled[n] for n in which]).astype(dt)
                y = b.op("Add", [y, b.const(bb, hint="_".join(which) + "_bias")])
            if len(which) == 1:
                return [y]
            return b.op("Split", [y, b.ints([width[n] for n in which], "split")], n_out=len(which), axis=2)

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
        if attrs["rotary"]:       # queries at positions 0..T-1, keys at 0..S-1

            tables = {}

            def rotate(y, src, heads_):
                if src not in tables:
                    tables[src] = rope_cos_sin(b, src, 1, dh, float(attrs["rope_theta"]), dt)
                cos, sin = tables[src]
                return (rope_native(b, y, cos, sin, False, heads_) if native else
                        rope_decomposed(b, y, cos, sin, False, heads_, dh))
            q, k = rotate(q, x, h), rotate(k, k_src, kvh)
        y, w = _lower_core(b, q=q, k=k, v=v, q_src=x, k_src=k_src, native=native, layout="3d", heads=h,
                           t_axis=1, s_axis=1, causal=attrs["causal"], mask_mode=attrs["mask"],
                           mask=inputs[-1] if lay.has_mask else None,
                           mask_dtype=lay.mask.dtype if lay.has_mask else None,
                           need_weights=attrs["need_weights"], np_dtype=dt, nonpad_ok=nonpad_ok,
                           scale=attrs["scale"] if native else None, kv_heads=kvh,
                           bias=inputs[lay.n_float] if lay.bias is not None else None,
                           bias_rank=lay.bias.rank if lay.bias is not None else 0, period=lay.period)
        out = b.op("MatMul", [y, b.derived("out_weight", lambda w_: w_.T, "T")])
        if bias:
            out = b.op("Add", [out, b.param("out_bias")])
        return [out, w] if attrs["need_weights"] else [out]


class ScaledDotProductAttention(_DotProductLowerings, _MaskedAttention):
    """softmax(q k^T * scale + bias + mask) v on (q [N, H, T, dk], k [N, H, S, dk], v [N, H, S, dv])
    as F.scaled_dot_product_attention; scale 0 means 1/sqrt(dk). No parameters. attn_bias=true
    takes a float bias input after v (broadcast against [N, H, T, S], as MultiHeadAttention's);
    enable_gqa=true lets k and v have fewer heads than q, dividing them (grouped-query)."""
    name = "ScaledDotProductAttention"
    args = (Arg("causal", "bool", False), Arg("mask", "str", "none", choices=MASK_MODES),
            Arg("scale", "float", 0.0, keyword_only=True), Arg("dropout", "float", 0.0, keyword_only=True),
            Arg("need_weights", "bool", False),
            Arg("attn_bias", "bool", False, keyword_only=True, doc="one more float input added to the scores"),
            Arg("enable_gqa", "bool", False, keyword_only=True, doc="k and v may have fewer heads than q"))
    n_inputs = (3, 5)
    samples = (Sample("(q: f32[N, 2, T, 4], k: f32[N, 2, S, 4], v: f32[N, 2, S, 3]) -> ScaledDotProductAttention"),
               Sample("(q: f32[N, 1, T, 4], k: f32[N, 1, T, 4], v: f32[N, 1, T, 4], keep: bool[N, T]) -> "
                      "ScaledDotProductAttention(causal=true, mask='padding', scale=0.3, need_weights=true)"),
               Sample("(q: f32[N, 4, T, 4], k: f32[N, 2, S, 4], v: f32[N, 2, S, 3], b: f32[4, T, S]) -> "
                      "ScaledDotProductAttention(attn_bias=true, enable_gqa=true, causal=true)"))

    def derive(self, a):
        attrs, in_types = a.attrs, a.in_types
        has_mask = attrs["mask"] != "none"
        has_bias = attrs["attn_bias"]
        if len(in_types) != 3 + has_bias + has_mask:
            want = "q, k, v" + (", bias" if has_bias else "") + (", mask" if has_mask else "")
            raise self.fail(f"with mask='{attrs['mask']}'{', attn_bias=true' if has_bias else ''} it takes ({want}), "
                            f"got {len(in_types)} inputs", self._count_hint(attrs, in_types, 3 + has_bias))
        q, k, v = in_types[:3]
        for nm, t in (("q", q), ("k", k), ("v", v)):
            if t.rank != 4:
                raise self.fail(f"expects {nm} as [N, heads, length, dim], got {t}")
            self.expect_float(t, nm)
            if t.dtype != q.dtype:
                raise self.fail(f"{nm} has dtype {t.dtype} but q has {q.dtype}")
        for nm, t in (("k", k), ("v", v)):
            _same(self, t.shape[0], q.shape[0], f"the batch dim of {nm} ({t})", f"q's ({q})")
        _same(self, v.shape[1], k.shape[1], f"the heads dim of v ({v})", f"k's ({k})")
        kvh = None
        if attrs["enable_gqa"] and k.shape[1] != q.shape[1]:
            hq, hk = q.shape[1], k.shape[1]
            if not (is_static(hq) and is_static(hk) and hk >= 1 and hq % hk == 0):
                raise self.fail(f"with enable_gqa=true the heads of k ({k}) must divide q's ({q})")
            for nm, t in (("k", k), ("v", v)):
                if not is_static(t.shape[3]):
                    raise self.fail(f"grouped-query attention needs a concrete feature dim of {nm}, got {t}")
            kvh = int(hk)
        else:
            try:
                _same(self, k.shape[1], q.shape[1], f"the heads dim of k ({k})", f"q's ({q})")
            except ArchError as e:
                if is_static(k.shape[1]) and is_static(q.shape[1]) and q.shape[1] % k.shape[1] == 0:
                    e.hint = "for grouped-query attention (fewer key/value heads) add enable_gqa=true"
                raise
        _same(self, k.shape[3], q.shape[3], f"k's feature dim ({k})", f"q's ({q})")
        _same(self, k.shape[2], v.shape[2], f"k's length ({k})", f"v's ({v})")
        if not 0.0 <= attrs["dropout"] < 1.0:
            raise self.fail(f"dropout must be in [0, 1), got {attrs['dropout']}")
        if attrs["scale"] < 0:
            raise self.fail(f"scale must be positive (0 = 1/sqrt(dk)), got {attrs['scale']}")
        if attrs["scale"] == 0 and not is_static(q.shape[3]):
            raise self.fail(f"the feature dim of q must be concrete for the default scale, got {q}")
        bias_t, period = None, None
        if has_bias:
            bias_t = in_types[3]
            period = self._bias_check(bias_t, q, q.shape[1], q.shape[2], k.shape[2])
        if has_mask:
            self._mask_type_check(attrs, in_types[-1], k, "key")
        return AttentionLayout("qkv", has_mask, q, k, v, in_types[-1] if has_mask else None, bias_t, period, kvh)

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
        lay = a.derived
        q, k, v = inputs[:3]
        block, dead, dmask = self._masks(a, ctx, inputs, q.shape[2], k.shape[2], q.shape[1])
        out = sdpa(q, k, v, inputs[3] if lay.bias is not None else None, scale=self._scale(a), period=lay.period,
                   block=block, dead=dead, dmask=dmask, need_weights=a.attrs["need_weights"])
        return list(out) if a.attrs["need_weights"] else [out]

    def torch_forward(self, a, ctx, inputs, params):
        lay, need = a.derived, a.attrs["need_weights"]
        q, k, v = inputs[:3]
        drop = ctx.dropout_mask((q.shape[0], q.shape[1], q.shape[2], k.shape[2]), a.attrs["dropout"], q)
        res = TK.attention(q, k, v, bias=inputs[3] if lay.bias is not None else None,
                           keep=self._torch_keep(a, ctx, inputs, k.shape[2]), causal=a.attrs["causal"],
                           scale=self._scale(a), period=lay.period, drop=drop, need_weights=need)
        return [res[0], res[1]] if need else [res]

    def _lower(self, a, b, inputs, native: bool, nonpad_ok: bool = False):
        lay, attrs = a.derived, a.attrs
        q, k, v = inputs[:3]
        grouped = lay.kv_heads is not None
        y, w = _lower_core(b, q=q, k=k, v=v, q_src=q, k_src=k, layout="4d", native=native,
                           heads=int(lay.query.shape[1]) if grouped else None, kv_heads=lay.kv_heads,
                           head_dims=(int(lay.key.shape[3]), int(lay.value.shape[3])) if grouped else None,
                           t_axis=2, s_axis=2, causal=attrs["causal"], mask_mode=attrs["mask"],
                           mask=inputs[-1] if lay.has_mask else None,
                           mask_dtype=lay.mask.dtype if lay.has_mask else None,
                           need_weights=attrs["need_weights"], scale=self._scale(a),
                           np_dtype=a.x.np_dtype, nonpad_ok=nonpad_ok,
                           bias=inputs[3] if lay.bias is not None else None,
                           bias_rank=lay.bias.rank if lay.bias is not None else 0, period=lay.period)
        return [y, w] if attrs["need_weights"] else [y]


class RotaryEmbedding(Op):
    """Rotary position embeddings (Su et al., RoPE) on [N, heads, T, head_dim]: feature pairs
    (i, i + d/2) (Hugging Face's Llama; interleaved=true: (2i, 2i + 1), Meta's original) turned
    by position t * theta^(-2i/d), t = 0..T-1. For attention written by hand with
    ScaledDotProductAttention; MultiHeadAttention(rotary=true) does the same inside."""
    name = "RotaryEmbedding"
    family = "attention"
    args = (Arg("theta", "float", 10000.0, keyword_only=True), Arg("interleaved", "bool", False, keyword_only=True))
    samples = (Sample("x: f32[N, 2, T, 6] -> RotaryEmbedding"),
               Sample("x: f32[N, 3, T, 4] -> RotaryEmbedding(theta=500.0, interleaved=true)"))

    def infer(self, a):
        x = a.x
        if x.rank != 4:
            raise self.fail(f"expects [N, heads, T, head_dim], got {x}",
                            "split the heads first: Reshape((0, 0, heads, -1)) -> Permute((0, 2, 1, 3))")
        self.expect_float(x)
        d = x.shape[3]
        if not is_static(d) or d % 2:
            raise self.fail(f"the head dim of {x} must be concrete and even (features turn in pairs)")
        if a.attrs["theta"] <= 0:
            raise self.fail(f"theta must be positive, got {a.attrs['theta']}")
        return [x]

    def explain(self, a):
        d = int(a.x.shape[3])
        pairs = "(2i, 2i + 1)" if a.attrs["interleaved"] else f"(i, i + {d // 2})"
        return [f"RotaryEmbedding: feature pairs {pairs} of each head turned by position \u00b7 "
                f"{a.attrs['theta']:g}^(\u22122i/{d}) (shape unchanged)"]

    def _tables(self, a, g, inputs):
        return rope_cos_sin(g, inputs[0], 2, int(a.x.shape[3]), float(a.attrs["theta"]), a.x.np_dtype)

    @lowering(since=23)
    def lower_native(self, a, g, inputs):
        return [rope_native(g, inputs[0], *self._tables(a, g, inputs), a.attrs["interleaved"], None)]

    @lowering()
    def lower_decomposed(self, a, g, inputs):
        return [rope_decomposed(g, inputs[0], *self._tables(a, g, inputs), a.attrs["interleaved"], None,
                                int(a.x.shape[3]))]

    def forward(self, a, ctx, inputs, params):
        return [rotary(inputs[0], theta=a.attrs["theta"], interleaved=a.attrs["interleaved"])]

    def torch_forward(self, a, ctx, inputs, params):
        return [TK.rotary(inputs[0], theta=a.attrs["theta"], interleaved=a.attrs["interleaved"])]


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

    def torch_forward(self, a, ctx, inputs, params):
        q, k = inputs[:2]
        need = a.attrs["need_weights"]
        res = TK.additive_attention(q, k, params["query_weight"], params["key_weight"], params["bias"], params["v"],
                                    keep=self._torch_keep(a, ctx, inputs, k.shape[1]), need_weights=need)
        return [res[0], res[1]] if need else [res]

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


# =================================================================================================
# Swin's windows (Liu et al., 2021): a learned relative position bias, the shifted-window mask
# =================================================================================================

def _window(op: Op, a) -> tuple[int, int]:
    w = a.attrs["window"]
    w = (w, w) if isinstance(w, int) else tuple(w)
    if len(w) != 2 or min(w) < 1:
        raise op.fail(f"window must be a positive int or a pair (Wh, Ww), got {w}")
    return w


def relative_position_index(wh: int, ww: int) -> np.ndarray:
    """[M², M²] (M² = wh·ww): for tokens i, j of a window, the row of the bias table holding
    their offset (dy, dx), each in -(w-1)..w-1; torchvision's relative_position_index."""
    coords = np.stack(np.meshgrid(np.arange(wh), np.arange(ww), indexing="ij")).reshape(2, -1)
    rel = coords[:, :, None] - coords[:, None, :]
    return (rel[0] + wh - 1) * (2 * ww - 1) + (rel[1] + ww - 1)


def shifted_window_mask(h: int, w: int, wh: int, ww: int, sh: int, sw: int, value: float) -> np.ndarray:
    """[windows, 1, M², M²]: 0 between tokens of a window that were neighbours before the cyclic
    shift, `value` between tokens the shift brought together (torchvision's attn_mask)."""
    region = np.zeros((h, w), np.int64)
    count = 0
    for hs in ((0, -wh), (-wh, -sh), (-sh, None)) if sh else ((0, None),):
        for ws in ((0, -ww), (-ww, -sw), (-sw, None)) if sw else ((0, None),):
            region[slice(*hs), slice(*ws)] = count
            count += 1
    ids = region.reshape(h // wh, wh, w // ww, ww).transpose(0, 2, 1, 3).reshape(-1, wh * ww)
    return np.where(ids[:, None, :] != ids[:, :, None], value, 0.0)[:, None]


class RelativePositionBias2d(Op):
    """Swin's relative position bias for attention among the Wh·Ww tokens of a window: a learned
    table of (2Wh-1)(2Ww-1) offsets x heads, read out as [heads, M², M²] (M² = Wh·Ww) for the
    window tokens x [..., M², C] it is applied to."""
    name = "RelativePositionBias2d"
    family = "attention"
    args = (Arg("heads", "int"), Arg("window", "ints", doc="Wh, or (Wh, Ww)"))
    samples = (Sample("x: f32[N, 4, 6] -> RelativePositionBias2d(3, 2)"),
               Sample("x: f32[N, 6, 5] -> RelativePositionBias2d(2, (2, 3))"))

    def derive(self, a):
        return _window(self, a)

    def infer(self, a):
        wh, ww = a.derived
        if a.attrs["heads"] < 1:
            raise self.fail(f"heads must be positive, got {a.attrs['heads']}")
        if a.x.rank < 2 or a.x.shape[-2] != wh * ww:
            raise self.fail(f"expects the tokens of {wh}x{ww} windows [..., {wh * ww}, C], got {a.x}",
                            "partition into windows first: Reshape, Permute, Reshape((-1, Wh*Ww, C))")
        n = wh * ww
        return [TensorType(a.x.dtype if a.x.is_float else "f32", (a.attrs["heads"], n, n))]

    def params(self, a):
        wh, ww = a.derived
        return {"relative_position_bias_table": ParamSpec(
            ((2 * wh - 1) * (2 * ww - 1), a.attrs["heads"]),
            initializer=make_init("trunc_normal", [], {"std": 0.02}))}

    def explain(self, a):
        (wh, ww), h = a.derived, a.attrs["heads"]
        return [f"RelativePositionBias2d: ({2 * wh - 1}\u00b7{2 * ww - 1}) offsets of a {wh}x{ww} window, "
                f"read out for each of {wh * ww}\u00b7{wh * ww} token pairs \u2192 {a.out_types[0]}"] \
            + explain_params(a.params)

    def lower(self, a, g, inputs):
        (wh, ww), n = a.derived, a.derived[0] * a.derived[1]
        rows = g.op("Gather", [g.param("relative_position_bias_table"),
                               g.ints(relative_position_index(wh, ww).reshape(-1), hint="relative_position_index")],
                    axis=0)
        return [g.op("Transpose", [g.op("Reshape", [rows, g.ints([n, n, a.attrs["heads"]])])], perm=[2, 0, 1])]

    def forward(self, a, ctx, inputs, params):
        wh, ww = a.derived
        rows = F.take(params["relative_position_bias_table"], relative_position_index(wh, ww), axis=0)
        return [F.transpose(rows, (2, 0, 1))]

    def torch_forward(self, a, ctx, inputs, params):
        return [TK.relative_position_bias(params["relative_position_bias_table"], *a.derived)]


class ShiftedWindowMask(Op):
    """Swin's mask for attention in shifted windows over a feature map x [N, H, W, C] rolled by
    -shift: [windows, 1, M², M²], `value` (-100, as torchvision) between tokens that were not
    neighbours before the roll, 0 elsewhere; added to the scores with the position bias."""
    name = "ShiftedWindowMask"
    family = "attention"
    args = (Arg("window", "ints", doc="Wh, or (Wh, Ww)"), Arg("shift", "ints", doc="sh, or (sh, sw)"),
            Arg("value", "float", -100.0, keyword_only=True, doc="added to the scores of pairs split by the shift"))
    samples = (Sample("x: f32[N, 4, 6, 3] -> ShiftedWindowMask(2, 1)", grad=False),
               Sample("x: f32[N, 6, 4, 2] -> ShiftedWindowMask((3, 2), (1, 0), value=-50.0)", grad=False))

    def derive(self, a):
        s = a.attrs["shift"]
        s = (s, s) if isinstance(s, int) else tuple(s)
        if len(s) != 2:
            raise self.fail(f"shift must be an int or a pair (sh, sw), got {a.attrs['shift']}")
        return _window(self, a), s

    def infer(self, a):
        (wh, ww), (sh, sw) = a.derived
        x = a.x
        self.expect_float(x)
        if x.rank != 4 or not is_static(x.shape[1]) or not is_static(x.shape[2]):
            raise self.fail(f"expects a channels-last feature map [N, H, W, C] of concrete H and W, got {x}")
        h, w = int(x.shape[1]), int(x.shape[2])
        if h % wh or w % ww:
            raise self.fail(f"the {h}x{w} map does not split into {wh}x{ww} windows", "pad it to a multiple first")
        if not (0 <= sh < wh and 0 <= sw < ww):
            raise self.fail(f"shift {a.attrs['shift']} must be in 0..window-1 per axis (window {wh}x{ww})")
        if not np.isfinite(a.attrs["value"]):
            raise self.fail("value must be finite", "-100 is torchvision's (softmax gives those pairs ~e^-100)")
        n = wh * ww
        return [TensorType(x.dtype, ((h // wh) * (w // ww), 1, n, n))]

    def _mask(self, a) -> np.ndarray:
        (wh, ww), (sh, sw) = a.derived
        return shifted_window_mask(int(a.x.shape[1]), int(a.x.shape[2]), wh, ww, sh, sw,
                                   a.attrs["value"]).astype(a.x.np_dtype)

    def lower(self, a, g, inputs):
        return [g.const(self._mask(a), hint="shifted_window_mask")]

    def forward(self, a, ctx, inputs, params):
        return [Tensor(self._mask(a).astype(inputs[0].data.dtype))]

    def torch_forward(self, a, ctx, inputs, params):
        (wh, ww), (sh, sw) = a.derived
        return [TK.shifted_window_mask(inputs[0], int(a.x.shape[1]), int(a.x.shape[2]), wh, ww, sh, sw,
                                       a.attrs["value"])]
