"""`archdsl fmt`: the canonical layout of .arch source.

    text = format_source(source)            # raises ArchSyntaxError on a file that does not parse

How it works: the file is parsed with the grammar (grammars/arch.lark) by a second Lark parser
that keeps every token (`keep_all_tokens`) and collects the comments the language ignores
(`lexer_callbacks`). Each token then knows the grammar rule it belongs to, which is all the
layout needs: the formatter only ever changes the whitespace BETWEEN tokens (and turns
'single-quoted' strings into "double-quoted" ones where that spells the same string), so the
token sequence, hence the AST and the compiled IR, cannot change. `format_source` checks that
on every call: it re-parses its own output and compares the token sequences and comments.

The layout, in the style of the shipped specs:

- one statement per line; an item (`import`, `model`, `block`, `train`/`gan`) starts a line;
  `{` of a definition or section ends its header line, its `}` stands alone, bodies are
  indented by two spaces per level; empty lines collapse to at most one, none directly inside
  `{` and `}`, and one always separates two top-level items (imports may stay together);
- within a statement the author's line breaks are kept where a line may sensibly break (after
  a comma, an opening bracket or the statement's `=`; before or after `->`, a binary operator,
  `if`, `else`; before the closing bracket of a bracket broken after its opening) and removed
  elsewhere (a formatter that re-wraps chains would fight the lecture-style layout of one layer
  group per line); continuation lines are
  aligned: a line starting with `->` goes under the first `->` of its chain (or under the
  chain's start), `else` under the start of its conditional; inside an open bracket, a line
  goes after the bracket when something follows the bracket on its line, else at the bracket
  line's indent + 4 (+ 2 for a `repeat { ... }` body); other continuations go under the start
  of the right-hand side. Where the author's column is one of the positions these rules allow
  for that line, it is kept (so both `->` under `->` and `->` under the chain's start survive);
  any other column becomes the first of them;
- the `=` of section settings on consecutive lines line up (`batch     = 64`);
- spacing: one space around binary operators, `->` and `=` (none around a keyword argument's
  `=`), none inside brackets or before `,` and `:`, one after them, none between a callee and
  its `(`, a tensor type's dtype and its `[`, or a subscripted value and its `[`, none after a
  unary minus, none around the `:` of a slice (`x[:, 1:-1:2]`);
- comments are kept where they are: a trailing comment keeps its column when that is at least
  two spaces past the code (so hand-aligned comment columns survive), else gets two spaces; a
  comment on its own line takes the indentation of the code line that follows it.

Lines are never wrapped for length (as gofmt): where a statement breaks is the author's call.
The result is idempotent: format_source(format_source(s)) == format_source(s).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

_CLOSER = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
_ARROW = "->"


@dataclass
class _Tok:
    type: str
    text: str           # as it will be written
    pos: int
    line: int           # source line of its first character
    end_line: int       # source line of its last character
    col: int            # source column, 0-based
    rule: str = ""      # the grammar rule the token belongs to ("" for comments)
    comment: bool = False
    stmt_start: bool = False
    item: str | None = None     # item rule when the token starts a top-level item
    owner: int = -1             # source position where the token's grammar rule starts
    struct: bool = False        # belongs directly to an item (a definition's braces)
    stmt_level: bool = False    # belongs directly to a statement (its `=`)

    @property
    def struct_brace(self) -> bool:
        return self.type in ("LBRACE", "RBRACE") and self.struct


_lock = threading.Lock()


@lru_cache(maxsize=1)
def _parser():
    from lark import Lark
    comments: list = []
    text = resources.files("archdsl").joinpath("grammars/arch.lark").read_text()
    p = Lark(text, parser="lalr", propagate_positions=True, maybe_placeholders=True,
             keep_all_tokens=True, lexer_callbacks={"COMMENT": comments.append})
    return p, comments


def _string(text: str) -> str:
    """'abc' -> "abc" (the same string), unless it contains a double quote."""
    if text.startswith("'") and '"' not in text:
        return '"' + text[1:-1] + '"'
    return text


def tokens(source: str, file: str = "<string>") -> list[_Tok]:
    """Every token of `source`, comments included, in order, each with its grammar rule."""
    from lark import Token, Tree

    from ..syntax.parser import parse
    parse(source, file)       # a file that does not parse gets archdsl's usual diagnostic
    p, sink = _parser()
    with _lock:
        sink.clear()
        tree = p.parse(source)
        comments = list(sink)
        sink.clear()
    # items are the children of the root; statements (and settings) the children of an item
    # other than its parameter list; braces directly in an item are structural
    items = [c for c in tree.children if isinstance(c, Tree)]
    item_starts = {it.meta.start_pos: str(it.data) for it in items}
    stmts = [c for it in items for c in it.children if isinstance(c, Tree) and c.data != "param_list"]
    stmt_ids = {id(c) for c in stmts}
    stmt_starts = {c.meta.start_pos for c in stmts if not c.meta.empty}
    item_ids = {id(it) for it in items}
    out: list[_Tok] = []
    stack: list = [(tree, None)]
    while stack:        # iterative: a chain of 10,000 `->` is a parse tree 10,000 deep
        node, info = stack.pop()
        if isinstance(node, Token):
            rule, in_stmt, owner, in_item = info
            text = _string(str(node)) if node.type == "STRING" else str(node)
            out.append(_Tok(node.type, text, node.start_pos, node.line, node.end_line, node.column - 1, rule,
                            stmt_start=node.start_pos in stmt_starts, item=item_starts.get(node.start_pos),
                            owner=owner, struct=in_item, stmt_level=in_stmt))
            continue
        info = (str(node.data), id(node) in stmt_ids, node.meta.start_pos if not node.meta.empty else -1,
                id(node) in item_ids)
        for c in reversed(node.children):
            if c is not None:
                stack.append((c, info))
    for c in comments:
        out.append(_Tok("COMMENT", str(c).rstrip(), c.start_pos, c.line, c.line, c.column - 1, comment=True))
    out.sort(key=lambda t: t.pos)
    return out


# -- layout ---------------------------------------------------------------------------------
@dataclass
class _Bracket:
    type: str
    open_col: int
    line_indent: int
    align: int | None = None     # column of the token after the bracket, if on its line


@dataclass
class _Stmt:
    indent: int
    rhs_col: int | None = None
    rhs_pending: bool = False
    stack: list[_Bracket] = field(default_factory=list)


@dataclass
class _Line:
    kind: str           # item | stmt | close | cont | comment
    indent: int
    blank: int = 0      # empty lines before it (0 or 1)
    code: str = ""
    trailing: str | None = None
    user_col: int = 0   # the trailing comment's column in the source
    item: str | None = None


def _binary(t: _Tok) -> bool:
    """An infix operator: a line may break before or after it."""
    if t.text == _ARROW or t.type in ("MUL_OP", "POW", "COMP_OP", "AND", "OR", "IF", "ELSE"):
        return True
    return t.type == "ADD_OP" and t.rule != "unary"


def _entry_key_widths(toks: list[_Tok]) -> dict[int, int]:
    """Section settings written on consecutive lines (no empty line or comment between them)
    form a run whose `=` signs line up: key position -> the run's widest key."""
    widths: dict[int, int] = {}
    run: list[_Tok] = []

    def close():
        w = max((len(k.text) for k in run), default=0)
        for k in run:
            widths[k.pos] = w
        run.clear()

    prev = None
    for t in toks:
        if t.comment or (t.item is not None) or (t.struct_brace and t.type == "RBRACE"):
            close()
        elif t.stmt_start and t.rule == "entry":     # `key = value` settings of a section
            if prev is not None and t.line - prev.end_line > 1:
                close()
            run.append(t)
        prev = t
    close()
    return widths


