"""`archdsl lsp` driven by a real LSP client over stdio (pytest-lsp, on pygls's client).

One server process serves the whole module, on a workspace folder holding a copy of specs/.
Every test edits its own files. Nothing here waits on a clock: the server handles messages in
the order they come (archdsl/lsp/server.py), so after a change, the answer to the next request
comes after that change's diagnostics; `Doc.change` sends the change, then a request, and reads
the diagnostics the client has by then.

Each test ends by checking that the server logged no internal error (a handler that raised) and
published no "archdsl internal error" diagnostic.
"""
from __future__ import annotations

import random
import re
import shutil
import sys
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as T
from pygls import uris
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

import fuzzlib
from archdsl import compile as compile_spec
from archdsl.authoring.fmt import format_source
from archdsl.elaborate.loader import stdlib_dir
from archdsl.errors import ArchErrors

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parent.parent
SERVER = [sys.executable, "-m", "archdsl", "lsp"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("lspwork")
    for f in fuzzlib.spec_files():
        shutil.copy(f, w / f.name)
    return w.resolve()


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER), scope="module")
async def client(lsp_client: LanguageClient, workdir):
    folder = uris.from_fs_path(str(workdir))
    await lsp_client.initialize_session(T.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"), root_uri=folder,
        workspace_folders=[T.WorkspaceFolder(uri=folder, name="specs")]))
    yield
    await lsp_client.shutdown_session()


@pytest.fixture
def lsp(client, workdir):
    """The client, checked after the test for internal errors of the server."""
    c: LanguageClient = client
    logged = len(c.log_messages)
    yield c
    errors = [m.message for m in c.log_messages[logged:] if m.type == T.MessageType.Error]
    assert not errors, errors[0]
    for uri, diags in c.diagnostics.items():
        assert not any("internal error" in d.message for d in diags), uri


class Doc:
    """One open document: its text and the requests about it."""

    def __init__(self, client: LanguageClient, path: Path, text: str | None = None):
        self.client, self.path = client, path
        self.uri = uris.from_fs_path(str(path))
        self.text = text if text is not None else path.read_text(encoding="utf-8")
        self.version = 1
        self.id = T.TextDocumentIdentifier(uri=self.uri)

    async def open(self) -> list[T.Diagnostic]:
        self.client.text_document_did_open(T.DidOpenTextDocumentParams(text_document=T.TextDocumentItem(
            uri=self.uri, language_id="arch", version=self.version, text=self.text)))
        return await self.sync()

    async def change(self, text: str) -> list[T.Diagnostic]:
        self.text = text
        self.version += 1
        self.client.text_document_did_change(T.DidChangeTextDocumentParams(
            text_document=T.VersionedTextDocumentIdentifier(uri=self.uri, version=self.version),
            content_changes=[T.TextDocumentContentChangeWholeDocument(text=text)]))
        return await self.sync()

    async def sync(self) -> list[T.Diagnostic]:
        """The diagnostics of the latest change (answered in order: see the module docstring)."""
        await self.symbols()
        return list(self.client.diagnostics.get(self.uri, []))

    def close(self) -> None:
        self.client.text_document_did_close(T.DidCloseTextDocumentParams(text_document=self.id))

    def pos(self, needle: str, offset: int = 0, nth: int = 0) -> T.Position:
        """The position `offset` characters into the nth occurrence of `needle` (ASCII text)."""
        at = -1
        for _ in range(nth + 1):
            at = self.text.index(needle, at + 1)
        at += offset
        line = self.text.count("\n", 0, at)
        return T.Position(line=line, character=at - (self.text.rfind("\n", 0, at) + 1))

    def range(self, needle: str, nth: int = 0, length: int | None = None) -> T.Range:
        """The range of `needle` (or of its first `length` characters)."""
        start = self.pos(needle, nth=nth)
        n = len(needle) if length is None else length
        return T.Range(start=start, end=T.Position(line=start.line, character=start.character + n))

    async def hover(self, pos: T.Position) -> str:
        h = await self.client.text_document_hover_async(T.HoverParams(text_document=self.id, position=pos))
        return h.contents.value if h is not None else ""

    async def complete(self, pos: T.Position) -> dict[str, T.CompletionItem]:
        r = await self.client.text_document_completion_async(T.CompletionParams(text_document=self.id, position=pos))
        items = r.items if isinstance(r, T.CompletionList) else r or []
        return {i.label: i for i in items}

    async def definition(self, pos: T.Position) -> list[T.Location]:
        r = await self.client.text_document_definition_async(T.DefinitionParams(text_document=self.id, position=pos))
        return list(r or [])

    async def references(self, pos: T.Position, declaration: bool = True) -> list[T.Location]:
        r = await self.client.text_document_references_async(T.ReferenceParams(
            text_document=self.id, position=pos, context=T.ReferenceContext(include_declaration=declaration)))
        return list(r or [])

    async def rename(self, pos: T.Position, new: str) -> T.WorkspaceEdit:
        return await self.client.text_document_rename_async(T.RenameParams(text_document=self.id, position=pos,
                                                                           new_name=new))

    async def symbols(self) -> list[T.DocumentSymbol]:
        return list(await self.client.text_document_document_symbol_async(
            T.DocumentSymbolParams(text_document=self.id)) or [])

    async def hints(self) -> list[T.InlayHint]:
        end = T.Position(line=self.text.count("\n") + 1, character=0)
        return list(await self.client.text_document_inlay_hint_async(T.InlayHintParams(
            text_document=self.id, range=T.Range(start=T.Position(line=0, character=0), end=end))) or [])

    async def format(self) -> list[T.TextEdit] | None:
        edits = await self.client.text_document_formatting_async(T.DocumentFormattingParams(
            text_document=self.id, options=T.FormattingOptions(tab_size=2, insert_spaces=True)))
        return None if edits is None else list(edits)


