"""Freezing parts of a model for transfer learning.

A freeze name picks parameters by where they live in the spec:

* a layer instance (`fc`, `conv2d_1`, `enc`: `Node.instance`; a shared layer is one instance),
* a block instance or repeat copy (`backbone`, `layer1`, `layer1.repeat_1.0`: any entry of
  `Node.scope`), which freezes every layer inside it,
* a parameter by its full name (`fc.weight`),
* a layer or block inside a scanned cell, under the scan's name (`decoder.attn`, `lstmcell_1.ih`).

Frozen parameters get `Param.trainable = False`: the NumPy executor gives them no gradient, the
optimizers never touch them, and `archdsl summary` counts them as non-trainable. Buffers (BatchNorm
running statistics) of a frozen layer are kept fixed by the trainer as well.
"""
from __future__ import annotations

from ..errors import ArchError, Span, did_you_mean
from ..ir.graph import Model


def _layers(model: Model):
    """(instance name, node name, scopes, parameter names) of every layer with parameters, the
    layers inside a scanned cell's step too (named under the scan: `decoder.attn`)."""
    for node in model.nodes:
        if not node.params:
            continue
        inst = node.instance or node.name
        yield inst, node.name, tuple(node.scope), list(node.params.values())
        rec = node.op.recurrence(node.app)
        if rec is not None and rec.body is not None:
            for b in rec.body.model.nodes:
                if b.params:
                    yield (f"{inst}.{b.instance or b.name}", f"{inst}.{b.name}",
                           tuple(node.scope) + (inst,) + tuple(f"{inst}.{s}" for s in b.scope),
                           [node.params[p] for p in b.params.values()])


def freeze_candidates(model: Model) -> list[str]:
    """Every name `apply_freeze` accepts for this model (layers and blocks that own parameters)."""
    seen: dict[str, None] = {}
    for inst, _, scope, _ in _layers(model):
        for s in scope:
            seen.setdefault(s, None)
        seen.setdefault(inst, None)
    return list(seen)


def resolve_freeze(model: Model, names, span: Span | None = None) -> list[str]:
    """Parameter names (in model order) selected by freeze `names`; unknown name -> ArchError."""
    selected: dict[str, None] = {}
    for name in names:
        name = str(name)
        hit = False
        for inst, node_name, scope, params in _layers(model):
            if name in (inst, node_name) or name in scope:
                for pname in params:
                    selected.setdefault(pname, None)
                hit = True
        if name in model.parameters:
            selected.setdefault(name, None)
            hit = True
        if not hit:
            cands = freeze_candidates(model)
            raise ArchError(f"cannot freeze '{name}': model {model.name} has no layer or block of that name",
                            span, did_you_mean(name, cands) or did_you_mean(name, model.parameters)
                            or (f"layers and blocks with parameters: {', '.join(cands[:12])}"
                                f"{' ...' if len(cands) > 12 else ''}" if cands else "the model has no parameters"))
    return [p for p in model.parameters if p in selected]


def apply_freeze(model: Model, names, span: Span | None = None) -> list[str]:
    """Mark the parameters selected by `names` non-trainable (idempotent); returns their names."""
    frozen = resolve_freeze(model, names, span)
    for p in frozen:
        model.parameters[p].trainable = False
    return frozen


def freeze_names(value) -> list[str]:
    """A train section's `freeze` value (a name, a string, or a list of them) -> list of names."""
    from ..elaborate.sections import Ref
    items = value if isinstance(value, tuple) else (value,)
    out = []
    for it in items:
        if isinstance(it, Ref):
            out.append(it.name)
        elif isinstance(it, str):
            out.append(it)
        else:
            raise ArchError(f"freeze expects layer or block names, got {it!r}",
                            getattr(it, "span", None), "e.g. freeze = [backbone, conv2d_1]")
    return out


def apply_section_freeze(spec, model: Model) -> list[str]:
    """Apply the `freeze` list of the train section for `model` (if any) once; used by Spec.model."""
    if getattr(model, "_section_freeze_applied", False):
        return []
    out: list[str] = []
    for sec in getattr(spec, "sections", {}).get("train", []):
        if sec.name == model.name and "freeze" in sec.entries:
            out += apply_freeze(model, freeze_names(sec.entries["freeze"]), sec.spans.get("freeze"))
    model._section_freeze_applied = True
    return out
