"""The loss of a train section: one built-in loss, or a weighted sum of named terms.

    loss = cross_entropy(logits, label)                  # one built-in loss over an output and an array
    loss = mean((pred - target) ** 2)                    # one expression over the model's tensors
    loss = dict(recon=mean(sum((recon - image) ** 2, (1, 2, 3))),        # named terms
                kl=mean(-0.5 * sum(1 + logvar - mu ** 2 - exp(logvar), 1)))
    loss_weights = dict(kl=ramp(0.0, 1.0, epochs=10))    # a term's weight (default 1)

A term is a built-in loss (`cross_entropy`, `binary_cross_entropy`, `mse`, ...) of a model output
and a data array, or an expression in the spec's own language over the model's outputs and
inputs that makes one number (reduce with `mean(...)` / `sum(...)`). An expression is elaborated
as a small graph of ops of its own, so shape and dtype errors are compile-time errors at their
positions; it runs on the NumPy engine and its gradient flows back into the model's outputs.

A weight is a number, or `ramp(start, end, steps=S)` / `ramp(start, end, epochs=E)`: from start
to end linearly over the first S optimizer steps (E epochs), then end (a KL warm-up). It depends
on the run's step alone, so a resumed run weighs every step as the uninterrupted one did.

With named terms, each term's unweighted mean per example goes into the progress, metrics.jsonl
and the checkpoint's history next to the weighted total `loss` (`val_<term>` on validation data),
and a ramped weight's value at the end of the epoch as `<term>_weight`. A checkpoint stores each
expression's source text and position, and a resumed run reads it again from there.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..elaborate.sections import Call, Expr, call_kwargs, plain, value
from ..errors import ArchError, Span, did_you_mean
from ..syntax import ast as A
from .data import TargetSpec
from .losses import LOSS_KWARGS, LOSSES, per_example_total
from .metrics import METRICS

RESERVED = ("loss", "lr", "epoch", "step", "seconds")
WEIGHT_SCHEDULES = {"ramp": ("start", "end", "steps", "epochs")}


# -- reading a train section ------------------------------------------------------------------------

def read_loss(entry, span: Span | None) -> tuple[dict | None, list[dict], dict]:
    """A section's `loss` -> (the single built-in loss or None, the terms, name -> Expr of each
    expression term). A single built-in loss keeps the form checkpoints have always stored."""
    node = entry.node if isinstance(entry, Expr) else None
    if node is None:
        raise ArchError("loss must be a loss, e.g. loss = cross_entropy(logits, label)", span)
    if _builtin_call(node):
        return _builtin(node), [], {}
    if isinstance(node, A.Call) and isinstance(node.func, A.Name) and node.func.id == "dict":
        if not node.args or any(a.name is None for a in node.args):
            raise ArchError("named loss terms are written dict(name=term, ...)", node.span,
                            "e.g. loss = dict(recon=mse(recon, image), kl=mean(...))")
        terms, exprs, seen = [], {}, set()
        for a in node.args:
            if a.name in seen:
                raise ArchError(f"loss term '{a.name}' is given twice", a.span)
            seen.add(a.name)
            if a.name in RESERVED or a.name in METRICS or a.name.startswith("val_") or a.name.endswith("_weight"):
                raise ArchError(f"'{a.name}' cannot name a loss term: progress and metrics.jsonl use it", a.span,
                                "choose another name (not loss, lr, a metric, val_..., ..._weight)")
            if _builtin_call(a.value):
                terms.append({"name": a.name, "weight": 1.0, "loss": _builtin(a.value)})
            else:
                terms.append(_expression(a.name, a.value))
                exprs[a.name] = Expr(a.value, a.value.span)
        return None, terms, exprs
    return None, [_expression("loss", node)], {"loss": Expr(node, node.span)}


def read_weights(entry, span: Span | None, terms: list[dict]) -> None:
    """`loss_weights = dict(kl=ramp(0.0, 1.0, epochs=10), aux=0.3)` -> each term's weight."""
    if not terms or (len(terms) == 1 and terms[0]["name"] == "loss"):
        raise ArchError("loss_weights weighs named loss terms: write loss = dict(name=term, ...)", span)
    if not (isinstance(entry, Call) and entry.func == "dict" and not entry.args):
        raise ArchError("loss_weights maps term names to weights, e.g. loss_weights = dict(kl=0.5)", span)
    names = [t["name"] for t in terms]
    for k, v in entry.kwargs.items():
        if k not in names:
            raise ArchError(f"loss_weights: there is no loss term '{k}'", entry.span or span,
                            did_you_mean(k, names) or f"terms: {', '.join(names)}")
        terms[names.index(k)]["weight"] = _weight(k, v, entry.span or span)


