"""What the language says so that today's architectures read like their papers: free parameters
(`param`), per-layer initialisers (`init=`, `bias_init=`), subscripts on tensors, `repeat 0`; the
tensor math is in test_ops_math.py, shape constraints in test_constraints.py."""
import numpy as np
import onnx
import pytest

import archdsl
from archdsl.errors import ArchError
from archdsl.ir.types import Sym
from archdsl.train.checkpoint import load_weights
from archdsl.train.loop import train
from harness import check_grads, check_parity, random_inputs


def compile_model(src: str, **kw):
    return archdsl.compile(src).model(**kw)


def err(src: str) -> ArchError:
    with pytest.raises(ArchError) as e:
        archdsl.compile(src)
    return e.value


# -- param --------------------------------------------------------------------------------------
VIT_HEAD = """
model Tokens(d: int = 8, patches: int = 4) {
  input patches_in: f32[N, 4, 8]
  param cls: f32[1, 1, d] = normal(std=0.02)        # ViT's class token
  param pos: f32[1, patches, d] = trunc_normal(std=0.02)
  param gamma: f32[d] = constant(1e-6)              # layer scale
  h = patches_in + pos
  output y = cls + gamma * (h -> Linear(d))
}
"""


def test_param_is_a_named_learnable_tensor_counted_exported_and_trained():
    m = compile_model(VIT_HEAD)
    ir = m.ir
    assert list(ir.parameters)[:3] == ["cls", "pos", "gamma"]
    assert [tuple(ir.parameters[n].shape) for n in ("cls", "pos", "gamma")] == [(1, 1, 8), (1, 4, 8), (8,)]
    assert m.param_count == 8 + 32 + 8 + (8 * 8 + 8)
    report = m.cost()
    assert report.row("cls").kind == "Parameter" and report.row("cls").params == 8
    assert "Parameter([1, 1, 8])" in m.summary()
    assert "cls" in m.to_dot().source
    w = m.init_weights(seed=3)
    np.testing.assert_array_equal(w["gamma"], np.full(8, 1e-6, np.float32))
    assert 0 < w["cls"].std() < 0.05 and np.all(np.abs(w["pos"]) <= 2.0)
    proto = m.to_onnx(seed=3)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    np.testing.assert_array_equal(inits["cls"], w["cls"])
    assert not [n for n in proto.graph.node if n.op_type == "Identity"]     # the node computes nothing
    ex = m.executor(w)
    assert all(ex.params[n].requires_grad for n in ("cls", "pos", "gamma"))
    xs = random_inputs(ir)
    check_parity(ir, xs, w)
    check_grads(ir, xs, w)


def test_param_is_one_per_block_instance_and_repeat_copy_and_shared_when_reused():
    m = compile_model("""
block Scale(d: int) {
  input x
  param g: f32[d] = ones
  output x * g
}
model M {
  input x: f32[N, 4]
  s = Scale(4)
  a = x -> s -> s                        # the same instance twice: one g
  b = x -> repeat 2 { Scale(4) }         # two copies: two g
  output y = a + b
}""")
    names = list(m.ir.parameters)
    assert names == ["s.g", "repeat_1.0.scale_1.g", "repeat_1.1.scale_1.g"]
    assert m.param_count == 12
    xs = random_inputs(m.ir)
    w = m.init_weights()
    w["s.g"] = np.arange(4, dtype=np.float32)
    got = check_parity(m.ir, xs, w)["y"]
    np.testing.assert_allclose(got, xs["x"] * np.arange(4) ** 2 + xs["x"], rtol=1e-6)
    check_grads(m.ir, xs, w)


