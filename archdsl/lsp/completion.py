"""Completion: what may be written at the cursor, read from the text before it.

The text before the cursor usually does not parse (it is being typed), so the context comes
from its tokens: the brackets still open (a call's argument list, a model or block body, a
`train`/`gan` section, the top level), an unterminated string (an import path), the tokens
just before the cursor (`input x:` wants a dtype). The names come from the document's latest
analysis that parsed: the models and blocks it can see, and the names bound in the model or
block around the cursor.

    top level            model, block, import, train, gan
    a body               ops (with a snippet of their required arguments), blocks and models,
                         the names bound above the cursor, builtins, keywords
    f(... |)             keyword arguments of the op or block f, with defaults and docs, and
                         everything a body offers (arguments are expressions)
    import "|"           .arch files beside the document and the standard library (std/...)
    train M { | }        the section's settings; after `=`, models and M's inputs and outputs
    input x: |           dtypes
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from lsprotocol import types as T

from ..elaborate.elaborator import BUILTINS
from ..elaborate.loader import STDLIB_PREFIX, stdlib_dir
from ..elaborate.sections import GAN_KEYS, TRAIN_KEYS
from ..ir.types import DTYPES
from ..ops.base import load_all
from ..syntax import ast as A
from ..syntax.parser import KEYWORDS
from . import describe as D
from .workspace import Analysis, Workspace

_TOKEN = re.compile(r"""#[^\n]*|"[^"\n]*"?|'[^'\n]*'?|[A-Za-z_][A-Za-z_0-9]*|[0-9][0-9_.eE]*|->|\*\*|//|[=!<>]=|\S""")
_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*$")
_HEADS = ("model", "block", "cell", "train", "gan", "repeat")
TOP_LEVEL = ("model", "block", "cell", "import", "train", "gan")
BODY_KEYWORDS = ("input", "output", "state", "fixed", "repeat", "if", "else", "and", "or", "not", "true", "false",
                 "as")
MAX_IMPORT_DEPTH = 3        # folders below the document searched for import paths
MAX_IMPORT_ITEMS = 500


def complete(a: Analysis, ws: Workspace, pos: T.Position, snippets: bool = True) -> T.CompletionList:
    text = a.text.text
    offset = a.text.offset(pos)
    prefix = text[:offset]
    toks = [(m.group(), m.start()) for m in _TOKEN.finditer(prefix)]
    items: list[T.CompletionItem] = []
    if toks and toks[-1][1] + len(toks[-1][0]) == len(prefix):
        last, start = toks[-1]
        if last.startswith("#"):
            return T.CompletionList(is_incomplete=False, items=[])
        if last[0] in "\"'" and (len(last) == 1 or last[-1] != last[0]):     # inside a string
            before = [t for t, _ in toks[:-1] if not t.startswith("#")]
            if before and before[-1] == "import":
                items = _import_paths(a, ws, start + 1, offset)
            return T.CompletionList(is_incomplete=False, items=items)
    word = _WORD.search(prefix)
    code = [t for t, _ in toks if not t.startswith("#")]
    if word:
        code = code[:-1]
    stack = _open_brackets(code)
    parsed = ws.parsed(a.uri)
    index = parsed.index if parsed is not None else None
    line = a.text.span_position(offset)[0]
    if not stack:
        items = [_keyword(k) for k in TOP_LEVEL]
    elif stack[-1][0] == "{" and stack[-1][1] and stack[-1][1][0] in ("train", "gan"):
        items = _section_items(stack[-1][1], code, index)
    elif len(code) >= 3 and code[-1] == ":" and code[-3] in ("input", "state", "fixed"):
        items = [T.CompletionItem(label=d, kind=T.CompletionItemKind.TypeParameter, detail="dtype")
                 for d in DTYPES]
    else:
        call = stack[-1][1] if stack[-1][0] == "(" else None
        if call is not None:
            items = _argument_items(call[1], code, index)
        items += _expression_items(index, line, snippets)
        items += [_keyword(k) for k in BODY_KEYWORDS]
    return T.CompletionList(is_incomplete=False, items=items)