def _weight(name: str, v, span):
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if not np.isfinite(v):
            raise ArchError(f"the weight of '{name}' must be finite, got {v}", span)
        return float(v)
    if isinstance(v, Call) and v.func in WEIGHT_SCHEDULES:
        kw = call_kwargs(v.func, v.args, v.kwargs, WEIGHT_SCHEDULES[v.func], v.span or span, "weight")
        if "start" not in kw or "end" not in kw or ("steps" in kw) == ("epochs" in kw):
            raise ArchError(f"{v.func} needs a start, an end and one of steps= or epochs=", v.span or span,
                            "e.g. ramp(0.0, 1.0, epochs=10)")
        for k in ("start", "end"):
            if isinstance(kw[k], bool) or not isinstance(kw[k], (int, float)) or not np.isfinite(kw[k]):
                raise ArchError(f"{v.func}: {k} must be a number, got {kw[k]!r}", v.span or span)
        length = kw.get("steps", kw.get("epochs"))
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ArchError(f"{v.func}: steps or epochs must be a positive integer, got {length!r}", v.span or span)
        return {"name": v.func, **{k: (float(x) if k in ("start", "end") else x) for k, x in kw.items()}}
    raise ArchError(f"the weight of '{name}' must be a number or ramp(start, end, steps=... | epochs=...), "
                    f"got {plain(v, span) if not isinstance(v, Call) else v.func + '(...)'}", span,
                    did_you_mean(v.func, WEIGHT_SCHEDULES) if isinstance(v, Call) else None)


def _builtin_call(node) -> bool:
    return isinstance(node, A.Call) and isinstance(node.func, A.Name) and node.func.id in LOSSES


def _builtin(node: A.Call) -> dict:
    func = node.func.id
    pos = [a for a in node.args if a.name is None]
    if len(pos) != 2 or not all(isinstance(a.value, A.Name) for a in pos):
        raise ArchError(f"{func} takes the model output and the target array by name: {func}(output, target)",
                        node.span)
    kwargs = {a.name: value(a.value) for a in node.args if a.name is not None}
    kind = LOSSES[func][1]
    return {"name": func, "output": pos[0].value.id, "target": pos[1].value.id,
            "kwargs": call_kwargs(func, (), kwargs, LOSS_KWARGS[kind], node.span, "loss")}


def _expression(name: str, node: A.Node) -> dict:
    if isinstance(node, A.Call) and isinstance(node.func, A.Name):
        from ..elaborate.elaborator import BUILTINS
        from ..ops.base import load_all
        f = node.func.id
        if f not in BUILTINS and f not in load_all():
            raise ArchError(f"unknown loss '{f}'", node.span, did_you_mean(f, LOSSES) or
                            f"losses: {', '.join(LOSSES)}; or an expression over the model's tensors")
    _no_builtin_inside(node)
    s = node.span
    return {"name": name, "weight": 1.0, "expr": Expr(node, s).text, "at": [s.file, s.line, s.col]}


def _no_builtin_inside(node) -> None:
    todo = [node]
    while todo:
        e = todo.pop()
        if _builtin_call(e):
            raise ArchError(f"{e.func.id}(...) is a loss term of its own, not part of an expression", e.span,
                            f"name it and weigh it: loss = dict(a={e.func.id}(...), b=...), "
                            "loss_weights = dict(a=0.5)")
        if isinstance(e, A.Node):
            for f in e.__dataclass_fields__:
                if f != "span":
                    v = getattr(e, f)
                    todo.extend(x for x in (v if isinstance(v, tuple) else (v,)) if isinstance(x, A.Node))


def reparse(text: str, at) -> A.Node:
    """An expression term's syntax tree from a checkpoint's text, at its old position (so that
    an error in it points where it was written)."""
    from ..syntax.parser import parse
    file, line, col = at
    head = "train _ { loss ="
    if line > 1:
        src = "\n" * (line - 2) + head + "\n" + " " * (col - 1) + text + "\n}"
    else:
        src = (head + " " * max(1, col - 1 - len(head))) + text + "\n}"
    return parse(src, file).items[0].entries[0].value


