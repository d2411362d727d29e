"""Limits: no spec can make the compiler hang, exhaust the stack or memory, or read what is not a
spec. Each limit gives an ArchError that names the limit and how to raise it; resource checks
refuse a model too big for the machine before anything is allocated."""
from __future__ import annotations

import os
import re
import sys
import tracemalloc
from pathlib import Path

import pytest

import archdsl
from archdsl.elaborate import elaborator as E
from archdsl.errors import ArchError
from archdsl.elaborate import loader as L
from archdsl.passes import limits
from archdsl.passes.limits import check_resources, estimate, parse_size
from archdsl.syntax import parser as P

from harness import count_calls, forbid_parsing, opens_without_blocking


def err(src) -> ArchError:
    with pytest.raises(ArchError) as ei:
        archdsl.compile(src)
    return ei.value


def wrap(expr: str, dim: bool = True) -> str:
    """A one-model spec with `expr` as a parameter default."""
    return f"model M(a: int = {expr}) {{\n  input x: f32[N, 2]\n  output y = x\n}}\n"


def names_limit(e: ArchError, constant: str):
    text = e.format()
    assert constant in text, text
    assert e.span is not None and e.span.line >= 1, text


# -- import depth --------------------------------------------------------------------------------
def test_import_depth_limit(tmp_path):
    n = L.MAX_IMPORT_DEPTH + 3
    for i in range(n):
        nxt = f'import "f{i + 1}.arch"\n' if i + 1 < n else ""
        (tmp_path / f"f{i}.arch").write_text(f"{nxt}block B{i} {{ input x  output x }}\n")
    e = err(tmp_path / "f0.arch")
    assert f"imports nested deeper than {L.MAX_IMPORT_DEPTH} files" in e.message
    names_limit(e, "MAX_IMPORT_DEPTH")


def test_import_depth_just_under_the_limit_is_fine(tmp_path):
    n = L.MAX_IMPORT_DEPTH
    for i in range(n):
        nxt = f'import "f{i + 1}.arch"\n' if i + 1 < n else ""
        (tmp_path / f"f{i}.arch").write_text(f"{nxt}block B{i} {{ input x  output x }}\n")
    (tmp_path / "f0.arch").write_text((tmp_path / "f0.arch").read_text()
                                      + f"model M {{ input x: f32[N, 2]  output y = x -> B{n - 1} }}\n")
    assert archdsl.compile(tmp_path / "f0.arch").model_names == ["M"]


# -- block nesting, recursion ---------------------------------------------------------------------
def test_block_nesting_limit():
    n = E.MAX_BLOCK_DEPTH + 5
    blocks = "".join(f"block B{i} {{ input x  output x -> B{i + 1} }}\n" for i in range(n))
    src = blocks + f"block B{n} {{ input x  output x -> ReLU }}\nmodel M {{ input x: f32[N, 2]  output y = x -> B0 }}\n"
    e = err(src)
    assert f"blocks nested deeper than {E.MAX_BLOCK_DEPTH}" in e.message
    names_limit(e, "MAX_BLOCK_DEPTH")


def test_recursive_block_is_caught():
    e = err("block B { input x  output x -> B }\nmodel M { input x: f32[N, 2]  output y = x -> B }")
    assert "is B recursive?" in e.message


def test_exponential_block_tree_stops_at_the_layer_limit(monkeypatch):
    # B_k applies B_(k-1) twice: 2^40 layers if nothing stopped it
    monkeypatch.setattr(E, "MAX_NODES", 2_000)
    blocks = "block B0 { input x  output x -> ReLU }\n" + "".join(
        f"block B{i} {{ input x  output x -> B{i - 1} -> B{i - 1} }}\n" for i in range(1, 41))
    expansions = count_calls(monkeypatch, E.Elaborator, "_expand")
    e = err(blocks + "model M { input x: f32[N, 2]  output y = x -> B40 }")
    assert expansions.calls <= 2 * 2_000 + 40      # a binary tree over 2,000 leaves, then it stops
    assert "more than 2000 layers" in e.message
    names_limit(e, "MAX_NODES")


