"""Every construct of the .arch language compiles to the IR it should."""
import pytest

import archdsl
from archdsl.errors import ArchError
from archdsl.ir.types import Sym


def one(src, **kw):
    spec = archdsl.compile(src)
    return spec.model(**kw).ir


def test_typed_inputs_dtypes_and_symbolic_dims():
    ir = one("""
model M {
  input a: f32[N, 3]
  input b: f16[4]
  input tokens: i64[N, T]
  input mask: bool[N, T]
  output y = a -> Linear(2)
}""")
    types = {v.name: v.type for v in ir.inputs}
    assert str(types["a"]) == "f32[N, 3]"
    assert types["b"].dtype == "f16" and types["tokens"].dtype == "i64" and types["mask"].dtype == "bool"
    assert types["tokens"].shape == (Sym.named("N"), Sym.named("T"))
    assert str(ir.outputs[0].type) == "f32[N, 2]"


def test_several_models_in_one_file_and_comments():
    spec = archdsl.compile("""
# first
model A { input x: f32[N, 4]  output y = x -> Linear(2) }   # trailing comment
model B { input x: f32[N, 4]  output y = x -> Linear(3) }
""")
    assert spec.model_names == ["A", "B"]
    assert str(spec.model("B").ir.outputs[0].type) == "f32[N, 3]"


def test_chains_named_intermediates_residual_concat_multiple_outputs_and_reuse():
    ir = one("""
model M {
  input x: f32[N, 8]
  h = x -> Linear(8) -> ReLU
  r = h + x                       # residual: x used twice
  c = (h, r) -> Concat(axis=1)
  output a = c -> Linear(2)
  output b = r
}""")
    kinds = [n.kind for n in ir.nodes]
    assert kinds == ["Linear", "ReLU", "Add", "Concat", "Linear"]
    assert [v.name for v in ir.outputs] == ["a", "b"]
    assert str(ir.outputs[0].type) == "f32[N, 2]" and str(ir.outputs[1].type) == "f32[N, 8]"
    concat = ir.nodes[3]
    assert str(concat.outputs[0].type) == "f32[N, 16]"
    g = ir.graph
    assert g.number_of_edges() >= 7


def test_literals_arithmetic_comparisons_booleans_and_conditionals():
    ir = one("""
model M(d: int = 12, heads: int = 4, scale: float = 0.5, tag: str = "x", use: bool = true) {
  input x: f32[N, 3]
  w = d // heads * 2 + 2 ** 2 - d % 5        # 6 + 4 - 2 = 8
  big = w > 7 and not (d == 0) or false
  k = (1, 2, 3)
  y = x -> Linear(w if big else 1, bias=use and tag == "x")
  output out = y -> Linear(len(k) + int(scale * 2))
}""")
    assert ir.nodes[0].attrs == {"out_features": 8, "bias": True, "tied": None, "spectral_norm": False}
    assert ir.nodes[1].attrs["out_features"] == 4


def test_positional_and_keyword_arguments_and_float_literals():
    ir = one("""
model M { input x: f32[N, 3, 8, 8]
  output y = x -> Conv2d(4, 3, stride=1, padding=1, bias=false) -> Dropout(p=1e-1) }""")
    assert ir.nodes[0].attrs["out_channels"] == 4 and ir.nodes[0].attrs["bias"] is False
    assert ir.nodes[1].attrs["p"] == pytest.approx(0.1)


def test_blocks_with_defaults_nesting_and_clusters():
    ir = one("""
block Inner(w: int = 4) { input x  output x -> Linear(w) -> ReLU }
block Outer(w: int, extra: int = 2) {
  input x
  output x -> Inner(w) -> Inner -> Linear(w + extra)
}
model M { input x: f32[N, 3]  output y = x -> Outer(8) }""")
    assert [n.kind for n in ir.nodes] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert ir.nodes[0].scope == ("outer_1", "outer_1.inner_1")
    assert ir.nodes[2].name == "outer_1.inner_2.linear_1"
    assert ir.nodes[2].attrs["out_features"] == 4        # Inner's default
    assert ir.nodes[4].attrs["out_features"] == 10
    assert ir.scopes["outer_1"].label == "Outer(8, 2)"


def test_repeat_gives_distinct_weights_per_copy_and_index_variable():
    ir = one("""
model M { input x: f32[N, 4]
  output y = x -> repeat 3 as i { Linear(4 + i) -> ReLU } }""")
    linears = [n for n in ir.nodes if n.kind == "Linear"]
    assert len(linears) == 3
    assert [n.attrs["out_features"] for n in linears] == [4, 5, 6]
    assert len({n.params["weight"] for n in linears}) == 3
    assert linears[1].name == "repeat_1.1.linear_1"