def test_param_trains_freezes_and_checkpoints(tmp_path):
    spec = archdsl.compile("""
model Scale {
  input x: f32[N, 4]
  param w: f32[4] = zeros
  param b: f32[1] = constant(0.5)
  output y = x * w + b
}
train Scale {
  loss = mse(y, target)
  optimizer = Adam(lr=0.05)
  batch = 16
  epochs = 30
  freeze = [b]
}
""")
    m = spec.model("Scale")
    x = np.random.default_rng(0).standard_normal((256, 4)).astype(np.float32)
    res = train(m, {"x": x, "target": x * np.array([1, 2, 3, 4], np.float32) + 0.5}, run_dir=tmp_path, quiet=True)
    np.testing.assert_allclose(res.weights["w"], [1, 2, 3, 4], atol=1e-3)
    assert res.weights["b"].tolist() == [0.5]              # frozen by its name
    loaded = load_weights(res.checkpoint, m.ir)
    np.testing.assert_array_equal(loaded["w"], res.weights["w"])


@pytest.mark.parametrize("src,message,hint", [
    ("param w: f32[4]", "parameter 'w' needs an initialiser", "param w: f32[4] = zeros"),
    ("param w: i64[4] = zeros", "parameter 'w' must be f32, got i64", "float32"),
    ("param w: f32[dim(x, 0)] = zeros", "a parameter's dims must be ints, got N", "symbolic dims"),
    ("param w: f32[k] = zeros", "undefined name 'k'", None),
    ("param w: f32[4] = 3", "a parameter's value must be an initialiser, got 3", "normal(std=0.02)"),
    ("param w: f32[4] = constant", "constant() needs a value for 'value'", "constant(1e-6)"),
    ("param w: f32[4] = xavier_uniform", "xavier_uniform needs a parameter of rank 2 or more", "normal(std=...)"),
    ("param w: f32[4, 0] = zeros", "a dimension must be positive, got 0", None),
    ("param w: f32[4] = zeros\n  param w: f32[4] = zeros", "'w' already names a layer or parameter here", None),
    ("y = x -> Parameter((2, 3))", "Parameter takes 0 input tensors, got 1", "param w: f32[...]"),
])
def test_param_errors_have_a_position_and_a_hint(src, message, hint):
    e = err(f"model M {{\n  input x: f32[N, 4]\n  {src}\n  output y = x\n}}\n")
    assert message in e.message
    assert e.span is not None and e.span.line in (3, 4)
    if hint:
        assert hint in e.hint


def test_param_name_is_a_keyword_and_fmt_keeps_it():
    from archdsl.authoring.fmt import format_source
    src = "model M {\n  input x: f32[N, 4]\n  param  g : f32[ 4 ]=constant( 1e-6 )\n  output x*g\n}\n"
    assert format_source(src) == "model M {\n  input x: f32[N, 4]\n  param g: f32[4] = constant(1e-6)\n  output x * g\n}\n"
    e = err("model M {\n  input x: f32[N, 4]\n  param = x\n  output x\n}\n")
    assert "keyword" in (e.hint or "")


# -- init= ---------------------------------------------------------------------------------------
def test_init_and_bias_init_set_a_layers_weights_seeded_and_deterministic():
    src = """
model M {
  input x: f32[N, 64, 8, 8]
  h = x -> Conv2d(128, 3, padding=1, init=kaiming_normal(mode='fan_out', nonlinearity='relu'),
                  bias_init=constant(0.1))
  output y = h -> Flatten -> Linear(10, init=zeros, bias_init=uniform(a=-0.5, b=0.5))
}"""
    m = compile_model(src)
    w = m.init_weights(seed=0)
    conv = w["conv2d_1.weight"]
    assert conv.shape == (128, 64, 3, 3)
    assert conv.std() == pytest.approx(np.sqrt(2.0 / (128 * 9)), rel=0.02)      # fan_out = 128 * 3 * 3
    np.testing.assert_array_equal(w["conv2d_1.bias"], np.full(128, 0.1, np.float32))
    assert not w["linear_1.weight"].any()
    assert -0.5 <= w["linear_1.bias"].min() < w["linear_1.bias"].max() <= 0.5
    again = compile_model(src).init_weights(seed=0)
    assert all(np.array_equal(w[k], again[k]) for k in w)
    other = m.init_weights(seed=1)
    assert not np.array_equal(w["conv2d_1.weight"], other["conv2d_1.weight"])
    assert m.ir.parameters["conv2d_1.weight"].spec.initializer.kind == "kaiming_normal"