def _open_brackets(code: list[str]) -> list[tuple[str, tuple | None]]:
    """The brackets open at the end of `code`, innermost last, each with what opened it:
    ("call", name) for `name(`, (head, name) for the `{` of a model, block, section or repeat."""
    stack: list = []
    for i, t in enumerate(code):
        if t in ("(", "[", "{"):
            info = None
            if t == "(" and i > 0 and code[i - 1].isidentifier() and code[i - 1] not in KEYWORDS:
                info = ("call", code[i - 1])
            elif t == "{":
                info = _brace_head(code, i)
            stack.append((t, info))
        elif t in (")", "]", "}") and stack:
            stack.pop()
    return stack


def _brace_head(code: list[str], i: int) -> tuple | None:
    """What a `{` at code[i] opens: the nearest head keyword before it, skipping bracketed parts."""
    depth = 0
    for j in range(i - 1, -1, -1):
        t = code[j]
        if t in (")", "]"):
            depth += 1
        elif t in ("(", "["):
            depth -= 1
        elif depth == 0 and t in ("{", "}"):
            return None
        elif depth == 0 and t in _HEADS:
            name = code[j + 1] if j + 1 < i and code[j + 1].isidentifier() else None
            return t, name
    return None


# -- items ---------------------------------------------------------------------------------------
def _keyword(k: str) -> T.CompletionItem:
    return T.CompletionItem(label=k, kind=T.CompletionItemKind.Keyword, sort_text=f"9{k}")


def _doc(text: str) -> T.MarkupContent | None:
    return T.MarkupContent(kind=T.MarkupKind.Markdown, value=text) if text else None


def _call_snippet(name: str, required: list[str], snippets: bool) -> tuple[str, T.InsertTextFormat]:
    if not required:
        return name, T.InsertTextFormat.PlainText
    if not snippets:
        return f"{name}(", T.InsertTextFormat.PlainText
    holes = ", ".join(f"${{{i + 1}:{r}}}" for i, r in enumerate(required))
    return f"{name}({holes})", T.InsertTextFormat.Snippet


def _expression_items(index, line: int, snippets: bool) -> list[T.CompletionItem]:
    items = []
    names = _names_in_scope(index, line)
    for name, kind in names.items():
        items.append(T.CompletionItem(label=name, kind=T.CompletionItemKind.Variable, detail=kind, sort_text=f"0{name}"))
    for op in load_all().values():
        if op.name in names:
            continue
        text, fmt = _call_snippet(op.name, [x.name for x in op.args if x.required], snippets)
        items.append(T.CompletionItem(label=op.name, kind=T.CompletionItemKind.Class, detail=D.op_signature(op),
                                      documentation=_doc(D.op_doc(op)), insert_text=text, insert_text_format=fmt,
                                      sort_text=f"1{op.name}"))
    if index is not None:
        for name, d in index.visible.items():
            if name in names or name in load_all():
                continue
            text, fmt = _call_snippet(name, [p.name for p in d.params if p.default is None], snippets)
            items.append(T.CompletionItem(label=name, kind=T.CompletionItemKind.Function if d.kind == "block"
                                          else T.CompletionItemKind.Module, detail=D.block_signature(d),
                                          documentation=_doc(D.doc_comment(d)), insert_text=text,
                                          insert_text_format=fmt, sort_text=f"2{name}"))
    for name in BUILTINS:
        if name in names:
            continue
        text, fmt = _call_snippet(name, ["x"], snippets)
        items.append(T.CompletionItem(label=name, kind=T.CompletionItemKind.Function,
                                      detail=D.BUILTIN_DOCS.get(name), insert_text=text, insert_text_format=fmt,
                                      sort_text=f"3{name}"))
    return items


def _names_in_scope(index, line: int) -> dict[str, str]:
    """The names bound in the model or block around `line`, above it (parameters: all)."""
    if index is None:
        return {}
    scope = index.scope_at(line)
    if scope is None:
        return {}
    out = {}
    for at, name, kind in sorted(scope.order):
        if kind == "param" or at < line:
            out.setdefault(name, kind)
    return out


