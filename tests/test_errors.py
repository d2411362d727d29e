"""Every mistake a user can make gives FILE:LINE:COL, a caret under the span, and a hint."""
import pytest

import archdsl
from archdsl.errors import ArchError, ArchErrors


def err(src: str, file=None) -> ArchError:
    with pytest.raises(ArchError) as ei:
        archdsl.compile(src if file is None else file)
    return ei.value


def at(e: ArchError, line: int, col: int):
    assert e.span is not None, e.format()
    assert (e.span.line, e.span.col) == (line, col), e.format()


def test_syntax_error_points_at_the_token():
    e = err("model M {\n  input x: f32[N, 3]\n  y = x -> Linear(4,\n}\n")
    at(e, 4, 1)
    assert "unexpected '}'" in e.message
    text = e.format()
    assert "<string>:4:1: error:" in text and "\n  4 | }\n    | ^" in text


def test_unknown_layer_suggests_the_closest():
    e = err("model M {\n  input x: f32[N, 3]\n  output y = x -> Linaer(4)\n}")
    at(e, 3, 19)
    assert e.message == "undefined name 'Linaer'"
    assert "did you mean 'Linear'" in e.hint


def test_unknown_argument_suggests_the_closest():
    e = err("model M {\n  input x: f32[N, 3, 8, 8]\n  output y = x -> Conv2d(4, 3, strid=2)\n}")
    at(e, 3, 32)
    assert e.message == "Conv2d has no argument 'strid'"
    assert "'stride'" in e.hint


def test_wrong_argument_type():
    e = err('model M {\n  input x: f32[N, 3]\n  output y = x -> Linear("ten")\n}')
    at(e, 3, 26)
    assert "Linear argument 'out_features' must be an int, got 'ten'" == e.message


def test_a_float_argument_must_fit_the_dtype():
    # a fuzz finding: k=1e300 overflowed when lowered as an f32 constant
    for value in ("k=1e300", "beta=-1e39"):
        e = err(f"model M {{\n  input x: f32[N, 2, 5]\n  output y = x -> LocalResponseNorm(size=1, {value})\n}}")
        assert e.span.line == 3 and "does not fit the input's dtype f32" in e.message, e.format()
    fits = archdsl.compile("model M {\n  input x: f32[N, 2, 5]\n  output y = x -> LocalResponseNorm(size=1, k=3e38)\n}")
    assert fits.model().ir.nodes[0].attrs["k"] == 3e38


def test_missing_required_argument():
    e = err("model M {\n  input x: f32[N, 3]\n  output y = x -> Linear(bias=false)\n}")
    at(e, 3, 19)
    assert e.message == "Linear is missing required argument 'out_features'"


def test_shape_mismatch_names_the_dims_and_where_the_input_came_from():
    e = err("model M {\n  input x: f32[N, 1, 32, 32]\n  x = x -> Conv2d(16, 5) -> MaxPool2d(2)\n"
            "  output y = x -> BatchNorm1d\n}")
    at(e, 4, 19)
    assert "BatchNorm1d" in e.message and "f32[N, 16, 14, 14]" in e.message
    assert "BatchNorm2d" in e.hint


def test_broadcast_mismatch_names_both_shapes():
    e = err("model M {\n  input a: f32[N, 3]\n  input b: f32[N, 4]\n  output y = a + b\n}")
    at(e, 4, 14)
    assert "[N, 3]" in e.message and "[N, 4]" in e.message


def test_undefined_tensor():
    e = err("model M {\n  input x: f32[N, 3]\n  output y = z -> ReLU\n}")
    at(e, 3, 14)
    assert e.message == "undefined name 'z'"


def test_use_before_definition_and_cycle():
    e = err("model M {\n  input x: f32[N, 3]\n  a = b -> ReLU\n  b = x -> ReLU\n  output y = a\n}")
    at(e, 3, 7)
    assert "'b' is used before it is defined (line 4)" in e.message
    e = err("model M {\n  input x: f32[N, 3]\n  a = b -> ReLU\n  b = a -> ReLU\n  output y = b\n}")
    at(e, 3, 7)
    assert e.message.startswith("cycle:")


def test_repeat_count_must_be_a_nonnegative_int():
    for count, shown in (("-1", "-1"), ("2.5", "2.5"), ('"3"', "'3'")):
        e = err(f"model M {{\n  input x: f32[N, 3]\n  output y = x -> repeat {count} {{ Linear(3) }}\n}}")
        at(e, 3, 26)
        assert e.message == f"a repeat count must be an int >= 0, got {shown}"


def test_import_cycle(tmp_path):
    (tmp_path / "a.arch").write_text('import "b.arch"\nmodel M { input x: f32[N, 3]  output y = x -> ReLU }')
    (tmp_path / "b.arch").write_text('\nimport "a.arch"\n')
    e = err(None, tmp_path / "a.arch")
    at(e, 2, 1)
    assert e.span.file.endswith("b.arch")
    assert e.message == "import cycle: a.arch -> b.arch -> a.arch"


def test_missing_import(tmp_path):
    (tmp_path / "a.arch").write_text('# header\nimport "nope.arch"\n')
    e = err(None, tmp_path / "a.arch")
    at(e, 2, 1)
    assert "cannot import 'nope.arch': no such file" in e.message
    assert "relative to the importing file" in e.hint


def test_several_independent_errors_are_collected_without_cascades():
    src = ("model M {\n  input x: f32[N, 3]\n  a = x -> Linaer(3)\n  b = x -> Linear(3, bais=true)\n"
           "  c = a -> ReLU\n  output y = b\n}")
    with pytest.raises(ArchErrors) as ei:
        archdsl.compile(src)
    errs = ei.value.errors
    assert [(e.span.line, e.span.col) for e in errs] == [(3, 12), (4, 22)]   # nothing reported for `c`
    assert ei.value.format().endswith("2 errors")


def test_unknown_dtype_and_missing_input_type():
    e = err("model M {\n  input x: f33[N, 3]\n  output y = x\n}")
    at(e, 2, 12)
    assert "unknown dtype 'f33'" in e.message and "f32" in e.hint
    e = err("model M {\n  input x\n  output y = x\n}")
    at(e, 2, 3)
    assert "needs a type" in e.message


def test_wrong_number_of_inputs_to_a_layer():
    e = err("model M {\n  input x: f32[N, 3]\n  output y = x -> Concat(axis=1)\n}")
    at(e, 3, 19)
    assert "Concat takes at least 2 input tensors, got 1" == e.message


def test_tied_shapes_must_match():
    e = err("model M {\n  input t: i64[N]\n  emb = Embedding(10, 4)\n  h = t -> emb\n"
            "  output y = h -> Linear(11, bias=false, tied=emb)\n}")
    at(e, 5, 19)
    assert "tied parameter emb.weight has shape [10, 4]" in e.message


def test_unknown_model_parameter_override():
    spec = archdsl.compile("specs/lenet5.arch")
    with pytest.raises(ArchError) as ei:
        spec.model("LeNet5", clases=3)
    assert "no parameter 'clases'" in ei.value.message and "'classes'" in ei.value.hint


def test_keyword_cannot_be_a_name():
    e = err("model M {\n  input x: f32[N, 3]\n  output = x\n}")
    assert e.span.line == 3
