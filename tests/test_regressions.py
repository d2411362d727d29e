"""One test per bug the fuzzers (tests/test_fuzz.py, tools/fuzz_campaign.py) or their review
found. Each names what used to happen; each would fail without its fix."""
from __future__ import annotations

import os
import sys

import pytest

import archdsl
from archdsl.errors import ArchError, ArchErrors, Span

from harness import count_calls, forbid_parsing, opens_without_blocking


def err(src) -> ArchError:
    with pytest.raises(ArchError) as ei:
        archdsl.compile(src)
    return ei.value


def default(expr: str) -> str:
    return f"model M(a: int = {expr}) {{\n  input x: f32[N, 2]\n  output y = x\n}}\n"


def in_file(e: ArchError, source: str):
    for x in (e.errors if isinstance(e, ArchErrors) else [e]):
        assert x.span is not None, x.format()
        lines = source.split("\n")
        assert 1 <= x.span.line <= len(lines) and 1 <= x.span.col <= len(lines[x.span.line - 1]) + 1, x.format()


# -- parser --------------------------------------------------------------------------------------
def test_unary_minus_chain_was_a_recursion_error():
    # Lark's recursive Transformer overflowed the stack on 10,000 nested unary operators
    e = err(default("-" * 10_000 + "1"))
    assert "nested more than" in e.message


def test_long_sum_was_a_recursion_error():
    e = err(default("+".join(["1"] * 2_000)))
    assert "nested more than" in e.message


@pytest.mark.parametrize("expr", ["not " * 1_000 + "true", "1 if true else " * 1_000 + "1", "max" + "(1)" * 1_000])
def test_not_conditional_and_call_chains_were_recursion_errors(expr):
    assert "nested more than" in err(default(expr)).message


def test_ten_thousand_parentheses_were_parsed_for_seconds(monkeypatch):
    forbid_parsing(monkeypatch)            # now refused before Lark sees them
    e = err(default("(" * 10_000 + "1" + ")" * 10_000))
    assert "brackets nested more than" in e.message


def test_nested_lists_were_a_recursion_error():
    assert "brackets nested more than" in err(default("[" * 3_000 + "]" * 3_000)).message


def test_integer_literal_with_thousands_of_digits_was_a_visit_error():
    # int() refuses more than 4,300 digits (ValueError inside Lark's transformer -> VisitError)
    src = default("9" * 5_000)
    e = err(src)
    assert e.message == "integer literal with 5000 digits is too large"
    assert (e.span.line, e.span.col) == (1, 18)


def test_float_literal_overflowing_to_infinity_is_refused_where_it_is_written():
    e = err("model M { input x: f32[N, 2]\n  output y = x -> Dropout(1e999) }")
    assert e.message == "number 1e999 is too large" and (e.span.line, e.span.col) == (2, 27)


# -- elaboration ---------------------------------------------------------------------------------
def test_long_layer_chain_was_a_recursion_error():
    # the elaborator evaluated x -> A -> B -> ... recursively, one frame pair per link
    chain = " -> ".join(["ReLU"] * 2_000)
    ir = archdsl.compile(f"model M {{ input x: f32[N, 2]\n  output y = x -> {chain} }}").model().ir
    assert len(ir.nodes) == 2_000


def test_poisoned_value_inside_a_composed_chain_was_an_attribute_error():
    # a repeat whose body failed returned POISON into apply(), which read POISON.value
    src = ("model M { input x: f32[N, 3]\n  a = x -> Linaer(3)\n"
           "  y = x -> (repeat 2 { Linear(a) } -> ReLU)\n  output y }")
    e = err(src)
    assert e.message == "undefined name 'Linaer'"


def test_recursive_parameter_default_was_a_recursion_error():
    e = err("block B(a: int = B()) { input x  output x }\nmodel M { input x: f32[N, 3]  output y = x -> B }")
    assert "nested more than" in e.message and "recursive" in e.hint


