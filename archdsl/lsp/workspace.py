"""The compiler kept warm between edits: open documents, parsed modules, one analysis per
document.

An analysis is what `archdsl check` does to the document's text as the editor has it (parse,
load the imports, elaborate and shape-check every model, check the sections) plus the trace of
what the elaborator saw (trace.py) and the index of names (index.py). What stays warm: the
parser and the op registry (built once per process), and every parsed module, keyed by its
file and text, so an edit re-parses only the edited file and re-elaborates its models (a few
milliseconds for BERT-base; bench/lsp.md has the figures). Imports are read from the open
documents first, then from disk, so an unsaved change to an imported file is seen at once.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from lsprotocol import types as T
from pygls import uris

from ..elaborate.loader import import_target, load
from ..errors import ArchError, ArchErrors
from ..syntax import ast as A
from ..syntax.parser import MAX_SOURCE_CHARS, parse
from .index import ModuleIndex, visible_definitions
from .text import SourceText
from .trace import Trace, TracedSpec

MAX_PARSED = 512            # parsed modules kept (by file and text)
MAX_WORKSPACE_FILES = 5000  # .arch files looked at for references and renames
SKIP_DIRS = {"node_modules", "__pycache__", ".git", ".venv", "venv", "build", "dist"}


def errors_of(e: ArchError) -> list[ArchError]:
    return list(e.errors) if isinstance(e, ArchErrors) else [e]


def path_of(uri: str) -> str | None:
    """The resolved file path of a file: URI (None for an unsaved buffer or another scheme)."""
    fs = uris.to_fs_path(uri) if uri.startswith("file:") else None
    if fs is None:
        return None
    try:
        return str(Path(fs).resolve())
    except (OSError, RuntimeError, ValueError):
        return fs


def uri_of(file: str) -> str:
    return uris.from_fs_path(file) or file


@dataclass(eq=False)
class Analysis:
    uri: str
    file: str                   # the name the compiler's spans give this document
    version: int | None
    text: SourceText
    module: A.Module | None     # None when the text does not parse
    index: ModuleIndex | None
    errors: list = field(default_factory=list)
    trace: Trace = field(default_factory=Trace)
    files: set = field(default_factory=set)     # the files its imports reach


class Workspace:
    def __init__(self, encoding: str = T.PositionEncodingKind.Utf16):
        self.encoding = encoding
        self.roots: list[Path] = []
        self.documents: dict[str, tuple[str, int | None]] = {}     # uri -> (text, version)
        self.analyses: dict[str, Analysis] = {}
        self.last_parsed: dict[str, Analysis] = {}                 # uri -> latest analysis that parsed
        self._parsed: OrderedDict = OrderedDict()
        self._disk: dict = {}       # path -> ((mtime, size), text)
        self._indexes: dict = {}    # path -> (module, {imported file: module}, ModuleIndex)

    # -- modules ----------------------------------------------------------------------------------
    def parse(self, text: str, file: str) -> A.Module:
        """`parse`, remembering each module (and each syntax error) by file and text."""
        key = (file, text)
        hit = self._parsed.get(key)
        if hit is None:
            try:
                hit = parse(text, file)
            except ArchError as e:
                hit = e
            self._parsed[key] = hit
            if len(self._parsed) > MAX_PARSED:
                self._parsed.popitem(last=False)
        else:
            self._parsed.move_to_end(key)
        if isinstance(hit, ArchError):
            raise hit
        return hit

    def buffers(self) -> dict[str, str]:
        """Open documents by resolved path: what imports read instead of the files on disk."""
        out = {}
        for uri, (text, _) in self.documents.items():
            p = path_of(uri)
            if p is not None:
                out[p] = text
        return out

    def source(self, path: str) -> str | None:
        """A file's text: the open document's, else the file's on disk (None if unreadable)."""
        for uri, (text, _) in self.documents.items():
            if path_of(uri) == path:
                return text
        try:
            st = os.stat(path)
            if st.st_size > 4 * MAX_SOURCE_CHARS:
                return None
            stamp = (st.st_mtime_ns, st.st_size)
            hit = self._disk.get(path)
            if hit is None or hit[0] != stamp:
                hit = (stamp, Path(path).read_bytes().decode("utf-8"))
                self._disk[path] = hit
            return hit[1]
        except (OSError, UnicodeDecodeError, ValueError):
            return None

    def module(self, path) -> A.Module | None:
        """The parsed module of a file (open or on disk), or None."""
        text = self.source(str(path))
        if text is None:
            return None
        try:
            return self.parse(text, str(path))
        except ArchError:
            return None

    def index(self, path: str) -> ModuleIndex | None:
        """The index of any file, open or not (for references across the workspace); kept until
        the file or one it imports changes."""
        module = self.module(path)
        if module is None:
            return None
        hit = self._indexes.get(path)
        if hit is not None and hit[0] is module and all(self.module(f) is m for f, m in hit[1].items()):
            return hit[2]
        visible, files = visible_definitions(module, self.module)
        index = ModuleIndex(module, visible)
        self._indexes[path] = (module, {f: self.module(f) for f in files}, index)
        return index

    # -- documents --------------------------------------------------------------------------------
    def update(self, uri: str, text: str, version: int | None) -> list[Analysis]:
        """A document opened or changed: its new analysis, then those of the open documents that
        import it."""
        self.documents[uri] = (text, version)
        first = self.analyze(uri)
        out = [first]
        changed = path_of(uri)
        if changed is not None:
            for other, a in list(self.analyses.items()):
                if other != uri and changed in a.files:
                    out.append(self.analyze(other))
        return out

    def close(self, uri: str) -> None:
        self.documents.pop(uri, None)
        self.analyses.pop(uri, None)
        self.last_parsed.pop(uri, None)

    def analyze(self, uri: str) -> Analysis:
        """Analyse an open document and keep the result."""
        text, version = self.documents[uri]
        a = self._analyze(uri, text, version)
        if a.module is not None:
            self.last_parsed[uri] = a
        self.analyses[uri] = a
        return a

    def peek(self, uri: str) -> Analysis | None:
        """The analysis of a file the editor has not opened: read from disk, not kept."""
        path = path_of(uri)
        text = self.source(path) if path is not None else None
        return self._analyze(uri, text, None) if text is not None else None

    def _analyze(self, uri: str, text: str, version: int | None) -> Analysis:
        path = path_of(uri)
        file = path if path is not None else "<string>"
        a = Analysis(uri, file, version, SourceText(text, self.encoding), None, None)
        try:
            a.module = self.parse(text, file)
        except ArchError as e:
            a.errors.extend(errors_of(e))
        if a.module is not None:
            visible, a.files = visible_definitions(a.module, self.module)
            a.index = ModuleIndex(a.module, visible)
            try:
                ns = load(text, path, buffers=self.buffers(), parse_file=self.parse)
                TracedSpec(ns, a.trace)
            except ArchError as e:
                a.errors.extend(errors_of(e))
        return a

    def parsed(self, uri: str) -> Analysis | None:
        """The document's analysis if its text parses, else its latest one that did (its
        positions may be a little off: for completion and the outline while typing)."""
        a = self.analyses.get(uri)
        if a is not None and a.module is not None:
            return a
        return self.last_parsed.get(uri)

    # -- the workspace ----------------------------------------------------------------------------
    def files(self) -> list[str]:
        """The .arch files in the workspace folders and the open documents."""
        out: list[str] = []
        for root in self.roots:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
                out.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".arch"))
                if len(out) >= MAX_WORKSPACE_FILES:
                    break
        out = [str(Path(f).resolve()) for f in out[:MAX_WORKSPACE_FILES]]
        for uri in self.documents:
            p = path_of(uri)
            if p is not None and p not in out:
                out.append(p)
        return out

    def import_path(self, item: A.Import, importer: str) -> str | None:
        try:
            return str(import_target(item.path, Path(importer).parent))
        except (OSError, RuntimeError, ValueError):
            return None