def apply_edits(text: str, edits: list[T.TextEdit]) -> str:
    """Apply LSP edits (ASCII text) from the last to the first."""
    lines = text.split("\n")
    starts = [0]
    for ln in lines[:-1]:
        starts.append(starts[-1] + len(ln) + 1)

    def off(p: T.Position) -> int:
        return starts[p.line] + p.character if p.line < len(starts) else len(text)
    for e in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        text = text[:off(e.range.start)] + e.new_text + text[off(e.range.end):]
    return text


def workfile(workdir: Path, name: str, text: str) -> Path:
    p = workdir / name
    p.write_text(text, encoding="utf-8")
    return p


# -- diagnostics ---------------------------------------------------------------------------------
async def test_shipped_specs_open_without_diagnostics(lsp, workdir):
    for name in ("bert.arch", "resnet50.arch", "lenet5.arch", "gan_ring.arch", "gpt.arch"):
        doc = Doc(lsp, workdir / name)
        assert await doc.open() == [], name
        doc.close()


async def test_typed_error_has_its_range_related_producer_and_clears_when_fixed(lsp, workdir):
    doc = Doc(lsp, workfile(workdir, "diag_lenet.arch", (ROOT / "specs/lenet5.arch").read_text()))
    assert await doc.open() == []
    broken = doc.text.replace("x = x -> Flatten -> Linear(120)", "x = x -> BatchNorm1d -> Flatten -> Linear(120)")
    (d,) = await doc.change(broken)
    assert d.range == doc.range("BatchNorm1d")
    assert d.message.startswith("BatchNorm1d: expects a [N, C] or [N, C, L] input, got f32[N, 16, 5, 5]")
    assert "hint: use BatchNorm2d (or BatchNorm) for a 4-D input" in d.message
    assert d.severity == T.DiagnosticSeverity.Error and d.source == "archdsl" and d.code == "ShapeError"
    # the related location is the layer that produced the mismatched tensor: the AvgPool2d on the line before
    (rel,) = d.related_information
    assert rel.location.uri == doc.uri and rel.location.range == doc.range("AvgPool2d(2)", nth=1)
    assert "f32[N, 16, 5, 5]" in rel.message
    assert await doc.change(broken.replace("BatchNorm1d -> ", "")) == []
    doc.close()