def test_nested_repeats_of_a_layerless_block_hung(monkeypatch):
    # 10^8 block applications that add no layer never reached MAX_NODES
    from archdsl.elaborate import elaborator as E
    monkeypatch.setattr(E, "MAX_EXPANSIONS", 10_000)
    expansions = count_calls(monkeypatch, E.Elaborator, "_expand")
    e = err("block I { input x  output x }\n"
            "model M { input x: f32[N, 3]  output y = x -> repeat 10000 { repeat 10000 { I } } }")
    assert expansions.calls == 10_001
    assert "block applications and repeat copies" in e.message


@pytest.mark.parametrize("call,message", [
    ("int(8, 16)", "int() takes 1 argument, got 2"),           # was ValueError: int() base must be >= 2
    ("int(8, 1)", "int() takes 1 argument, got 2"),
    ("sqrt(-1)", "sqrt(-1) has no finite real value"),         # was ValueError: math domain error
    ("abs()", "abs() takes 1 argument, got 0"),
])
def test_numeric_builtins_raised_value_errors(call, message):
    e = err(default(call))
    assert e.message == message and (e.span.line, e.span.col) == (1, 18)


@pytest.mark.parametrize("dim,message", [
    ("N // 0", "division by zero"),                                 # was ZeroDivisionError in Sym.__floordiv__
    ("N + 0.5", "'+' between symbolic dimension N and a float is not supported"),   # was silently f32[N, 3]
    ("-N", "a dimension must be positive, got -N"),                 # was accepted
    ("N // -1", "a dimension must be positive, got -N"),
    ("2 ** 62 * N * 4", "integer result is too large (*)"),           # was a 2^64 coefficient
])
def test_symbolic_dimension_arithmetic(dim, message):
    e = err(f"model M {{ input x: f32[{dim}, 3]\n  output y = x -> Linear(2) }}")
    assert e.message == message and e.span.line == 1


def test_symbolic_dimension_arithmetic_that_is_fine():
    ir = archdsl.compile("model M { input x: f32[(T + 3) // 2, 2 * T - 1]\n  output y = x }").model().ir
    assert str(ir.inputs[0].type) == "f32[(T+3)//2, 2*T-1]"


@pytest.mark.parametrize("setting,message", [
    ("a=" + "9" * 400, "parameter 'a' of model M: the integer is too large"),   # was OverflowError in float()
    ("w=" + "9" * 30, "parameter 'w' of model M: the integer is too large"),    # skipped the 2**62 check
    ("a=nan", "parameter 'a' of model M must be a finite number, got nan"),     # was accepted: Dropout(nan)
])
def test_command_line_parameter_values(setting, message):
    from archdsl.api import parse_set
    src = "model M(a: float = 0.5, w: int = 2) { input x: f32[N, 3]\n  output y = x -> Dropout(a) -> Linear(w) }"
    with pytest.raises(ArchError) as ei:
        archdsl.compile(src, **parse_set([setting]))
    assert ei.value.message == message and ei.value.span.line == 1


def test_transpose_of_a_scalar_could_not_be_exported():
    # helper.make_node cannot infer the type of an empty `perm` list (ValueError)
    m = archdsl.compile("model M {\n  input x: f32[]\n  output y = x -> Permute(perm=())\n}\n").model()
    proto = m.to_onnx()
    assert [n.op_type for n in proto.graph.node] == ["Identity"]


def test_lstm_with_a_huge_layer_count_was_a_memory_error():
    # params() built a Python list of num_layers entries (2^40)
    e = err("model M {\n  input x: f32[N, T, 3]\n  output y = x -> LSTM(2, num_layers=2 ** 40)\n}\n")
    assert "num_layers=1099511627776 is more than 10,000 stacked layers" in e.message
    assert "MAX_STACKED_LAYERS" in e.hint and e.span.line == 3


