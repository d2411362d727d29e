"""Text -> AST with spans. Lark (LALR) does the parsing; errors become ArchSyntaxError."""
from __future__ import annotations

import math
import re
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from lark.visitors import Transformer_NonRecursive

from ..errors import ArchSyntaxError, Span
from . import ast as A

# Limits that keep any input, however hostile, to a bounded amount of work and stack. Each is a
# module constant; the error that reports one names it (`archdsl.syntax.parser.MAX_...`).
#
# Design: nothing in the front end recurses on the raw size of the input. Lark's LALR parser is
# iterative and the parse tree becomes an AST through Lark's non-recursive transformer, so the
# parser itself never needs a depth limit; the limits below bound what later, recursive stages
# (the elaborator's expression evaluator) can meet. Brackets are counted before Lark runs, so
# 10,000 '(' are refused at once instead of being parsed first; the depth of the parse tree is
# measured iteratively after parsing. A left-nested chain `x -> A -> B -> ...` counts as one
# level, because the elaborator walks a chain in a loop: chains may be as long as you like.
MAX_SOURCE_CHARS = 2_000_000   # characters in one .arch file
MAX_NESTING = 100              # brackets ( [ { open at once
MAX_EXPR_DEPTH = 200           # nesting of operators, calls, conditionals, ... in one statement
MAX_LITERAL_DIGITS = 100       # digits in one number literal

KEYWORDS = {"model", "block", "cell", "state", "fixed", "input", "output", "param", "import", "repeat", "as", "if", "else", "and",
            "or", "not", "true", "false", "train", "gan"}

_TOKEN_WORDS = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string",
    "LBRACE": "'{'", "RBRACE": "'}'", "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'",
    "COMMA": "','", "EQUAL": "'='", "COLON": "':'", "COMP_OP": "a comparison", "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*', '/', '//', '%' or '@'", "ELLIPSIS": "'...'", "SECTION_KIND": "'train' or 'gan'", "__ANON_0": "'->'",
    "$END": "end of file",
}


@lru_cache(maxsize=1)
def _parser() -> Lark:
    text = resources.files("archdsl").joinpath("grammars/arch.lark").read_text()
    return Lark(text, parser="lalr", propagate_positions=True, maybe_placeholders=True)


