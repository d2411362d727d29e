"""Attention ops (MultiHeadAttention, ScaledDotProductAttention, AdditiveAttention) and the
position ops (PositionalEncoding, PositionalEmbedding, SelectStep): shape rules and input
conventions, ORT parity at opset 17 (MatMul/Softmax decomposition) and the newest opset (native
Attention), float64 gradient checks with every mask mode, and PyTorch with copied weights."""
import numpy as np
import onnx
import pytest

from archdsl.autodiff import Tensor, backward
from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.backends.onnx.export import max_opset, to_onnx
from archdsl.errors import ArchError, ShapeError
from archdsl.ir.build import single_op_model
from archdsl.ir.types import Sym, TensorType, resolve_dim
from archdsl.ops.positional import sinusoid_table
from archdsl.passes.init import initialize
from harness import check_grads, check_parity, ort_run, random_inputs

N, T, S = Sym.named("N"), Sym.named("T"), Sym.named("S")
NEWEST = max_opset()


def f32(*shape):
    return TensorType("f32", shape)


def _random_weights(m, seed=0, scale=0.5):
    """Non-trivial weights (biases too), so masks and biases are exercised."""
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(a.shape) * scale).astype(np.float32) for k, a in initialize(m).items()}


def _masks(inputs, m, dims, seed=0):
    """Replace mask inputs by deliberate ones: one sequence fully padded (a dead row), one full,
    the rest random with their first key kept; lengths 0, S and something in between."""
    rng = np.random.default_rng(seed)
    n = dims["N"]
    # the key length: the last float input's length (the key/memory, or x for self-attention)
    key = [v for v in m.inputs if v.type.is_float][1 if len([v for v in m.inputs if v.type.is_float]) > 1 else 0]
    s = resolve_dim(key.type.shape[-2], dims)
    for v in m.inputs:
        if v.type.dtype == "bool":
            k = rng.random((n, s)) < 0.6
            k[:, 0] = True
            k[0] = False
            if n > 2:
                k[1] = True
            inputs[v.name] = k
        elif v.type.dtype in ("i32", "i64") and v.type.rank == 1:
            lens = rng.integers(1, s + 1, n)
            lens[0] = 0
            lens[-1] = s
            inputs[v.name] = lens.astype(v.type.np_dtype)
    return inputs


def _inputs(m, n=3, t=5, s=4, seed=1):
    dims = {"N": n, "T": t, "S": s}
    return _masks(random_inputs(m, seed=seed, dims=dims), m, dims, seed)


# -- MultiHeadAttention --------------------------------------------------------------------------

def _mha_case(kind, mask, d=8, heads=2, **kw):
    kv_len = T if kind == "self" else S
    ins = {"self": [f32(N, T, d)], "memory": [f32(N, T, d), f32(N, S, 6)],
           "kv": [f32(N, T, d), f32(N, S, 6), f32(N, S, 5)]}[kind]
    if mask == "padding":
        ins.append(TensorType("bool", (N, kv_len)))
    elif mask == "lengths":
        ins.append(TensorType("i32" if kind == "kv" else "i64", (N,)))
    return single_op_model("MultiHeadAttention", ins, d, heads, cross=kind != "self", mask=mask, **kw)


MHA_CASES = [(kind, mask, causal, weights)
             for kind in ("self", "memory", "kv") for mask in ("none", "padding", "lengths")
             for causal in (False, True) for weights in (False, True)
             if not (weights and causal and mask == "none" and kind != "self")]


@pytest.mark.parametrize("kind,mask,causal,weights", MHA_CASES,
                         ids=[f"{k}-{m}-{'causal' if c else 'full'}{'-w' if w else ''}" for k, m, c, w in MHA_CASES])
def test_mha_parity_and_grads(kind, mask, causal, weights):
    m = _mha_case(kind, mask, causal=causal, need_weights=weights)
    w = _random_weights(m)
    x = _inputs(m)
    ref = check_parity(m, x, weights=w)
    assert all(np.isfinite(v).all() for v in ref.values())
    if weights:
        p = ref["y1"]
        sums = p.sum(-1)
        dead = np.isclose(sums, 0)
        np.testing.assert_allclose(sums[~dead], 1, atol=1e-5)
    check_grads(m, x, weights={k: v.astype(np.float64) for k, v in w.items()}, n_coords=3)


