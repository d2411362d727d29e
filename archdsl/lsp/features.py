"""What the server answers, one function per LSP request: diagnostics, hover, go to definition,
references, rename, document symbols, inlay hints and formatting. Completion is completion.py.

Each takes the document's Analysis (workspace.py) and the Workspace and returns lsprotocol
types; positions go through the analysis' SourceText (text.py).
"""
from __future__ import annotations

import inspect
from pathlib import Path

from lsprotocol import types as T
from pygls.exceptions import JsonRpcException

from ..authoring.explain import explain_node
from ..authoring.fmt import format_source
from ..elaborate.loader import stdlib_dir
from ..elaborate.values import LayerInstance, TensorRef
from ..errors import ArchError
from ..ops.base import load_all
from ..syntax import ast as A
from ..syntax.parser import KEYWORDS
from . import describe as D
from .index import LOCAL_KINDS, ModuleIndex, visible_definitions
from .text import SourceText, contains, innermost
from .workspace import Analysis, Workspace, uri_of

SOURCE = "archdsl"
MAX_SHOWN = 6       # shapes listed in one hover before "... and N more"


def _location(ws: Workspace, a: Analysis, span) -> T.Location:
    """A span anywhere (this document, an imported file) as an LSP location."""
    if span.file == a.file:
        return T.Location(uri=a.uri, range=a.text.range(span))
    text = SourceText(span.source if span.source is not None else (ws.source(span.file) or ""), a.text.encoding)
    return T.Location(uri=uri_of(span.file), range=text.range(span))


# -- diagnostics ---------------------------------------------------------------------------------
def diagnostics(a: Analysis, ws: Workspace) -> list[T.Diagnostic]:
    """Every error of the analysis, once, at a range in this document.

    An error inside a block defined in another file is shown at the block's application here
    (the outermost one in this document), an error in an imported file that does not load at
    its import; the place itself is then a related location. A shape error's related locations
    are the layers (or inputs) its input tensors came from.
    """
    out, seen = [], set()
    for err in a.errors:
        d = _diagnostic(err, a, ws)
        key = (d.range.start.line, d.range.start.character, d.range.end.line, d.range.end.character, d.message)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _diagnostic(err: ArchError, a: Analysis, ws: Workspace) -> T.Diagnostic:
    span = err.span
    related = [T.DiagnosticRelatedInformation(location=_location(ws, a, s), message=m)
               for s, m in getattr(err, "related", [])]
    calls = getattr(err, "call_stack", [])
    message = err.message
    if span is not None and span.file == a.file:
        rng = a.text.range(span)
    else:
        here = next((c for c in calls if c.file == a.file), None) if span is not None else None
        if here is None and span is not None:
            here = _import_leading_to(span.file, a, ws)
        rng = a.text.range(here) if here is not None else T.Range(start=T.Position(line=0, character=0),
                                                                  end=T.Position(line=0, character=0))
        if span is not None:
            message = f"{message} (in {Path(span.file).name}:{span.line})"
            related.insert(0, T.DiagnosticRelatedInformation(location=_location(ws, a, span), message=err.message))
    for c in calls:
        if span is None or c.file != a.file or a.text.range(c) != rng:
            related.append(T.DiagnosticRelatedInformation(location=_location(ws, a, c), message="in this block application"))
    if err.hint:
        message += f"\nhint: {err.hint}"
    return T.Diagnostic(range=rng, message=message, source=SOURCE, code=type(err).__name__,
                        severity=T.DiagnosticSeverity.Error if err.kind == "error" else T.DiagnosticSeverity.Warning,
                        related_information=related or None)


def _import_leading_to(file: str, a: Analysis, ws: Workspace):
    """The import statement of this document through which `file` is read."""
    if a.index is None:
        return None
    for item, span in a.index.imports:
        target = ws.import_path(item, a.file)
        if target is None:
            continue
        if target == file:
            return item.span
        sub = ws.module(target)
        if sub is not None and file in visible_definitions(sub, ws.module)[1]:
            return item.span
    return None