async def test_every_error_is_reported_like_archdsl_check(lsp, workdir):
    text = (ROOT / "specs/lenet5.arch").read_text()
    bad = text.replace("Conv2d(16, 5)", "Conv2(16, 5)").replace("Linear(84)", "Linear(84, bias=2)")
    doc = Doc(lsp, workfile(workdir, "diag_two.arch", text))
    await doc.open()
    diags = await doc.change(bad)
    assert [d.range for d in diags] == [doc.range("Conv2(", length=5), doc.range("bias")]     # the keyword's name
    assert "undefined name 'Conv2'" in diags[0].message and "did you mean 'Conv2d'" in diags[0].message
    assert "Linear argument 'bias' must be a bool" in diags[1].message
    # the same errors as the compiler's, in the same order
    with pytest.raises(ArchErrors) as err:
        compile_spec(bad)
    assert [e.message for e in err.value.errors] == [d.message.split(" (in ")[0].split("\nhint")[0] for d in diags]
    doc.close()


async def test_ranges_count_utf16_code_units(lsp, workdir):
    """LSP columns are UTF-16 code units: a character outside the BMP counts two."""
    text = 'model M {\n  input x: f32[N, 4]\n  output y = x -> Linear(3, name="\U0001d4c1") -> Conv2d(3, 3)\n}\n'
    doc = Doc(lsp, workfile(workdir, "diag_utf16.arch", text))
    (d,) = await doc.open()
    line = text.split("\n")[2]
    start = len(line[:line.index("Conv2d")].encode("utf-16-le")) // 2
    assert start == line.index("Conv2d") + 1
    assert d.range == T.Range(start=T.Position(line=2, character=start),
                              end=T.Position(line=2, character=start + len("Conv2d(3, 3)")))
    doc.close()


async def test_half_typed_input_gives_a_syntax_error_and_keeps_the_outline(lsp, workdir):
    doc = Doc(lsp, workfile(workdir, "diag_typing.arch", (ROOT / "specs/lenet5.arch").read_text()))
    await doc.open()
    typing = doc.text.replace("output logits = x -> Linear(classes)", "output logits = x -> Linear(")
    (d,) = await doc.change(typing)
    assert d.code == "ArchSyntaxError" and d.message.startswith("unexpected")
    assert d.range.start == doc.pos("}", nth=0)         # where the parser stopped: the closing brace
    names = [s.name for s in await doc.symbols()]
    assert names == ["LeNet5"]                           # the outline of the last text that parsed
    doc.close()


async def test_error_inside_an_imported_block_shows_at_its_use_and_clears_when_the_block_is_fixed(lsp, workdir):
    blocks = Doc(lsp, workfile(workdir, "diag_blocks.arch", "block Head(k: int) {\n  input x\n"
                                                           "  output x -> Linear(k) -> Conv2d(3, 3)\n}\n"))
    user = Doc(lsp, workfile(workdir, "diag_user.arch", 'import "diag_blocks.arch"\n\nmodel M {\n'
                                                         "  input x: f32[N, 8]\n  output y = x -> Head(4)\n}\n"))
    (d,) = await user.open()
    assert d.range == user.range("Head(4)")
    assert "Conv2d: expects a 4-D input" in d.message and "(in diag_blocks.arch:3)" in d.message
    places = [(r.location.uri, r.location.range) for r in d.related_information]
    assert (blocks.uri, blocks.range("Conv2d(3, 3)")) in places
    assert await blocks.open() == []            # the block file alone has no model to check
    await blocks.change(blocks.text.replace(" -> Conv2d(3, 3)", ""))
    assert await user.sync() == []              # re-checked because it imports the changed file
    blocks.close()
    user.close()


