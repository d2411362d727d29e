"""Syntax highlighting of .arch source: a Pygments lexer and the helpers the CLI uses.

    ArchLexer                       the lexer; registered as the Pygments plugin `arch` (entry
                                    point in pyproject.toml), so `pygmentize -l arch`, Sphinx and
                                    MkDocs highlight ```arch blocks
    highlight(text, color=None)     ANSI-coloured text for a terminal (plain when not colouring)
    highlight_line(text, color)     the same for one line (error excerpts)
    highlight_excerpt(excerpt)      colours a `Span.excerpt()` block: the code and the carets
    highlight_html(text)            an HTML <div class="highlight"> with inline styles
    use_color(stream)               colour only for a terminal, and never when NO_COLOR is set

What is highlighted: keywords (`model block cell input output param state fixed import repeat
as if else train gan`),
`true`/`false`, `and or not`, dtypes and parameter types (`f32 ... i64 bool int float str`),
the layers of the op registry (`archdsl.ops.base.load_all()`, looked up lazily so that
importing this module stays cheap), the expression builtins (`channels`, `dim`, ...), the
names of models, blocks and cells (where defined and where used), keyword-argument names, numbers,
strings, comments and operators (`@` and a subscript's `...` among them). The builtins include
the tensor functions (`exp`, `where`, ...) and the initialisers (`normal`, `kaiming_normal`, ...).
"""
from __future__ import annotations

import os
import re
import sys
from functools import lru_cache

from pygments.lexer import RegexLexer, bygroups, include, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Token, Whitespace

KEYWORDS = ("input", "output", "param", "state", "fixed", "repeat", "as", "if", "else")
DECLARATIONS = ("model", "block", "cell", "train", "gan")
TYPES = ("f32", "f16", "f64", "i32", "i64", "bool", "int", "float", "str")
_NAME = r"[A-Za-z_][A-Za-z_0-9]*"
# the grammar's FLOAT and INT terminals
_FLOAT = r"[0-9][0-9_]*\.[0-9_]*([eE][+-]?[0-9]+)?|\.[0-9]+([eE][+-]?[0-9]+)?|[0-9][0-9_]*[eE][+-]?[0-9]+"
_INT = r"[0-9][0-9_]*"


@lru_cache(maxsize=1)
def op_names() -> frozenset[str]:
    """The layer names of the op registry (empty if the registry cannot be loaded)."""
    try:
        from ..ops.base import load_all
        return frozenset(load_all())
    except Exception:       # a broken op module must not break highlighting
        return frozenset()


@lru_cache(maxsize=1)
def builtin_names() -> frozenset[str]:
    try:
        from ..elaborate.elaborator import BUILTINS
        return frozenset(BUILTINS)
    except Exception:
        return frozenset({"channels", "dim", "rank", "shape", "len", "min", "max", "abs", "sqrt"})


_DEF_RE = re.compile(rf"\b(?:model|block|cell)\s+({_NAME})")


class ArchLexer(RegexLexer):
    """Lexer for archdsl's .arch architecture specs."""
    name = "archdsl"
    aliases = ["arch", "archdsl"]
    filenames = ["*.arch"]
    mimetypes = ["text/x-archdsl"]
    url = "https://pypi.org/project/archdsl/"

    tokens = {
        "common": [
            (r"[ \t\f\r\n\ufeff]+", Whitespace),
            (r"#[^\n]*", Comment.Single),
            (r'"[^"\n]*"|\'[^\'\n]*\'', String),
            (r"import\b", Keyword.Namespace),
            (rf"({'|'.join(DECLARATIONS)})(\s+)({_NAME})", bygroups(Keyword.Declaration, Whitespace, Name.Class)),
            (words(KEYWORDS, suffix=r"\b"), Keyword),
            (words(("true", "false"), suffix=r"\b"), Keyword.Constant),
            (words(("and", "or", "not"), suffix=r"\b"), Operator.Word),
            (words(TYPES, suffix=r"\b"), Keyword.Type),
            (_FLOAT, Number.Float),
            (_INT, Number.Integer),
            (r"->", Operator),
            (r"\*\*|//|==|!=|<=|>=|\.\.\.|[-+*/%<>=@]", Operator),
            (r"[\[\]{},:]", Punctuation),
        ],
        "root": [
            include("common"),
            (r"\(", Punctuation, "args"),
            (r"\)", Punctuation),
            (_NAME, Name),      # refined in get_tokens_unprocessed
        ],
        "args": [       # inside parentheses: `name=` is a keyword argument (or a parameter default)
            (rf"(?!(?:{'|'.join(TYPES)})\b)({_NAME})(\s*)(=)(?!=)", bygroups(Name.Attribute, Whitespace, Operator)),
            include("common"),
            (r"\(", Punctuation, "#push"),
            (r"\)", Punctuation, "#pop"),
            (_NAME, Name),
        ],
    }

    def get_tokens_unprocessed(self, text, stack=("root",)):
        defined = set(_DEF_RE.findall(text))
        ops, builtins = None, builtin_names()
        for index, token, value in super().get_tokens_unprocessed(text, stack):
            if token is Name:
                if ops is None:
                    ops = op_names()
                if value in ops:
                    token = Name.Builtin            # a layer of the registry
                elif value in defined:
                    token = Name.Class              # a model or block of this file
                elif value in builtins:
                    token = Name.Builtin.Pseudo     # channels(x), dim(x, i), ...
            yield index, token, value