def test_mha_two_batch_sizes_and_lengths_on_one_export():
    m = _mha_case("self", "padding", causal=True)
    w = _random_weights(m)
    for opset in (17, NEWEST):
        proto = to_onnx(m, w, opset=opset)
        for n, t in ((1, 3), (4, 9)):
            x = _inputs(m, n=n, t=t)
            ref = NumpyExecutor(m, w).run(x)["y"]
            np.testing.assert_allclose(ort_run(proto, x)["y"], ref, atol=1e-5, rtol=1e-4)


def test_mha_native_attention_from_opset_23_and_decomposition_below():
    m = _mha_case("self", "padding", causal=True)
    w = initialize(m)
    ops17 = [n.op_type for n in to_onnx(m, w, opset=17).graph.node]
    assert "Attention" not in ops17 and "Softmax" in ops17
    for opset in range(23, NEWEST + 1):
        ops = [n.op_type for n in to_onnx(m, w, opset=opset).graph.node]
        assert ops.count("Attention") == 1 and "Softmax" not in ops
    # lengths without causal masking use nonpad_kv_seqlen (opset 24+); with causal, a bool mask
    m = _mha_case("self", "lengths")
    att = [n for n in to_onnx(m, initialize(m), opset=NEWEST).graph.node if n.op_type == "Attention"][0]
    assert len(att.input) == 7 and att.input[3] == ""
    m = _mha_case("self", "lengths", causal=True)
    att = [n for n in to_onnx(m, initialize(m), opset=NEWEST).graph.node if n.op_type == "Attention"][0]
    assert len(att.input) == 4 and {a.name: a.i for a in att.attribute}["is_causal"] == 1


def test_mha_need_weights_native_only_with_static_key_length():
    """ONNX shape inference records a symbolic key length of qk_matmul_output as 0: the weights
    come from the decomposition then; with a static key length from the native op."""
    dyn = _mha_case("self", "none", need_weights=True)
    assert "Attention" not in [n.op_type for n in to_onnx(dyn, initialize(dyn), opset=NEWEST).graph.node]
    static = single_op_model("MultiHeadAttention", [f32(N, 6, 8)], 8, 2, need_weights=True)
    proto = to_onnx(static, initialize(static), opset=NEWEST)
    att = [n for n in proto.graph.node if n.op_type == "Attention"]
    assert len(att) == 1 and len(att[0].output) == 4
    check_parity(static, random_inputs(static, dims={"N": 2}))


def test_mha_dropout_on_weights_trains_and_has_gradients():
    m = _mha_case("self", "padding", dropout=0.3, need_weights=True)
    x = _inputs(m)
    ex = NumpyExecutor(m, _random_weights(m))
    y_eval = ex.run(x)["y0"]
    y_train = ex.run(x, training=True)["y0"]
    assert not np.allclose(y_eval, y_train)
    check_grads(m, x, weights=_random_weights(m), training=True, n_coords=3)


def test_mha_fully_masked_rows_are_zero_not_nan():
    m = _mha_case("self", "padding", causal=True, need_weights=True)
    w = _random_weights(m)
    x = random_inputs(m, dims={"N": 2, "T": 4})
    x["x1"] = np.array([[False] * 4, [False, True, True, True]])
    for out in (NumpyExecutor(m, w).run(x), ort_run(to_onnx(m, w, opset=17), x), ort_run(to_onnx(m, w, opset=NEWEST), x)):
        assert np.isfinite(out["y0"]).all() and np.isfinite(out["y1"]).all()
        np.testing.assert_allclose(out["y1"][0], 0)            # no key at all
        np.testing.assert_allclose(out["y1"][1, :, 0], 0)      # query 0 sees only padded key 0
        b_out = w["multiheadattention.out_bias"]
        np.testing.assert_allclose(out["y0"][0], np.broadcast_to(b_out, (4, 8)), atol=1e-6)


def test_mha_params_follow_pytorch_layout_and_count():
    m = single_op_model("MultiHeadAttention", [f32(N, T, 768)], 768, 12)
    shapes = {k.split(".")[-1]: p.shape for k, p in m.parameters.items()}
    assert shapes == {"q_weight": (768, 768), "k_weight": (768, 768), "v_weight": (768, 768),
                      "out_weight": (768, 768), "q_bias": (768,), "k_bias": (768,), "v_bias": (768,),
                      "out_bias": (768,)}
    assert m.param_count() == 2_362_368            # = nn.MultiheadAttention(768, 12)
    m = single_op_model("MultiHeadAttention", [f32(N, T, 16), f32(N, S, 6), f32(N, S, 5)], 16, 4, cross=True,
                        bias=False)
    assert m.param_count() == 16 * (16 + 6 + 5 + 16)
    w = initialize(m)
    assert np.abs(w["multiheadattention.k_weight"]).max() <= np.sqrt(6 / (16 + 6))


