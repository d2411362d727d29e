"""Weight-name mappings (archdsl/interop/mapping.py, specs/*.map) without PyTorch: the language
(patterns, transforms, positioned errors), the shipped mappings (every one total and invertible
on its spec), and the strict importer's errors, on .safetensors files written with NumPy."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import archdsl
from archdsl.errors import ArchError
from archdsl.interop import export_weights, import_weights, load_mapping, parse_mapping
from archdsl.interop.convert import convert
from archdsl.passes.init import initialize

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
GPT_SMALL = dict(vocab=50, ctx=16, d=16, layers=2, heads=2, ffn=32)


def gpt(**kw):
    return archdsl.compile(SPECS / "gpt.arch").model("GPT2", **{**GPT_SMALL, **kw})


def hf_gpt_tensors(model, seed=0) -> dict:
    """The model's random weights under GPT-2's names (the shipped mapping run backwards)."""
    w = initialize(model.ir, seed)
    return export_weights(w, model.ir)[0]


# -- the language -------------------------------------------------------------------------------

MAP = """
mapping M from "torchvision.models.resnet18" {
  "layer{s}.0.conv{k}.weight" -> "layer{s}.first.conv_{k}.weight"
  "layer{s}.{b}.conv{k}.weight" -> "layer{s}.rest.{b-1}.conv_{k}.weight"
  "bn.{weight|bias}" -> "norm.{gamma|beta}"
  "qkv.weight" -> "attn.{q|k|v}" split columns, transpose
  "ab.{a|b}" -> "ab" concat rows
  "*.scale" -> "scales.*"
  drop "**.num_batches_tracked"
  alias "**.gamma" = "**.weight"
}
"""


def test_patterns_indices_offsets_pieces_and_stars():
    sec = parse_mapping(MAP, "m.map").sections[0]
    arrays = {"layer2.0.conv1.weight": np.ones((2, 2)), "layer2.3.conv2.weight": np.ones((2, 2)),
              "bn.gamma": np.ones(3), "bn.bias": np.zeros(3),
              "qkv.weight": np.arange(12.0).reshape(2, 6), "ab.a": np.ones(2), "ab.b": np.zeros(2),
              "fc.scale": np.ones(1), "x.bn.num_batches_tracked": np.zeros((), np.int64), "what": np.ones(1)}
    conv = convert(arrays, sec, reading=True)
    assert set(conv.out) == {"layer2.first.conv_1.weight", "layer2.rest.2.conv_2.weight", "norm.gamma", "norm.beta",
                             "attn.q", "attn.k", "attn.v", "ab", "scales.fc"}
    assert conv.unused == ["what"] and conv.dropped == ["x.bn.num_batches_tracked"]
    np.testing.assert_array_equal(conv.out["attn.k"].array, arrays["qkv.weight"][:, 2:4].T)
    np.testing.assert_array_equal(conv.out["ab"].array, [1, 1, 0, 0])
    # and backwards: the same names and arrays come back
    back = convert({k: p.array for k, p in conv.out.items()}, sec, reading=False)
    for k, p in back.out.items():
        np.testing.assert_array_equal(p.array, arrays.get(k, arrays.get("bn.gamma")))
    assert set(back.out) == set(arrays) - {"what", "x.bn.num_batches_tracked", "bn.gamma"} | {"bn.weight"}


def test_a_shifted_index_never_goes_negative():
    sec = parse_mapping(MAP, "m.map").sections[0]
    # layer1.0 is not `rest.-1`: the first rule takes it, and {b-1} rules out b = 0 on its own
    rule = sec.rules[1]
    assert rule.source.match("layer1.0.conv1.weight") is not None
    assert rule.target.names(rule.source.match("layer1.0.conv1.weight")) is None
    assert rule.target.match("layer1.rest.0.conv_1.weight").ints == (("b", 1), ("k", 1), ("s", 1))


@pytest.mark.parametrize("text,line,col,message", [
    ('mapping M { "a" -> }', 1, 20, "unexpected '}'"),
    ('mapping M {\n  "a.{i" -> "b"\n}', 2, 6, "unbalanced '{'"),
    ('mapping M {\n  "a.{i}" -> "b"\n}', 2, 3, "the index {i} of \"a.{i}\" is not used in \"b\""),
    ('mapping M {\n  "a.*" -> "b"\n}', 2, 12, "has 1 '*' but \"b\" has 0"),
    ('mapping M {\n  "qkv" -> "{q|k|v}"\n}', 2, 12, "needs `split rows` or `split columns`"),
    ('mapping M {\n  "q" -> "k" split rows\n}', 2, 14, "split rows needs pieces"),
    ('mapping M {\n  "{a|b}" -> "{x|y}" split rows\n}', 2, 22, "pieces on both sides pair up"),
    ('mapping M {\n  "{a|b}" -> "{x|y|z}"\n}', 2, 14, "pair up one to one but have 2 and 3"),
    ('mapping M {\n  "a.{i+x}" -> "b"\n}', 2, 6, "bad index {i+x}"),
    ('mapping M {\n  "a.**" -> "b"\n}', 2, 6, "'**' (any dotted path) is only allowed in `drop`"),
    ('mapping M {\n  include N\n}', 2, 3, "include N: no mapping section for model 'N'"),
    ('mapping M { include N }\nmapping N { include M }', 2, 13, "include each other"),
    ('mapping M {\n  tied "a.{i}" = "b"\n}', 2, 3, "both sides need the same indices"),
    ('mapping M {\n  alias "**.gamma" = "*.weight"\n}', 2, 3, "both sides need the same indices and wildcards"),
])
def test_mistakes_in_a_mapping_point_at_line_and_column(text, line, col, message):
    with pytest.raises(ArchError) as e:
        parse_mapping(text, "bad.map")
    assert (e.value.span.line, e.value.span.col) == (line, col), e.value.format()
    assert message in e.value.message
    assert e.value.span.file == "bad.map" and "^" in e.value.format()


def test_a_config_line_must_name_a_spec_parameter(tmp_path):
    m = tmp_path / "g.map"
    m.write_text('mapping GPT2 {\n  config n_layer = layrs\n  "a" -> "b"\n}\n')
    with pytest.raises(ArchError, match="model GPT2 has no parameter 'layrs'") as e:
        import_weights(_save(tmp_path / "w.safetensors", hf_gpt_tensors(gpt())), gpt().ir, mapping=m)
    assert (e.value.span.line, e.value.span.col) == (2, 3) and "did you mean 'layers'" in e.value.hint


# -- the shipped mappings -----------------------------------------------------------------------

# spec -> parameters small enough to run quickly (the vision specs have no size parameters: their
# names and shapes are checked on zero arrays that take no memory)
SMALL = {"gpt.arch": GPT_SMALL, "bert.arch": dict(vocab=40, max_pos=16, d=16, layers=2, heads=2, ffn=32),
         "transformer.arch": dict(vocab=30, d=16, heads=2, ffn=32, layers=2)}


def _shipped():
    for m in sorted(SPECS.glob("*.map")):
        for sec in load_mapping(m).sections:
            for model in sec.models:
                yield m.with_suffix(".arch").name, model


@pytest.mark.parametrize("spec,model", list(_shipped()))
def test_every_shipped_mapping_is_total_and_runs_both_ways(spec, model):
    net = archdsl.compile(SPECS / spec).model(model, **SMALL.get(spec, {}))
    ir = net.ir
    if spec in SMALL or net.param_count < 2_000_000:
        w = initialize(ir, 0)
    else:
        w = {n: np.broadcast_to(np.float32(0), tuple(int(d) for d in p.shape)) for n, p in ir.parameters.items()}
    tensors, sec = export_weights(w, ir)          # every parameter has a rule (else: an error)
    assert sec.models and model in sec.models
    imp = import_weights(_source(tensors), ir)
    assert imp.section.label == sec.label and not imp.unused
    assert list(imp.weights) == list(ir.parameters)
    for k in w:
        if w[k].strides == (0,) * w[k].ndim:     # zeros: only names and shapes to compare
            assert imp.weights[k].shape == w[k].shape, k
        else:
            np.testing.assert_array_equal(imp.weights[k], w[k], err_msg=k)


def test_the_mappings_speak_the_source_framework_s_names():
    """Spot checks against the names the libraries use (the torch tests load them for real)."""
    t, _ = export_weights(initialize(gpt().ir, 0), gpt().ir)
    assert t["transformer.h.1.attn.c_attn.weight"].shape == (16, 48)          # Conv1D: [in, 3 out]
    assert "lm_head.weight" in t and "transformer.wte.weight" in t
    r18 = archdsl.compile(SPECS / "resnet18.arch").model()
    zeros = {n: np.broadcast_to(np.float32(0), tuple(p.shape)) for n, p in r18.ir.parameters.items()}
    names = set(export_weights(zeros, r18.ir)[0])
    assert {"conv1.weight", "bn1.running_var", "layer2.0.downsample.0.weight", "layer2.0.downsample.1.bias",
            "layer4.1.conv2.weight", "fc.bias"} <= names
    assert not any("num_batches_tracked" in n for n in names)         # torch fills them in itself


# -- strict and helpful -------------------------------------------------------------------------

def _save(path, tensors, config=None) -> Path:
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))
    if config is not None:
        (path.parent / "config.json").write_text(json.dumps(config))
    return path


def _source(tensors):
    from archdsl.interop.sources import Source
    return Source("<memory>", "safetensors", dict(tensors))


def test_a_missing_tensor_names_both_sides_with_a_did_you_mean(tmp_path):
    t = hf_gpt_tensors(gpt())
    t["transformer.h.0.ln1.weight"] = t.pop("transformer.h.0.ln_1.weight")       # a typo in the source
    with pytest.raises(ArchError) as e:
        import_weights(_save(tmp_path / "w.safetensors", t), gpt().ir)
    msg = e.value.message
    assert "missing 1" in msg
    assert ("repeat_1.0.gptblock_1.layernorm_1.weight: read from 'transformer.h.0.ln_1.weight' by gpt.map:"
            in msg and "did you mean 'transformer.h.0.ln1.weight'?" in msg)


def test_a_bigger_checkpoint_is_unexpected_and_the_hint_says_set(tmp_path):
    t = hf_gpt_tensors(gpt(layers=3))
    with pytest.raises(ArchError) as e:
        import_weights(_save(tmp_path / "w.safetensors", t), gpt().ir)
    msg = e.value.message
    assert "unexpected 12 (the checkpoint has them, model GPT2 does not)" in msg
    assert re.search(r"'transformer.h.2.attn.c_attn.weight' \(gpt.map:\d+: split columns, transpose\) -> "
                     r"'repeat_1.2.gptblock_1.multiheadattention_1.q_weight' \(and 2 more\)", msg)
    assert "--set" in e.value.hint and "n_layer = layers" in e.value.hint
    assert import_weights(tmp_path / "w.safetensors", gpt(layers=3).ir).weights


def test_a_mis_shaped_tensor_names_both_shapes(tmp_path):
    t = hf_gpt_tensors(gpt())
    t["transformer.h.1.attn.c_attn.weight"] = np.zeros((16, 50), np.float32)
    with pytest.raises(ArchError) as e:
        import_weights(_save(tmp_path / "w.safetensors", t), gpt().ir)
    assert "split columns: [16, 50] does not split into 3 equal pieces" in e.value.message
    t["transformer.h.1.attn.c_attn.weight"] = np.zeros((12, 36), np.float32)
    with pytest.raises(ArchError) as e:
        import_weights(_save(tmp_path / "w.safetensors", t), gpt().ir)
    assert ("'transformer.h.1.attn.c_attn.weight' (gpt.map:" in e.value.message
            and "split columns, transpose) [12, 36] -> 'repeat_1.1.gptblock_1.multiheadattention_1.q_weight' "
                "[12, 12], but model GPT2 needs [16, 16]" in e.value.message)


def test_unused_tensors_are_listed_and_tied_copies_checked(tmp_path):
    t = hf_gpt_tensors(gpt())
    t["value_head.weight"] = np.zeros((1, 16), np.float32)
    imp = import_weights(_save(tmp_path / "w.safetensors", t), gpt().ir)
    assert imp.unused == ["value_head.weight"] and imp.tied == ["lm_head.weight"]
    t["lm_head.weight"] = t["lm_head.weight"] + 1                  # untied in the source
    with pytest.raises(ArchError, match="'lm_head.weight' differs from 'transformer.wte.weight', but gpt.map:"):
        import_weights(_save(tmp_path / "w.safetensors", t), gpt().ir)


def test_base_prefix_is_optional_like_hugging_face_s_base_model(tmp_path):
    t = {k.removeprefix("transformer."): v for k, v in hf_gpt_tensors(gpt()).items() if k != "lm_head.weight"}
    imp = import_weights(_save(tmp_path / "w.safetensors", t), gpt().ir)   # GPT2Model, as on the hub
    np.testing.assert_array_equal(imp.weights["wte.weight"], t["wte.weight"])


def test_config_json_is_checked_and_set_fixes_it(tmp_path):
    t = hf_gpt_tensors(gpt(layers=3))
    cfg = {"model_type": "gpt2", "n_layer": 3, "n_embd": 16, "n_head": 2, "vocab_size": 50, "n_positions": 16,
           "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-05}
    _save(tmp_path / "model.safetensors", t, cfg)
    with pytest.raises(ArchError) as e:
        import_weights(tmp_path, gpt().ir)
    assert "n_layer = 3 in the config, but model GPT2 has layers = 2" in e.value.message
    assert e.value.hint.endswith("--set layers=3")
    assert len(import_weights(tmp_path, gpt(layers=3).ir).weights) == len(gpt(layers=3).ir.parameters)
    cfg["activation_function"] = "relu"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArchError, match="activation_function = 'relu' in the config, but the spec computes "
                                        "'gelu_new' or 'gelu_pytorch_tanh'"):
        import_weights(tmp_path, gpt(layers=3).ir)


def test_without_a_mapping_names_are_taken_as_they_are(tmp_path):
    lenet = archdsl.compile(SPECS / "lenet5.arch").model()
    w = lenet.init_weights(1)
    imp = import_weights(_save(tmp_path / "w.safetensors", w), lenet.ir)
    assert imp.section.source is None and imp.weights.keys() == w.keys()
    w["linear3.weight"] = w.pop("linear_3.weight")
    with pytest.raises(ArchError) as e:
        import_weights(_save(tmp_path / "w.safetensors", w), lenet.ir)
    assert "linear_3.weight: read from 'linear_3.weight', which is not in the checkpoint; did you mean " \
           "'linear3.weight'?" in e.value.message and "write a mapping file" in e.value.hint


def test_a_mapping_file_without_the_model_says_what_it_maps(tmp_path):
    with pytest.raises(ArchError, match="has no section for model LeNet5") as e:
        import_weights(_source({}), archdsl.compile(SPECS / "lenet5.arch").model().ir, mapping=SPECS / "gpt.map")
    assert "GPT2" in e.value.hint
