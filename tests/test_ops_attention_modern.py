"""Attention for today's models: grouped-query and multi-query heads (kv_heads / enable_gqa), rotary
position embeddings (rotary=true, RotaryEmbedding), an additive float bias of the scores
(attn_bias=true: relative positions, ALiBi, Swin's periodic window masks) and scale=. Each is
checked against a PyTorch reference written from the papers' formulas (forward and gradients,
float64), on ONNX Runtime at every opset where the lowering changes (17: decompositions, 23:
native Attention and RotaryEmbedding, 24: lengths beside a bias), and with shape errors."""
import numpy as np
import pytest

from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.backends.onnx.export import max_opset, to_onnx
from archdsl.errors import ArchError, ShapeError
from archdsl.ir.build import single_op_model
from archdsl.ir.types import Sym, TensorType
from archdsl.passes.init import initialize
from harness import check_grads, check_parity, check_torch, ort_run, random_inputs

N, T, S = Sym.named("N"), Sym.named("T"), Sym.named("S")
OPSETS = (17, 22, 23, 24, max_opset())


def f32(*shape):
    return TensorType("f32", shape)


def _weights(m, seed=0, scale=0.4):
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(a.shape) * scale).astype(np.float32) for k, a in initialize(m).items()}


def _feed(m, dims, seed=1):
    """Random inputs; a keep mask with a real first key per row; lengths of at least 1."""
    xs = random_inputs(m, seed=seed, dims=dims)
    rng = np.random.default_rng(seed)
    for v in m.inputs:
        if v.type.dtype == "bool":
            keep = rng.random(xs[v.name].shape) < 0.7
            keep[:, 0] = True
            xs[v.name] = keep
        elif v.type.dtype in ("i32", "i64"):
            xs[v.name] = rng.integers(1, dims["S"] + 1, xs[v.name].shape).astype(v.type.np_dtype)
    return xs


# -- a PyTorch reference from the formulas ---------------------------------------------------------

def _rotate(t, x, theta, interleaved=False):
    """RoPE on [.., L, d] at positions 0..L-1, as Hugging Face's Llama (rotate_half) or interleaved."""
    length, d = x.shape[-2], x.shape[-1]
    inv = 1.0 / theta ** (t.arange(0, d, 2, dtype=t.float64) / d)
    ang = t.arange(length, dtype=t.float64)[:, None] * inv[None, :]
    cos, sin = ang.cos(), ang.sin()
    if interleaved:
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return t.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)
    cos, sin = t.cat([cos, cos], -1), t.cat([sin, sin], -1)
    half = d // 2
    return x * cos + t.cat([-x[..., half:], x[..., :half]], -1) * sin