# -- repeat counts, total layers, expansions -------------------------------------------------------
def test_repeat_count_limit():
    e = err(f"model M {{ input x: f32[N, 2]\n  output y = x -> repeat {E.MAX_REPEAT + 1} {{ ReLU }} }}")
    assert f"repeat count {E.MAX_REPEAT + 1} exceeds the limit of {E.MAX_REPEAT}" in e.message
    names_limit(e, "MAX_REPEAT")


def test_repeat_limit_can_be_raised(monkeypatch):
    monkeypatch.setattr(E, "MAX_REPEAT", 3)
    err("model M { input x: f32[N, 2]  output y = x -> repeat 4 { ReLU } }")
    monkeypatch.setattr(E, "MAX_REPEAT", 4)
    assert len(archdsl.compile("model M { input x: f32[N, 2]  output y = x -> repeat 4 { ReLU } }").model().ir.nodes) == 4


def test_total_layer_limit(monkeypatch):
    monkeypatch.setattr(E, "MAX_NODES", 500)
    e = err("model M { input x: f32[N, 2]\n  output y = x -> repeat 100 { repeat 100 { ReLU } } }")
    assert e.message == "model has more than 500 layers"
    names_limit(e, "MAX_NODES")


def test_nested_repeats_without_layers_are_bounded(monkeypatch):
    # no layers at all, 10^12 block applications: the expansion limit stops it quickly
    monkeypatch.setattr(E, "MAX_EXPANSIONS", 5_000)
    expansions = count_calls(monkeypatch, E.Elaborator, "_expand")
    e = err("block I { input x  output x }\nmodel M { input x: f32[N, 2]\n"
            "  output y = x -> repeat 10000 { repeat 10000 { repeat 10000 { I } } } }")
    assert expansions.calls == 5_001
    assert "more than 5,000 block applications and repeat copies" in e.message
    names_limit(e, "MAX_EXPANSIONS")


# -- expression size and nesting -------------------------------------------------------------------
@pytest.mark.parametrize("opener,closer", [("(", ")"), ("[", "]"), ("(1, ", ",)")])
def test_ten_thousand_brackets(opener, closer, monkeypatch):
    forbid_parsing(monkeypatch)               # refused before Lark parses 20,000 tokens
    e = err(wrap(opener * 10_000 + "1" + closer * 10_000))
    assert f"brackets nested more than {P.MAX_NESTING} deep" in e.message
    assert (e.span.line, e.span.col) == (1, 18 + (P.MAX_NESTING - 1) * len(opener))   # "M(" is one
    names_limit(e, "MAX_NESTING")


def test_brackets_in_strings_and_comments_do_not_count():
    src = ("# " + "(" * 500 + "\n" + 'model M(s: str = "' + "[" * 500 + '") {\n  input x: f32[N, 2]\n  output y = x\n}\n')
    assert archdsl.compile(src).model_names == ["M"]


@pytest.mark.parametrize("expr", [
    "-" * 5_000 + "1",
    "+".join(["1"] * 1_000),
    "not " * 1_000 + "true",
    "2 ** " * 1_000 + "1",
    "1 if true else " * 1_000 + "1",
    "abs(" * 99 + "1" + ")" * 99 + " + 1" * 300,
], ids=["unary", "sum", "not", "power", "conditional", "mixed"])
def test_deep_expressions_hit_the_depth_limit_not_the_stack(expr):
    e = err(wrap(expr))
    assert f"expression nested more than {P.MAX_EXPR_DEPTH} levels deep" in e.message
    names_limit(e, "MAX_EXPR_DEPTH")