async def test_an_imported_file_changed_on_disk_is_rechecked(lsp, workdir):
    broken = "block Tail {\n  input x\n  output x -> Linear(2) -> Flatten -> LSTM(3)\n}\n"
    disk = workfile(workdir, "diag_disk.arch", broken)
    user = Doc(lsp, workfile(workdir, "diag_disk_user.arch", 'import "diag_disk.arch"\n'
                                                               "model M {\n  input x: f32[N, 8]\n  output y = x -> Tail\n}\n"))
    (d,) = await user.open()
    assert "LSTM: expects a 3-D input" in d.message and d.range == user.range("Tail", nth=0)
    disk.write_text(broken.replace(" -> LSTM(3)", ""), encoding="utf-8")
    lsp.workspace_did_change_watched_files(T.DidChangeWatchedFilesParams(changes=[
        T.FileEvent(uri=uris.from_fs_path(str(disk)), type=T.FileChangeType.Changed)]))
    assert await user.sync() == []
    user.close()


# -- hover ---------------------------------------------------------------------------------------
async def test_hover_on_tensors_layers_and_blocks(lsp, workdir):
    doc = Doc(lsp, workdir / "lenet5.arch")
    await doc.open()
    tensor = await doc.hover(doc.pos("x = x -> Conv2d(16"))      # the x bound on that line
    assert "x: f32[N, 16, 5, 5]" in tensor and "tensor in LeNet5" in tensor
    use = await doc.hover(doc.pos("x -> Conv2d(16", offset=0))
    assert "x: f32[N, 6, 14, 14]" in use                           # the x it reads
    layer = await doc.hover(doc.pos("Conv2d(6, 5)", offset=2))
    assert "Conv2d(out_channels: int, kernel_size: ints" in layer
    assert "f32[N, 1, 32, 32] → **f32[N, 6, 28, 28]** · 156 parameters" in layer
    assert "H = W = (32 + 2·0 − 5)/1 + 1 = 28" in layer            # the --explain derivation
    param = await doc.hover(doc.pos("classes: int"))
    assert "classes: int = 10" in param
    doc.close()

    bert = Doc(lsp, workdir / "bert.arch")
    await bert.open()
    named = await bert.hover(bert.pos("cross_entropy(mlm_logits", offset=len("cross_entropy(")))
    assert "mlm_logits: f32[N, T, 64]" in named           # a train section's name for BertSmall's output
    bert.close()

    res = Doc(lsp, workdir / "resnet18.arch")
    await res.open()
    stage = await res.hover(res.pos("BasicStage(128", offset=3))
    assert "block BasicStage(width: int, blocks: int, stride: int = 1)" in stage
    assert "One stage: the first block may downsample" in stage          # its doc comment
    assert "**layer2** in ResNet18: → **f32[N, 128, 28, 28]** · 525,568 parameters" in stage
    block = await res.hover(res.pos("BasicBlock(width, stride", offset=3))
    assert "block BasicBlock(out: int, stride: int = 1)" in block and "defined in `resnet_blocks.arch`" in block
    # inside a block of an imported file: one shape per application, from the files that use it
    blocks = Doc(lsp, workdir / "resnet_blocks.arch")
    await blocks.open()
    skip = await blocks.hover(blocks.pos("skip", nth=0))
    assert "skip: f32[N, 64, 56, 56]" in skip and "skip: f32[N, 512, 7, 7]" in skip
    blocks.close()
    res.close()