def _torch_attention(t, q, k, v, *, scale, causal=False, bias=None, period=None, keep=None):
    """softmax(q k^T scale + bias + masks) v on [N, H, T, d] / [N, KV, S, d], KV dividing H."""
    h, kvh = q.shape[1], k.shape[1]
    k, v = k.repeat_interleave(h // kvh, dim=1), v.repeat_interleave(h // kvh, dim=1)
    scores = q @ k.transpose(-1, -2) * scale
    if bias is not None:
        if period:
            n = scores.shape[0]
            scores = (scores.reshape(n // period, period, *scores.shape[1:]) + bias).reshape(scores.shape)
        else:
            scores = scores + bias
    neg = t.finfo(scores.dtype).min
    allow = t.ones(scores.shape[-2:], dtype=t.bool)
    if causal:
        allow = t.tril(allow)
    allow = allow[None, None]
    if keep is not None:
        allow = allow & keep[:, None, None, :]
    scores = scores.masked_fill(~allow, neg)
    return t.softmax(scores, -1) @ v


def _torch_mha(t, xs, ps, *, heads, kv_heads, scale=None, rotary=False, theta=10000.0, causal=False,
               bias_name=None, period=None, keep_name=None, mem=None):
    x = xs["x0"] if "x0" in xs else xs["x"]
    src = xs[mem] if mem else x
    n, length, d = x.shape
    dh = d // heads

    def proj(y, w, b, hh):
        out = y @ ps[w].T + (ps[b] if b in ps else 0)
        return out.reshape(y.shape[0], y.shape[1], hh, dh).transpose(1, 2)
    q, k, v = proj(x, "q_weight", "q_bias", heads), proj(src, "k_weight", "k_bias", kv_heads), \
        proj(src, "v_weight", "v_bias", kv_heads)
    if rotary:
        q, k = _rotate(t, q, theta), _rotate(t, k, theta)
    o = _torch_attention(t, q, k, v, scale=scale or dh ** -0.5, causal=causal,
                         bias=xs[bias_name] if bias_name else None, period=period,
                         keep=xs[keep_name] if keep_name else None)
    o = o.transpose(1, 2).reshape(n, length, d) @ ps["out_weight"].T
    return o + ps["out_bias"] if "out_bias" in ps else o


# -- MultiHeadAttention: kv_heads, rotary, attn_bias, scale ----------------------------------------

MHA_CASES = [
    # (inputs, kwargs, reference kwargs)
    ([f32(N, T, 8)], dict(kv_heads=2, rotary=True, causal=True, bias=False), {}),
    ([f32(N, T, 8)], dict(kv_heads=1, scale=0.7), {}),                                      # multi-query
    ([f32(N, T, 8), f32(4, T, T)], dict(attn_bias=True, scale=1.0), dict(bias_name="x1")),      # T5
    ([f32(N, T, 12), f32(1, 6, T, T)], dict(attn_bias=True, causal=True, kv_heads=3, rotary=True,
                                            rope_theta=500.0), dict(bias_name="x1")),
    ([f32(N, T, 8), f32(2, 1, T, T)], dict(attn_bias=True), dict(bias_name="x1", period=2)),   # Swin windows
    ([f32(N, T, 8), f32(N, S, 6), f32(4, T, S), TensorType("bool", (N, S))],
     dict(cross=True, kv_heads=2, attn_bias=True, mask="padding", rotary=True),
     dict(bias_name="x2", keep_name="x3", mem="x1")),
]


def _mha(ins, kw, heads=None):
    d = ins[0].shape[-1]
    return single_op_model("MultiHeadAttention", ins, d, heads or (6 if d == 12 else 4), **kw)


@pytest.mark.parametrize("ins,kw,ref", MHA_CASES, ids=[str(i) for i in range(len(MHA_CASES))])
def test_mha_modern_matches_torch_and_ort(ins, kw, ref):
    m = _mha(ins, kw)
    w = _weights(m)
    dims = {"N": 4, "T": 5, "S": 3}
    x = _feed(m, dims)
    check_parity(m, x, weights=w, opsets=OPSETS)
    check_grads(m, x, weights=w, n_coords=2)
    pytest.importorskip("torch")
    heads = m.nodes[0].app.attrs["heads"]
    check_torch(m, x, lambda t, xs, ps: _torch_mha(
        t, xs, ps, heads=heads, kv_heads=kw.get("kv_heads") or heads, scale=kw.get("scale"),
        rotary=kw.get("rotary", False), theta=kw.get("rope_theta", 10000.0), causal=kw.get("causal", False),
        **ref), weights=w)


def test_mha_modern_two_batch_sizes_and_lengths_on_one_export():
    m = _mha([f32(N, T, 8), f32(4, T, T)], dict(kv_heads=2, rotary=True, causal=True, attn_bias=True))
    w = _weights(m)
    for opset in (17, 23, max_opset()):
        proto = to_onnx(m, w, opset=opset)
        for dims in ({"N": 1, "T": 3, "S": 3}, {"N": 3, "T": 9, "S": 9}):
            x = _feed(m, dims)
            np.testing.assert_allclose(ort_run(proto, x)["y"], NumpyExecutor(m, w).run(x)["y"], atol=1e-5,
                                       rtol=1e-4, err_msg=f"opset {opset} {dims}")


def test_mha_lengths_with_bias_use_nonpad_at_24():
    m = _mha([f32(N, T, 8), f32(4, T, T), TensorType("i64", (N,))], dict(attn_bias=True, mask="lengths"))
    w = _weights(m)
    ops24 = [n.op_type for n in to_onnx(m, w, opset=24).graph.node]
    ops23 = [n.op_type for n in to_onnx(m, w, opset=23).graph.node]
    assert "Attention" in ops24 and "Attention" not in ops23      # 23: a bool mask beside the bias
    x = _feed(m, {"N": 3, "T": 5, "S": 5})
    check_parity(m, x, weights=w, opsets=(17, 23, 24))


def test_mha_native_ops_from_23_decompositions_below():
    m = _mha([f32(N, T, 8)], dict(kv_heads=2, rotary=True, causal=True))
    w = initialize(m)
    ops22 = {n.op_type for n in to_onnx(m, w, opset=22).graph.node}
    ops23 = [n.op_type for n in to_onnx(m, w, opset=23).graph.node]
    assert not {"Attention", "RotaryEmbedding"} & ops22 and "Softmax" in ops22
    assert ops23.count("Attention") == 1 and ops23.count("RotaryEmbedding") == 2 and "Softmax" not in ops23
    att = next(n for n in to_onnx(m, w, opset=23).graph.node if n.op_type == "Attention")
    assert {a.name: a.i for a in att.attribute if a.name.endswith("heads")} == {"q_num_heads": 4, "kv_num_heads": 2}


def test_gqa_params_and_counts():
    """Llama's layout: q [d, d], k and v [kv_heads * d/heads, d], out [d, d], no biases."""
    m = _mha([f32(N, T, 64)], dict(kv_heads=2, bias=False), heads=8)
    shapes = {k.split(".")[-1]: p.shape for k, p in m.parameters.items()}
    assert shapes == {"q_weight": (64, 64), "k_weight": (16, 64), "v_weight": (16, 64), "out_weight": (64, 64)}
    assert m.param_count() == 64 * 64 * 2 + 16 * 64 * 2


@pytest.mark.parametrize("ins,kw,msg,hint", [
    ([f32(N, T, 8)], dict(kv_heads=3), r"kv_heads=3 must divide heads=4", "1, 2, 4"),
    ([f32(N, T, 20)], dict(rotary=True), r"the head dim d_model/heads = 5 must be even", None),
    ([f32(N, T, 8), f32(3, T, T)], dict(attn_bias=True), r"its heads dim is 3", "each bias dim is 1"),
    ([f32(N, T, 8), f32(4, T)], dict(attn_bias=True), r"its T dim is 4", "fixed length"),
    ([f32(N, T, 8), f32(4, T, T)], {}, r"with cross=false, mask='none' it takes \(x: \[N, T, d_model\]\)", None),
    ([f32(N, T, 8), TensorType("bool", (N, T))], dict(attn_bias=True),
     r"attn_bias=true expects a float bias input", "mask='padding'"),
    ([f32(N, T, 8)], dict(scale=0.0), r"scale must be positive", None),
])
def test_mha_modern_errors(ins, kw, msg, hint):
    with pytest.raises(ShapeError, match=msg) as e:
        _mha(ins, kw)
    if hint:
        assert hint in (e.value.hint or "")


def test_periodic_bias_needs_a_batch_it_divides():
    m = _mha([f32(N, T, 8), f32(2, 1, T, T)], dict(attn_bias=True))
    x = _feed(m, {"N": 3, "T": 4, "S": 4})
    with pytest.raises(ArchError, match="repeats every 2 rows of the batch, but the batch has 3 rows"):
        NumpyExecutor(m, initialize(m)).run(x)


def test_llama_block_reads_naturally_and_runs_on_ort():
    import archdsl
    spec = archdsl.compile("""
block LlamaBlock(d: int, heads: int, kv: int, ffn: int) {
  input x
  h = x + (x -> RMSNorm(d, eps=1e-5)
             -> MultiHeadAttention(d, heads, causal=true, bias=false, kv_heads=kv, rotary=true))
  n = h -> RMSNorm(d, eps=1e-5)
  output h + ((n -> Linear(ffn, bias=false) -> SiLU) * (n -> Linear(ffn, bias=false)) -> Linear(d, bias=false))
}

model TinyLlama(vocab: int = 50, d: int = 16) {
  input tokens: i64[N, T]
  h = tokens -> Embedding(vocab, d) -> LlamaBlock(d, 4, 2, 32) -> LlamaBlock(d, 4, 2, 32) -> RMSNorm(d, eps=1e-5)
  output logits = h -> Linear(vocab, bias=false)
}
""")
    m = spec.model().ir
    x = random_inputs(m, dims={"N": 2, "T": 6}, high=50)
    check_parity(m, x, opsets=(17, max_opset()))


# -- ScaledDotProductAttention: attn_bias and enable_gqa -------------------------------------------

def test_sdpa_gqa_bias_matches_torch():
    ins = [f32(N, 4, T, 6), f32(N, 2, S, 6), f32(N, 2, S, 5), f32(4, T, S)]
    m = single_op_model("ScaledDotProductAttention", ins, attn_bias=True, enable_gqa=True, scale=0.4)
    x = _feed(m, {"N": 3, "T": 5, "S": 4})
    check_parity(m, x, opsets=OPSETS)
    pytest.importorskip("torch")
    check_torch(m, x, lambda t, xs, ps: t.nn.functional.scaled_dot_product_attention(
        xs["x0"], xs["x1"], xs["x2"], attn_mask=xs["x3"], scale=0.4, enable_gqa=True))


def test_sdpa_heads_mismatch_hints_enable_gqa():
    with pytest.raises(ShapeError, match="the heads dim of k") as e:
        single_op_model("ScaledDotProductAttention", [f32(N, 4, T, 6), f32(N, 2, T, 6), f32(N, 2, T, 6)])
    assert "enable_gqa=true" in e.value.hint


# -- RotaryEmbedding ---------------------------------------------------------------------------------

@pytest.mark.parametrize("interleaved", [False, True])
def test_rotary_embedding_matches_torch_and_ort(interleaved):
    m = single_op_model("RotaryEmbedding", [f32(N, 3, T, 8)], theta=100.0, interleaved=interleaved)
    x = random_inputs(m, dims={"N": 2, "T": 7})
    check_parity(m, x, opsets=OPSETS)
    ops = {o: [n.op_type for n in to_onnx(m, {}, opset=o).graph.node] for o in (22, 23)}
    assert "RotaryEmbedding" in ops[23] and "RotaryEmbedding" not in ops[22]
    pytest.importorskip("torch")
    check_torch(m, x, lambda t, xs, ps: _rotate(t, xs["x"], 100.0, interleaved))


def test_rotary_keeps_relative_positions():
    """<rot(q, i), rot(k, j)> depends on i - j only: the property RoPE is built for."""
    m = single_op_model("RotaryEmbedding", [f32(1, 1, 6, 4)])
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal(4), rng.standard_normal(4)
    rq = NumpyExecutor(m, {}, dtype=np.float64).run({"x": np.tile(q, (1, 1, 6, 1))})["y"][0, 0]
    rk = NumpyExecutor(m, {}, dtype=np.float64).run({"x": np.tile(k, (1, 1, 6, 1))})["y"][0, 0]
    np.testing.assert_allclose(rq[3] @ rk[1], rq[4] @ rk[2], rtol=1e-12)
    np.testing.assert_allclose(rq[0] @ rk[0], q @ k, rtol=1e-12)