MHA_ERRORS = [
    ([f32(N, T, 8), TensorType("bool", (N, T))], {}, "takes \\(x: \\[N, T, d_model\\]\\), got 2 inputs",
     "mask='padding'"),
    ([f32(N, T, 8), TensorType("i64", (N,))], {}, "got 2 inputs", "mask='lengths'"),
    ([f32(N, T, 8), f32(N, S, 8)], {}, "got 2 inputs", "cross=true"),
    ([f32(N, T, 8)], {"cross": True}, "takes \\(query, memory\\) or \\(query, key, value\\)", "pipe a tuple"),
    ([f32(N, T, 8)], {"mask": "padding"}, "keep: bool\\[N, T\\]", None),
    ([f32(N, T, 8), TensorType("i64", (N, T))], {"mask": "padding"}, "keep mask bool\\[N, S\\]", "mask='lengths'"),
    ([f32(N, T, 8), TensorType("bool", (N,))], {"mask": "lengths"}, "lengths i64\\[N\\]", "mask='padding'"),
    ([f32(N, T, 8), TensorType("bool", (N, S))], {"mask": "padding"}, "length dim", None),
    ([f32(N, T, 6)], {}, "has 6 features but d_model is 8", "MultiHeadAttention\\(6"),
    ([f32(N, T, 8)], {"heads": 3}, "not divisible by heads 3", "1, 2, 4, 8"),
    ([f32(N, T, 8), f32(N, S, 6)], {"cross": True, "kdim": 5}, "kdim=5 but the key input has 6", None),
    ([f32(N, 8)], {}, "expects x as \\[N, T, features\\]", None),
]


@pytest.mark.parametrize("ins,kw,msg,hint", MHA_ERRORS, ids=range(len(MHA_ERRORS)))
def test_mha_input_convention_errors(ins, kw, msg, hint):
    kw = {"heads": 2, **kw}
    with pytest.raises(ShapeError, match=msg) as ei:
        single_op_model("MultiHeadAttention", ins, 8, **kw)
    if hint:
        assert ei.value.hint is not None and __import__("re").search(hint, ei.value.hint), ei.value.hint


def test_lengths_out_of_range_is_a_clear_error():
    m = _mha_case("self", "lengths")
    x = random_inputs(m, dims={"N": 2, "T": 3})
    x["x1"] = np.array([1, 4])
    with pytest.raises(ArchError, match="lengths must be in 0..3"):
        NumpyExecutor(m, initialize(m)).run(x)


# -- against PyTorch -----------------------------------------------------------------------------

def _torch_mha(m, w, d, heads, kdim=None, vdim=None):
    torch = pytest.importorskip("torch")
    mod = torch.nn.MultiheadAttention(d, heads, batch_first=True, kdim=kdim, vdim=vdim).double()
    p = {k.split(".")[-1]: torch.tensor(v, dtype=torch.float64) for k, v in w.items()}
    with torch.no_grad():
        if kdim is None:
            mod.in_proj_weight.copy_(torch.cat([p["q_weight"], p["k_weight"], p["v_weight"]]))
        else:
            mod.q_proj_weight.copy_(p["q_weight"])
            mod.k_proj_weight.copy_(p["k_weight"])
            mod.v_proj_weight.copy_(p["v_weight"])
        mod.in_proj_bias.copy_(torch.cat([p["q_bias"], p["k_bias"], p["v_bias"]]))
        mod.out_proj.weight.copy_(p["out_weight"])
        mod.out_proj.bias.copy_(p["out_bias"])
    return torch, mod