# -- completion ----------------------------------------------------------------------------------
async def test_completion_of_ops_arguments_names_and_imports(lsp, workdir):
    base = (ROOT / "specs/lenet5.arch").read_text()
    doc = Doc(lsp, workfile(workdir, "complete.arch", base))
    await doc.open()
    typing = base.replace("x = x -> Flatten", "x = x -> Conv\n  x = x -> Flatten")
    await doc.change(typing)
    items = await doc.complete(doc.pos("-> Conv\n", offset=len("-> Conv")))
    conv = items["Conv2d"]
    assert conv.insert_text == "Conv2d(${1:out_channels}, ${2:kernel_size})"
    assert conv.insert_text_format == T.InsertTextFormat.Snippet
    assert conv.detail.startswith("Conv2d(out_channels: int, kernel_size: ints, stride: ints = 1")
    assert {"Conv1d", "ConvTranspose2d", "ReLU", "image", "x", "classes", "channels"} <= set(items)

    await doc.change(base.replace("Conv2d(16, 5)", "Conv2d(16, 5, "))
    items = await doc.complete(doc.pos("Conv2d(16, 5, ", offset=len("Conv2d(16, 5, ")))
    assert items["stride="].detail == "stride: ints = 1"
    assert items["padding="].documentation.value.startswith("`padding: padding = 0`")
    assert "image" in items          # arguments are expressions too

    await doc.change('import "\n' + base)
    items = await doc.complete(T.Position(line=0, character=8))
    assert {"std/transformer.arch", "std/mlp.arch", "resnet_blocks.arch"} <= set(items)
    assert items["std/mlp.arch"].text_edit.range.start == T.Position(line=0, character=8)

    await doc.change(base + "\nmo")
    items = await doc.complete(T.Position(line=base.count("\n") + 1, character=2))
    assert {"model", "block", "import", "train", "gan"} <= set(items) and "Conv2d" not in items
    doc.close()


# -- navigation ----------------------------------------------------------------------------------
def _line_of(path: Path, needle: str) -> int:
    return next(i for i, ln in enumerate(path.read_text().split("\n")) if needle in ln)


async def test_definition_across_files_locals_imports_and_ops(lsp, workdir):
    doc = Doc(lsp, workdir / "resnet50.arch")
    await doc.open()
    (loc,) = await doc.definition(doc.pos("Bottleneck(width, stride"))
    assert loc.uri == uris.from_fs_path(str(workdir / "resnet_blocks.arch"))
    assert loc.range.start == T.Position(line=_line_of(workdir / "resnet_blocks.arch", "block Bottleneck("),
                                         character=len("block "))
    (loc,) = await doc.definition(doc.pos("x -> GlobalAvgPool"))      # the x bound on the statement before
    assert loc.uri == doc.uri and (loc.range.start, loc.range.end) == (
        doc.pos("x = x -> BottleneckStage"), doc.pos("x = x -> BottleneckStage", offset=1))
    (loc,) = await doc.definition(doc.pos('"resnet_blocks.arch"', offset=3))
    assert loc.uri == uris.from_fs_path(str(workdir / "resnet_blocks.arch"))
    (loc,) = await doc.definition(doc.pos("blocks - 1", offset=1))     # a parameter
    assert (loc.range.start, loc.range.end) == (doc.pos("blocks: int"), doc.pos("blocks: int", offset=6))
    (loc,) = await doc.definition(doc.pos("Linear(classes"))            # an op: its class
    assert loc.uri.endswith("archdsl/ops/dense.py")
    doc.close()

    bert = Doc(lsp, workdir / "bert.arch")
    await bert.open()
    (loc,) = await bert.definition(bert.pos("MaskedTransformerEncoderBlock"))
    assert loc.uri == uris.from_fs_path(str((stdlib_dir() / "transformer.arch").resolve()))
    bert.close()


async def test_references_of_a_block_and_a_tensor(lsp, workdir):
    doc = Doc(lsp, workdir / "resnet50.arch")
    await doc.open()
    refs = await doc.references(doc.pos("Bottleneck(width)"))
    blocks_uri = uris.from_fs_path(str(workdir / "resnet_blocks.arch"))
    assert sorted((r.uri, r.range.start.line) for r in refs) == sorted([
        (doc.uri, doc.pos("Bottleneck(width, stride").line), (doc.uri, doc.pos("Bottleneck(width)").line),
        (blocks_uri, _line_of(workdir / "resnet_blocks.arch", "block Bottleneck("))])
    without = await doc.references(doc.pos("Bottleneck(width)"), declaration=False)
    assert len(without) == 2
    image = await doc.references(doc.pos("image -> Stem"))
    assert [r.range for r in image] == [doc.range("image", nth=0), doc.range("image", nth=1)]
    doc.close()