class _ToAst(Transformer_NonRecursive):
    def __init__(self, file: str, source: str):
        super().__init__(visit_tokens=False)
        self.file, self.source = file, source

    def _span(self, x) -> Span:
        if isinstance(x, Token):
            return Span(self.file, x.line, x.column, x.end_line, x.end_column, self.source)
        m = x.meta if hasattr(x, "meta") else x
        return Span(self.file, m.line, m.column, m.end_line, m.end_column, self.source)

    def __default__(self, data, children, meta):
        raise AssertionError(f"unhandled grammar rule {data}")

    # atoms
    @v_args(meta=True)
    def int_(self, meta, c):
        digits = str(c[0]).replace("_", "")
        if len(digits) > MAX_LITERAL_DIGITS:
            raise ArchSyntaxError(f"integer literal with {len(digits)} digits is too large", self._span(meta),
                                  f"number literals are limited to {MAX_LITERAL_DIGITS} digits "
                                  "(archdsl.syntax.parser.MAX_LITERAL_DIGITS)")
        return A.Num(self._span(meta), int(digits))

    @v_args(meta=True)
    def float_(self, meta, c):
        text = str(c[0]).replace("_", "")
        n_digits = sum(ch.isdigit() for ch in text.lower().split("e")[0])
        if n_digits > MAX_LITERAL_DIGITS:
            raise ArchSyntaxError(f"number literal with {n_digits} digits is too long", self._span(meta),
                                  f"number literals are limited to {MAX_LITERAL_DIGITS} digits "
                                  "(archdsl.syntax.parser.MAX_LITERAL_DIGITS)")
        v = float(text)
        if not math.isfinite(v):
            raise ArchSyntaxError(f"number {text} is too large", self._span(meta),
                                  "the largest float is about 1.8e308")
        return A.Num(self._span(meta), v)

    @v_args(meta=True)
    def string(self, meta, c):
        return A.Str(self._span(meta), str(c[0])[1:-1])

    @v_args(meta=True)
    def true(self, meta, c):
        return A.Bool(self._span(meta), True)

    @v_args(meta=True)
    def false(self, meta, c):
        return A.Bool(self._span(meta), False)

    @v_args(meta=True)
    def name(self, meta, c):
        return A.Name(self._span(meta), str(c[0]))

    @v_args(meta=True)
    def tuple_(self, meta, c):
        return A.TupleExpr(self._span(meta), tuple(x for x in c if x is not None))

    @v_args(meta=True)
    def list_(self, meta, c):
        return A.ListExpr(self._span(meta), tuple(x for x in c if x is not None))

    @v_args(meta=True)
    def repeat(self, meta, c):
        count, var, body = c
        return A.Repeat(self._span(meta), count, str(var) if var is not None else None, body)

    # operators
    @v_args(meta=True)
    def ifexp(self, meta, c):
        return A.IfExp(self._span(meta), c[0], c[1], c[2])

    @v_args(meta=True)
    def pipe(self, meta, c):
        return A.Pipe(self._span(meta), c[0], c[1])

    @v_args(meta=True)
    def or_(self, meta, c):
        return A.BinOp(self._span(meta), "or", c[0], c[1])

    @v_args(meta=True)
    def and_(self, meta, c):
        return A.BinOp(self._span(meta), "and", c[0], c[1])

    @v_args(meta=True)
    def not_(self, meta, c):
        return A.UnaryOp(self._span(meta), "not", c[0])

    @v_args(meta=True)
    def compare(self, meta, c):
        return A.BinOp(self._span(meta), str(c[1]), c[0], c[2])

    @v_args(meta=True)
    def binop(self, meta, c):
        return A.BinOp(self._span(meta), str(c[1]), c[0], c[2])

    @v_args(meta=True)
    def unary(self, meta, c):
        return A.UnaryOp(self._span(meta), str(c[0]), c[1])

    @v_args(meta=True)
    def pow(self, meta, c):
        return A.BinOp(self._span(meta), "**", c[0], c[2])

    @v_args(meta=True)
    def call(self, meta, c):
        return A.Call(self._span(meta), c[0], tuple(x for x in c[1:] if x is not None))

    @v_args(meta=True)
    def index(self, meta, c):
        return A.Index(self._span(meta), c[0], tuple(x for x in c[1:] if x is not None))

    @v_args(meta=True)
    def slice(self, meta, c):
        return A.Slice(self._span(meta), c[0], c[1], c[2])

    @v_args(meta=True)
    def ellipsis(self, meta, c):
        return A.EllipsisExpr(self._span(meta))

    @v_args(meta=True)
    def arg(self, meta, c):
        return A.Arg(self._span(meta), None, c[0])

    @v_args(meta=True)
    def kwarg(self, meta, c):
        return A.Arg(self._span(c[0]), str(c[0]), c[1])

    # statements
    @v_args(meta=True)
    def tensor_type(self, meta, c):
        return A.TensorTypeExpr(self._span(meta), str(c[0]), self._span(c[0]),
                                tuple(x for x in c[1:] if x is not None))

    @v_args(meta=True)
    def input_stmt(self, meta, c):
        return A.Input(self._span(meta), str(c[0]), c[1])

    @v_args(meta=True)
    def param_stmt(self, meta, c):
        return A.ParamDecl(self._span(meta), str(c[0]), c[1], c[2])

    @v_args(meta=True)
    def state_stmt(self, meta, c):
        return A.State(self._span(meta), str(c[0]), c[1])

    @v_args(meta=True)
    def fixed_stmt(self, meta, c):
        return A.Fixed(self._span(meta), str(c[0]), c[1])

    @v_args(meta=True)
    def output_stmt(self, meta, c):
        return A.Output(self._span(meta), str(c[0]) if c[0] is not None else None, c[1])

    @v_args(meta=True)
    def assign_stmt(self, meta, c):
        return A.Assign(self._span(meta), tuple(str(t) for t in c[:-1]), c[-1])

    # definitions
    @v_args(meta=True)
    def param(self, meta, c):
        return A.Param(self._span(meta), str(c[0]), str(c[1]) if c[1] is not None else None, c[2])

    def param_list(self, c):
        return tuple(x for x in c if x is not None)

    def _definition(self, kind, meta, c):
        name, params, body = c[0], c[1], c[2:]
        return A.Definition(self._span(meta), kind, str(name), self._span(name), params or (), tuple(body))

    @v_args(meta=True)
    def model_def(self, meta, c):
        return self._definition("model", meta, c)

    @v_args(meta=True)
    def block_def(self, meta, c):
        return self._definition("block", meta, c)

    @v_args(meta=True)
    def cell_def(self, meta, c):
        return self._definition("cell", meta, c)

    @v_args(meta=True)
    def entry(self, meta, c):
        return A.Entry(self._span(meta), str(c[0]), c[1])

    @v_args(meta=True)
    def section(self, meta, c):
        return A.Section(self._span(meta), str(c[0]), str(c[1]), self._span(c[1]), tuple(c[2:]))

    @v_args(meta=True)
    def import_stmt(self, meta, c):
        return A.Import(self._span(meta), str(c[0])[1:-1])

    def start(self, c):
        return tuple(c)


def _describe_expected(expected) -> str:
    expected = set(expected)
    if {"NAME", "INT"} <= expected:
        punct = [w for w in ("RBRACE", "RPAR", "RSQB") if w in expected]
        return " or ".join(["an expression"] + [_TOKEN_WORDS[w] for w in punct])
    words = sorted({_TOKEN_WORDS.get(e, repr(e.lower()) if e.isupper() else e) for e in expected})
    if len(words) > 6:
        words = words[:6] + ["..."]
    return ", ".join(words)


