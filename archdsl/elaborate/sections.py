"""`train` and `gan` sections: parsed now, checked here, interpreted by the training stage.

Values are kept as light structures (numbers, strings, tuples, `Ref` for bare names and `Call`
for f(args)) so the trainer can interpret them without re-reading the AST.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ArchError, Span, collect_errors, did_you_mean, raise_errors
from ..syntax import ast as A

TRAIN_KEYS = ("loss", "loss_weights", "optimizer", "batch", "epochs", "metrics", "schedule", "clip_norm", "freeze",
              "val_split", "seed", "inputs", "targets", "init", "decoder")
# settings whose value is an expression over tensors (loss terms), kept as their syntax tree (an
# `Expr`) and read by archdsl/train/objective.py
EXPRESSION_KEYS = ("loss",)
GAN_KEYS = ("generator", "discriminator", "noise", "objective", "d_steps", "pack", "g_optimizer", "d_optimizer",
            "batch", "epochs", "steps", "seed", "data", "schedule")      # read by archdsl/gan/config.py


@dataclass(frozen=True)
class Ref:
    name: str
    span: Span


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple
    kwargs: dict = field(default_factory=dict, hash=False)
    span: Span | None = None


@dataclass(frozen=True)
class Expr:
    """A setting written as an expression over tensors (`loss = ...`): its syntax tree, and the
    source text it spans (what a checkpoint stores to read it again)."""
    node: A.Node
    span: Span

    @property
    def text(self) -> str:
        return source_text(self.span)


def source_text(span: Span) -> str:
    """The text of the source `span` covers."""
    lines = (span.source or "").split("\n")
    if span.line == span.end_line:
        return lines[span.line - 1][span.col - 1:span.end_col - 1]
    parts = [lines[span.line - 1][span.col - 1:]] + lines[span.line:span.end_line - 1] + \
        [lines[span.end_line - 1][:span.end_col - 1]]
    return "\n".join(parts)


@dataclass
class Section:
    kind: str
    name: str
    span: Span
    entries: dict        # key -> value
    spans: dict          # key -> Span

    @property
    def model(self) -> str:
        return self.name


def value(e: A.Node):
    if isinstance(e, (A.Num, A.Str, A.Bool)):
        return e.value
    if isinstance(e, A.Name):
        return Ref(e.id, e.span)
    if isinstance(e, (A.TupleExpr, A.ListExpr)):
        return tuple(value(x) for x in e.items)
    if isinstance(e, A.UnaryOp) and e.op == "-" and isinstance(e.operand, A.Num):
        return -e.operand.value
    if isinstance(e, A.Call) and isinstance(e.func, A.Name):
        pos = tuple(value(a.value) for a in e.args if a.name is None)
        kw = {a.name: value(a.value) for a in e.args if a.name is not None}
        return Call(e.func.id, pos, kw, e.span)
    raise ArchError("section values are numbers, strings, names, lists or calls like Adam(lr=1e-3)", e.span)


def check_sections(ns, spec, checkers: dict | None = None) -> dict[str, list[Section]]:
    """Every section's keys against its kind, then `checkers[kind](spec, sections)` for the
    kinds that check more (a gan section its pair of models: archdsl/gan/pair.py), all errors
    together."""
    out: dict[str, list[Section]] = {"train": [], "gan": []}
    errors: list[ArchError] = []
    for s in ns.sections:
        keys = TRAIN_KEYS if s.kind == "train" else GAN_KEYS
        entries, spans = {}, {}
        try:
            if s.kind == "train" and s.name not in ns.models:
                raise ArchError(f"train section names unknown model '{s.name}'", s.name_span,
                                did_you_mean(s.name, ns.models))
            for e in s.entries:
                if e.key not in keys:
                    raise ArchError(f"unknown {s.kind} setting '{e.key}'", e.span,
                                    did_you_mean(e.key, keys) or f"settings: {', '.join(keys)}")
                if e.key in entries:
                    raise ArchError(f"{s.kind} setting '{e.key}' is given twice", e.span)
                entries[e.key] = Expr(e.value, e.value.span) if e.key in EXPRESSION_KEYS else value(e.value)
                spans[e.key] = e.span
            out[s.kind].append(Section(s.kind, s.name, s.span, entries, spans))
        except ArchError as e:
            errors.append(e)
    for kind, check in (checkers or {}).items():
        if out.get(kind) and spec is not None:
            with collect_errors(errors):
                check(spec, out[kind])
    raise_errors(errors)
    return out


# -- reading section values (train and gan sections) --------------------------------------------

def plain(v, span=None):
    """Section value -> JSON-able Python value (names become strings)."""
    if isinstance(v, Ref):
        return v.name
    if isinstance(v, tuple):
        return [plain(x, span) for x in v]
    if isinstance(v, Call):
        raise ArchError(f"unexpected call {v.func}(...) here", v.span or span)
    return v


def call_parts(v, what: str, span) -> tuple[str, tuple, dict, Span | None]:
    if isinstance(v, Call):
        return v.func, v.args, v.kwargs, v.span or span
    if isinstance(v, Ref):
        return v.name, (), {}, v.span
    raise ArchError(f"{what} must be written like a call, e.g. {what}(...), got {v!r}", span)


def call_kwargs(func, args, kwargs, allowed, span, what) -> dict:
    out = {}
    if len(args) > len(allowed):
        raise ArchError(f"{func} takes at most {len(allowed)} positional argument(s), got {len(args)}", span)
    for name, v in zip(allowed, args):
        out[name] = plain(v, span)
    for k, v in kwargs.items():
        if k not in allowed:
            raise ArchError(f"{what} {func} has no argument '{k}'", span,
                            did_you_mean(k, allowed) or f"arguments: {', '.join(allowed)}")
        if k in out:
            raise ArchError(f"{func}: argument '{k}' given twice", span)
        out[k] = plain(v, span)
    return out


def number(v, key, span, kind=float, lo=None, hi=None, lo_open=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)):
        raise ArchError(f"{key} must be {'an integer' if kind is int else 'a number'}, got {plain(v)!r}", span)
    if (lo is not None and (v < lo or (lo_open and v == lo))) or (hi is not None and v > hi):
        rng = f"{'>' if lo_open else '>='} {lo}" if hi is None else f"in {'(' if lo_open else '['}{lo}, {hi}]"
        raise ArchError(f"{key} must be {rng}, got {v}", span)
    return kind(v)


def mapping(v, key, span) -> dict:
    """`dict(image="x")` or `[(image, "x")]` -> {"image": "x"}."""
    if isinstance(v, Call) and v.func == "dict" and not v.args:
        return {k: str(plain(x, span)) for k, x in v.kwargs.items()}
    if isinstance(v, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in v):
        return {str(plain(a, span)): str(plain(b, span)) for a, b in v}
    raise ArchError(f"{key} maps names to arrays in the data file, e.g. {key} = dict(image=\"x\")", span)