def _argument_items(callee: str, code: list[str], index) -> list[T.CompletionItem]:
    """Keyword arguments of the op or block being called that the call does not give yet."""
    given = {code[i - 1] for i in range(1, len(code)) if code[i] == "=" and code[i - 1].isidentifier()}
    items = []
    op = load_all().get(callee)
    if op is not None:
        for arg in op.args:
            if arg.name in given:
                continue
            detail = D.arg_text(arg)
            items.append(T.CompletionItem(label=f"{arg.name}=", kind=T.CompletionItemKind.Property, detail=detail,
                                          documentation=_doc(D.arg_doc(arg)), sort_text=f"00{op.args.index(arg):03d}"))
        if "name" not in given:
            items.append(T.CompletionItem(label="name=", kind=T.CompletionItemKind.Property,
                                          detail="name: str", documentation=_doc("the layer's name in summaries, "
                                                                                  "drawings and ONNX"),
                                          sort_text="00999"))
        return items
    d = index.visible.get(callee) if index is not None else None
    if d is not None:
        for i, p in enumerate(d.params):
            if p.name not in given:
                items.append(T.CompletionItem(label=f"{p.name}=", kind=T.CompletionItemKind.Property,
                                              detail=D.param_text(p), documentation=_doc(f"parameter of {d.kind} {d.name}"),
                                              sort_text=f"00{i:03d}"))
    return items


def _section_items(head: tuple, code: list[str], index) -> list[T.CompletionItem]:
    kind, name = head
    if code and code[-1] not in ("=", ",", "(", "[", "->") and not _binary(code[-1]):   # a setting starts
        keys = TRAIN_KEYS if kind == "train" else GAN_KEYS
        given = {code[i - 1] for i in range(1, len(code)) if code[i] == "=" and code[i - 1].isidentifier()}
        return [T.CompletionItem(label=k, kind=T.CompletionItemKind.Property, detail=f"{kind} setting",
                                 insert_text=f"{k} = ", sort_text=f"0{k}") for k in keys if k not in given]
    items = []
    if index is not None:
        for n, d in index.visible.items():
            if d.kind == "model":
                items.append(T.CompletionItem(label=n, kind=T.CompletionItemKind.Module, detail=D.block_signature(d)))
        model = index.visible.get(name) if kind == "train" else None
        if model is not None:
            for stmt in model.body:
                if isinstance(stmt, A.Output) and stmt.name or isinstance(stmt, A.Input):
                    items.append(T.CompletionItem(label=stmt.name, kind=T.CompletionItemKind.Variable,
                                                  detail=f"{'output' if isinstance(stmt, A.Output) else 'input'} of {name}"))
    return items


def _binary(t: str) -> bool:
    return t in ("+", "-", "*", "/", "//", "%", "**", "==", "!=", "<", "<=", ">", ">=", "and", "or", "not", "if", "else")


def _import_paths(a: Analysis, ws: Workspace, start: int, end: int) -> list[T.CompletionItem]:
    """Import paths: .arch files below the document's folder, and the standard library's."""
    rng = T.Range(start=a.text.position(start), end=a.text.position(end))
    paths = []
    if a.file != "<string>":
        base = Path(a.file).parent
        for dirpath, dirnames, filenames in os.walk(base):
            depth = len(Path(dirpath).relative_to(base).parts)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and depth < MAX_IMPORT_DEPTH
                                 and d not in ("node_modules", "__pycache__"))
            for f in sorted(filenames):
                p = Path(dirpath) / f
                if f.endswith(".arch") and str(p) != a.file:
                    paths.append((p.relative_to(base).as_posix(), "file"))
            if len(paths) > MAX_IMPORT_ITEMS:
                break
    for p in sorted(stdlib_dir().glob("*.arch")):
        paths.append((STDLIB_PREFIX + p.name, "standard library"))
    return [T.CompletionItem(label=p, kind=T.CompletionItemKind.File, detail=what,
                             text_edit=T.TextEdit(range=rng, new_text=p)) for p, what in paths[:MAX_IMPORT_ITEMS]]