# -- files and spans -----------------------------------------------------------------------------
def test_invalid_utf8_had_no_position(tmp_path):
    f = tmp_path / "bad.arch"
    f.write_bytes(b"model M {\n  input x: f32[N, 2] \xff\n  output y = x\n}\n")
    e = err(f)
    assert e.message.endswith("is not valid UTF-8 (byte 31)")
    assert (e.span.line, e.span.col) == (2, 22)
    assert "^" in e.format()


def test_excerpt_counted_lines_differently_from_the_parser():
    # str.splitlines() also breaks at \x0c, \x1c, \x85, \u2028...; Lark counts only \n
    src = "# a\x0cb \u2028 c\nmodel M {\n  input x: f32[N, 2]\n  output y = x -> Linaer\n}\n"
    e = err(src)
    assert (e.span.line, e.span.col) == (4, 19)
    assert "  4 |   output y = x -> Linaer" in e.format()


def test_end_of_file_error_position_with_unusual_line_breaks():
    src = "model M {\n  input x: f32[N, 2]  # \u2028 \x85\n  output y = x\n"
    e = err(src)
    assert e.message.startswith("unexpected end of file")
    in_file(e, src)


def test_import_of_a_symlink_loop_was_a_runtime_error(tmp_path):
    (tmp_path / "loop.arch").symlink_to(tmp_path / "loop.arch")
    (tmp_path / "m.arch").write_text('import "loop.arch"\nmodel M { input x: f32[N, 2]  output y = x }')
    e = err(tmp_path / "m.arch")
    assert e.message.startswith("cannot import 'loop.arch'") and e.span.line == 1


def test_import_path_with_a_nul_byte_was_a_value_error(tmp_path):
    (tmp_path / "m.arch").write_text('import "a\x00.arch"\nmodel M { input x: f32[N, 2]  output y = x }')
    e = err(tmp_path / "m.arch")
    assert "embedded null byte" in e.message and e.span.line == 1


def test_import_of_a_fifo_blocked_forever(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "pipe.arch")
    (tmp_path / "m.arch").write_text('import "pipe.arch"\nmodel M { input x: f32[N, 2]  output y = x }')
    opens_without_blocking(monkeypatch, tmp_path / "pipe.arch")
    e = err(tmp_path / "m.arch")
    assert e.message.endswith("pipe.arch is not a regular file")


def test_main_file_symlinked_to_a_system_file_was_parsed_and_quoted(tmp_path):
    (tmp_path / "spec.arch").symlink_to("/etc/passwd")
    e = err(tmp_path / "spec.arch")
    assert "is not an .arch file (it links to /etc/passwd)" in e.message
    assert "root:" not in e.format()


# -- lowering ------------------------------------------------------------------------------------
def test_position_table_too_large_to_allocate_was_a_memory_error():
    # Reshape to a 2^40-wide feature dim, then PositionalEncoding: its ONNX lowering built a
    # sinusoid table of max_len x 2^40 and numpy raised MemoryError (later, at 2^62: "array is
    # too big"); the table's size is now checked when the model is compiled
    for width in (1099511627776, 4611686018427387904):
        src = ("model M {\n  input x: f32[N, 8]\n"
               f"  output y = x -> Linear(16) -> Reshape((-1, 1, {width})) -> PositionalEncoding(64)\n}}\n")
        e = err(src)
        assert "MAX_POSITION_ELEMENTS" in e.message and e.span.line == 3, e.format()
        in_file(e, src)


# -- the oracle's own invariants -----------------------------------------------------------------
def test_recursion_limit_is_restored_after_compiling():
    before = sys.getrecursionlimit()
    archdsl.compile("model M { input x: f32[N, 2]  output y = x -> ReLU }")
    with pytest.raises(ArchError):
        archdsl.compile(default("abs(" * 150 + "1" + ")" * 150 + " + B()"))
    assert sys.getrecursionlimit() == before


def test_span_excerpt_survives_spans_outside_their_line():
    s = Span("f.arch", 3, 40, 3, 45, "a\nb\nshort\n")
    assert ArchError("m", s).format().startswith("f.arch:3:40: error: m")
    assert Span("f.arch", 9, 1, 9, 2, "a\n").excerpt() == ""