# -- hover ---------------------------------------------------------------------------------------
def _traces(a: Analysis, ws: Workspace):
    """This document's trace, then those of open documents that import it (which apply its blocks)."""
    yield a.trace
    for other in ws.analyses.values():
        if other is not a and a.file in other.files:
            yield other.trace


def _records(a: Analysis, ws: Workspace, table: str, line: int, col: int):
    """Records of `table` (layers or blocks) at the innermost span of this file that holds (line, col)."""
    best, found = None, []
    for trace in _traces(a, ws):
        for span, recs in getattr(trace, table).items():
            if span.file == a.file and contains(span, line, col):
                if best is None or innermost(span) < innermost(best):
                    best, found = span, list(recs)
                elif span == best:
                    found.extend(recs)
    return best, found


def _uses(a: Analysis, ws: Workspace, span) -> list:
    """What a name written at `span` evaluated to, each time it was evaluated."""
    return [seen for trace in _traces(a, ws) for seen in trace.uses.get(span, ())]


def _bindings(a: Analysis, ws: Workspace, span) -> list:
    """What the statement at `span` bound, each time it ran."""
    return [seen for trace in _traces(a, ws) for seen in trace.bindings.get(span, ())]


def hover(a: Analysis, ws: Workspace, pos: T.Position) -> T.Hover | None:
    if a.index is None:
        return None
    line, col = a.text.point(pos)
    imp = a.index.import_at(line, col)
    if imp is not None:
        return _md(_import_hover(imp[0], a, ws), a.text.range(imp[1]))
    occ = a.index.at(line, col)
    if occ is None or occ.key is None:
        span, layers = _records(a, ws, "layers", line, col)
        return _md(_layer_hover(layers), a.text.range(span)) if layers else None
    kind = occ.key[0]
    text = None
    if kind == "op":
        span, layers = _records(a, ws, "layers", line, col)
        text = _layer_hover(layers) if layers else _op_hover(load_all()[occ.key[1]])
    elif kind == "oparg":
        op = load_all()[occ.key[1]]
        arg = next((x for x in op.args if x.name == occ.key[2]), None)
        text = f"argument of **{op.name}**: {D.arg_doc(arg)}" if arg else None
    elif kind == "builtin":
        text = f"```archdsl\n{D.BUILTIN_DOCS.get(occ.key[1], occ.key[1])}\n```"
    elif kind == "def":
        text = _definition_hover(occ, a, ws, line, col)
    elif kind == "gan":
        text = f"```archdsl\ngan {occ.name}\n```"
    elif kind in LOCAL_KINDS:
        text = _name_hover(occ, a, ws)
    return _md(text, a.text.range(occ.span)) if text else None


def _md(text: str | None, rng: T.Range) -> T.Hover | None:
    if not text:
        return None
    return T.Hover(contents=T.MarkupContent(kind=T.MarkupKind.Markdown, value=text), range=rng)


def _op_hover(op) -> str:
    args = "\n".join(f"- {D.arg_doc(x)}" for x in op.args)
    return f"```archdsl\n{D.op_signature(op)}\n```\n{D.op_summary(op)}" + (f"\n\n{args}" if args else "")


def _layer_hover(layers) -> str:
    """An op's signature and doc, then each distinct application: types, parameters, derivation."""
    op = layers[0].node.op
    parts = [f"```archdsl\n{D.op_signature(op)}\n```\n{D.op_summary(op)}"]
    shown: list = []
    for rec in layers:
        n = rec.node
        key = (tuple(str(v.type) for v in n.inputs), tuple(str(v.type) for v in n.outputs))
        if key in [k for k, _ in shown]:
            continue
        shown.append((key, rec))
    for key, rec in shown[:MAX_SHOWN]:
        n = rec.node
        ins = ", ".join(key[0])
        outs = ", ".join(key[1])
        params = D.node_params(n, rec.model)
        shared = " (weights shared with an earlier application)" if "#" in n.name else ""
        head = f"**{n.name}** in {rec.model.name}: {ins} → **{outs}** · {params:,} parameters{shared}"
        explain = "\n".join(explain_node(n))
        parts.append(f"{head}\n```text\n{explain}\n```")
    if len(shown) > MAX_SHOWN:
        parts.append(f"... and {len(shown) - MAX_SHOWN} more shapes")
    if len(layers) > 1:
        parts.append(f"applied {len(layers)} times")
    return "\n\n".join(parts)


