"""A bounded fuzz run over the whole front end: parser, elaboration, shape checks, lowering.

Two sources of cases, both deterministic (hypothesis with derandomize=True):

- grammar-aware generation: random, mostly valid programs (models, blocks, repeat, chains of
  known ops with random arguments, tensor types with symbolic dims, expressions), plus any
  registered op with arguments drawn from its schema;
- single-op probes: every registered op (new ones included, found through the registry) on
  inputs of rank 0 to 5, any dtype, static and symbolic dims, with edge-value arguments;
- mutation of every shipped spec (specs/*.arch, globbed when the tests are collected):
  deleted, duplicated and swapped tokens and lines, truncation, random bytes, huge numbers,
  deep nesting (up to 10,000 brackets or operators), unicode, CRLF / lone CR, BOMs.

The only acceptable outcomes are success or an ArchError whose span lies inside its file
(tests/fuzzlib.py has the oracle). A spec that compiles is also costed, checked against the
resource limit and, when small, lowered to ONNX. Any other exception, a RecursionError or a
case that runs past its time limit fails the test; the fix goes in with a named regression
test in test_regressions.py. tools/fuzz_campaign.py runs the same generators for as long as
you like.

A third source attacks the commands through the file system (tests/fuzzlib.py: file_case):
hostile output paths (FIFOs, devices, links to an input, directories), hostile inputs (FIFOs,
links to system files, truncated, pickled or lying .npz archives, zip bombs), checkpoints with
corrupt metadata and run directories that hold a run or are locked. Each runs a real `archdsl`
command; the oracle also checks that no input changed, nothing non-regular was replaced, no
temporary file was left and nothing was written outside the case's folder.

ARCHDSL_FUZZ_SCALE (default 1) multiplies the number of cases.
"""
from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzzlib

