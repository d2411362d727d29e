"""Weight-name mappings: declarative rules between another framework's tensor names and the
parameter names of an archdsl model, kept in a `.map` file beside the spec (specs/gpt.map for
specs/gpt.arch). The grammar is archdsl/grammars/weightmap.lark; an example:

    mapping GPT2, GPTSmall from "transformers.GPT2LMHeadModel" {
      base "transformer."                     # names may also come without this prefix
      config n_layer = layers                 # config.json field = spec parameter
      config activation_function = "gelu_new" | "gelu_pytorch_tanh"
      inputs input_ids = tokens < vocab       # for --verify: how to call the source model
      outputs logits = logits
      "transformer.h.{i}.ln_1.*"             -> "repeat_1.{i}.gptblock_1.layernorm_1.*"
      "transformer.h.{i}.attn.c_attn.weight" -> "repeat_1.{i}.gptblock_1.multiheadattention_1.{q|k|v}_weight"
                                                split columns, transpose
      tied "lm_head.weight" = "transformer.wte.weight"
      drop "transformer.h.{i}.attn.bias"
    }

A rule reads `source -> archdsl`; writing (archdsl -> source) runs it backwards. In a pattern:

    {i}        an index (digits). {i-1} / {i+1} shift it: "layer.{j}" -> "repeat_1.{j-1}" maps
               layer.1 to repeat_1.0, and a name whose shifted index would be negative does not
               match (layer.0 is left to an earlier rule)
    *          one name (letters, digits, _), the same text on the other side
    **         any dotted path (in `drop` only)
    {a|b|c}    pieces: on one side only, with `split rows|columns` (target side) or
               `concat rows|columns` (source side); on both sides, one rule per alternative

Transforms run left to right when reading: `transpose` (2-D), `split rows|columns` into the
pieces, `concat rows|columns` of the pieces. Rules are tried in order; the first that matches
wins. `drop` patterns are ignored when reading; `tied A = B`: the source may hold A as a copy of
B (it must then be equal), and writing emits it; `alias OLD = NEW`: an older spelling read as
the new one (BERT's LayerNorm.gamma); `include SECTION under "prefix."` takes another section's
rules, drops, ties and configs with the prefix before their source names (not its base, aliases,
inputs or outputs). Errors point at line and column.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput

from ..errors import ArchError, ArchSyntaxError, Span, did_you_mean

SUFFIX = ".map"


# -- patterns -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Index:
    var: str
    offset: int = 0


@dataclass(frozen=True)
class Group:
    alts: tuple[str, ...]


STAR, ANY_PATH = "*", "**"
_PART = re.compile(r"\{([^{}]*)\}|\*\*|\*|[{}]")
_INDEX = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:([+-])\s*(\d+))?\s*$")


@dataclass(frozen=True)
class Binding:
    """What a name matched: the indices, the `*` names in order, the piece of a {a|b} group."""
    ints: tuple[tuple[str, int], ...] = ()
    stars: tuple[str, ...] = ()
    alt: str | None = None

    def key(self) -> tuple:
        return (self.ints, self.stars)


@dataclass(eq=False)
class Pattern:
    text: str
    span: Span
    parts: tuple

    @property
    def group(self) -> Group | None:
        return next((p for p in self.parts if isinstance(p, Group)), None)

    @property
    def vars(self) -> list[str]:
        return [p.var for p in self.parts if isinstance(p, Index)]

    @property
    def stars(self) -> int:
        """How many wildcards (* and **): each carries its text to the other side, in order."""
        return len(self.wildcards)

    @property
    def wildcards(self) -> tuple[str, ...]:
        return tuple(p for p in self.parts if p in (STAR, ANY_PATH))

    @property
    def regex(self) -> re.Pattern:
        r = self.__dict__.get("_regex")
        if r is None:
            out, k = [], 0
            for p in self.parts:
                if isinstance(p, Index):
                    out.append(rf"(?P<i_{p.var}>\d+)")
                elif isinstance(p, Group):
                    out.append("(?P<alt>" + "|".join(map(re.escape, p.alts)) + ")")
                elif p in (STAR, ANY_PATH):
                    out.append(rf"(?P<s{k}>{'[A-Za-z0-9_]+' if p == STAR else '.+'})")
                    k += 1
                else:
                    out.append(re.escape(p))
            r = self.__dict__["_regex"] = re.compile("".join(out))
        return r

    def match(self, name: str) -> Binding | None:
        m = self.regex.fullmatch(name)
        if m is None:
            return None
        ints = []
        for p in self.parts:
            if isinstance(p, Index):
                v = int(m[f"i_{p.var}"]) - p.offset
                if v < 0:
                    return None
                ints.append((p.var, v))
        stars = tuple(m[f"s{k}"] for k in range(self.stars))
        return Binding(tuple(sorted(ints)), stars, m["alt"] if self.group else None)

    def format(self, b: Binding, alt: str | None = None) -> str | None:
        """The name for binding `b` (and piece `alt`); None where a shifted index goes negative."""
        ints, out, k = dict(b.ints), [], 0
        for p in self.parts:
            if isinstance(p, Index):
                v = ints[p.var] + p.offset
                if v < 0:
                    return None
                out.append(str(v))
            elif isinstance(p, Group):
                out.append(alt)
            elif p in (STAR, ANY_PATH):
                out.append(b.stars[k])
                k += 1
            else:
                out.append(p)
        return "".join(out)

    def names(self, b: Binding) -> list[str] | None:
        """Every name of the binding: one per piece of a group."""
        g = self.group
        names = [self.format(b, a) for a in (g.alts if g else (None,))]
        return None if any(n is None for n in names) else names

    def prefixed(self, prefix: str) -> "Pattern":
        return Pattern(prefix + self.text, self.span, (prefix,) + self.parts)

    def __str__(self):
        return self.text


def parse_pattern(text: str, span: Span, allow_any_path: bool = False) -> Pattern:
    """allow_any_path: `**` may stand for a dotted path (in drop and alias patterns)."""
    """A pattern string (without its quotes) -> Pattern; errors point into the string."""
    parts: list = []
    pos = 0

    def fail(msg: str, start: int, end: int, hint: str | None = None):
        col = span.col + 1 + start        # +1: the opening quote
        raise ArchSyntaxError(msg, Span(span.file, span.line, col, span.line, col + max(1, end - start),
                                        span.source), hint)

    seen_vars: set[str] = set()
    for m in _PART.finditer(text):
        if m.start() > pos:
            parts.append(text[pos:m.start()])
        pos = m.end()
        tok = m.group(0)
        if tok in ("{", "}"):
            fail(f"unbalanced '{tok}' in the pattern \"{text}\"", m.start(), m.end(),
                 "{i} is an index, {a|b|c} are pieces")
        elif tok == ANY_PATH:
            if not allow_any_path:
                fail("'**' (any dotted path) is only allowed in `drop` and `alias` patterns", m.start(), m.end(),
                     "use * for one name, {i} for an index")
            parts.append(ANY_PATH)
        elif tok == STAR:
            parts.append(STAR)
        elif "|" in m.group(1):
            alts = tuple(a.strip() for a in m.group(1).split("|"))
            if len(alts) < 2 or not all(re.fullmatch(r"[A-Za-z0-9_.]+", a) for a in alts):
                fail(f"bad pieces {tok}: expected names separated by '|', like {{q|k|v}}", m.start(), m.end())
            if any(isinstance(p, Group) for p in parts):
                fail("only one {a|b} group per pattern", m.start(), m.end())
            parts.append(Group(alts))
        else:
            im = _INDEX.match(m.group(1))
            if im is None:
                fail(f"bad index {tok}: expected {{i}}, {{i+1}} or {{i-1}}", m.start(), m.end())
            var, sign, num = im.groups()
            if var in seen_vars:
                fail(f"the index {{{var}}} appears twice in one pattern", m.start(), m.end(),
                     "give each index its own name")
            seen_vars.add(var)
            parts.append(Index(var, int(num) * (-1 if sign == "-" else 1) if num else 0))
    if pos < len(text):
        parts.append(text[pos:])
    if not text:
        fail("empty pattern", 0, 1)
    return Pattern(text, span, tuple(parts))


# -- transforms ---------------------------------------------------------------------------------

AXES = {"rows": 0, "columns": 1}


@dataclass(frozen=True)
class Step:
    kind: str          # transpose | split | concat
    axis: str | None = None
    span: Span | None = field(default=None, compare=False)

    def inverse(self) -> "Step":
        return {"split": replace(self, kind="concat"), "concat": replace(self, kind="split")}.get(self.kind, self)

    def __str__(self):
        return self.kind if self.axis is None else f"{self.kind} {self.axis}"


class StepError(Exception):
    pass


def run_steps(steps, arrays: list[np.ndarray], pieces: int) -> list[np.ndarray]:
    """Apply the transforms to a list of arrays (one, or the pieces of a group)."""
    for s in steps:
        if s.kind == "transpose":
            for a in arrays:
                if a.ndim != 2:
                    raise StepError(f"transpose needs a 2-D tensor, got {list(a.shape)}")
            arrays = [a.T for a in arrays]
        elif s.kind == "split":
            (a,) = arrays
            ax = AXES[s.axis]
            if a.ndim <= ax or a.shape[ax] % pieces:
                raise StepError(f"split {s.axis}: {list(a.shape)} does not split into {pieces} equal pieces")
            arrays = np.split(a, pieces, axis=ax)
        else:
            ax = AXES[s.axis]
            if any(a.ndim <= ax for a in arrays):
                raise StepError(f"concat {s.axis}: the pieces {[list(a.shape) for a in arrays]} have no {s.axis}")
            try:
                arrays = [np.concatenate(arrays, axis=ax)]
            except ValueError:
                raise StepError(f"concat {s.axis}: the pieces {[list(a.shape) for a in arrays]} do not fit") from None
    return arrays


# -- sections -----------------------------------------------------------------------------------

@dataclass(eq=False)
class Rule:
    source: Pattern
    target: Pattern
    steps: tuple[Step, ...]
    span: Span

    def oriented(self, reading: bool) -> tuple[Pattern, Pattern, tuple[Step, ...]]:
        """(from, to, steps) for reading (source -> archdsl) or writing (archdsl -> source)."""
        if reading:
            return self.source, self.target, self.steps
        return self.target, self.source, tuple(s.inverse() for s in reversed(self.steps))

    def where(self) -> str:
        return where(self.span)


def where(span: Span) -> str:
    """'gpt.map:30': a line of a mapping file, for messages about the data it maps."""
    return f"{Path(span.file).name}:{span.line}"


@dataclass(eq=False)
class Tie:
    copy: Pattern        # the name the source may hold as a copy ...
    of: Pattern          # ... of this one
    span: Span


@dataclass(eq=False)
class Config:
    field: str
    param: str | None          # a spec parameter, or
    literals: tuple = ()       # the values the spec computes (the first is written)
    span: Span | None = None


@dataclass(eq=False)
class Port:
    key: str | None            # the source's argument / output name; None: positional / whole
    name: str                  # the archdsl model's input / output
    bound: str | int | None    # integer inputs: values below this (a spec parameter or a number)
    span: Span


@dataclass(eq=False)
class Section:
    models: tuple[str, ...]
    source: str | None
    span: Span
    rules: list[Rule] = field(default_factory=list)
    drops: list[Pattern] = field(default_factory=list)
    ties: list[Tie] = field(default_factory=list)
    aliases: list[Tie] = field(default_factory=list)     # older spellings: copy = the old, of = the new
    configs: list[Config] = field(default_factory=list)
    base: str | None = None
    inputs: list[Port] = field(default_factory=list)
    outputs: list[Port] = field(default_factory=list)
    includes: list[tuple[str, str, Span]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{where(self.span)} ({', '.join(self.models)})"

    def config_args(self, model_args: dict) -> dict:
        """The source's configuration for a model's parameters: each `config` line's value."""
        return {c.field: model_args[c.param] if c.param else c.literals[0] for c in self.configs
                if c.param is None or c.param in model_args}