def test_init_reaches_every_weight_of_a_layer_and_leaves_buffers():
    m = compile_model("""
model M {
  input x: f32[N, T, 4]
  h = x -> LSTM(6, init=xavier_uniform, bias_init=zeros)
  output y = h -> LayerNorm(6, init=constant(2.0))
}""")
    w = m.init_weights()
    for k in ("lstm_1.weight_ih_l0", "lstm_1.weight_hh_l0"):
        fan_in, fan_out = w[k].shape[1], w[k].shape[0]
        assert np.abs(w[k]).max() <= np.sqrt(6.0 / (fan_in + fan_out)) + 1e-7
    assert not w["lstm_1.bias_ih_l0"].any() and not w["lstm_1.bias_hh_l0"].any()
    np.testing.assert_array_equal(w["layernorm_1.weight"], np.full(6, 2.0, np.float32))
    assert not w["layernorm_1.bias"].any()
    bn = compile_model("model M { input x: f32[N, 3, 4, 4]  output y = x -> BatchNorm2d(3, init=constant(3.0)) }")
    bw = bn.init_weights()
    assert bw["batchnorm2d_1.weight"].tolist() == [3.0] * 3 and bw["batchnorm2d_1.running_var"].tolist() == [1.0] * 3


def test_init_on_a_shared_layer_applies_once_and_embedding_padding_stays_zero():
    m = compile_model("""
model M {
  input ids: i64[N, T]
  emb = Embedding(10, 4, padding_idx=0, init=normal(std=3.0))
  output y = (ids -> emb) + (ids -> emb)
}""")
    w = m.init_weights()
    assert list(m.ir.parameters) == ["emb.weight"]
    assert not w["emb.weight"][0].any() and w["emb.weight"][1:].std() > 1.0


@pytest.mark.parametrize("call,message,hint", [
    ("ReLU(init=zeros)", "ReLU has no weights for init= to initialise", "bias_init= its biases"),
    ("Linear(4, bias=false, bias_init=zeros)", "Linear has no bias for bias_init= to initialise", "bias=false"),
    ("Linear(4, init=normal(0.02))", "normal() takes no positional arguments, got 1", "normal(mean=..., std=...)"),
    ("Linear(4, init=normal(sd=0.02))", "normal() has no argument 'sd'", "std"),
    ("Linear(4, init=kaiming_normal(mode='fan'))", "kaiming_normal() argument 'mode' must be one of 'fan_in', 'fan_out', got 'fan'", "fan_in"),
    ("Linear(4, init=normal(std=-1.0))", "normal() needs 0 <= std <= 1e+06, got std=-1.0", None),
    ("Linear(4, init=uniform(a=1.0, b=0.0))", "uniform() needs a < b, got a=1.0, b=0.0", None),
    ("Linear(4, init=trunc_normal(std=0.02, a=1.0, b=2.0))", "holds almost none", "absolute values"),
    ("Linear(4, bias_init=kaiming_uniform)", "kaiming_uniform needs a parameter of rank 2 or more", None),
    ("Linear(4, init=3)", "init= must be an initialiser, got 3", "kaiming_normal"),
    ("Linear(4, init=Linear)", "init= must be an initialiser, got layer kind Linear", None),
])
def test_init_errors_point_at_the_keyword(call, message, hint):
    e = err(f"model M {{\n  input x: f32[N, 4]\n  output y = x -> {call}\n}}\n")
    assert message in e.message
    assert e.span is not None and e.span.line == 3
    if hint:
        assert hint in e.hint


def test_init_cannot_set_a_tied_weight():
    e = err("""model M {
  input ids: i64[N, T]
  wte = Embedding(10, 4)
  output y = ids -> wte -> Linear(10, bias=false, tied=wte, init=zeros)
}""")
    assert "init= cannot set the weight Linear shares with wte" in e.message and e.span.line == 4