async def test_rename_a_tensor_and_a_block_across_files(lsp, workdir):
    text = (ROOT / "specs/lenet5.arch").read_text()
    doc = Doc(lsp, workfile(workdir, "rename_lenet.arch", text))
    await doc.open()
    prepared = await lsp.text_document_prepare_rename_async(T.PrepareRenameParams(
        text_document=doc.id, position=doc.pos("x = x -> Conv2d(16", offset=1)))
    assert prepared.placeholder == "x" and prepared.range == doc.range("x = x -> Conv2d(16", length=1)
    edit = await doc.rename(doc.pos("x = x -> Conv2d(16"), "h")
    (edits,) = edit.changes.values()
    assert len(edits) == len(re.findall(r"\bx\b", text)) == 6      # every binding and use of x
    renamed = apply_edits(text, edits)
    assert not re.search(r"\bx\b", renamed) and len(re.findall(r"\bh\b", renamed)) == 6
    assert compile_spec(renamed).model().param_count == 61_706
    doc.close()

    blocks = workdir / "resnet_blocks.arch"
    user = Doc(lsp, workdir / "resnet50.arch")
    await user.open()
    edit = await user.rename(user.pos("Bottleneck(width)"), "Bottle")
    assert set(edit.changes) == {user.uri, uris.from_fs_path(str(blocks))}
    new_blocks = apply_edits(blocks.read_text(), edit.changes[uris.from_fs_path(str(blocks))])
    new_user = apply_edits(user.text, edit.changes[user.uri])
    assert "block Bottle(" in new_blocks and new_user.count("Bottle(") == 2
    assert not re.search(r"\bBottleneck\b", new_user + new_blocks)
    tmp = workdir / "renamed"
    tmp.mkdir()
    (tmp / "resnet_blocks.arch").write_text(new_blocks)
    (tmp / "resnet50.arch").write_text(new_user)
    assert compile_spec(tmp / "resnet50.arch").model().param_count == 25_557_032
    user.close()


async def test_rename_refuses_what_cannot_be_renamed(lsp, workdir):
    doc = Doc(lsp, workdir / "bert.arch")
    await doc.open()
    from pygls.exceptions import JsonRpcException
    for pos, new, why in [(doc.pos("LayerNorm(eps=eps)"), "Norm", "built into archdsl"),
                          (doc.pos("MaskedTransformerEncoderBlock"), "Enc", "standard library"),
                          (doc.pos("h = e -> LayerNorm"), "model", "not a valid name"),
                          (doc.pos("h = e -> LayerNorm"), "e", "already used in Bert")]:
        with pytest.raises(JsonRpcException, match=why):
            await doc.rename(pos, new)
    doc.close()


# -- symbols, formatting, inlay hints ------------------------------------------------------------
async def test_document_symbols(lsp, workdir):
    doc = Doc(lsp, workdir / "bert.arch")
    await doc.open()
    syms = await doc.symbols()
    assert [(s.name, s.kind) for s in syms] == [
        ('import "std/transformer.arch"', T.SymbolKind.Module), ("Bert", T.SymbolKind.Function),
        ("BertEncoder", T.SymbolKind.Class), ("BertSmall", T.SymbolKind.Class),
        ("train BertSmall", T.SymbolKind.Namespace), ("BertPretraining", T.SymbolKind.Class)]
    bert = syms[1]
    assert [c.name for c in bert.children][:3] == ["tok", "layers", "d"]
    assert (bert.selection_range.start, bert.selection_range.end) == (doc.pos("block Bert", offset=6),
                                                                       doc.pos("block Bert", offset=10))
    assert {"tokens", "segment_ids", "keep", "e", "h"} <= {c.name for c in bert.children}
    small = syms[3]
    assert {(c.name, c.kind) for c in small.children} >= {("wte", T.SymbolKind.Object),
                                                          ("mlm_logits", T.SymbolKind.Property)}
    assert [c.name for c in syms[4].children][:3] == ["loss", "optimizer", "schedule"]
    doc.close()


