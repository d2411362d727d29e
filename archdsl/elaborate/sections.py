"""`train` and `gan` sections: parsed now, checked here, interpreted by the training stage.

Values are kept as light structures (numbers, strings, tuples, `Ref` for bare names and `Call`
for f(args)) so the trainer can interpret them without re-reading the AST.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ArchError, Span, collect_errors, did_you_mean, raise_errors
from ..syntax import ast as A

TRAIN_KEYS = ("loss", "optimizer", "batch", "epochs", "metrics", "schedule", "clip_norm", "freeze",
              "val_split", "seed", "inputs", "targets", "init")
GAN_KEYS = ("generator", "discriminator", "noise", "objective", "d_steps", "g_optimizer", "d_optimizer",
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


def check_sections(ns, spec) -> dict[str, list[Section]]:
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
                entries[e.key] = value(e.value)
                spans[e.key] = e.span
            out[s.kind].append(Section(s.kind, s.name, s.span, entries, spans))
        except ArchError as e:
            errors.append(e)
    if out["gan"] and spec is not None:
        # settings, both models and the pair's types (archdsl/gan/pair.py; imported only when needed)
        from ..gan.pair import check_gan_sections
        with collect_errors(errors):
            check_gan_sections(spec, out["gan"])
    raise_errors(errors)
    return out