# -- subscripts ----------------------------------------------------------------------------------
def test_subscripts_on_tensors_follow_python():
    m = compile_model("""
model M(d: int = 3) {
  input x: f32[N, T, 8]
  output first = x[:, 0]
  output head = x[..., :d]
  output odd = x[:, 1:-1:2]
  output last = x[-1, -1]
  output flip = x[:, ::-1, 2:7:2]
}""")
    types = {v.name: str(v.type) for v in m.ir.outputs}
    assert types["first"] == "f32[N, 8]" and types["head"] == "f32[N, T, 3]"
    assert types["last"] == "f32[8]" and types["flip"] == "f32[N, T, 3]"
    assert m.ir.outputs[2].type.shape[1] == (Sym.named("T") - 1) // 2
    xs = random_inputs(m.ir, dims={"T": 6})
    got = check_parity(m.ir, xs)
    x = xs["x"]
    for name, want in (("first", x[:, 0]), ("head", x[..., :3]), ("odd", x[:, 1:-1:2]), ("last", x[-1, -1]),
                       ("flip", x[:, ::-1, 2:7:2])):
        np.testing.assert_array_equal(got[name], want, err_msg=name)
    check_grads(m.ir, xs)


def test_tuple_indexing_still_picks_a_layers_outputs():
    m = compile_model("""
model M {
  input x: f32[N, T, 4]
  outs = x -> LSTM(6, return_state=true)
  output h = outs[0][:, -1]
  output c = outs[-1][0]
}""")
    assert [str(v.type) for v in m.ir.outputs] == ["f32[N, 6]", "f32[N, 6]"]


@pytest.mark.parametrize("expr,message", [
    ("x[0, 0, 0, 0]", "4 subscripts for the 3-D tensor f32[N, 5, 8]"),
    ("x[..., 0, ...]", "subscripts take at most one '...'"),
    ("x[:, 1.5]", "a subscript must be an int, got 1.5"),
    ("x[:, :dim(x, 0)]", "a subscript must be an int, got N"),
    ("x[:, 5]", "Index: index 5 is out of range for dim 1 of size 5 (f32[N, 5, 8])"),
    ("x[:, -6]", "Index: index -6 is out of range"),
    ("x[:, 3:3]", "Index: the slice 3:3 of dim 1 (size 5) is empty"),
    ("x[:, ::0]", "Index: a slice step cannot be zero"),
    ("(x, x)[0, 1]", "a tuple takes one integer index or slice"),
    ("(x, x)[2]", "index 2 is out of range for a tuple of 2"),
    ("Linear(3)[0]", "cannot index Linear layer"),
])
def test_subscript_errors(expr, message):
    e = err(f"model M {{\n  input x: f32[N, 5, 8]\n  output y = {expr}\n}}\n")
    assert message in e.message
    assert e.span is not None and e.span.line == 3
    assert e.hint or expr.startswith("Linear")


def test_a_subscript_on_a_symbolic_dim_records_what_it_needs():
    m = compile_model("model M {\n  input x: f32[N, T, 8]\n  output y = x[:, 7] + x[:, -2]\n}")
    needs = sorted((str(c.lhs), c.relation, c.rhs) for c in m.ir.constraints)
    assert needs == [("T", ">=", 2), ("T", ">=", 8)]
    e = err("model M {\n  input x: f32[N, T, 8]\n  output y = x[:, 3:1]\n}")
    assert "always empty" in e.message or "is empty" in e.message