# Terminal colours (16-colour ANSI: every terminal, and readable on light and dark backgrounds).
# Layers are bold blue, blocks and models green, keywords magenta, types cyan.
TERMINAL_SCHEME = {
    Token: ("", ""),
    Whitespace: ("", ""),
    Comment: ("gray", "brightblack"),
    Keyword: ("magenta", "brightmagenta"),
    Keyword.Constant: ("red", "brightred"),
    Keyword.Type: ("cyan", "brightcyan"),
    Operator.Word: ("magenta", "brightmagenta"),
    Name.Builtin: ("*blue*", "*brightblue*"),
    Name.Builtin.Pseudo: ("blue", "brightblue"),
    Name.Class: ("green", "brightgreen"),
    String: ("yellow", "yellow"),
    Number: ("red", "brightred"),
}


def use_color(stream=None) -> bool:
    """Colour for a terminal only (https://no-color.org: NO_COLOR turns it off)."""
    stream = sys.stdout if stream is None else stream
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def highlight(text: str, color: bool | None = None, stream=None) -> str:
    """`text` with ANSI colours when `color` (default: whether `stream`, stdout by default, is a
    terminal); exactly `text` otherwise. The visible characters never change."""
    if color is None:
        color = use_color(stream)
    if not color or not text:
        return text
    from pygments import highlight as _highlight
    from pygments.formatters import TerminalFormatter
    out = _highlight(text, ArchLexer(stripnl=False, ensurenl=False),
                     TerminalFormatter(colorscheme=TERMINAL_SCHEME))
    return out


def highlight_line(text: str, color: bool | None = None) -> str:
    """One line of .arch source (an error excerpt) with ANSI colours, when colouring (default:
    when stderr is a terminal). Plain `text` otherwise."""
    return highlight(text, color, stream=sys.stderr)


_EXCERPT_CODE = re.compile(r"^(\s*\d+ \| )(.*)$")
_EXCERPT_MARK = re.compile(r"^(\s* \| )(\s*)(\^+)(.*)$")


def excerpt_style(stream=None):
    """The style `ArchError.format` takes for `stream`: coloured excerpts on a terminal, else None."""
    return (lambda ex: highlight_excerpt(ex, color=True)) if use_color(stream) else None


def highlight_excerpt(excerpt: str, color: bool | None = None) -> str:
    """Colour the source lines of an error excerpt (`Span.excerpt()`: `  7 | code` lines and the
    `    | ^^^^` marker line, red). Plain when not colouring (default: stderr is a terminal)."""
    if color is None:
        color = use_color(sys.stderr)
    if not color or not excerpt:
        return excerpt
    out = []
    for line in excerpt.split("\n"):
        m = _EXCERPT_CODE.match(line)
        if m:
            out.append(f"\x1b[2m{m.group(1)}\x1b[0m" + highlight(m.group(2), True))
            continue
        m = _EXCERPT_MARK.match(line)
        if m:
            out.append(f"\x1b[2m{m.group(1)}\x1b[0m{m.group(2)}\x1b[1;31m{m.group(3)}\x1b[0m{m.group(4)}")
            continue
        out.append(line)
    return "\n".join(out)


def html_style() -> str:
    return "friendly"


def highlight_html(text: str, linenos: bool = False) -> str:
    """`text` as highlighted HTML with inline styles (no stylesheet needed: self-contained)."""
    from pygments import highlight as _highlight
    from pygments.formatters import HtmlFormatter
    fmt = HtmlFormatter(noclasses=True, style=html_style(), linenos="inline" if linenos else False,
                        cssclass="highlight")
    return _highlight(text, ArchLexer(stripnl=False), fmt)