@pytest.mark.parametrize("causal,mask", [(False, "none"), (True, "none"), (False, "padding"), (True, "padding")])
def test_mha_matches_pytorch(causal, mask):
    d, h, n, t = 16, 4, 3, 6
    ins = [f32(N, T, d)] + ([TensorType("bool", (N, T))] if mask == "padding" else [])
    m = single_op_model("MultiHeadAttention", ins, d, h, causal=causal, mask=mask, need_weights=True)
    w = _random_weights(m, seed=3)
    torch, mod = _torch_mha(m, w, d, h)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, t, d))
    keep = np.ones((n, t), bool)
    keep[1, 4:] = False
    keep[2, 2:] = False
    feed = {"x0": x, "x1": keep} if mask == "padding" else {"x": x}
    ex = NumpyExecutor(m, w, dtype=np.float64)
    xt = Tensor(x.copy(), requires_grad=True)
    outs = ex.forward({**feed, ("x0" if mask == "padding" else "x"): xt})
    y, p = outs["y0"], outs["y1"]
    g = rng.standard_normal(y.shape)
    backward((y * g).sum())

    tx = torch.tensor(x, requires_grad=True)
    kw = {"need_weights": True, "average_attn_weights": False}
    if causal:
        kw["attn_mask"] = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
    if mask == "padding":
        kw["key_padding_mask"] = torch.tensor(~keep)          # PyTorch: true = ignore
    ty, tp = mod(tx, tx, tx, **kw)
    (ty * torch.tensor(g)).sum().backward()
    np.testing.assert_allclose(y.data, ty.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(p.data, tp.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(xt.grad, tx.grad.numpy(), atol=1e-10)
    wq_grad = ex.params["multiheadattention.q_weight"].grad
    np.testing.assert_allclose(wq_grad, mod.in_proj_weight.grad[:d].numpy(), atol=1e-10)
    np.testing.assert_allclose(ex.params["multiheadattention.out_bias"].grad, mod.out_proj.bias.grad.numpy(),
                               atol=1e-10)


def test_cross_attention_with_kdim_vdim_matches_pytorch():
    d, h, n, t, s = 8, 2, 2, 3, 5
    m = single_op_model("MultiHeadAttention", [f32(N, T, d), f32(N, S, 6), f32(N, S, 5)], d, h, cross=True)
    w = _random_weights(m, seed=4)
    torch, mod = _torch_mha(m, w, d, h, kdim=6, vdim=5)
    rng = np.random.default_rng(1)
    q, k, v = rng.standard_normal((n, t, d)), rng.standard_normal((n, s, 6)), rng.standard_normal((n, s, 5))
    y = NumpyExecutor(m, w, dtype=np.float64).run({"x0": q, "x1": k, "x2": v})["y"]
    ty, _ = mod(torch.tensor(q), torch.tensor(k), torch.tensor(v), need_weights=False)
    np.testing.assert_allclose(y, ty.detach().numpy(), atol=1e-10)


# -- ScaledDotProductAttention -------------------------------------------------------------------

SDPA_CASES = [(mask, causal, weights, scale) for mask in ("none", "padding", "lengths")
              for causal in (False, True) for weights in (False, True) for scale in (0.0, 0.3)
              if not (weights and scale)]


@pytest.mark.parametrize("mask,causal,weights,scale", SDPA_CASES,
                         ids=[f"{m}-{'causal' if c else 'full'}{'-w' if w else ''}-s{s}" for m, c, w, s in SDPA_CASES])
def test_sdpa_parity_and_grads(mask, causal, weights, scale):
    kv = S if not causal else T
    ins = [f32(N, 2, T, 4), f32(N, 2, kv, 4), f32(N, 2, kv, 3)]
    if mask == "padding":
        ins.append(TensorType("bool", (N, kv)))
    elif mask == "lengths":
        ins.append(TensorType("i64", (N,)))
    m = single_op_model("ScaledDotProductAttention", ins, causal=causal, mask=mask, need_weights=weights,
                        scale=scale)
    assert m.outputs[0].type == f32(N, 2, T, 3)
    x = _inputs(m, s=6, t=5)
    ref = check_parity(m, x)
    assert all(np.isfinite(v).all() for v in ref.values())
    check_grads(m, x, n_coords=3)


def test_sdpa_matches_numpy_formula_and_torch():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((2, 3, 4, 8)), rng.standard_normal((2, 3, 4, 8)), rng.standard_normal((2, 3, 4, 5))
    m = single_op_model("ScaledDotProductAttention", [f32(N, 3, T, 8), f32(N, 3, T, 8), f32(N, 3, T, 5)], causal=True)
    y = NumpyExecutor(m, {}, dtype=np.float64).run({"x0": q, "x1": k, "x2": v})["y"]
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(8)
    s = np.where(np.tril(np.ones((4, 4), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(y, (p / p.sum(-1, keepdims=True)) @ v, atol=1e-12)
    torch = pytest.importorskip("torch")
    ty = torch.nn.functional.scaled_dot_product_attention(torch.tensor(q), torch.tensor(k), torch.tensor(v),
                                                          is_causal=True)
    np.testing.assert_allclose(y, ty.numpy(), atol=1e-12)


def test_sdpa_errors():
    with pytest.raises(ShapeError, match="k's feature dim"):
        single_op_model("ScaledDotProductAttention", [f32(N, 2, T, 4), f32(N, 2, T, 5), f32(N, 2, T, 3)])
    with pytest.raises(ShapeError, match="takes \\(q, k, v, mask\\)"):
        single_op_model("ScaledDotProductAttention", [f32(N, 2, T, 4)] * 3, mask="padding")
    with pytest.raises(ShapeError, match="expects q as \\[N, heads, length, dim\\]"):
        single_op_model("ScaledDotProductAttention", [f32(N, T, 4)] * 3)


# -- AdditiveAttention ---------------------------------------------------------------------------

ADD_CASES = [(mask, w) for mask in ("none", "padding", "lengths") for w in (False, True)]


@pytest.mark.parametrize("mask,weights", ADD_CASES, ids=[f"{m}{'-w' if w else ''}" for m, w in ADD_CASES])
def test_additive_attention_parity_and_grads(mask, weights):
    ins = [f32(N, T, 6), f32(N, S, 5)]
    if mask == "padding":
        ins.append(TensorType("bool", (N, S)))
    elif mask == "lengths":
        ins.append(TensorType("i64", (N,)))
    m = single_op_model("AdditiveAttention", ins, 7, mask=mask, need_weights=weights)
    assert m.outputs[0].type == f32(N, T, 5)
    if weights:
        assert m.outputs[1].type == f32(N, T, S)
    assert m.param_count() == 7 * 6 + 7 * 5 + 7 + 7
    w = _random_weights(m, scale=1.0)
    x = _inputs(m)
    ref = check_parity(m, x, weights=w)
    assert all(np.isfinite(v).all() for v in ref.values())
    check_grads(m, x, weights=w, n_coords=4)


def test_additive_attention_formula():
    m = single_op_model("AdditiveAttention", [f32(N, T, 3), f32(N, S, 4)], 5, need_weights=True)
    w = _random_weights(m, scale=1.0)
    rng = np.random.default_rng(2)
    q, k = rng.standard_normal((2, 3, 3)), rng.standard_normal((2, 6, 4))
    out = NumpyExecutor(m, w, dtype=np.float64).run({"x0": q, "x1": k})
    g = {n.split(".")[-1]: a.astype(np.float64) for n, a in w.items()}
    e = np.tanh((q @ g["query_weight"].T)[:, :, None] + (k @ g["key_weight"].T + g["bias"])[:, None])
    sc = e @ g["v"]
    p = np.exp(sc - sc.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(out["y1"], p, atol=1e-12)
    np.testing.assert_allclose(out["y0"], p @ k, atol=1e-12)


def test_additive_attention_errors():
    with pytest.raises(ShapeError, match="takes \\(query, keys\\), got 1 input") as ei:
        single_op_model("AdditiveAttention", [f32(N, T, 3)], 4)
    assert "pipe a tuple" in ei.value.hint
    with pytest.raises(ShapeError, match="got 3 inputs") as ei:
        single_op_model("AdditiveAttention", [f32(N, T, 3), f32(N, S, 3), TensorType("bool", (N, S))], 4)
    assert "mask='padding'" in ei.value.hint


# -- positions -----------------------------------------------------------------------------------

def test_sinusoidal_table_values():
    pe = sinusoid_table(50, 6)
    t, i = 7, 1
    assert abs(pe[t, 2 * i] - np.sin(t / 10000 ** (2 * i / 6))) < 1e-6
    assert abs(pe[t, 2 * i + 1] - np.cos(t / 10000 ** (2 * i / 6))) < 1e-6
    assert sinusoid_table(10, 5).shape == (10, 5)       # odd widths work too


@pytest.mark.parametrize("shape", [(N, T, 6), (N, 7, 6), (N, T, 5)], ids=["dynamic", "static", "odd"])
def test_positional_encoding_parity_and_grads(shape):
    m = single_op_model("PositionalEncoding", [f32(*shape)], max_len=20, scale=1.5)
    x = random_inputs(m, dims={"N": 2, "T": 9})
    y = check_parity(m, x)["y"]
    np.testing.assert_allclose(y, x["x"] * 1.5 + sinusoid_table(20, shape[-1])[:x["x"].shape[1]], atol=1e-6)
    check_grads(m, x)
    assert m.param_count() == 0


def test_positional_encoding_in_graph_rows_for_a_huge_table(monkeypatch):
    """Past MAX_TABLE_ELEMENTS (max_len * d) the export computes the rows with Range/Sin/Cos."""
    import archdsl.ops.positional as pos
    monkeypatch.setattr(pos, "MAX_TABLE_ELEMENTS", 0)
    for d in (6, 5):
        m = single_op_model("PositionalEncoding", [f32(N, T, d)], max_len=10**6)
        ops = [n.op_type for n in to_onnx(m, {}, opset=17).graph.node]
        assert "Sin" in ops and "Cos" in ops
        check_parity(m, random_inputs(m, dims={"N": 2, "T": 40}), atol=2e-5)


def test_positional_embedding_parity_grads_and_params():
    m = single_op_model("PositionalEmbedding", [f32(N, T, 6)], 12, 6)
    assert m.param_count() == 72
    spec = m.parameters["positionalembedding.weight"].spec
    assert (spec.init, spec.std) == ("normal", 0.02)
    w = _random_weights(m)
    for t in (3, 12):
        x = random_inputs(m, dims={"N": 2, "T": t})
        y = check_parity(m, x, weights=w)["y"]
        np.testing.assert_allclose(y, x["x"] + w["positionalembedding.weight"][:t], atol=1e-6)
    check_grads(m, random_inputs(m, dims={"N": 2, "T": 4}), weights=w)
    # rows past T get no gradient
    ex = NumpyExecutor(m, w)
    y = ex.forward({"x": np.ones((2, 4, 6), np.float32)}, training=True)["y"]
    backward(y.sum())
    g = ex.params["positionalembedding.weight"].grad
    np.testing.assert_allclose(g[:4], 2.0)
    np.testing.assert_allclose(g[4:], 0.0)


def test_position_ops_check_max_len():
    with pytest.raises(ShapeError, match="has 9 steps but max_len is 8") as ei:
        single_op_model("PositionalEmbedding", [f32(N, 9, 4)], 8)
    assert "raise max_len to at least 9" in ei.value.hint
    with pytest.raises(ShapeError, match="4 features but the table has 5"):
        single_op_model("PositionalEmbedding", [f32(N, T, 4)], 8, 5)
    with pytest.raises(ShapeError, match="expects a sequence \\[N, T, d\\]") as ei:
        single_op_model("PositionalEncoding", [TensorType("f32", (N, T))])
    m = single_op_model("PositionalEncoding", [f32(N, T, 4)], max_len=5)
    with pytest.raises(ArchError, match="has 6 steps but max_len is 5"):
        NumpyExecutor(m, {}).run({"x": np.zeros((1, 6, 4), np.float32)})


@pytest.mark.parametrize("index,axis", [(0, 1), (-1, 1), (2, 2)])
def test_select_step(index, axis):
    m = single_op_model("SelectStep", [f32(N, T, 4)], index, axis=axis)
    expect_shape = (N, 4) if axis == 1 else (N, T)
    assert m.outputs[0].type == f32(*expect_shape)
    x = random_inputs(m, dims={"N": 2, "T": 5})
    y = check_parity(m, x)["y"]
    np.testing.assert_array_equal(y, np.take(x["x"], index, axis=axis))
    check_grads(m, x)
    with pytest.raises(ShapeError, match="index 7 is out of range"):
        single_op_model("SelectStep", [f32(N, 5, 4)], 7)


def test_exported_attention_graph_is_valid_with_dynamic_dims():
    m = _mha_case("memory", "padding", causal=True)
    for opset in (17, NEWEST):
        proto = to_onnx(m, initialize(m), opset=opset)
        onnx.checker.check_model(proto, full_check=True)
        dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input]
        assert dims == [["N", "T", 8], ["N", "S", 6], ["N", "S"]]