# -- repeat 0 ------------------------------------------------------------------------------------
def test_repeat_zero_is_the_identity():
    m = compile_model("""
block Stage(width: int, depth: int) {
  input x
  output x -> repeat depth { Linear(width) -> ReLU }
}
model M(depth: int = 0) {
  input x: f32[N, 4]
  h = x -> Stage(4, depth) -> Tanh
  output y = x -> repeat 0 { Linear(99) }
  output z = h
}""")
    assert [n.kind for n in m.ir.nodes] == ["Tanh", "Identity"]
    assert m.param_count == 0 and not any(s.label.startswith("repeat") for s in m.ir.scopes.values())
    xs = random_inputs(m.ir)
    np.testing.assert_array_equal(check_parity(m.ir, xs)["y"], xs["x"])
    assert compile_model(m.spec.ns.source, depth=2).param_count == 2 * 20


# -- the README's tour shows these exact lines; they compile and run ----------------------------------
README_VAE = """\
mu = h -> Linear(z)
logvar = h -> Linear(z)
output sample = mu + exp(0.5 * logvar) * eps        # input eps: f32[N, z]
"""
README_PARAMS = """\
param cls: f32[1, 1, d] = zeros                      # ViT's class token
param pos: f32[1, 197, d] = normal(std=0.02)         # its position table: h = tokens + pos

block LayerScaled(d: int) {                          # CaiT / ConvNeXt layer scale
  input x
  param gamma: f32[d] = constant(1e-6)
  output x + gamma * (x -> LayerNorm(d) -> Linear(4 * d) -> GELU -> Linear(d))
}

block WindowAttention(heads: int, n: int) {          # Swin: a learned bias per head and pair
  input q
  input k
  input v
  param bias: f32[heads, n, n] = trunc_normal(std=0.02)
  scores = (q @ (k -> Transpose((0, 1, 3, 2)))) * dim(q, 3) ** -0.5 + bias
  output (scores -> Softmax) @ v
}
"""
README_INITS = ["x -> Conv2d(64, 3, padding=1, bias=false, init=kaiming_normal(mode='fan_out', nonlinearity='relu'))",
                "x -> Linear(classes, init=normal(std=0.01), bias_init=zeros)"]


def test_the_readme_tour_snippets_compile_and_run():
    from pathlib import Path
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for snippet in [README_VAE, README_PARAMS] + README_INITS:
        assert snippet in readme, snippet
    indent = lambda text: "".join(f"  {ln}\n" for ln in text.splitlines())    # noqa: E731
    vae = compile_model("model VAE(z: int = 4) {\n  input x: f32[N, 12]\n  input eps: f32[N, z]\n"
                        "  h = x -> Linear(8) -> ReLU\n" + indent(README_VAE) + "}\n")
    xs = random_inputs(vae.ir)
    got = check_parity(vae.ir, xs)["sample"]
    assert got.shape == (2, 4)
    check_grads(vae.ir, xs)
    blocks = README_PARAMS.split("\n\n", 1)[1]
    params = README_PARAMS.split("\n\n", 1)[0]
    vit = compile_model(blocks + "\nmodel ViT(d: int = 8) {\n  input tokens: f32[N, 197, 8]\n  input q: f32[N, 2, 5, 4]\n"
                        + indent(params) + "  h = tokens + pos + cls -> LayerScaled(d)\n"
                        "  output y = h\n  output a = (q, q, q) -> WindowAttention(2, 5)\n}\n")
    assert {"cls", "pos", "layerscaled_1.gamma", "windowattention_1.bias"} <= set(vit.ir.parameters)
    assert tuple(vit.ir.parameters["windowattention_1.bias"].shape) == (2, 5, 5)
    check_parity(vit.ir, random_inputs(vit.ir))
    inits = compile_model("model C(classes: int = 3) {\n  input x: f32[N, 3, 8, 8]\n"
                          f"  h = {README_INITS[0]}\n  output y = h -> Flatten -> Linear(classes, "
                          "init=normal(std=0.01), bias_init=zeros)\n}\n")
    w = inits.init_weights()
    assert w["conv2d_1.weight"].std() == pytest.approx(np.sqrt(2 / (64 * 9)), rel=0.05)
    assert not w["linear_1.bias"].any() and w["linear_1.weight"].std() == pytest.approx(0.01, rel=0.05)
