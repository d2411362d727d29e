"""The language server: LSP messages in, features.py's answers out (pygls, over stdio).

    archdsl lsp          # what an editor starts; it speaks LSP on stdin/stdout

Every handler runs to completion before the next message is read (none is async or threaded),
so the server answers in the order it is asked: a request sent after a change is answered with
that change's analysis, and that change's diagnostics are published before the answer.

A bug in the server must not take the editor's session down with it: a handler that raises
logs the traceback to the client (window/logMessage, type Error) and answers nothing; an
analysis that raises publishes one "archdsl internal error" diagnostic instead of the errors.
The tests count both as failures.
"""
from __future__ import annotations

import traceback

from lsprotocol import types as T
from pygls.lsp.server import LanguageServer

from .. import __version__
from . import features as F
from .completion import complete
from .workspace import Workspace, path_of

TRIGGER_CHARACTERS = ["(", ",", "/", '"', ">", ":"]
INTERNAL_ERROR = "archdsl internal error"


class ArchLanguageServer(LanguageServer):
    def __init__(self):
        super().__init__("archdsl", __version__, text_document_sync_kind=T.TextDocumentSyncKind.Full)
        self.ws = Workspace()
        self.inlay_hints = True
        self.snippets = True

    def log_error(self, what: str) -> None:
        self.window_log_message(T.LogMessageParams(type=T.MessageType.Error,
                                                   message=f"{INTERNAL_ERROR} in {what}:\n{traceback.format_exc()}"))

    def publish(self, uri: str) -> None:
        a = self.ws.analyses.get(uri)
        if a is not None:
            diags = F.diagnostics(a, self.ws)
            self.text_document_publish_diagnostics(T.PublishDiagnosticsParams(uri=uri, diagnostics=diags,
                                                                              version=a.version))

    def changed(self, uri: str, text: str, version: int | None) -> None:
        """Analyse a new text and publish its diagnostics (and those of open files importing it)."""
        try:
            for a in self.ws.update(uri, text, version):
                self.publish(a.uri)
        except Exception:  # noqa: BLE001 - the server outlives its own bugs, and says so
            self.log_error("analysis")
            zero = T.Position(line=0, character=0)
            self.text_document_publish_diagnostics(T.PublishDiagnosticsParams(uri=uri, version=version, diagnostics=[
                T.Diagnostic(range=T.Range(start=zero, end=zero), message=f"{INTERNAL_ERROR}: see the server log",
                             source=F.SOURCE, severity=T.DiagnosticSeverity.Error)]))

    def analysis(self, uri: str):
        """The document's latest analysis (a file the client has not opened: read from disk)."""
        return self.ws.analyses.get(uri) or self.ws.peek(uri)


def make_server() -> ArchLanguageServer:
    server = ArchLanguageServer()

    @server.feature(T.INITIALIZE)
    def initialize(ls: ArchLanguageServer, params: T.InitializeParams):
        options = params.initialization_options if isinstance(params.initialization_options, dict) else {}
        ls.inlay_hints = bool(options.get("inlayHints", True))
        completion = params.capabilities.text_document and params.capabilities.text_document.completion
        item = completion.completion_item if completion else None
        ls.snippets = bool(item and item.snippet_support)
        ls.ws.encoding = ls.workspace.position_encoding or T.PositionEncodingKind.Utf16
        from pathlib import Path
        roots = [f.uri for f in params.workspace_folders or []] or ([params.root_uri] if params.root_uri else [])
        ls.ws.roots = [Path(p) for p in (path_of(u) for u in roots) if p is not None]

    @server.feature(T.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: ArchLanguageServer, params: T.DidOpenTextDocumentParams):
        d = params.text_document
        ls.changed(d.uri, d.text, d.version)

    @server.feature(T.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: ArchLanguageServer, params: T.DidChangeTextDocumentParams):
        d = params.text_document
        ls.changed(d.uri, ls.workspace.get_text_document(d.uri).source, d.version)

    @server.feature(T.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def files_changed(ls: ArchLanguageServer, params: T.DidChangeWatchedFilesParams):
        # a file changed on disk (not through the editor): re-check the open files that import it
        changed = {path_of(c.uri) for c in params.changes}
        for uri, a in list(ls.ws.analyses.items()):
            if a.files & changed:
                text, version = ls.ws.documents[uri]
                ls.changed(uri, text, version)

    @server.feature(T.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: ArchLanguageServer, params: T.DidCloseTextDocumentParams):
        ls.ws.close(params.text_document.uri)
        ls.text_document_publish_diagnostics(T.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[]))

    def request(method: str, answer, options=None) -> None:
        """Answer a request about one document with `answer(ls, analysis, params)`. A refused
        rename is the client's error to show; any other exception is a bug: logged, no answer."""
        @server.feature(method, options)
        def handle(ls: ArchLanguageServer, params):
            try:
                a = ls.analysis(params.text_document.uri)
                return answer(ls, a, params) if a is not None else None
            except F.RenameError:
                raise
            except Exception:  # noqa: BLE001
                ls.log_error(method)
                return None

    request(T.TEXT_DOCUMENT_HOVER, lambda ls, a, p: F.hover(a, ls.ws, p.position))
    request(T.TEXT_DOCUMENT_COMPLETION, lambda ls, a, p: complete(a, ls.ws, p.position, ls.snippets),
            T.CompletionOptions(trigger_characters=TRIGGER_CHARACTERS))
    request(T.TEXT_DOCUMENT_DEFINITION, lambda ls, a, p: F.definition(a, ls.ws, p.position))
    request(T.TEXT_DOCUMENT_REFERENCES,
            lambda ls, a, p: F.references(a, ls.ws, p.position, p.context.include_declaration))
    request(T.TEXT_DOCUMENT_PREPARE_RENAME, lambda ls, a, p: F.prepare_rename(a, ls.ws, p.position))
    request(T.TEXT_DOCUMENT_RENAME, lambda ls, a, p: F.rename(a, ls.ws, p.position, p.new_name))
    # the outline of the latest text that parsed, so that it does not vanish while a line is typed
    request(T.TEXT_DOCUMENT_DOCUMENT_SYMBOL,
            lambda ls, a, p: F.document_symbols(ls.ws.parsed(p.text_document.uri) or a))
    request(T.TEXT_DOCUMENT_FORMATTING, lambda ls, a, p: F.formatting(a))
    request(T.TEXT_DOCUMENT_INLAY_HINT, lambda ls, a, p: F.inlay_hints(a, ls.ws, p.range) if ls.inlay_hints else [])
    return server


def serve() -> None:
    """Speak LSP on stdin/stdout until the client says exit."""
    make_server().start_io()