def _defn(a: Analysis, file: str, name: str) -> A.Definition | None:
    """The model or block `name` defined in `file` (this document's own first: a name defined
    twice is in `visible` once)."""
    if file == a.file:
        own = next((s.defn for s in a.index.scopes if s.defn.name == name), None)
        if own is not None:
            return own
    return a.index.visible.get(name)


def _definition_hover(occ, a: Analysis, ws: Workspace, line: int, col: int) -> str:
    d = _defn(a, occ.key[1], occ.name)
    if d is None:
        return ""
    parts = [f"```archdsl\n{D.block_signature(d)}\n```"]
    doc = D.doc_comment(d)
    if doc:
        parts.append(doc)
    if d.span.file != a.file:
        parts.append(f"defined in `{Path(d.span.file).name}` line {d.span.line}")
    if occ.binds is None:        # a use: what its applications here produced
        span, uses = _records(a, ws, "blocks", line, col)
        seen = []
        for u in uses:
            outs = D.value_text(u.outputs)
            if outs is None:
                continue
            entry = f"**{u.path}** in {u.model.name}: → **{outs}** · {D.scope_params(u.path, u.model):,} parameters"
            if entry not in seen:
                seen.append(entry)
        parts.extend(seen[:MAX_SHOWN])
        if len(seen) > MAX_SHOWN:
            parts.append(f"... and {len(seen) - MAX_SHOWN} more")
    return "\n\n".join(parts)


def _name_hover(occ, a: Analysis, ws: Workspace) -> str:
    """A tensor, parameter, input or repeat index: what it is, with every type the elaborator gave it."""
    sym = _symbol(occ.key, a, ws)
    kind = sym.kind if sym else occ.key[0]
    values = _values(occ, a, ws)
    if not values:      # a block input, or a model's output named in a train section: the
        # values of the symbol's other occurrences
        values = [v for other in a.index.of(occ.key) for v in _values(other, a, ws)]
    layer = next((v for v in values if isinstance(v, LayerInstance)), None)
    if layer is not None:       # `enc = Linear(32)`: the layer's applications, wherever they are
        apps = [r for trace in _traces(a, ws) for r in trace.layers.get(layer.span, ())]
        return f"layer `{occ.name}` in {occ.key[2]}\n\n" + (_layer_hover(apps) if apps else _op_hover(layer.op))
    types = D.tensor_types(values)
    label = {"local": "tensor", "param": "parameter", "repeat": "repeat index"}.get(kind, kind)
    if types:
        lines = [f"{occ.name}: {t}" for t in types[:MAX_SHOWN]]
        if len(types) > MAX_SHOWN:
            lines.append(f"# ... and {len(types) - MAX_SHOWN} more")
        text = "```archdsl\n" + "\n".join(lines) + f"\n```\n{label} in {occ.key[2]}"
        if len(types) > 1:
            text += f" ({len(types)} shapes: one per application)"
        producer = next((v.value.producer for v in values if isinstance(v, TensorRef) and v.value.producer), None)
        if producer is not None and len(types) == 1:
            text += f"; produced by `{producer.name}` ({producer.kind})"
        return text
    shown = []
    for v in values:
        t = D.value_text(v)
        if t is not None and t not in shown:
            shown.append(t)
    if kind == "param":
        d = _defn(a, occ.key[1], occ.key[2])
        p = next((p for p in d.params if p.name == occ.name), None) if d else None
        head = D.param_text(p) if p else occ.name
        return f"```archdsl\n{head}\n```\nparameter of {occ.key[2]}" + (
            f"; values: {', '.join(shown[:MAX_SHOWN])}" if shown else "")
    if shown:
        return f"```archdsl\n{occ.name}: {shown[0]}\n```\n{label} in {occ.key[2]}"
    return f"```archdsl\n{occ.name}\n```\n{label} in {occ.key[2]}"


