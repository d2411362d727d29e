"""Syntax highlighting: the Pygments lexer (entry point, token kinds, every op), the terminal and
HTML output, error excerpts, `archdsl show`, and the TextMate grammar for editors."""
from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest
from pygments.token import Comment, Keyword, Name, Number, Operator, String

from archdsl.authoring.highlight import (ArchLexer, highlight, highlight_excerpt, highlight_html,
                                         highlight_line, use_color)
from archdsl.errors import ArchError
from archdsl.ops.base import load_all
from harness import run_authoring as run

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(ROOT.joinpath("specs").glob("*.arch"))
ANSI = re.compile(r"\x1b\[[0-9;]*m")

SAMPLE = """\
import "resnet_blocks.arch"
# a comment
block Stage(width: int, n: int = 2) {
  input x
  output x -> repeat n as i { Conv2d(width, 3, padding='same') -> ReLU } -> MaxPool2d(2)
}
model M(rate: float = 1e-3) {
  input image: f32[N, 3, 32, 32]
  y = image -> Stage(16) if channels(image) == 3 and not false else image
  output y
}
train M { batch = 64 }
"""


def kinds(text: str) -> dict[str, object]:
    """value -> token type, for the first occurrence of each value."""
    out = {}
    for tok, val in ArchLexer().get_tokens(text):
        out.setdefault(val, tok)
    return out


def test_entry_point_registers_the_lexer():
    from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
    assert type(get_lexer_by_name("arch")).__name__ == "ArchLexer"
    assert type(get_lexer_for_filename("specs/lenet5.arch")).__name__ == "ArchLexer"
    text = (ROOT / "pyproject.toml").read_text()
    assert '[project.entry-points."pygments.lexers"]' in text and "archdsl.authoring.highlight:ArchLexer" in text


def test_token_kinds():
    k = kinds(SAMPLE)
    assert k["import"] in Keyword and k["block"] in Keyword and k["model"] in Keyword
    assert k["input"] in Keyword and k["repeat"] in Keyword and k["if"] in Keyword and k["as"] in Keyword
    assert k["train"] in Keyword
    assert k["false"] in Keyword.Constant
    assert k["and"] in Operator.Word and k["not"] in Operator.Word
    assert k["f32"] in Keyword.Type and k["int"] in Keyword.Type and k["float"] in Keyword.Type
    assert k["Conv2d"] is Name.Builtin and k["ReLU"] is Name.Builtin and k["MaxPool2d"] is Name.Builtin
    assert k["Stage"] is Name.Class and k["M"] is Name.Class        # models and blocks of the file
    assert k["channels"] is Name.Builtin.Pseudo
    assert k["padding"] is Name.Attribute                          # a keyword argument
    assert k["width"] is Name                                      # a parameter name
    assert k["1e-3"] in Number.Float and k["64"] in Number.Integer and k["32"] in Number.Integer
    assert k["'same'"] in String and k['"resnet_blocks.arch"'] in String
    assert k["# a comment"] in Comment
    assert k["->"] in Operator and k["=="] in Operator


def test_params_initialisers_tensor_math_and_subscripts():
    k = kinds("model M {\n  input x: f32[N, T, 4]\n  param g: f32[4] = normal(std=0.02)\n"
              "  y = x -> Linear(4, init=kaiming_uniform)\n  output exp(x[..., :2]) @ where(x > 0, x, y)\n}\n")
    assert k["param"] in Keyword
    assert k["normal"] is Name.Builtin.Pseudo and k["kaiming_uniform"] is Name.Builtin.Pseudo
    assert k["exp"] is Name.Builtin.Pseudo and k["where"] is Name.Builtin.Pseudo
    assert k["init"] is Name.Attribute and k["std"] is Name.Attribute
    assert k["@"] in Operator and k["..."] in Operator
    s = scopes_of("  param g: f32[4] = zeros  y = x[..., 1:] @ w")
    assert s["param"] == "keyword.control.arch" and s["@"] == "keyword.operator.arch"
    assert s["..."] == "keyword.operator.arch"


def test_every_registered_op_is_a_layer():
    for name in load_all():
        toks = [(t, v) for t, v in ArchLexer().get_tokens(f"y = x -> {name}(3)") if v == name]
        assert toks == [(Name.Builtin, name)], name


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_highlighting_changes_no_character(path):
    src = path.read_text()
    colored = highlight(src, color=True)
    assert colored != src and "\x1b[" in colored
    assert ANSI.sub("", colored) == src
    assert highlight(src, color=False) == src