# -- a compiled objective -------------------------------------------------------------------------------

@dataclass
class Term:
    name: str
    weight: float | dict
    loss: dict | None = None             # a built-in loss: {"name", "output", "target", "kwargs"}
    graph: object = None                 # an expression: its IR Model
    executor: object = field(default=None, repr=False)
    span: Span | None = None

    @property
    def kind(self) -> str | None:
        return LOSSES[self.loss["name"]][1] if self.loss else None

    @property
    def ramped(self) -> bool:
        return isinstance(self.weight, dict)


def check_builtin(loss: dict, ir, span) -> None:
    """A built-in loss against the model: its output exists and fits the loss."""
    outs = [v.name for v in ir.outputs]
    name, out = loss["name"], loss["output"]
    if out not in outs:
        raise ArchError(f"loss {name} reads '{out}', which is not an output of model {ir.name}", span,
                        did_you_mean(out, outs) or f"outputs: {', '.join(outs)}")
    otype = next(v.type for v in ir.outputs if v.name == out)
    if not otype.is_float:
        raise ArchError(f"loss {name} needs a floating output, '{out}' is {otype}", span)
    if LOSSES[name][1] == "classes" and otype.rank < 2:
        raise ArchError(f"{name} needs logits with a class axis last ([N, C] or [N, T, C]), '{out}' is {otype}", span)


def compile_expression(ns, name: str, node: A.Node, ir):
    """An expression term over `ir`'s outputs and inputs -> its IR Model (ArchError on a shape or
    dtype mistake, at its position, or when it is not one floating-point number)."""
    from ..elaborate.elaborator import Elaborator
    from ..elaborate.values import TensorRef, show
    tensors = {v.name: v.type for v in ir.outputs}
    tensors.update({v.name: v.type for v in ir.inputs if v.name not in tensors})
    graph, v = Elaborator(ns).expression(f"{ir.name}.loss.{name}", tensors, node)
    what = "the loss" if name == "loss" else f"loss term '{name}'"
    if not isinstance(v, TensorRef):
        raise ArchError(f"{what} is {show(v)}, not computed from the model's tensors", node.span,
                        f"terms are expressions over model {ir.name}'s outputs and inputs: "
                        + ", ".join(tensors))
    t = v.value.type
    if not t.is_float or t.rank != 0:
        raise ArchError(f"{what} is {t}; a loss is one floating-point number", node.span,
                        "reduce it: mean(...) over every element, or mean(sum(x, 1)) for a sum per example"
                        if t.is_float else "losses are computed in floating point")
    if graph.parameters:
        raise ArchError(f"{what} holds layers with weights ({', '.join(graph.parameters)}); a loss only computes",
                        node.span)
    for n in graph.nodes:
        if n.op.stochastic(n.app):
            raise ArchError(f"{what} draws random numbers ({n.op.name}); a loss is a function of the model's "
                            "tensors", n.span)
    return graph