def test_error_on_a_very_long_line_printed_the_whole_line():
    # a 10,000-operator line (as the fuzzers write) filled the terminal with one excerpt
    src = default("1" + " + 1" * 2_000)
    e = err(src)
    excerpt, caret = e.format().splitlines()[1:3]
    assert len(excerpt) < 200 and excerpt.startswith("  1 | ...") and excerpt.endswith("...")
    # the caret still sits under the character the span starts at
    assert excerpt[caret.index("^")] == src.split("\n")[0][e.span.col - 1]


def test_strided_layers_on_a_symbolic_length_grew_quadratic_names():
    # each layer wrapped the previous opaque dim's whole name: 30,000 layers cost minutes and GBs
    src = ("model M { input x: f32[N, 3, T]\n"
           "  a = x -> repeat 2000 { Conv1d(3, 3, stride=2, padding=1) }\n"
           "  b = x -> repeat 2000 { Conv1d(3, 3, stride=2, padding=1) }\n"
           "  output y = a + b }")
    ir = archdsl.compile(src).model().ir
    t = ir.outputs[0].type
    assert len(str(t)) < 300
    assert str(t.shape[2]).startswith("dim_")      # a digest, equal for equal expressions (a + b)


@pytest.mark.parametrize("layer", ["Embedding(10, 4, std=1e300)", "PositionalEmbedding(16, std=1e300)"])
def test_huge_init_std_was_a_float32_overflow_warning_and_inf_weights(layer):
    # the fuzz campaign: std=1e300 drew float64 weights that overflowed the float32 cast to inf
    src = ("model M {\n  input t: i64[N, 8]\n  h = t -> Embedding(10, 4)\n"
           f"  output y = {'t' if layer.startswith('Embedding') else 'h'} -> {layer}\n}}\n")
    e = err(src)
    assert "std must be in" in e.message and "float32" in (e.hint or ""), e.format()
    in_file(e, src)


def test_positional_scale_beyond_the_input_dtype_was_an_overflow_warning():
    # the campaign, with RuntimeWarnings counted: scale=1e300 on an f16 input overflowed the cast
    src = "model M {\n  input x: f16[16, T, 4]\n  output y = x -> PositionalEncoding(scale=1e300)\n}\n"
    e = err(src)
    assert "does not fit the input's dtype f16" in e.message
    in_file(e, src)
    archdsl.compile(src.replace("1e300", "2.0")).model().to_onnx(seed=0)      # a normal scale still lowers


# -- arguments that could lie (issue 15) ----------------------------------------------------------
def test_batchnorm_feature_count_was_taken_as_eps():
    # BatchNorm2d(64) bound 64 to eps: every PyTorch user's spelling silently normalised wrongly
    ir = archdsl.compile("model M { input x: f32[N, 64, 4, 4]\n  output y = x -> BatchNorm2d(64) }").model().ir
    assert ir.nodes[0].attrs["num_features"] == 64 and ir.nodes[0].attrs["eps"] == 1e-5
    e = err("model M { input x: f32[N, 32, 4, 4]\n  output y = x -> BatchNorm2d(64) }")
    assert "num_features is 64 but the input has 32 channels" in e.message and "BatchNorm2d(32)" in e.hint


def test_layernorm_size_was_taken_as_eps():
    ir = archdsl.compile("model M { input x: f32[N, T, 32]\n  output y = x -> LayerNorm(32) }").model().ir
    assert ir.nodes[0].attrs["eps"] == 1e-5 and ir.parameters["layernorm_1.weight"].shape == (32,)
    e = err("model M { input x: f32[N, T, 16]\n  output y = x -> LayerNorm(32) }")
    assert "not the trailing dims" in e.message


def test_float_hyper_parameters_are_keyword_only():
    e = err("model M { input x: f32[N, 8, 4, 4]\n  output y = x -> BatchNorm2d(8, 0.001) }")
    assert "takes at most 1 positional argument" in e.message and "eps=" in e.hint
