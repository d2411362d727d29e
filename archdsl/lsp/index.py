"""Definitions and uses of names in one parsed file: the index behind go to definition, find
references, rename, document symbols and the names completion offers.

It is built from the AST alone (no elaboration), with the elaborator's rules for what a name
means (archdsl/elaborate/elaborator.py, `e_Name`): inside a model or block, a name bound there
(a parameter, an input, an assigned or named output tensor, a `repeat ... as i` index) first,
then an op, then a model or block visible from the file (its own and imported ones), then a
builtin. A name bound in a definition is one symbol however often it is re-bound (`x = x ->
...`), as in Python; go to definition picks the binding before the use.

Every symbol has a key that is the same in every file that refers to it:
  ("def", file, name)                   a model or block
  ("param", file, block, name)          a parameter of one
  ("local", file, block, name)          a tensor, input or layer named inside one
  ("repeat", file, block, line, col, name)   a repeat's index
  ("gan", file, name)                   a gan section
  ("op", name), ("oparg", op, arg), ("builtin", name)   the compiler's own names
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path

from ..elaborate.elaborator import BUILTINS
from ..elaborate.loader import import_target
from ..errors import Span
from ..ops.base import load_all
from ..syntax import ast as A
from ..syntax.parser import tokens

LOCAL_KINDS = ("param", "local", "repeat")


@dataclass(frozen=True)
class Symbol:
    key: tuple
    kind: str           # model, block, param, input, tensor, output, layer, repeat, gan, import
    name: str
    span: Span          # where its name is first written
    full: Span          # the whole definition (for document symbols)


@dataclass(frozen=True)
class Occurrence:
    span: Span          # the name as written
    name: str
    key: tuple | None   # what it refers to; None: nothing known (a symbolic dim, a typo)
    binds: Span | None = None    # for a binding: the statement (or parameter) that binds it


@dataclass
class Scope:
    """One model or block: the names bound in it, in order."""
    defn: A.Definition
    names: dict = field(default_factory=dict)       # name -> key
    order: list = field(default_factory=list)       # (line, name, kind) of each binding


def name_span(file: str, source: str, tok) -> Span:
    return Span(file, tok.line, tok.column, tok.end_line, tok.end_column, source)


class ModuleIndex:
    """The index of one module. `visible` maps each model or block name the file can use to its
    Definition (own and imported, first one wins, as the loader reads them)."""

    def __init__(self, module: A.Module, visible: dict):
        self.module = module
        self.file = module.file
        self.visible = visible
        self.ops = load_all()
        self.symbols: dict[tuple, Symbol] = {}
        self.occurrences: list[Occurrence] = []
        self.scopes: list[Scope] = []
        self.imports: list[tuple[A.Import, Span]] = []      # each import and its string's span
        toks = tokens(module.source)
        self._tokens = toks
        self._starts = [(t.line, t.column) for t in toks]
        for item in module.items:
            if isinstance(item, A.Definition):
                self._definition(item)
            elif isinstance(item, A.Section):
                self._section(item)
            elif isinstance(item, A.Import):
                self._import(item)
        self.occurrences.sort(key=lambda o: (o.span.line, o.span.col))
        self._occ_starts = [(o.span.line, o.span.col) for o in self.occurrences]

    # -- tokens -----------------------------------------------------------------------------------
    def _tokens_in(self, span: Span) -> list:
        lo = bisect.bisect_left(self._starts, (span.line, span.col))
        hi = bisect.bisect_left(self._starts, (span.end_line, span.end_col))
        return self._tokens[lo:hi]

    def _name(self, tok) -> Span:
        return name_span(self.file, self.module.source, tok)

    # -- building ---------------------------------------------------------------------------------
    def _add(self, key, kind, name, span, full) -> None:
        if key not in self.symbols:
            self.symbols[key] = Symbol(key, kind, name, span, full)

    def _occ(self, span, name, key, binds=None) -> None:
        self.occurrences.append(Occurrence(span, name, key, binds))

    def _definition(self, d: A.Definition) -> None:
        key = ("def", self.file, d.name)
        self._add(key, d.kind, d.name, d.name_span, d.span)
        self._occ(d.name_span, d.name, key, d.span)
        scope = Scope(d)
        self.scopes.append(scope)
        for p in d.params:
            pkey = ("param", self.file, d.name, p.name)
            scope.names[p.name] = pkey
            scope.order.append((p.span.line, p.name, "param"))
            toks = self._tokens_in(p.span)
            if toks:
                span = self._name(toks[0])
                self._add(pkey, "param", p.name, span, p.span)
                self._occ(span, p.name, pkey, p.span)
        # every name the body binds, so that a use before its binding still finds it
        bound: list[tuple[A.Node, list, str]] = []
        for stmt in d.body:
            toks = self._tokens_in(stmt.span)
            if isinstance(stmt, (A.Input, A.State, A.Fixed)) and len(toks) > 1:
                bound.append((stmt, [toks[1]], {A.Input: "input", A.State: "state", A.Fixed: "fixed"}[type(stmt)]))
            elif isinstance(stmt, A.Assign):
                names = []
                for t in toks:
                    if t.type == "EQUAL":
                        break
                    if str(t).isidentifier():
                        names.append(t)
                bound.append((stmt, names, "tensor"))
            elif isinstance(stmt, A.Output) and stmt.name is not None and len(toks) > 1:
                bound.append((stmt, [toks[1]], "output"))
        for stmt, names, kind in bound:
            for t in names:
                scope.names.setdefault(str(t), ("local", self.file, d.name, str(t)))
        for p in d.params:
            if p.default is not None:
                self._expr(p.default, scope, {})
        for stmt in d.body:
            if isinstance(stmt, (A.Input, A.State, A.Fixed)) and stmt.type is not None:
                self._expr(stmt.type, scope, {})
            elif isinstance(stmt, (A.Assign, A.Output)):
                self._expr(stmt.value, scope, {})
        for stmt, names, kind in bound:
            for t in names:
                name = str(t)
                lkey = scope.names[name]
                if lkey[0] != "local":
                    continue    # a parameter re-bound: the parameter's symbol
                if kind == "tensor" and isinstance(stmt, A.Assign) and len(stmt.targets) == 1 \
                        and _is_layer_expr(stmt.value, set(self.ops) | set(self.visible)):
                    kind = "layer"
                self._add(lkey, kind, name, self._name(t), stmt.span)
                self._occ(self._name(t), name, lkey, stmt.span)
                scope.order.append((stmt.span.line, name, kind))

    def _section(self, s: A.Section) -> None:
        if s.kind == "gan":
            key = ("gan", self.file, s.name)
            self._add(key, "gan", s.name, s.name_span, s.span)
            self._occ(s.name_span, s.name, key, s.span)
            model = None
        else:       # `train M`: M is the model it trains
            model = self.visible.get(s.name)
            self._occ(s.name_span, s.name, ("def", model.span.file, s.name) if model else None)
        # a train section's settings name the model's tensors (loss = cross_entropy(logits, y))
        outputs = {}
        if model is not None and model.kind == "model":
            for stmt in model.body:
                if isinstance(stmt, A.Output) and stmt.name:
                    outputs[stmt.name] = ("local", model.span.file, model.name, stmt.name)
                elif isinstance(stmt, A.Input):
                    outputs[stmt.name] = ("local", model.span.file, model.name, stmt.name)
        for e in s.entries:
            self._expr(e.value, None, outputs)

    def _import(self, item: A.Import) -> None:
        for t in self._tokens_in(item.span):
            if t.type == "STRING":
                self.imports.append((item, self._name(t)))
                try:
                    target = import_target(item.path, Path(self.file).parent)
                except (OSError, RuntimeError, ValueError):
                    continue
                self._add(("import", str(target)), "import", item.path, self._name(t), item.span)

    def _expr(self, e: A.Node, scope: Scope | None, extra: dict) -> None:
        """Record every name in an expression (with a stack: chains can be long)."""
        todo = [(e, {})]
        while todo:
            node, repeats = todo.pop()
            if isinstance(node, A.Name):
                self._occ(node.span, node.id, self._resolve(node.id, scope, repeats, extra))
                continue
            if isinstance(node, A.Repeat) and node.var is not None and scope is not None:
                var = next((t for a, t in zip(self._tokens_in(node.span), self._tokens_in(node.span)[1:])
                            if a.type == "AS"), None)
                if var is not None:
                    vspan = self._name(var)
                    rkey = ("repeat", self.file, scope.defn.name, vspan.line, vspan.col, node.var)
                    self._add(rkey, "repeat", node.var, vspan, node.span)
                    self._occ(vspan, node.var, rkey, node.span)
                    todo.append((node.count, repeats))
                    todo.append((node.body, {**repeats, node.var: rkey}))
                    continue
            if isinstance(node, A.Call):
                callee = self._resolve(node.func.id, scope, repeats, extra) if isinstance(node.func, A.Name) else None
                for a in node.args:
                    if a.name is not None:
                        self._occ(a.span, a.name, self._argument(callee, a.name))
            if isinstance(node, A.Node):
                for f in node.__dataclass_fields__:
                    if f in ("span", "dtype_span"):
                        continue
                    v = getattr(node, f)
                    for x in (v if isinstance(v, tuple) else (v,)):
                        if isinstance(x, A.Node):
                            todo.append((x, repeats))

    def _resolve(self, name: str, scope: Scope | None, repeats: dict, extra: dict):
        if name in repeats:
            return repeats[name]
        if scope is not None and name in scope.names:
            return scope.names[name]
        if name in extra:
            return extra[name]
        if name in self.ops:
            return ("op", name)
        d = self.visible.get(name)
        if d is not None:
            return ("def", d.span.file, name)
        if name in BUILTINS:
            return ("builtin", name)
        return None

    def _argument(self, callee, arg: str):
        """What a keyword argument's name refers to: the op's argument or the block's parameter."""
        if callee is None:
            return None
        if callee[0] == "op":
            return ("oparg", callee[1], arg)
        if callee[0] == "def":
            d = self.visible.get(callee[2])
            if d is not None and any(p.name == arg for p in d.params):
                return ("param", callee[1], callee[2], arg)
        return None

    # -- queries ----------------------------------------------------------------------------------
    def at(self, line: int, col: int) -> Occurrence | None:
        """The name at (line, col), or just before it (a cursor at the end of a word)."""
        i = bisect.bisect_right(self._occ_starts, (line, col)) - 1
        for j in (i, i - 1):
            if 0 <= j < len(self.occurrences):
                o = self.occurrences[j]
                if (o.span.line, o.span.col) <= (line, col) <= (o.span.end_line, o.span.end_col):
                    return o
        return None

    def import_at(self, line: int, col: int):
        for item, span in self.imports:
            if (span.line, span.col) <= (line, col) <= (span.end_line, span.end_col):
                return item, span
        return None

    def of(self, key: tuple) -> list[Occurrence]:
        return [o for o in self.occurrences if o.key == key]

    def binding_before(self, key: tuple, line: int, col: int) -> Occurrence | None:
        """The binding of `key` that a use at (line, col) sees: the last one before it, else the first."""
        binds = [o for o in self.occurrences if o.key == key and o.binds is not None]
        before = [o for o in binds if (o.span.line, o.span.col) < (line, col)]
        return (before or binds or [None])[-1 if before else 0]

    def scope_at(self, line: int) -> Scope | None:
        for s in self.scopes:
            if s.defn.span.line <= line <= s.defn.span.end_line:
                return s
        return None


def _is_layer_expr(e: A.Node, callables) -> bool:
    """`enc = Linear(32)`, `b = Block(...)`: a layer (or block) instance, not a tensor."""
    f = e.func if isinstance(e, A.Call) else e
    return isinstance(f, A.Name) and f.id in callables


def visible_definitions(module: A.Module, modules_of) -> tuple[dict, set]:
    """Every model and block `module` can use (its own and those of the files it imports,
    transitively, the first definition of a name winning), and the files its imports reach.
    `modules_of(path)` gives the parsed module of an imported file, or None."""
    out: dict = {}
    seen: set = set()
    todo = [module]
    while todo:
        m = todo.pop(0)
        for item in m.items:
            if isinstance(item, A.Definition):
                out.setdefault(item.name, item)
        for item in m.items:
            if isinstance(item, A.Import):
                try:
                    target = import_target(item.path, Path(m.file).parent)
                except (OSError, RuntimeError, ValueError):
                    continue
                if str(target) in seen:
                    continue
                seen.add(str(target))
                sub = modules_of(target)
                if sub is not None:
                    todo.append(sub)
    return out, seen