def _space(a: _Tok, b: _Tok) -> bool:
    """Is there a space between the consecutive tokens a and b of one line?"""
    if b.type == "COLON" and b.rule == "slice":     # x[1:-1:2], x[..., :d]
        return a.type == "COMMA"
    if a.type == "COLON" and a.rule == "slice":
        return False
    if b.type in ("RPAR", "RSQB", "COMMA", "COLON"):
        return False
    if a.type in ("LPAR", "LSQB"):
        return False
    if (a.type == "EQUAL" and a.rule == "kwarg") or (b.type == "EQUAL" and b.rule == "kwarg"):
        return False
    if a.type == "ADD_OP" and a.rule == "unary":
        return False
    if b.type == "LPAR" and b.rule in ("call", "param_list"):
        return False
    if b.type == "LSQB" and b.rule in ("index", "tensor_type"):
        return False
    return True


class _Layout:
    def __init__(self, toks: list[_Tok]):
        self.toks = toks
        self.lines: list[_Line] = []
        self.cur: _Line | None = None
        self.prev: _Tok | None = None          # previous token (code or comment)
        self.prev_code: _Tok | None = None
        self.pending: list[tuple[_Tok, int]] = []   # own-line comments, with their blank lines
        self.depth = 0
        self.stmt = _Stmt(0)
        self._awaiting: _Bracket | None = None
        self.key_width = _entry_key_widths(toks)
        self.col_of: dict[int, int] = {}          # token source position -> output column
        self.first_arrow: dict[int, int] = {}     # chain start position -> column of its first `->`

    def _blanks(self, t: _Tok) -> int:
        if self.prev is None:
            return 0
        if self.prev.struct_brace and self.prev.type == "LBRACE":
            return 0
        return 1 if t.line - self.prev.end_line > 1 else 0

    def run(self) -> list[_Line]:
        for t in self.toks:
            if t.comment:
                self._comment(t)
            else:
                self._code(t)
            self.prev = t
        self._flush_comments(0, None)
        return self.lines

    def _comment(self, t: _Tok) -> None:
        if (self.cur is not None and self.prev is not None and not self.prev.comment
                and t.line == self.prev.end_line):
            self.cur.trailing, self.cur.user_col = t.text, t.col
            self.cur = None         # the comment ends the line
        else:
            self.pending.append((t, self._blanks(t)))
            self.cur = None

    def _flush_comments(self, indent: int, next_kind: str | None) -> None:
        for c, blank in self.pending:
            if not self.lines:
                blank = 0
            if next_kind == "cont":
                blank = 0
            self.lines.append(_Line("comment", indent, blank, c.text))
        self.pending.clear()

    def _code(self, t: _Tok) -> None:
        p = self.prev_code
        if self.cur is None:
            brk = True
        elif t.stmt_start or t.item or (t.struct_brace and t.type == "RBRACE"):
            brk = True
        elif p is not None and p.struct_brace and p.type == "LBRACE":
            brk = True
        elif t.struct_brace:        # a definition's `{` stays on its header line
            brk = False
        else:
            brk = p is not None and t.line != p.end_line and self._may_break(p, t)
        if brk:
            self._new_line(t)
        elif _space(p, t):
            if t.type == "EQUAL" and t.rule == "entry":     # align the `=` of a run of settings
                self.cur.code += " " * (self.key_width.get(p.pos, len(p.text)) - len(p.text))
            self.cur.code += " "
        col = self.cur.indent + len(self.cur.code)
        self.col_of[t.pos] = col
        self.cur.code += t.text
        self._track(t, col, brk)
        self.prev_code = t

    def _may_break(self, a: _Tok, b: _Tok) -> bool:
        """May the author's line break between a and b stay? After a comma, an opening bracket
        or a statement's `=`; around a binary operator, `->`, `if` and `else`; before the closing
        bracket of a bracket whose content started on a new line. Anywhere else the tokens are
        joined (no line starts with `,` `:` or `=`, a callee keeps its `(`)."""
        if b.type == "COLON":          # a slice's `:` stays with its bracket: depths[:i]
            return False
        if a.type in ("COMMA", "LPAR", "LSQB", "LBRACE") or (a.type == "EQUAL" and a.stmt_level):
            return True
        if any(_binary(x) for x in (a, b)):
            return True
        stack = self.stmt.stack
        if stack and b.type == _CLOSER[stack[-1].type]:
            return stack[-1].align is None
        return False

    def _new_line(self, t: _Tok) -> None:
        blank = self._blanks(t)
        if t.item:
            kind, indent = "item", 0
            self.stmt = _Stmt(0)
        elif t.stmt_start:
            kind, indent = "stmt", 2 * self.depth
            self.stmt = _Stmt(indent)
        elif t.struct_brace and t.type == "RBRACE":
            self.depth -= 1
            kind, indent, blank = "close", 2 * self.depth, 0
        else:
            kind, indent, blank = "cont", self._continuation(t), 0
        if self.pending:
            # comments take the indentation of the line they precede (inside a body, for `}`)
            self._flush_comments(indent + 2 if kind == "close" else indent, kind)
        if not self.lines:
            blank = 0
        self.cur = _Line(kind, indent, blank, item=t.item)
        self.lines.append(self.cur)

    def _continuation(self, t: _Tok) -> int:
        """The indent of a continuation line starting with `t`: the author's column when it is
        one of the aligned positions the context allows, else the first of them."""
        s = self.stmt
        cands: list[int] = []
        if t.text == _ARROW:            # continue a chain: under its first `->`, or its start
            if t.owner in self.first_arrow:
                cands.append(self.first_arrow[t.owner])
            if t.owner in self.col_of:
                cands.append(self.col_of[t.owner])
        elif t.type in ("IF", "ELSE") and t.owner in self.col_of:
            cands.append(self.col_of[t.owner])      # under the start of the conditional
        if s.stack:
            top = s.stack[-1]
            if t.type == _CLOSER[top.type]:
                cands.append(top.open_col if top.align is not None else top.line_indent)
            elif top.align is not None:
                cands.append(top.align)
            else:
                cands.append(top.line_indent + (2 if top.type == "LBRACE" else 4))
        else:
            if s.rhs_col is not None:
                cands.append(s.rhs_col)
            cands.append(s.indent + 4)
        return t.col if t.col in cands else cands[0]

    def _track(self, t: _Tok, col: int, broke: bool) -> None:
        s = self.stmt
        if self._awaiting is not None:
            # the token after an opener, on the opener's line, fixes the bracket's alignment
            if not broke:
                self._awaiting.align = col
            self._awaiting = None
        if s.rhs_pending:
            s.rhs_col, s.rhs_pending = col, False
        if t.struct_brace:
            if t.type == "LBRACE":
                self.depth += 1
            return
        if t.type in _CLOSER:
            b = _Bracket(t.type, col, self.cur.indent)
            s.stack.append(b)
            self._awaiting = b
        elif s.stack and t.type == _CLOSER[s.stack[-1].type]:
            s.stack.pop()
        if t.text == _ARROW:
            self.first_arrow.setdefault(t.owner, col)
        if t.type == "OUTPUT" or (t.type == "EQUAL" and t.stmt_level):
            s.rhs_pending = True