def test_color_only_for_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert use_color(Tty()) and not use_color(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_color(Tty())
    assert highlight("model M {}", stream=io.StringIO()) == "model M {}"
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert highlight_line("x -> Linear(3)") == "x -> Linear(3)"       # stderr not a terminal: plain


def test_error_excerpts_are_highlighted_with_carets_in_place(tmp_path):
    import archdsl
    bad = tmp_path / "bad.arch"
    bad.write_text("model M {\n  input x: f32[N, 400]\n  x = x -> Linear(120) -> BatchNorm2d\n  output y = x\n}\n")
    with pytest.raises(ArchError) as err:
        archdsl.compile(bad)
    excerpt = err.value.span.excerpt()
    colored = highlight_excerpt(excerpt, color=True)
    assert ANSI.sub("", colored) == excerpt
    assert "\x1b[01m\x1b[34mLinear" in colored           # the layer, bold blue
    assert "\x1b[1;31m^^^" in colored                    # the carets, red
    assert highlight_excerpt(excerpt, color=False) == excerpt


def test_html_is_inline_styled():
    out = highlight_html(SAMPLE, linenos=True)
    assert out.startswith('<div class="highlight"')
    assert 'style="' in out and "Conv2d" in out and "class=" in out
    assert "<link" not in out and "<script" not in out


# -- archdsl show ----------------------------------------------------------------------------
def test_show(capsys):
    spec = ROOT / "specs" / "lenet5.arch"
    src = spec.read_text()
    assert run(capsys, "show", spec) == (0, src, "")                    # not a terminal: plain
    rc, out, _ = run(capsys, "show", "--color", "always", spec)
    assert rc == 0 and "\x1b[" in out and ANSI.sub("", out) == src
    rc, out, _ = run(capsys, "show", "-n", "--color", "never", spec)
    lines, w = src.splitlines(), len(str(len(src.splitlines())))
    assert out.splitlines() == [f"{i + 1:>{w}} | {line}" for i, line in enumerate(lines)]
    rc, _, err = run(capsys, "show", ROOT / "specs" / "nope.arch")
    assert rc == 1 and "no such file" in err


# -- the TextMate grammar ----------------------------------------------------------------------
GRAMMAR = ROOT / "editors" / "arch.tmLanguage.json"


def tm_tokens(grammar: dict, line: str) -> list[tuple[str, str]]:
    """A small TextMate tokenizer (match, begin/end, captures, include): (text, scope) pairs."""
    repo = grammar["repository"]

    def expand(patterns):
        out = []
        for p in patterns:
            if "include" in p:
                r = grammar if p["include"] == "$self" else repo[p["include"][1:]]
                out += expand(r["patterns"]) if "match" not in r and "begin" not in r else [r]
            else:
                out += expand(p["patterns"]) if "match" not in p and "begin" not in p else [p]
        return out

    found: list[tuple[str, str]] = []
    stack: list[tuple[list, dict | None]] = [(expand(grammar["patterns"]), None)]
    pos = 0
    while pos < len(line):
        pats, rule = stack[-1]
        best = None
        if rule is not None:
            m = re.compile(rule["end"]).search(line, pos)
            if m:
                best = (m.start(), -1, m, None)
        for i, p in enumerate(pats):
            m = re.compile(p.get("match") or p["begin"]).search(line, pos)
            if m and (best is None or m.start() < best[0]):
                best = (m.start(), i, m, p)
        if best is None:
            break
        _, _, m, p = best
        if p is None:                       # the end of a begin/end rule
            found.append((m.group(0), rule.get("endCaptures", {}).get("0", {}).get("name", "")))
            stack.pop()
        else:
            caps = p.get("captures") or p.get("beginCaptures") or {}
            if p.get("name"):
                found.append((m.group(0), p["name"]))
            for g, c in caps.items():
                if m.group(int(g)) is not None:
                    found.append((m.group(int(g)), c["name"]))
            if "begin" in p:
                stack.append((expand(p["patterns"]), p))
        pos = max(m.end(), pos + 1) if m.end() == m.start() else m.end()
    return found


def scopes_of(line: str) -> dict[str, str]:
    g = json.loads(GRAMMAR.read_text())
    out: dict[str, str] = {}
    for text, scope in tm_tokens(g, line):
        out.setdefault(text, scope)
    return out


def test_textmate_grammar_is_valid_and_matches_the_vocabulary():
    g = json.loads(GRAMMAR.read_text())
    assert g["scopeName"] == "source.arch" and "arch" in g["fileTypes"]

    def regexes(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("match", "begin", "end") and isinstance(v, str):
                    yield v
                else:
                    yield from regexes(v)
        elif isinstance(node, list):
            for v in node:
                yield from regexes(v)
    for rx in regexes(g):
        re.compile(rx)
    s = scopes_of("block Stage(width: int, n: int = 2) {  # c")
    assert s["block"] == "storage.type.arch" and s["Stage"] == "entity.name.type.arch"
    assert s["int"] == "support.type.arch" and s["2"] == "constant.numeric.integer.arch"
    assert s["# c"] == "comment.line.number-sign.arch"
    s = scopes_of("  y = x -> Conv2d(16, 3, padding='same', bias=false) -> Stage(16) if rank(x) == 4 else x")
    assert s["Conv2d"] == "support.class.layer.arch" and s["Stage"] == "entity.name.type.arch"
    assert s["padding"] == "variable.parameter.arch" and s["'same'"] == "string.quoted.single.arch"
    assert s["false"] == "constant.language.boolean.arch" and s["->"] == "keyword.operator.pipe.arch"
    assert s["if"] == "keyword.control.arch" and s["rank"] == "support.function.builtin.arch"
    s = scopes_of("  input x: f32[N, 3]  output y = x2 -> Dropout(1e-3)")
    assert s["f32"] == "support.type.arch" and s["input"] == "keyword.control.arch"
    assert s["1e-3"] == "constant.numeric.float.arch" and "2" not in s      # no number inside x2


def test_textmate_grammar_colours_every_op():
    for name in load_all():
        scope = scopes_of(f"y = x -> {name}(3)").get(name)
        assert scope in ("support.class.layer.arch", "entity.name.type.arch"), (name, scope)