def _values(occ, a: Analysis, ws: Workspace) -> list:
    """What the name at this occurrence evaluated to, or the statement it is bound in bound it to."""
    values = [s.value for s in _uses(a, ws, occ.span)]
    if occ.binds is not None:
        values += [seen.value[occ.name] for seen in _bindings(a, ws, occ.binds) if occ.name in seen.value]
    return values


def _import_hover(item: A.Import, a: Analysis, ws: Workspace) -> str:
    target = ws.import_path(item, a.file)
    module = ws.module(target) if target else None
    if module is None:
        return f"`{item.path}`: cannot be read"
    defs = [f"{d.kind} `{d.name}`" for d in module.items if isinstance(d, A.Definition)]
    return f"`{target}`\n\n" + (", ".join(defs) if defs else "no models or blocks")


# -- navigation ----------------------------------------------------------------------------------
def _symbol(key, a: Analysis, ws: Workspace):
    """The Symbol a key names, from the index of the file that defines it."""
    if key is None or len(key) < 2 or key[0] in ("op", "oparg", "builtin"):
        return None
    file = key[1]
    idx = a.index if file == a.file and a.index is not None else ws.index(file)
    return idx.symbols.get(key) if idx is not None else None


def definition(a: Analysis, ws: Workspace, pos: T.Position) -> list[T.Location] | None:
    if a.index is None:
        return None
    line, col = a.text.point(pos)
    imp = a.index.import_at(line, col)
    if imp is not None:
        target = ws.import_path(imp[0], a.file)
        if target is None or not Path(target).is_file():
            return None
        zero = T.Position(line=0, character=0)
        return [T.Location(uri=uri_of(target), range=T.Range(start=zero, end=zero))]
    occ = a.index.at(line, col)
    if occ is None or occ.key is None:
        return None
    if occ.key[0] in ("op", "oparg"):
        return _op_source(occ.key[1])
    if occ.key[0] in ("local", "param", "repeat") and occ.key[1] == a.file:
        b = a.index.binding_before(occ.key, line, col)
        return [T.Location(uri=a.uri, range=a.text.range(b.span))] if b else None
    sym = _symbol(occ.key, a, ws)
    return [_location(ws, a, sym.span)] if sym else None


def _op_source(name: str) -> list[T.Location] | None:
    """An op's definition is its class in archdsl/ops/."""
    try:
        cls = type(load_all()[name])
        first = inspect.getsourcelines(cls)[1]
        file = inspect.getsourcefile(cls)
    except (OSError, TypeError, KeyError):
        return None
    start = T.Position(line=first - 1, character=0)
    return [T.Location(uri=uri_of(file), range=T.Range(start=start, end=start))]


def _key_at(a: Analysis, pos: T.Position):
    if a.index is None:
        return None, None
    line, col = a.text.point(pos)
    occ = a.index.at(line, col)
    return (occ, occ.key) if occ is not None and occ.key is not None else (None, None)


def _occurrences(key, a: Analysis, ws: Workspace) -> list[tuple[str, ModuleIndex, list]]:
    """Every occurrence of a symbol: in its own file and in every workspace file that uses it."""
    name = key[-1]
    out = []
    if key[0] == "repeat":          # a repeat's index is known inside its body only
        files = [key[1]]
    else:
        files = ws.files()
        files += [f for f in dict.fromkeys((key[1], a.file)) if f not in files]
    for f in files:
        text = ws.source(f) if f != a.file else a.text.text
        if text is None or name not in text:
            continue
        idx = a.index if f == a.file else ws.index(f)
        if idx is None:
            continue
        occs = idx.of(key)
        if occs:
            out.append((f, idx, occs))
    return out