async def test_formatting_uses_archdsl_fmt(lsp, workdir):
    messy = "model   M {\n    input x : f32[N,4]\n  output y=x->Linear( 2 )->ReLU\n}\n"
    doc = Doc(lsp, workfile(workdir, "fmt.arch", messy))
    await doc.open()
    (edit,) = await doc.format()
    assert apply_edits(messy, [edit]) == format_source(messy)
    await doc.change(format_source(messy))
    assert await doc.format() == []
    await doc.change("model M {")
    assert await doc.format() is None             # does not parse: nothing to format
    doc.close()


async def test_inlay_hints_show_each_statements_output_type(lsp, workdir):
    doc = Doc(lsp, workdir / "lenet5.arch")
    await doc.open()
    hints = {h.position.line: h.label for h in await doc.hints()}
    lines = doc.text.split("\n")
    want = {"x = image -> Conv2d(6, 5)": ": f32[N, 6, 14, 14]", "x = x -> Conv2d(16, 5)": ": f32[N, 16, 5, 5]",
            "x = x -> Flatten": ": f32[N, 84]", "output logits": ": f32[N, 10]"}
    for needle, label in want.items():
        line = next(i for i, ln in enumerate(lines) if needle in ln)
        assert hints[line] == label, needle
    assert not any("input image" in lines[i] for i in hints)        # typed inputs say it already
    x = next(h for h in await doc.hints() if h.label == ": f32[N, 6, 14, 14]")
    assert x.position.character == len(lines[x.position.line].split("#")[0].rstrip())   # the statement's end
    doc.close()


# -- robustness ----------------------------------------------------------------------------------
def _fuzz_corpus() -> list[str]:
    """Deterministic cases from the fuzzer's own generators (tests/fuzzlib.py): mutations of
    every shipped spec, generated programs, single-op programs, and a spec typed a few
    characters at a time."""
    c = fuzzlib.Chooser(rnd=random.Random(20240601))
    cases = []
    for spec in fuzzlib.spec_files():
        text = spec.read_text(encoding="utf-8")
        for _ in range(6):
            cases.append(fuzzlib.mutate(c, text).decode("utf-8", "replace"))
    cases += [fuzzlib.program(c) for _ in range(40)]
    cases += [fuzzlib.op_program(c) for _ in range(30)]
    typed = (ROOT / "specs/resnet18.arch").read_text()
    cases += [typed[:i] for i in range(0, len(typed) + 1, 17)]
    return cases


async def test_fuzz_corpus_never_breaks_the_server(lsp, workdir):
    """Every request on every case answers (or refuses a rename) without an internal error, and
    every diagnostic lies inside the document."""
    from pygls.exceptions import JsonRpcException
    doc = Doc(lsp, workfile(workdir, "fuzz.arch", ""))
    await doc.open()
    rnd = random.Random(7)
    clean = 0
    for i, text in enumerate(_fuzz_corpus()):
        diags = await doc.change(text)
        clean += not diags
        n_lines = len(re.split(r"\r\n|\r|\n", text))
        for d in diags:
            assert "internal error" not in d.message, (i, text)
            assert (0, 0) <= (d.range.start.line, d.range.start.character) <= (d.range.end.line, d.range.end.character)
            assert d.range.end.line < n_lines, (i, d)
        names = [m.start() for m in re.finditer(r"[A-Za-z_]\w*", text)]
        for at in rnd.sample(names, min(4, len(names))) + [len(text)]:
            line = text.count("\n", 0, at)
            pos = T.Position(line=line, character=at - (text.rfind("\n", 0, at) + 1) + 1)
            await doc.hover(pos)
            await doc.complete(pos)
            await doc.definition(pos)
            await doc.references(pos)
            try:
                await doc.rename(pos, "renamed_name")
            except JsonRpcException as refused:     # refusals are answers; internal errors are logged
                assert refused.code == -32803, refused
        await doc.hints()
        await doc.format()
        await doc.symbols()
    assert 0 < clean < i      # the corpus holds texts that check and texts that do not
    doc.close()