class Objective:
    """A train section's loss (a TrainConfig's `loss` and `terms`) compiled against a model: its
    terms, what data they read, and how a batch's loss is computed and reported. `spans` holds
    the section's positions (and the syntax trees of its expressions, `expr.<term>`), `ns` the
    spec's namespace (blocks an expression may use)."""

    def __init__(self, ir, loss: dict | None, terms: list, spans: dict | None = None, ns=None):
        from ..elaborate.loader import Namespace
        ns = ns if ns is not None else Namespace(file="<loss>", source="")
        sp = spans or {}
        self.ir = ir
        defs = terms or [{"name": "loss", "weight": 1.0, "loss": loss}]
        self.terms: list[Term] = []
        for d in defs:
            span = sp.get(f"loss.{d['name']}", sp.get("loss"))
            if "loss" in d:
                check_builtin(d["loss"], ir, span)
                self.terms.append(Term(d["name"], d["weight"], loss=d["loss"], span=span))
            else:
                e = sp.get(f"expr.{d['name']}")
                node = e.node if isinstance(e, Expr) and e.text == d["expr"] else reparse(d["expr"], d["at"])
                graph = compile_expression(ns, d["name"], node, ir)
                self.terms.append(Term(d["name"], d["weight"], graph=graph, span=node.span))
        self.single = len(self.terms) == 1 and self.terms[0].name == "loss"
        self.names = [t.name for t in self.terms]
        self.classifier = next((t for t in self.terms if t.kind in ("classes", "binary")), None)
        self.targets: list[TargetSpec] = []
        otypes = {v.name: v.type for v in ir.outputs}
        for t in self.terms:
            if t.loss and t.loss["target"] not in [s.name for s in self.targets]:
                self.targets.append(TargetSpec(t.loss["target"], otypes[t.loss["output"]], t.kind,
                                               t.loss["kwargs"].get("ignore_index")))

    def executors(self) -> None:
        from ..backends.numpy.executor import NumpyExecutor
        for t in self.terms:
            if t.graph is not None and t.executor is None:
                t.executor = NumpyExecutor(t.graph, {})

    def weight(self, term: Term, step: int, steps_per_epoch: int) -> float:
        w = term.weight
        if not isinstance(w, dict):
            return float(w)
        length = w["steps"] if "steps" in w else w["epochs"] * steps_per_epoch
        frac = min(1.0, step / max(1, length))
        return w["start"] + (w["end"] - w["start"]) * frac

    def term_value(self, t: Term, outs: dict, batch: dict):
        """(a term's value on the NumPy engine, a Tensor; its reduction)."""
        if t.loss is not None:
            fn = LOSSES[t.loss["name"]][0]
            return (fn(outs[t.loss["output"]], batch[t.loss["target"]], **t.loss["kwargs"]),
                    t.loss["kwargs"].get("reduction", "mean"))
        self.executors()
        feeds = {x.name: (outs[x.name] if x.name in outs else batch[x.name]) for x in t.graph.inputs}
        return next(iter(t.executor.forward(feeds, training=False).values())), "mean"

    def __call__(self, outs: dict, batch: dict, step: int, steps_per_epoch: int, term_value=None):
        """(the weighted loss, a Tensor; {name: value} of each term; {name: sum over the batch's
        examples} of each term and of the weighted `loss`, for epoch means; examples).
        `term_value(term, outs, batch)` computes a term on another engine (default: NumPy's)."""
        term_value = term_value or self.term_value
        n = len(next(iter(batch.values())))
        total, values, totals, weighted = None, {}, {}, 0.0
        for t in self.terms:
            v, red = term_value(t, outs, batch)
            w = self.weight(t, step, steps_per_epoch)
            total = (v if w == 1.0 else v * w) if total is None else total + (v if w == 1.0 else v * w)
            values[t.name] = float(v.data)
            totals[t.name] = per_example_total(values[t.name], red, n)
            weighted += w * totals[t.name]
        totals["loss"] = weighted
        return total, values, totals, n

    def ramped_weights(self, step: int, steps_per_epoch: int) -> dict:
        return {f"{t.name}_weight": self.weight(t, step, steps_per_epoch) for t in self.terms if t.ramped}


def check_train_sections(spec, sections: list) -> None:
    """The compile-path hook (elaborate/sections.py): each train section's loss compiled against
    its model (shape and dtype errors in loss expressions, at their positions) and its VAE
    decoder checked (archdsl/vae.py); all independent errors together. Other settings are read
    when training starts. A model that failed to elaborate was reported already."""
    from ..errors import ArchErrors, collect_errors, raise_errors
    errors: list[ArchError] = []
    for sec in sections:
        try:
            model = spec.model(sec.name)
        except (ArchError, ArchErrors):
            continue
        with collect_errors(errors):
            if "loss" not in sec.entries:
                continue
            loss, terms, exprs = read_loss(sec.entries["loss"], sec.spans["loss"])
            if "loss_weights" in sec.entries:
                with collect_errors(errors):
                    read_weights(sec.entries["loss_weights"], sec.spans["loss_weights"], terms)
            Objective(model.ir, loss, terms, {**sec.spans, **{f"expr.{k}": x for k, x in exprs.items()}}, spec.ns)
        if "decoder" in sec.entries:
            from ..vae import check_decoder
            with collect_errors(errors):
                check_decoder(spec, sec, model)
    raise_errors(errors)