SCALE = float(os.environ.get("ARCHDSL_FUZZ_SCALE", "1"))
GENERATED_CASES = max(10, int(500 * SCALE))
MUTATION_CASES = max(20, int(1300 * SCALE))         # over all specs together
OP_CASES = max(10, int(400 * SCALE))
FILE_CASES = max(10, int(80 * SCALE))
SPECS = fuzzlib.spec_files()
PER_SPEC = max(20, MUTATION_CASES // max(1, len(SPECS)))
CASE_SECONDS = 30.0     # far above any real case (the slowest take ~1 s); a hang is a bug

SETTINGS = dict(derandomize=True, deadline=None, database=None, print_blob=False,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def workdir():
    wd = fuzzlib.Workdir()
    fuzzlib.warm_up()
    yield wd.path
    wd.close()


def _judge(data: bytes, workdir, **kw) -> str:
    outcome, finding = fuzzlib.run_case(data, workdir, seconds=CASE_SECONDS, **kw)
    if finding is not None:
        shown = data.decode("utf-8", "backslashreplace")
        if len(shown) > 3000:
            shown = shown[:3000] + f"... ({len(data)} bytes)"
        pytest.fail(f"fuzz finding ({finding.kind}): {finding.summary}\n--- input ---\n{shown}\n"
                    f"--- detail ---\n{finding.detail}", pytrace=False)
    return outcome


@settings(max_examples=GENERATED_CASES, **SETTINGS)
@given(st.data())
def test_generated_programs(workdir, data):
    c = fuzzlib.Chooser(draw=data.draw)
    text = fuzzlib.program(c)
    _judge(text.encode(), workdir, as_text=c.chance(0.1))


@settings(max_examples=OP_CASES, **SETTINGS)
@given(st.data())
def test_every_op_on_any_input(workdir, data):
    _judge(fuzzlib.op_program(fuzzlib.Chooser(draw=data.draw)).encode(), workdir)


@pytest.mark.parametrize("spec", SPECS, ids=[p.name for p in SPECS])
def test_mutated_specs(workdir, spec):
    original = spec.read_text(encoding="utf-8")

    @settings(max_examples=PER_SPEC, **SETTINGS)
    @given(st.data())
    def run(data):
        c = fuzzlib.Chooser(draw=data.draw)
        _judge(fuzzlib.mutate(c, original), workdir, as_text=c.chance(0.1))

    run()


def test_every_shipped_spec_passes_the_oracle_unmutated(workdir):
    for spec in SPECS:
        outcome = _judge(spec.read_bytes(), workdir)
        assert outcome in ("ok", "error")


def test_generator_is_mostly_valid(workdir):
    """The generator must reach past the parser: most programs parse, many compile (about a
    quarter; 120 programs, so that the seeded draw keeps a margin when the op registry grows)."""
    rnd = random.Random(1)
    outcomes = [fuzzlib.run_case(fuzzlib.program(fuzzlib.Chooser(rnd=rnd)).encode(), workdir, lower=False)[0]
                for _ in range(120)]
    assert outcomes.count("ok") >= 20, outcomes


def test_oracle_reports_crashes_hangs_and_bad_spans(workdir, monkeypatch):
    """The oracle is not vacuous: a non-ArchError, a hang and a span outside the file are findings."""
    from archdsl.errors import ArchError, Span
    from archdsl.ops.base import OPS

    src = b"model M { input x: f32[N, 3]  output y = x -> Tanh }"
    monkeypatch.setattr(type(OPS["Tanh"]), "infer", lambda self, a: 1 // 0)
    outcome, finding = fuzzlib.run_case(src, workdir)
    assert outcome == "crash" and "ZeroDivisionError" in finding.summary

    def spin(self, a):
        while True:
            pass
    monkeypatch.setattr(type(OPS["Tanh"]), "infer", spin)
    outcome, finding = fuzzlib.run_case(src, workdir, seconds=0.5)
    assert outcome == "hang" and finding.kind == "hang"

    def bad_span(self, a):
        raise ArchError("x", Span("case.arch", 7, 1, 7, 2, src.decode()))
    monkeypatch.setattr(type(OPS["Tanh"]), "infer", bad_span)
    outcome, finding = fuzzlib.run_case(src, workdir)
    assert outcome == "error" and finding.kind == "span"


@settings(max_examples=FILE_CASES, **SETTINGS)
@given(st.data())
def test_file_system_and_data_file_attacks(data):
    root = Path(tempfile.mkdtemp(prefix="archdsl-fs-"))
    try:
        case = fuzzlib.file_case(fuzzlib.Chooser(draw=data.draw), root)
        outcome, finding = fuzzlib.run_file_case(case, seconds=CASE_SECONDS)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if finding is not None:
        pytest.fail(f"fuzz finding ({finding.kind}): {finding.summary}\n--- case ---\n{finding.data.decode()}\n"
                    f"--- detail ---\n{finding.detail}", pytrace=False)


def test_file_oracle_reports_replaced_fifos_and_writes_outside_the_case(tmp_path, monkeypatch):
    """The file oracle is not vacuous: with write-through switched off (the old atomic_path), a FIFO
    given as -o is reported replaced, and a write aimed outside the case's folder is stopped."""
    import os

    from archdsl import fileio
    (tmp_path / "tiny.arch").write_text(fuzzlib.FS_SPEC)
    os.mkfifo(tmp_path / "out.onnx")
    monkeypatch.setattr(fileio, "_plan", lambda p: ("replace", os.path.realpath(p)))
    case = fuzzlib.FileCase(["export", str(tmp_path / "tiny.arch"), "-o", str(tmp_path / "out.onnx")], tmp_path,
                            [tmp_path / "tiny.arch"], "export -o a FIFO")
    outcome, finding = fuzzlib.run_file_case(case)
    assert outcome == "destroyed" and "out.onnx (not a file) was replaced" in finding.summary
    elsewhere = Path(tempfile.mkdtemp(prefix="archdsl-elsewhere-", dir=tmp_path.parent))   # not a device:
    try:                                                   # this must be safe even if the jail failed
        (elsewhere / "victim.onnx").write_bytes(b"victim")
        (tmp_path / "link.onnx").symlink_to(elsewhere / "victim.onnx")
        case = fuzzlib.FileCase(["export", str(tmp_path / "tiny.arch"), "-o", str(tmp_path / "link.onnx")],
                                tmp_path, [], "export -o a link out of the case's folder")
        outcome, finding = fuzzlib.run_file_case(case)      # a temporary file beside the victim: stopped
        assert finding.kind == "jailbreak" and str(elsewhere) in finding.summary
        assert (elsewhere / "victim.onnx").read_bytes() == b"victim"
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)