def parse(source: str, file: str = "<string>") -> A.Module:
    if source.startswith("\ufeff"):
        source = source[1:]
    if len(source) > MAX_SOURCE_CHARS:
        raise ArchSyntaxError(f"{file} has {len(source):,} characters, more than the limit of {MAX_SOURCE_CHARS:,}",
                              Span(file, 1, 1, 1, 2, source),
                              "raise archdsl.syntax.parser.MAX_SOURCE_CHARS if the file is meant to be this large")
    _check_nesting(source, file)
    try:
        tree = _parser().parse(source)
    except UnexpectedInput as e:
        raise syntax_error(e, source, file) from None
    _check_depth(tree, source, file)
    try:
        items = _ToAst(file, source).transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, ArchSyntaxError):
            raise e.orig_exc from None
        raise
    return A.Module(file, source, items)


def tokens(source: str) -> list[Token]:
    """The tokens of a source that parses, as the parser's lexer reads them (comments dropped;
    positions as in the AST's spans). The language server finds the names a statement binds
    with them."""
    return list(_parser().lex(source[1:] if source.startswith("\ufeff") else source))


# A bracket, or something inside which brackets do not count (a comment or a string). Lark's
# lexer reads these the same way, left to right.
_BRACKET_SCAN = re.compile(r"#[^\n]*|\"[^\"\n]*\"|'[^'\n]*'|[(\[{}\])]")


def _position(source: str, pos: int) -> tuple[int, int]:
    line = source.count("\n", 0, pos) + 1
    return line, pos - (source.rfind("\n", 0, pos) + 1) + 1


def _check_nesting(source: str, file: str) -> None:
    depth = 0
    for m in _BRACKET_SCAN.finditer(source):
        ch = m.group()
        if ch in "([{":
            depth += 1
            if depth > MAX_NESTING:
                line, col = _position(source, m.start())
                raise ArchSyntaxError(f"brackets nested more than {MAX_NESTING} deep", Span(file, line, col, line, col + 1, source),
                                      "simplify the expression, or raise archdsl.syntax.parser.MAX_NESTING")
        elif ch in ")]}":
            depth = max(0, depth - 1)


def _check_depth(tree: Tree, source: str, file: str) -> None:
    """Refuse a parse tree deeper than MAX_EXPR_DEPTH (measured without recursion)."""
    stack = [(tree, 0)]
    while stack:
        t, d = stack.pop()
        if d > MAX_EXPR_DEPTH:
            m = t.meta
            line, col = (m.line, m.column) if not m.empty else (1, 1)
            end_line, end_col = (m.end_line, m.end_column) if not m.empty else (line, col + 1)
            raise ArchSyntaxError(f"expression nested more than {MAX_EXPR_DEPTH} levels deep",
                                  Span(file, line, col, end_line, end_col, source),
                                  "split it into several statements, or raise archdsl.syntax.parser.MAX_EXPR_DEPTH")
        for i, c in enumerate(t.children):
            if isinstance(c, Tree):
                # the left operand of a chain is another link of the same chain: no deeper
                same_chain = i == 0 and t.data == "pipe" and c.data == "pipe"
                stack.append((c, d if same_chain else d + 1))


def syntax_error(e: UnexpectedInput, source: str, file: str) -> ArchSyntaxError:
    line, col = getattr(e, "line", 1) or 1, getattr(e, "column", 1) or 1
    if line < 1:   # Lark reports -1 at end of input
        lines = source.split("\n")
        line, col = len(lines), len(lines[-1]) + 1
    width = 1
    hint = None
    if isinstance(e, UnexpectedToken):
        tok = e.token
        width = max(1, len(str(tok)))
        if tok.type == "$END":
            msg = "unexpected end of file"
            hint = "a '}' or ')' may be missing"
        else:
            msg = f"unexpected {str(tok)!r}"
        expected = _describe_expected(e.accepts or e.expected)
        if expected:
            msg += f"; expected {expected}"
        prev = (getattr(e, "token_history", None) or [None])[-1]
        if str(tok) in KEYWORDS and "NAME" in (e.accepts or e.expected):
            hint = f"'{tok}' is a keyword and cannot be used as a name"
        elif prev is not None and str(prev) in KEYWORDS and str(tok) in ("=", ",", "->"):
            hint = f"'{prev}' is a keyword and cannot be used as a name"
    elif isinstance(e, UnexpectedCharacters):
        ch = source[e.pos_in_stream] if 0 <= e.pos_in_stream < len(source) else "?"
        msg = f"unexpected character {ch!r}"
        if ch in "\"'":
            hint = "strings must end on the same line"
    elif isinstance(e, UnexpectedEOF):
        msg = "unexpected end of file"
        hint = "a '}' or ')' may be missing"
    else:
        msg = "syntax error"
    return ArchSyntaxError(msg, Span(file, line, col, line, col + width, source), hint)
