"""How the server shows ops, blocks, values and IR nodes: signatures, docs, types."""
from __future__ import annotations

import inspect

from ..elaborate.values import POISON, LayerInstance, TensorRef, show
from ..syntax import ast as A

BUILTIN_DOCS = {
    "channels": "channels(x): the size of dim 1 of tensor x (its channels)",
    "dim": "dim(x, i): the size of dim i of tensor x",
    "rank": "rank(x): how many dims tensor x has",
    "shape": "shape(x): the dims of tensor x, as a tuple",
    "len": "len(t): the length of a tuple, list or string",
    "min": "min(a, b, ...): the smallest number", "max": "max(a, b, ...): the largest number",
    "int": "int(x): x as an int", "float": "float(x): x as a float",
    "abs": "abs(x): the absolute value", "sqrt": "sqrt(x): the square root",
}


def fmt_default(v) -> str:
    """An argument's default as .arch writes it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return repr(v)
    if v is None:
        return "None"
    if isinstance(v, tuple):
        return "(" + ", ".join(fmt_default(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return str(v)


def arg_text(arg) -> str:
    text = f"{arg.name}: {arg.kind}"
    return text if arg.required else f"{text} = {fmt_default(arg.default)}"


def op_signature(op) -> str:
    return f"{op.name}({', '.join(arg_text(a) for a in op.args)})"


def op_doc(op) -> str:
    return inspect.cleandoc(op.doc or type(op).__doc__ or "")


def op_summary(op) -> str:
    """The first paragraph of an op's doc."""
    return op_doc(op).split("\n\n")[0]


def arg_doc(arg) -> str:
    parts = [f"`{arg_text(arg)}`"]
    if arg.choices:
        parts.append("one of " + ", ".join(f"`{fmt_default(c)}`" for c in arg.choices))
    if getattr(arg, "keyword_only", False):
        parts.append("keyword only")
    if arg.doc:
        parts.append(arg.doc)
    return "; ".join(parts)


def span_text(span) -> str:
    """The source text a span covers."""
    if span.source is None:
        return ""
    lines = span.source.split("\n")
    if not 1 <= span.line <= len(lines):
        return ""
    if span.end_line == span.line:
        return lines[span.line - 1][span.col - 1:span.end_col - 1]
    out = [lines[span.line - 1][span.col - 1:]] + lines[span.line:span.end_line - 1]
    if span.end_line <= len(lines):
        out.append(lines[span.end_line - 1][:span.end_col - 1])
    return "\n".join(out)


def param_text(p: A.Param) -> str:
    return " ".join(span_text(p.span).split())


def block_signature(d: A.Definition) -> str:
    return f"{d.kind} {d.name}({', '.join(param_text(p) for p in d.params)})"


def doc_comment(d) -> str:
    """The comment lines right above a definition (its documentation, as the specs write it)."""
    if d.span.source is None:
        return ""
    lines = d.span.source.split("\n")
    out = []
    i = d.span.line - 2
    while i >= 0 and lines[i].strip().startswith("#"):
        out.append(lines[i].strip()[1:].strip())
        i -= 1
    return "\n".join(reversed(out))


def value_text(v) -> str | None:
    """A value as a hover shows it; None for what carries nothing to show (an error's poison)."""
    if v is None or v is POISON:
        return None
    if isinstance(v, TensorRef):
        return str(v.value.type)
    if isinstance(v, tuple) and v and all(isinstance(x, TensorRef) for x in v):
        return "(" + ", ".join(str(x.value.type) for x in v) + ")"
    if isinstance(v, LayerInstance):
        return f"{v.op.name} layer" + (f" {v.path}" if v.path else "")
    return show(v)


def tensor_types(values) -> list[str]:
    """The distinct tensor types among values, in order of first appearance."""
    out: list[str] = []
    for v in values:
        if isinstance(v, TensorRef) or (isinstance(v, tuple) and v and all(isinstance(x, TensorRef) for x in v)):
            t = value_text(v)
            if t not in out:
                out.append(t)
    return out


def node_params(node, model) -> int:
    """Parameters a node owns (not buffers), as the summary counts them."""
    n = 0
    for pname in node.params.values():
        p = model.parameters.get(pname)
        if p is not None and not p.spec.buffer:
            n += p.numel
    return n


def scope_params(path: str, model) -> int:
    """Parameters of a block instance: those named under its path."""
    return sum(p.numel for name, p in model.parameters.items()
               if name.startswith(path + ".") and not p.spec.buffer)
