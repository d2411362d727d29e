"""`archdsl lsp`: registered by archdsl/cli.py like the other stages' commands."""
from __future__ import annotations


def cmd_lsp(args) -> int:
    from .server import serve
    serve()
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("lsp", help="a language server for editors (LSP over stdin/stdout)",
                       description="Speak the Language Server Protocol on stdin/stdout: diagnostics, hover, "
                                   "completion, go to definition, references, rename, symbols, formatting and "
                                   "inlay hints for .arch files. Editors start it; see the README's Editor support.")
    p.add_argument("--stdio", action="store_true", help="use stdin/stdout (the default and only transport; "
                                                        "accepted because some clients pass it)")
    p.set_defaults(fn=cmd_lsp)