IDENTITY = Section(("*",), None, Span("<identity>", 0, 0, 0, 0))     # names taken as they are


@dataclass(eq=False)
class MappingFile:
    path: str
    sections: list[Section]

    def for_model(self, model: str) -> list[Section]:
        return [s for s in self.sections if model in s.models]


# -- reading a .map file ------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _parser() -> Lark:
    text = resources.files("archdsl").joinpath("grammars/weightmap.lark").read_text()
    return Lark(text, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def find_mapping(spec_file: str | None) -> Path | None:
    """The mapping file beside a spec (specs/gpt.arch -> specs/gpt.map), if there is one."""
    if not spec_file or spec_file.startswith("<"):
        return None
    p = Path(spec_file).with_suffix(SUFFIX)
    return p if p.is_file() else None


def load_mapping(path) -> MappingFile:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ArchError(f"cannot read the mapping file '{p}': {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ArchError(f"the mapping file '{p}' is not UTF-8 text") from None
    return parse_mapping(text, str(p))


def parse_mapping(text: str, file: str = "<mapping>") -> MappingFile:
    from ..syntax.parser import syntax_error
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as e:
        raise syntax_error(e, text, file) from None
    b = _Builder(file, text)
    sections = [b.section(t) for t in tree.children]
    _resolve_includes(sections)
    return MappingFile(file, sections)


class _Builder:
    def __init__(self, file: str, text: str):
        self.file, self.text = file, text

    def span(self, x) -> Span:
        m = x if isinstance(x, Token) else x.meta
        return Span(self.file, m.line, m.column, m.end_line, m.end_column, self.text)

    def string(self, tok: Token) -> str:
        return str(tok)[1:-1]

    def pattern(self, tok: Token, allow_any_path=False) -> Pattern:
        return parse_pattern(self.string(tok), self.span(tok), allow_any_path)

    def section(self, t: Tree) -> Section:
        names, rest = t.children[0], t.children[1:]
        source = None
        if rest and isinstance(rest[0], Token):
            source = self.string(rest[0])
            rest = rest[1:]
        sec = Section(tuple(str(n) for n in names.children), source, self.span(t))
        for item in rest:
            getattr(self, item.data)(sec, item)
        return sec

    def rule(self, sec: Section, t: Tree) -> None:
        src_tok, dst_tok, *steps_t = t.children
        src, dst = self.pattern(src_tok), self.pattern(dst_tok)
        steps = tuple(Step(s.data, str(s.children[0]) if s.children else None, self.span(s)) for s in steps_t)
        span = self.span(t)
        for a, b in ((src, dst), (dst, src)):
            for v in a.vars:
                if v not in b.vars:
                    raise ArchError(f"the index {{{v}}} of \"{a}\" is not used in \"{b}\"", a.span,
                                    "each index must appear on both sides, so the rule runs both ways")
        if src.stars != dst.stars:
            raise ArchError(f"\"{src}\" has {src.stars} '*' but \"{dst}\" has {dst.stars}", dst.span,
                            "each * carries one name to the other side")
        pieces = [s for s in steps if s.kind in ("split", "concat")]
        if len(pieces) > 1:
            raise ArchError("one split or concat per rule", pieces[1].span)
        gs, gd = src.group, dst.group
        if gs and gd:
            if pieces:
                raise ArchError(f"{pieces[0]}: pieces on both sides pair up one to one; "
                                f"split/concat needs pieces on one side only", pieces[0].span)
            if len(gs.alts) != len(gd.alts):
                raise ArchError(f"{{{'|'.join(gs.alts)}}} and {{{'|'.join(gd.alts)}}} pair up one to one "
                                f"but have {len(gs.alts)} and {len(gd.alts)} names", dst.span)
            for a, d in zip(gs.alts, gd.alts):       # one rule per pair
                sec.rules.append(Rule(_fix(src, a), _fix(dst, d), steps, span))
            return
        if gd and not (pieces and pieces[0].kind == "split"):
            raise ArchError(f"\"{dst}\" names {len(gd.alts)} pieces: the rule needs `split rows` or "
                            f"`split columns`", dst.span)
        if gs and not (pieces and pieces[0].kind == "concat"):
            raise ArchError(f"\"{src}\" names {len(gs.alts)} pieces: the rule needs `concat rows` or "
                            f"`concat columns`", src.span)
        if pieces and not (gs or gd):
            raise ArchError(f"{pieces[0]} needs pieces: a {{a|b|c}} group on the "
                            f"{'archdsl' if pieces[0].kind == 'split' else 'source'} side", pieces[0].span)
        if pieces and ((pieces[0].kind == "split" and gs) or (pieces[0].kind == "concat" and gd)):
            side = "archdsl (right)" if pieces[0].kind == "split" else "source (left)"
            raise ArchError(f"{pieces[0]} makes pieces on the {side} side", pieces[0].span)
        sec.rules.append(Rule(src, dst, steps, span))

    def drop(self, sec: Section, t: Tree) -> None:
        sec.drops.extend(self.pattern(s, allow_any_path=True) for s in t.children)

    def tied(self, sec: Section, t: Tree) -> None:
        sec.ties.append(self._pair(t, "tied"))

    def alias(self, sec: Section, t: Tree) -> None:
        sec.aliases.append(self._pair(t, "alias", allow_any_path=True))

    def _pair(self, t: Tree, what: str, allow_any_path: bool = False) -> Tie:
        a, b = (self.pattern(s, allow_any_path) for s in t.children)
        if sorted(a.vars) != sorted(b.vars) or a.wildcards != b.wildcards or a.group or b.group:
            raise ArchError(f"{what} \"{a}\" = \"{b}\": both sides need the same indices and wildcards",
                            self.span(t))
        return Tie(a, b, self.span(t))

    def config(self, sec: Section, t: Tree) -> None:
        name, value = t.children
        if value.data == "param":
            sec.configs.append(Config(str(name), str(value.children[0]), (), self.span(t)))
        else:
            sec.configs.append(Config(str(name), None, tuple(_literal(v) for v in value.children), self.span(t)))

    def include(self, sec: Section, t: Tree) -> None:
        name, *prefix = t.children
        sec.includes.append((str(name), self.string(prefix[0]) if prefix else "", self.span(t)))

    def base(self, sec: Section, t: Tree) -> None:
        sec.base = self.string(t.children[0])

    def _ports(self, t: Tree) -> list[Port]:
        out = []
        for p in t.children:
            first, second, bound = p.children
            key, name = (str(first), str(second)) if second is not None else (None, str(first))
            if bound is not None:
                bound = int(bound) if bound.type == "INT" else str(bound)
            out.append(Port(key, name, bound, self.span(p)))
        return out

    def inputs(self, sec: Section, t: Tree) -> None:
        sec.inputs.extend(self._ports(t))

    def outputs(self, sec: Section, t: Tree) -> None:
        sec.outputs.extend(self._ports(t))


def _fix(p: Pattern, alt: str) -> Pattern:
    """The pattern with its {a|b} group replaced by one alternative."""
    parts = tuple(alt if isinstance(x, Group) else x for x in p.parts)
    text = "".join(x if isinstance(x, str) else
                   f"{{{x.var}{'' if not x.offset else f'{x.offset:+d}'}}}" for x in parts)
    return Pattern(text, p.span, parts)


def _literal(tok: Token):
    s = str(tok)
    if tok.type == "STRING":
        return s[1:-1]
    if tok.type in ("TRUE", "FALSE"):
        return tok.type == "TRUE"
    return float(s) if any(c in s for c in ".eE") else int(s)


def _resolve_includes(sections: list[Section]) -> None:
    by_model: dict[str, list[Section]] = {}
    for s in sections:
        for m in s.models:
            by_model.setdefault(m, []).append(s)
    done: set[int] = set()

    def resolve(sec: Section, stack: tuple) -> None:
        if id(sec) in done:
            return
        for name, prefix, span in sec.includes:
            found = by_model.get(name, [])
            if not found:
                raise ArchError(f"include {name}: no mapping section for model '{name}' in this file", span,
                                did_you_mean(name, by_model))
            if len(found) > 1:
                raise ArchError(f"include {name}: {len(found)} sections map model '{name}'; which one is meant?",
                                span)
            other = found[0]
            if other is sec or id(other) in stack:
                raise ArchError(f"include {name}: the sections include each other", span)
            resolve(other, stack + (id(sec),))
            sec.rules[:0] = [Rule(r.source.prefixed(prefix), r.target, r.steps, r.span) for r in other.rules]
            sec.drops[:0] = [d.prefixed(prefix) for d in other.drops]
            sec.ties[:0] = [Tie(t.copy.prefixed(prefix), t.of.prefixed(prefix), t.span) for t in other.ties]
            mine = {c.field for c in sec.configs}
            sec.configs[:0] = [c for c in other.configs if c.field not in mine]
        done.add(id(sec))

    for s in sections:
        resolve(s, ())