def test_weight_sharing_same_instance_twice():
    ir = one("""
model Siamese { input a: f32[N, 5]  input b: f32[N, 5]
  enc = Linear(3)
  ea = a -> enc
  eb = b -> enc
  output d = ea - eb }""")
    lin = [n for n in ir.nodes if n.kind == "Linear"]
    assert lin[0].params == lin[1].params
    assert lin[1].name == "enc#2"
    assert ir.param_count() == 5 * 3 + 3


def test_shared_block_instance_shares_all_weights():
    ir = one("""
block B { input x  output x -> Linear(4) -> ReLU -> Linear(4) }
model M { input x: f32[N, 4]
  b = B
  output y = x -> b -> b }""")
    assert ir.param_count() == 2 * (16 + 4)
    assert len(ir.nodes) == 6


def test_output_projection_tied_to_embedding():
    ir = one("""
model LM(vocab: int = 50, d: int = 8) {
  input tokens: i64[N, T]
  wte = Embedding(vocab, d)
  h = tokens -> wte
  output logits = h -> Linear(vocab, bias=false, tied=wte)
}""")
    emb, lin = ir.nodes
    assert lin.params["weight"] == emb.params["weight"] == "wte.weight"
    assert ir.param_count() == 50 * 8
    assert str(ir.outputs[0].type) == "f32[N, T, 50]"


def test_import_relative_to_importing_file(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "blocks.arch").write_text('import "more.arch"\nblock Two { input x  output x -> One -> One }')
    (tmp_path / "lib" / "more.arch").write_text("block One { input x  output x -> Linear(3) }")
    (tmp_path / "main.arch").write_text('import "lib/blocks.arch"\nmodel M { input x: f32[N, 3]  output y = x -> Two }')
    spec = archdsl.compile(tmp_path / "main.arch")
    assert spec.model_names == ["M"]
    assert len(spec.model().ir.nodes) == 2


def test_train_and_gan_sections_parse():
    spec = archdsl.compile("""
model G { input z: f32[N, 2]  output x = z -> Linear(2) }
model D { input x: f32[N, 2]  output p = x -> Linear(1) }
train D { loss = binary_cross_entropy(p, y)  optimizer = Adam(lr=1e-3)  batch = 32  epochs = 2
          metrics = [accuracy]  freeze = ["linear_1"] }
gan Ring { generator = G  discriminator = D  noise = normal(2)  objective = "non_saturating" }
""")
    t = spec.sections["train"][0]
    assert t.entries["batch"] == 32 and t.entries["optimizer"].func == "Adam"
    assert t.entries["optimizer"].kwargs == {"lr": 1e-3}
    g = spec.sections["gan"][0]
    assert g.entries["generator"].name == "G"


def test_set_overrides_model_parameters():
    spec = archdsl.compile("specs/lenet5.arch")
    assert str(spec.model("LeNet5", classes=3).ir.outputs[0].type) == "f32[N, 3]"


def test_symbolic_dims_flow_through_convolutions():
    ir = one("""
model M { input x: f32[N, 4, T]
  output y = x -> Conv1d(2, 3) -> Conv1d(2, 3, stride=2) }""")
    assert str(ir.nodes[0].outputs[0].type) == "f32[N, 2, T-2]"
    assert "T" in str(ir.outputs[0].type)


def test_block_input_type_annotation_binds_symbols():
    ir = one("""
block B { input x: f32[N, 4]  output x -> Linear(2) }
model M { input x: f32[N, 4]  output y = x -> B }""")
    assert len(ir.nodes) == 1
    with pytest.raises(ArchError, match="expects dim 4"):
        one("""
block B { input x: f32[N, 4]  output x -> Linear(2) }
model M { input x: f32[N, 5]  output y = x -> B }""")


def test_composed_callables_and_named_layers():
    ir = one("""
model M { input x: f32[N, 4]
  mlp = Linear(8, name="hidden") -> ReLU
  output y = x -> mlp -> Linear(2, name="head") }""")
    assert [n.name for n in ir.nodes] == ["hidden", "relu_1", "head"]


def test_unpacking_multiple_results():
    ir = one("""
block Two { input x  output x -> Linear(2)  output x -> Linear(3) }
model M { input x: f32[N, 4]
  a, b = x -> Two
  output y = (a, b) -> Concat(axis=1) }""")
    assert str(ir.outputs[0].type) == "f32[N, 5]"


def test_standard_library_import():
    ir = one("""
import "std/mlp.arch"
model M { input x: f32[N, 4]  output y = x -> MLP(16, depth=3) -> Linear(2) }""")
    assert sum(n.kind == "Linear" for n in ir.nodes) == 4
    with pytest.raises(ArchError, match="no standard-library file 'std/mpl.arch'") as ei:
        one('import "std/mpl.arch"\nmodel M { input x: f32[N, 4]  output y = x }')
    assert "mlp.arch" in ei.value.hint