def _render(lines: list[_Line]) -> str:
    # items are separated by an empty line, before the comments that lead into them
    prev_item = None
    for i, ln in enumerate(lines):
        if ln.kind != "item":
            continue
        if prev_item is not None and not (prev_item == ln.item == "import_stmt"):
            j = i
            while j > 0 and lines[j - 1].kind == "comment" and lines[j - 1].indent == 0 and lines[j].blank == 0:
                j -= 1
            if j > 0:
                lines[j].blank = 1
        prev_item = ln.item
    out = []
    for i, ln in enumerate(lines):
        out.extend([""] * ln.blank)
        text = " " * ln.indent + ln.code
        if ln.trailing is not None:
            text = text.rstrip()
            # the author's column when it clears the code by two spaces, else two spaces
            text += " " * max(2, ln.user_col - len(text)) + ln.trailing
        out.append(text.rstrip())
    return "\n".join(out) + "\n" if out else ""


def _signature(toks: list[_Tok]) -> list[tuple[str, str]]:
    return [(t.type, t.text) for t in toks]


def format_source(source: str, file: str = "<string>") -> str:
    """The canonical layout of `source` (see the module docstring)."""
    if source.startswith("\ufeff"):
        source = source[1:]
    toks = tokens(source, file)
    text = _render(_Layout(toks).run())
    again = tokens(text, file)
    if _signature(again) != _signature(toks):      # pragma: no cover - a formatter bug
        raise AssertionError(f"archdsl fmt would change the tokens of {file}; please report this")
    return text


def is_formatted(source: str, file: str = "<string>") -> bool:
    return format_source(source, file) == source