def test_expression_at_the_depth_limit_still_compiles_with_a_small_stack():
    """Expressions just inside the limit, inside nested blocks, under a tight interpreter
    recursion limit: the elaborator makes room for what its own limits allow."""
    depth = P.MAX_EXPR_DEPTH - 10
    expr = "abs(" * (depth // 2) + "3" + ")" * (depth // 2)
    blocks = "".join(f"block B{i}(k: int = {expr}) {{ input x  output x -> B{i + 1}(k) }}\n" for i in range(20))
    src = blocks + "block B20(k: int = 1) { input x  output x -> Linear(k) }\n" \
                   "model M { input x: f32[N, 2]  output y = x -> B0 }\n"
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(400)
    try:
        ir = archdsl.compile(src).model().ir
    finally:
        sys.setrecursionlimit(old)
    assert str(ir.outputs[0].type) == "f32[N, 3]"
    assert sys.getrecursionlimit() == old


def test_long_chains_are_not_limited():
    chain = " -> ".join(["ReLU"] * 1_500)
    ir = archdsl.compile(f"model M {{ input x: f32[N, 2]\n  output y = x -> {chain} }}").model().ir
    assert len(ir.nodes) == 1_500
    ir = archdsl.compile(f"model M {{ input x: f32[N, 2]\n  f = {chain}\n  output y = x -> f }}").model().ir
    assert len(ir.nodes) == 1_500


def test_evaluation_depth_limit_through_blocks():
    e = err("block B(a: int = B()) { input x  output x }\nmodel M { input x: f32[N, 2]  output y = x -> B }")
    assert f"nested more than {E.MAX_EVAL_DEPTH} levels deep" in e.message
    names_limit(e, "MAX_EVAL_DEPTH")


def test_number_literal_limits():
    e = err(wrap("9" * 5_000))
    assert "integer literal with 5000 digits is too large" in e.message
    names_limit(e, "MAX_LITERAL_DIGITS")
    assert "is too large" in err(wrap("9" * 30)).message
    assert "too large" in err(wrap("1e999")).message
    assert "too large" in err(wrap("2 ** 2 ** 2 ** 2 ** 2")).message


def test_source_size_limit(monkeypatch, tmp_path):
    monkeypatch.setattr(P, "MAX_SOURCE_CHARS", 1_000)
    src = "# " + "x" * 2_000 + "\nmodel M { input x: f32[N, 2]  output y = x }\n"
    e = err(src)
    assert "more than the limit of 1,000" in e.message
    names_limit(e, "MAX_SOURCE_CHARS")
    f = tmp_path / "big.arch"
    f.write_text("#" * 5_000)
    e = err(f)          # refused before the file is read into memory
    assert "too large for a spec" in e.message


# -- imports only read .arch files -------------------------------------------------------------
def imp(tmp_path, path: str) -> ArchError:
    main = tmp_path / "main.arch"
    main.write_text(f'import "{path}"\nmodel M {{ input x: f32[N, 2]  output y = x }}\n')
    e = err(main)
    assert e.span is not None and (e.span.line, e.span.col) == (1, 1) and e.span.file == str(main), e.format()
    return e


def test_import_of_a_system_file_fails_cleanly(tmp_path):
    e = imp(tmp_path, "/etc/passwd")
    assert e.message == "/etc/passwd is not an .arch file"
    assert "root:" not in e.format()
    assert "/etc/passwd is not an .arch file" in imp(tmp_path, "../" * 20 + "etc/passwd").message


def test_import_through_a_symlink_to_a_non_arch_file(tmp_path):
    (tmp_path / "evil.arch").symlink_to("/etc/passwd")
    e = imp(tmp_path, "evil.arch")
    assert "/etc/passwd is not an .arch file" in e.message and "root:" not in e.format()
    # the file given on the command line is held to the same rule
    e = err(tmp_path / "evil.arch")
    assert "is not an .arch file (it links to /etc/passwd)" in e.message


def test_import_of_devices_fifos_directories_and_loops(tmp_path, monkeypatch):
    (tmp_path / "zero.arch").symlink_to("/dev/zero")
    assert "/dev/zero is not an .arch file" in imp(tmp_path, "zero.arch").message
    os.mkfifo(tmp_path / "fifo.arch")
    opens_without_blocking(monkeypatch, tmp_path / "fifo.arch")
    assert "is not a regular file" in imp(tmp_path, "fifo.arch").message     # and does not block
    (tmp_path / "dir.arch").mkdir()
    assert "is a directory" in imp(tmp_path, "dir.arch").message
    (tmp_path / "loop.arch").symlink_to(tmp_path / "loop.arch")
    assert "cannot import 'loop.arch'" in imp(tmp_path, "loop.arch").message
    assert "embedded null byte" in imp(tmp_path, "a\x00.arch").message


def test_standard_library_imports_cannot_escape(tmp_path):
    for path in ("std/../../etc/passwd", "std/../elaborate/loader.py", "std/../../../specs/lenet5.arch",
                 "std/../grammars/arch.lark"):
        e = imp(tmp_path, path)
        assert e.message == f"'{path}' is outside the standard library", e.format()


def test_other_files_cannot_be_read_through_other_syntax(tmp_path):
    # a string is only a string: nothing but `import` opens a file
    (tmp_path / "secret.arch").write_text("model Secret { input x: f32[N, 1]  output y = x }\n")
    src = f'model M(p: str = "{tmp_path / "secret.arch"}") {{ input x: f32[N, 2]  output y = x }}\n'
    spec = archdsl.compile(src)
    assert spec.model_names == ["M"] and "Secret" not in spec.ns.definitions
    with pytest.raises(ArchError, match="target array by name") as e:      # a loss names its target array
        archdsl.compile(src + f'train M {{ loss = cross_entropy(y, "{tmp_path / "secret.arch"}")  optimizer = Adam(lr=1e-3) }}\n')
    assert "Secret" not in str(e.value)


def test_compiling_writes_nothing(tmp_path):
    (tmp_path / "m.arch").write_text('import "std/mlp.arch"\nmodel M { input x: f32[N, 2]  output y = x -> MLP(3) }\n')
    before = sorted(tmp_path.rglob("*"))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        archdsl.compile(tmp_path / "m.arch").model().cost()
    finally:
        os.chdir(cwd)
    assert sorted(tmp_path.rglob("*")) == before


def test_front_end_has_no_code_execution():
    """The front end reads text and builds data: no eval/exec/pickle/subprocess/import hooks."""
    root = Path(archdsl.__file__).parent
    for sub in ("syntax", "elaborate", "ir"):
        for f in (root / sub).glob("*.py"):
            text = f.read_text()
            calls = re.findall(r"(?<![\w.])(?<!def )(?:eval|exec|compile|__import__|import_module)\s*\(", text)
            assert not calls, f"{f}: {calls}"
            for bad in ("pickle", "subprocess", "os.system", "os.popen", "marshal"):
                assert bad not in text, f"{f}: {bad}"


# -- resource limits ----------------------------------------------------------------------------
BIG = "model Big(w: int = 4096) {\n  input x: f32[N, 1024]\n  h = x -> Linear(w) -> ReLU\n  output y = h -> Linear(10)\n}\n"


def test_estimate_figures():
    m = archdsl.compile(BIG).model()
    est = estimate(m, batch=8)
    p = 1024 * 4096 + 4096 + 4096 * 10 + 10
    acts = 8 * (4096 + 4096 + 10) * 4
    assert est.param_bytes == 4 * p
    assert est.train_bytes == 4 * 4 * p + 8 * 1024 * 4 + 2 * acts
    assert est.batch == 8 and est.assumed == []


def test_check_resources_refuses_with_both_figures_and_the_dominant_layer():
    m = archdsl.compile(BIG).model()
    with pytest.raises(ArchError) as ei:
        check_resources(m, batch=8, limit_bytes=10 * 2 ** 20)
    e = ei.value
    assert e.message.startswith("model Big needs 65.2 MiB to train at batch 8, more than the limit of 10.0 MiB")
    assert "parameters 16.2 MiB (4,239,370 weights)" in e.message
    assert "estimated training memory 65.2 MiB" in e.message
    assert "the largest layer is linear_1 (Linear, line 3): 64.3 MiB" in e.message
    assert (e.span.line, e.span.col) == (3, 12)          # the dominant layer in the source
    assert "smaller batch" in e.hint
    # weights only (initialising, exporting): 16 MiB fit in 20 MiB although training would not
    est = check_resources(m, batch=8, limit_bytes=20 * 2 ** 20, for_training=False)
    assert not est.fits
    with pytest.raises(ArchError, match="needs 16.2 MiB for its weights"):
        check_resources(m, batch=8, limit_bytes=10 * 2 ** 20, for_training=False)


def test_check_resources_passes_and_returns_the_figures():
    m = archdsl.compile(BIG).model()
    est = check_resources(m, batch=1, limit_bytes=1 << 30)
    assert est.fits and est.limit_bytes == 1 << 30 and "linear_1" in est.dominant


def test_activation_memory_grows_with_the_batch_and_the_dims():
    m = archdsl.compile("model S { input x: f32[N, T, 64]\n  output y = x -> Linear(64) -> ReLU }").model()
    assert "T" in estimate(m, batch=4).assumed
    with pytest.raises(ArchError) as ei:
        check_resources(m, batch=1024, dims={"T": 4096}, limit_bytes=1 << 30)
    assert "needs 5.0 GiB" in ei.value.message and "the largest layer is linear_1 (Linear, line 2): 2.0 GiB" in ei.value.message
    with pytest.raises(ArchError) as ei:
        check_resources(m, batch=10 ** 6, limit_bytes=1 << 30)       # T unbound: counted as 1
    assert "T counted as 1" in ei.value.hint


def test_memory_limit_from_the_environment(monkeypatch):
    m = archdsl.compile(BIG).model()
    monkeypatch.setenv("ARCHDSL_MEMORY_LIMIT", "10M")
    with pytest.raises(ArchError) as ei:
        check_resources(m, batch=8)
    assert "more than the limit of 10.0 MiB (ARCHDSL_MEMORY_LIMIT=10M)" in ei.value.message
    assert "ARCHDSL_MEMORY_LIMIT=1G" in ei.value.hint
    monkeypatch.setenv("ARCHDSL_MEMORY_LIMIT", "1G")
    assert check_resources(m, batch=8).fits
    monkeypatch.setenv("ARCHDSL_MEMORY_LIMIT", "none")
    assert check_resources(m, batch=10 ** 6).limit_bytes is None
    monkeypatch.setenv("ARCHDSL_MEMORY_LIMIT", "lots")
    with pytest.raises(ArchError, match="ARCHDSL_MEMORY_LIMIT='lots' is not a size"):
        check_resources(m, batch=8)


def test_default_limit_is_the_machine_memory(monkeypatch):
    monkeypatch.delenv("ARCHDSL_MEMORY_LIMIT", raising=False)
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 2048}          # an 8 MiB machine
    monkeypatch.setattr(limits.os, "sysconf", lambda k: pages[k])
    monkeypatch.setattr(limits, "_CGROUP_FILES", ())
    m = archdsl.compile(BIG).model()
    with pytest.raises(ArchError) as ei:
        check_resources(m, batch=1, for_training=False)
    assert "more than the limit of 8.0 MiB (this machine's memory)" in ei.value.message
    assert limits.machine_memory() == 8 * 2 ** 20


