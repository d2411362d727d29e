"""Run a mapping section over named arrays: source names -> archdsl names when reading, and
backwards when writing. Every array remembers where it came from, so errors name both sides."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ArchError
from .mapping import IDENTITY, Rule, Section, StepError, run_steps, where


@dataclass
class Produced:
    array: np.ndarray
    origin: tuple[str, ...]           # the names it was made from
    rule: Rule | None                 # None: taken by name (the identity mapping)

    def trace(self) -> str:
        """Where an array came from: "'transformer.h.0.attn.c_attn.weight' (gpt.map:20: split columns, transpose)"."""
        src = ", ".join(f"'{o}'" for o in self.origin)
        if self.rule is None:
            return f"{src}"
        steps = ", ".join(str(s) for s in self.rule.steps)
        return f"{src} ({self.rule.where()}{': ' + steps if steps else ''})"


@dataclass
class Conversion:
    out: dict[str, Produced] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)        # no rule matches
    dropped: list[str] = field(default_factory=list)
    tied: list[str] = field(default_factory=list)           # copies checked against their original


def targets(section: Section, name: str, reading: bool = True) -> tuple[Rule | None, list[str] | None]:
    """The rule that takes `name` and the names it produces (None: no rule; for one piece of a
    concat, the one name the pieces make)."""
    if section is IDENTITY:
        return None, [name]
    for rule in section.rules:
        frm, to, _ = rule.oriented(reading)
        b = frm.match(name)
        if b is None:
            continue
        names = to.names(b)
        if names is not None:
            return rule, names
    return None, None


def canonical(section: Section, name: str) -> str:
    """The source name as the section's rules spell it: an `alias` (an older spelling) renamed,
    with or without the `base` prefix (a checkpoint of the base model, saved without the prefix
    its task model adds, or the other way)."""
    for a in section.aliases:
        b = a.copy.match(name)
        if b is not None:
            name = a.of.format(b)
            break
    base = section.base
    if not base or _known(section, name):
        return name
    other = name[len(base):] if name.startswith(base) else base + name
    return other if _known(section, other) else name


def _known(section: Section, name: str) -> bool:
    return (targets(section, name)[1] is not None or any(d.match(name) for d in section.drops)
            or any(t.copy.match(name) for t in section.ties))


def convert(arrays: dict[str, np.ndarray], section: Section, reading: bool,
            params: set | None = None) -> Conversion:
    """params: the model's parameter names, when reading: a tie whose copy a rule maps to one of
    them is not a tie for this model (Llama's head, tied or not by a model parameter)."""
    conv = Conversion()
    if section is IDENTITY:
        conv.out = {k: Produced(a, (k,), None) for k, a in arrays.items()}
        return conv
    problems: list[str] = []
    work: dict[str, tuple[np.ndarray, str]] = {}      # name as the rules see it -> (array, original name)
    for k, a in arrays.items():
        work[canonical(section, k) if reading else k] = (a, k)
    if reading:
        _resolve_ties(section, work, conv, problems, params or set())
        for k in list(work):
            if any(d.match(k) for d in section.drops):
                conv.dropped.append(work.pop(k)[1])
    pending: dict[tuple, tuple] = {}                   # concat pieces: (rule, binding, {piece: (array, name)})
    for name, (arr, orig) in work.items():
        rule, names = targets(section, name, reading)
        if rule is None:
            conv.unused.append(orig)
            continue
        frm, to, steps = rule.oriented(reading)
        b = frm.match(name)
        if frm.group:                                   # one piece of a concat: wait for the others
            pending.setdefault((id(rule), b.key()), (rule, b, {}))[2][b.alt] = (arr, orig)
            continue
        _produce(conv, rule, names, steps, [arr], (orig,), problems)
    for rule, b, entry in pending.values():
        frm, to, steps = rule.oriented(reading)
        want = [frm.format(b, a) for a in frm.group.alts]
        have = [a for a in frm.group.alts if a in entry]
        if len(have) < len(want):
            lacking = [w for w, a in zip(want, frm.group.alts) if a not in entry]
            problems.append(f"{', '.join(repr(w) for w in lacking)} missing: {rule.where()} concatenates "
                            f"{', '.join(repr(w) for w in want)}")
            continue
        pieces = [entry[a] for a in frm.group.alts]
        _produce(conv, rule, to.names(b), steps, [p[0] for p in pieces], tuple(p[1] for p in pieces), problems)
    if not reading:
        for tie in section.ties:                       # the source framework wants its copies too
            for name in list(conv.out):
                b = tie.of.match(name)
                if b is not None:
                    conv.out.setdefault(tie.copy.format(b), conv.out[name])
    if problems:
        raise ArchError(f"the mapping {section.label} cannot convert these tensors:\n  " + "\n  ".join(problems[:8])
                        + (f"\n  ... ({len(problems) - 8} more)" if len(problems) > 8 else ""))
    return conv


def _produce(conv: Conversion, rule: Rule, names: list[str], steps, arrays, origin, problems) -> None:
    try:
        out = run_steps(steps, arrays, len(names))
    except StepError as e:
        shapes = ", ".join(f"'{o}' {list(a.shape)}" for o, a in zip(origin, arrays))
        problems.append(f"{shapes}: {e} ({rule.where()})")
        return
    for n, a in zip(names, out):
        if n in conv.out:
            problems.append(f"'{n}' comes from both {conv.out[n].trace()} and {', '.join(map(repr, origin))}")
            continue
        conv.out[n] = Produced(a, origin, rule)


def _resolve_ties(section: Section, work: dict, conv: Conversion, problems: list[str], params: set) -> None:
    for tie in section.ties:
        for name in list(work):
            b = tie.copy.match(name)
            if b is None:
                continue
            own = targets(section, name)[1]
            if own and all(n in params for n in own):      # the model keeps the copy as a tensor of its own
                continue
            of = tie.of.format(b)
            arr, orig = work.pop(name)
            if of not in work:                     # only the copy was saved: it is the original
                work[of] = (arr, orig)
                continue
            other = work[of][0]
            if other.shape != arr.shape or not np.array_equal(other, arr):
                problems.append(f"'{orig}' differs from '{work[of][1]}', but {where(tie.span)} says they are "
                                f"tied (the spec keeps one tensor for both)")
            conv.tied.append(orig)