def references(a: Analysis, ws: Workspace, pos: T.Position, include_declaration: bool) -> list[T.Location] | None:
    occ, key = _key_at(a, pos)
    if key is None or key[0] in ("op", "oparg", "builtin"):
        return None
    out = []
    for f, idx, occs in _occurrences(key, a, ws):
        text = a.text if f == a.file else SourceText(idx.module.source, a.text.encoding)
        uri = a.uri if f == a.file else uri_of(f)
        for o in occs:
            if include_declaration or o.binds is None:
                out.append(T.Location(uri=uri, range=text.range(o.span)))
    return out


class RenameError(JsonRpcException):
    """A rename refused, with the reason the editor shows (LSP's RequestFailed)."""
    CODE = -32803


def prepare_rename(a: Analysis, ws: Workspace, pos: T.Position):
    occ, key = _key_at(a, pos)
    if key is None:
        return None
    _check_renamable(key)
    return T.PrepareRenamePlaceholder(range=a.text.range(occ.span), placeholder=occ.name)


def _check_renamable(key) -> None:
    if key[0] in ("op", "oparg", "builtin"):
        raise RenameError(f"'{key[-1]}' is built into archdsl and cannot be renamed")
    if key[0] == "import":
        raise RenameError("an import path is not a name")
    if Path(key[1]).resolve().parent == stdlib_dir().resolve():
        raise RenameError(f"'{key[-1]}' is defined in the standard library, which is read-only")


def rename(a: Analysis, ws: Workspace, pos: T.Position, new_name: str) -> T.WorkspaceEdit | None:
    occ, key = _key_at(a, pos)
    if key is None:
        return None
    _check_renamable(key)
    if not new_name.isidentifier() or not new_name.isascii() or new_name in KEYWORDS:
        raise RenameError(f"'{new_name}' is not a valid name")
    if new_name == occ.name:
        return T.WorkspaceEdit(changes={})
    where = _occurrences(key, a, ws)
    for f, idx, occs in where:
        _check_clash(key, new_name, idx)
    changes: dict[str, list[T.TextEdit]] = {}
    for f, idx, occs in where:
        text = a.text if f == a.file else SourceText(idx.module.source, a.text.encoding)
        uri = a.uri if f == a.file else uri_of(f)
        changes[uri] = [T.TextEdit(range=text.range(o.span), new_text=new_name) for o in occs]
    return T.WorkspaceEdit(changes=changes)


def _check_clash(key, new: str, idx: ModuleIndex) -> None:
    """Refuse a rename that would make a name mean something else."""
    if key[0] == "def":
        if new in idx.visible or new in load_all():
            raise RenameError(f"'{new}' already names a {'layer' if new in load_all() else 'model or block'}")
        return
    for scope in idx.scopes:
        if scope.defn.name == key[2] and new in scope.names:
            raise RenameError(f"'{new}' is already used in {key[2]}")
    if new in load_all() or new in idx.visible:
        raise RenameError(f"'{new}' already names a layer, model or block")


# -- document symbols ----------------------------------------------------------------------------
_SYMBOL_KINDS = {"model": T.SymbolKind.Class, "block": T.SymbolKind.Function, "cell": T.SymbolKind.Function,
                 "param": T.SymbolKind.TypeParameter, "input": T.SymbolKind.Field, "state": T.SymbolKind.Field,
                 "fixed": T.SymbolKind.Field, "output": T.SymbolKind.Property, "tensor": T.SymbolKind.Variable,
                 "layer": T.SymbolKind.Object}