@pytest.mark.parametrize("text,value", [("8G", 8 << 30), ("512M", 512 << 20), ("1.5GiB", 3 << 29), ("8GB", 8 << 30),
                                        ("1000000", 10 ** 6), ("64k", 64 << 10), (" 2T ", 2 << 40), ("off", None)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "G", "-1G", "1.2.3", "8X", "0", "8 gigs"])
def test_parse_size_rejects(text):
    with pytest.raises(ArchError):
        parse_size(text)


def test_huge_models_are_refused_before_anything_is_allocated():
    src = "model Huge { input x: f32[N, 100000]\n  output y = x -> Linear(1000000) -> Linear(1000000) }"
    m = archdsl.compile(src).model()          # elaboration allocates nothing
    tracemalloc.start()
    try:
        with pytest.raises(ArchError) as ei:
            check_resources(m, batch=1, limit_bytes=64 << 30)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20                      # nothing near the model's size was allocated
    assert "TiB" in ei.value.message and "linear_2" in ei.value.message


def test_api_refuses_to_allocate_weights_over_the_limit(monkeypatch):
    monkeypatch.setenv("ARCHDSL_MEMORY_LIMIT", "1M")
    m = archdsl.compile(BIG).model()
    with pytest.raises(ArchError) as ei:
        m.init_weights()
    assert "linear_1" in ei.value.format()