def document_symbols(a: Analysis) -> list[T.DocumentSymbol]:
    if a.index is None:
        return []
    idx, text = a.index, a.text
    out = []
    for item in idx.module.items:
        if isinstance(item, A.Definition):
            children = []
            for sym in idx.symbols.values():
                if sym.kind in _SYMBOL_KINDS and sym.key[0] in ("param", "local") and sym.key[2] == item.name \
                        and sym.key[1] == idx.file:
                    children.append(T.DocumentSymbol(name=sym.name, kind=_SYMBOL_KINDS[sym.kind], detail=sym.kind,
                                                     range=text.range(sym.full), selection_range=text.range(sym.span)))
            children.sort(key=lambda s: (s.range.start.line, s.range.start.character))
            out.append(T.DocumentSymbol(name=item.name, kind=_SYMBOL_KINDS[item.kind], detail=D.block_signature(item),
                                        range=text.range(item.span), selection_range=text.range(item.name_span),
                                        children=children))
        elif isinstance(item, A.Section):
            entries = [T.DocumentSymbol(name=e.key, kind=T.SymbolKind.Property, range=text.range(e.span),
                                        selection_range=text.range(e.span)) for e in item.entries]
            out.append(T.DocumentSymbol(name=f"{item.kind} {item.name}", kind=T.SymbolKind.Namespace,
                                        detail=f"{item.kind} section", range=text.range(item.span),
                                        selection_range=text.range(item.name_span), children=entries))
        elif isinstance(item, A.Import):
            out.append(T.DocumentSymbol(name=f'import "{item.path}"', kind=T.SymbolKind.Module,
                                        range=text.range(item.span), selection_range=text.range(item.span)))
    return out


# -- inlay hints ---------------------------------------------------------------------------------
def inlay_hints(a: Analysis, ws: Workspace, rng: T.Range) -> list[T.InlayHint]:
    """Each statement's output type(s) at the end of the statement."""
    if a.index is None:
        return []
    first, last = rng.start.line, rng.end.line
    out = []
    for scope in a.index.scopes:
        for stmt in scope.defn.body:
            if isinstance(stmt, A.Input) and stmt.type is not None:
                continue        # the statement already says its type
            label = _statement_types(stmt, a, ws)
            if not label:
                continue
            end = a.text.range(stmt.span).end
            if first <= end.line <= last:
                out.append(T.InlayHint(position=end, label=f": {label}", kind=T.InlayHintKind.Type,
                                       padding_left=True))
    return out


def _statement_types(stmt, a: Analysis, ws: Workspace) -> str | None:
    if isinstance(stmt, A.Input):    # a block input: the types its uses saw
        occ = next((o for o in a.index.occurrences if o.binds == stmt.span), None)
        values = [] if occ is None else [s.value for o in a.index.of(occ.key) for s in _uses(a, ws, o.span)]
        return _join(D.tensor_types(values))
    seen = _bindings(a, ws, stmt.span)
    if not seen:
        return None
    if isinstance(stmt, A.Assign) and len(stmt.targets) > 1:
        parts = []
        for t in stmt.targets:
            types = D.tensor_types([s.value.get(t) for s in seen])
            if not types:
                return None
            parts.append(_join(types))
        return ", ".join(parts)
    return _join(D.tensor_types([v for s in seen for v in s.value.values()]))


def _join(types: list[str]) -> str | None:
    if not types:
        return None
    if len(types) <= 2:
        return " | ".join(types)
    return f"{types[0]} | … ({len(types)} shapes)"


# -- formatting ----------------------------------------------------------------------------------
def formatting(a: Analysis) -> list[T.TextEdit] | None:
    """`archdsl fmt`'s layout as one edit of the whole text (none if it is already formatted);
    None when the text does not parse (its diagnostic says why)."""
    try:
        new = format_source(a.text.text, a.file)
    except ArchError:
        return None
    if new == a.text.text:
        return []
    return [T.TextEdit(range=a.text.full_range(), new_text=new)]

