"""`archdsl render --receptive-field LAYER`: a conv net drawn with each layer's receptive field.

    rf = receptive_fields(model)                 # node name -> RF (size and jump, per axis)
    cone = receptive_cone(model, "conv2d_2")     # node name -> how much of that node's output
                                                 # one unit of conv2d_2 sees
    g = receptive_field_dot(model, "conv2d_2")   # the annotated drawing (graphviz.Digraph)

The receptive field of a unit is the region of the input image it depends on. Walking forward
from the input (size r = 1, jump j = 1: neighbouring units are 1 pixel apart), a window of k
taps, dilation d and stride s gives

    r_out = r_in + d·(k − 1)·j_in        j_out = j_in·s

per spatial axis (padding shifts the field but does not change its size). Every layer of the
drawing shows its r×r and jump; a field larger than the image is real (its border is padding).

Which layers do what: the convolutions and windowed pools (anything with a `kernel_size`) are
windows as above; a transposed convolution has j_out = j_in/s and sees ⌈span/s⌉ input units; an
AdaptiveAvgPool2d is a window of its widest bin with a stride of in/out; a global pool, Flatten
and everything after it see the whole input; a layer that keeps the spatial shape (activations,
normalisation, dropout, the residual `+`, Concat over channels) keeps the field (the largest of
its inputs'). Only inputs of rank >= 3 ([N, C, *spatial] images, sequences, volumes) have
spatial axes; models without one have no receptive fields to draw.

LAYER is a layer's name (`conv2d_2`, `layer1.basicblock_1.conv2d_1`), the unique layer whose name
ends in `.LAYER`, a block instance (`layer2`: its last layer) or a model output's name. It is
highlighted, and every layer it depends on is annotated with how much of that layer's
output one unit of LAYER sees (walking backward: r_in = (r_out − 1)·s + d·(k − 1) + 1), as the
lecture figures draw a unit of conv3 seeing 3×3 of conv2, 5×5 of conv1 and 7×7 of the image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import graphviz

from ..errors import ArchError, did_you_mean
from ..passes.cost import op_label
from .drawing import FONT, e

WHOLE = None        # a field covering the whole input


@dataclass(frozen=True)
class RF:
    size: tuple            # per spatial axis: int, or None for the whole input
    jump: tuple            # per spatial axis: Fraction (input pixels between neighbouring units)

    def text(self) -> str:
        return fmt_size(self.size)


def fmt_size(size) -> str:
    if size is None or any(s is None for s in size):
        return "whole input"
    return "\u00d7".join(str(s) for s in size)


def _fmt_jump(jump) -> str:
    vals = {str(j) for j in jump}
    return "\u00d7".join(str(j) for j in jump) if len(vals) > 1 else vals.pop()


def _ir(model):
    return getattr(model, "ir", model)


def _window(n, nsp: int):
    """(kind, k, s, d) per axis for a node that declares a spatial window, or None.
    kind: 'conv' | 'transpose' | 'adaptive' (ops/base.py: Window)."""
    w = n.op.window(n.app)
    if w is None or not len(w.kernel) == len(w.stride) == len(w.dilation) == nsp:
        return None
    return w.kind, w.kernel, w.stride, w.dilation


def _spatial(t) -> tuple:
    return tuple(t.shape[2:])


def _keeps_space(n) -> bool:
    """Does the node keep the spatial layout [N, C, *S] of its spatial inputs?"""
    outs = n.outputs
    sp_in = [v.type for v in n.inputs if v.type.rank >= 3]
    return bool(sp_in) and all(o.type.rank == sp_in[0].rank and _spatial(o.type) == _spatial(sp_in[0])
                               for o in outs)


def receptive_fields(model) -> dict[str, RF]:
    """Each node's receptive field on the model's spatial input(s), by node name (nodes that do
    not descend from a spatial input are left out)."""
    m = _ir(model)
    rf: dict[int, RF] = {}          # id(value) -> RF
    for v in m.inputs:
        if v.type.rank >= 3:
            nsp = v.type.rank - 2
            rf[id(v)] = RF((1,) * nsp, (Fraction(1),) * nsp)
    out: dict[str, RF] = {}
    for n in m.nodes:
        known = [rf[id(v)] for v in n.inputs if id(v) in rf]
        if not known:
            continue
        nsp = len(known[0].jump)
        whole = any(r.size is None for r in known)
        win = _window(n, nsp) if n.inputs[0].type.rank == nsp + 2 else None
        if win is not None and not whole and id(n.inputs[0]) in rf:
            kind, k, s, d = win
            r_in, j_in = rf[id(n.inputs[0])].size, rf[id(n.inputs[0])].jump
            size, jump = [], []
            for i in range(nsp):
                span = d[i] * (k[i] - 1) + 1
                if kind == "transpose":
                    taps = math.ceil(span / s[i])
                    size.append(r_in[i] + int((taps - 1) * j_in[i]))
                    jump.append(j_in[i] / s[i])
                else:
                    size.append(int(math.ceil(r_in[i] + (span - 1) * j_in[i])))
                    jump.append(j_in[i] * s[i])
            r = RF(tuple(size), tuple(jump))
        elif win is None and _keeps_space(n) and not whole:
            sizes = [r.size for r in known if len(r.size) == nsp]
            r = RF(tuple(max(s[i] for s in sizes) for i in range(nsp)), known[0].jump)
        else:
            r = RF(None, known[0].jump)
        for o in n.outputs:
            rf[id(o)] = r
        out[n.name] = r
    return out


def _find_node(m, layer: str):
    names = [n.name for n in m.nodes]
    if layer in names:
        return m.node(layer)
    for v in m.outputs:             # an output's name stands for the node producing it
        if v.name == layer and v.producer is not None:
            return v.producer
    inside = [n for n in m.nodes if layer in n.scope]
    if inside:                      # a block instance (`layer2`) stands for its last layer
        return inside[-1]
    tail = [n for n in m.nodes if n.name.endswith("." + layer)]
    if len(tail) == 1:
        return tail[0]
    hint = (f"'{layer}' names several layers: " + ", ".join(n.name for n in tail[:6])) if tail else \
        (did_you_mean(layer, names) or "layers: " + ", ".join(names[:12]) + (" ..." if len(names) > 12 else ""))
    raise ArchError(f"model {m.name} has no layer '{layer}'", hint=hint)


def receptive_cone(model, layer: str) -> dict[str, tuple | None]:
    """For LAYER and every node it depends on: how much of that node's output (per spatial axis,
    in that output's units; None = all of it) one unit of LAYER sees. Also keyed by input names."""
    m = _ir(model)
    target = _find_node(m, layer)
    if not target.outputs or target.outputs[0].type.rank < 3:
        raise ArchError(f"layer {target.name} has no spatial output ({target.outputs[0].type}): "
                        "it sees the whole input", hint="pick a convolution or pooling layer")
    nsp = target.outputs[0].type.rank - 2
    need: dict[int, tuple | None] = {id(o): (1,) * nsp for o in target.outputs}
    order = m.nodes[:m.nodes.index(target) + 1]
    result: dict[str, tuple | None] = {}
    for n in reversed(order):
        reqs = [need[id(o)] for o in n.outputs if id(o) in need]
        if not reqs:
            continue
        r_out = None if any(r is None for r in reqs) else tuple(max(r[i] for r in reqs) for i in range(nsp))
        result[n.name] = r_out
        win = _window(n, nsp) if n.inputs and n.inputs[0].type.rank == nsp + 2 else None
        for idx, v in enumerate(n.inputs):
            if v.type.rank != nsp + 2:
                continue
            if r_out is None:
                r_in = None
            elif win is not None and idx == 0:
                kind, k, s, d = win
                r_in = []
                for i in range(nsp):
                    span = d[i] * (k[i] - 1) + 1
                    if kind == "transpose":
                        r_in.append(math.ceil((r_out[i] + span - 1) / s[i]))
                    else:
                        r_in.append(int(math.ceil((r_out[i] - 1) * s[i] + span)))
                r_in = tuple(r_in)
            elif _keeps_space(n):
                r_in = r_out
            else:
                r_in = None
            prev = need.get(id(v), ())
            if prev is None or r_in is None:
                need[id(v)] = None
            elif prev == ():
                need[id(v)] = r_in
            else:
                need[id(v)] = tuple(max(a, b) for a, b in zip(prev, r_in))
    for v in m.inputs:
        if id(v) in need:
            result[v.name] = need[id(v)]
    return result


def receptive_field_dot(model, layer: str, rankdir: str = "TB") -> graphviz.Digraph:
    """The model drawn with each layer's receptive field; LAYER highlighted, and the layers it
    depends on annotated with how much of them one unit of LAYER sees."""
    m = _ir(model)
    fields = receptive_fields(m)
    if not fields:
        raise ArchError(f"model {m.name} has no spatial input, so no receptive fields",
                        hint="receptive fields need an input [N, C, *spatial] (images, sequences of "
                             "features) going through convolutions or pools")
    target = _find_node(m, layer)
    cone = receptive_cone(m, target.name)
    t_rf = fields.get(target.name)
    g = graphviz.Digraph(name=f"{m.name}_receptive_field")
    title = f"{m.name}: receptive fields"
    sub_title = (f"one unit of {target.name} sees {fmt_size(t_rf.size) if t_rf else '?'} of the input"
                 if t_rf else "")
    g.attr(rankdir=rankdir.upper(), fontname=FONT, newrank="true", labelloc="t",
           label=f'<<B>{e(title)}</B><BR/><FONT POINT-SIZE="10">{e(sub_title)}</FONT>>')
    g.attr("node", fontname=FONT, fontsize="11", shape="box", style="rounded,filled")
    g.attr("edge", fontname=FONT, color="#555555", fontsize="9")

    ids: dict[int, str] = {}
    for i, v in enumerate(m.inputs):
        nid = f"in{i}"
        ids[id(v)] = nid
        lines = [e(str(v.type))]
        if v.name in cone and cone[v.name] is not None:
            lines.append(f'<FONT COLOR="#b03030">{e(target.name)} sees {e(fmt_size(cone[v.name]))}</FONT>')
        g.node(nid, label="<<B>" + e(v.name) + "</B><BR/>" + "<BR/>".join(
            f'<FONT POINT-SIZE="9">{x}</FONT>' for x in lines) + ">", shape="oval",
            fillcolor="#e3f4e3" if v.name in cone else "#f4f4f4", color="#3d7a3d")

    # clusters by block instance, as in the plain drawing
    tree: dict[tuple, list] = {(): []}
    for i, n in enumerate(m.nodes):
        nid = f"n{i}"
        for o in n.outputs:
            ids[id(o)] = nid
        rf = fields.get(n.name)
        lines = [e(n.name), e(", ".join(str(o.type) for o in n.outputs))]
        if rf is not None:
            lines.append(f"RF {e(rf.text())}" + (f" \u00b7 jump {e(_fmt_jump(rf.jump))}" if rf.size is not None else ""))
        if n.name in cone and n is not target:
            lines.append(f'<FONT COLOR="#b03030">{e(target.name)} sees {e(fmt_size(cone[n.name]))} here</FONT>')
        if n is target:
            style = dict(fillcolor="#fde9d9", color="#c0504d", penwidth="2.5")
        elif n.name in cone:
            style = dict(fillcolor="#eef3fb", color="#4a6fa5")
        else:
            style = dict(fillcolor="#f4f4f4", color="#aaaaaa", fontcolor="#777777")
        lab = ("<<B>" + e(op_label(n.kind, n.op.describe(n.attrs))) + "</B><BR/>"
               + "<BR/>".join(f'<FONT POINT-SIZE="9">{x}</FONT>' for x in lines) + ">")
        for k in range(len(n.scope) + 1):
            tree.setdefault(tuple(n.scope[:k]), [])
        tree[tuple(n.scope)].append((nid, dict(label=lab, **style)))

    count = [0]

    def emit(graph, path):
        for nid, attrs in tree[path]:
            graph.node(nid, **attrs)
        for child in [p for p in tree if len(p) == len(path) + 1 and p[:len(path)] == path]:
            count[0] += 1
            with graph.subgraph(name=f"cluster_{count[0]}") as c:
                sc = m.scopes.get(child[-1])
                c.attr(label=f"<{e(sc.label if sc else child[-1])}>", style="rounded,dashed", color="#999999",
                       labeljust="l", fontname=FONT, fontsize="10")
                emit(c, child)

    emit(g, ())
    for i, n in enumerate(m.nodes):
        for v in n.inputs:
            g.edge(ids[id(v)], f"n{i}")
    for j, v in enumerate(m.outputs):
        oid = f"out{j}"
        g.node(oid, label=f"<<B>{e(v.name)}</B><BR/><FONT POINT-SIZE=\"9\">{e(str(v.type))}</FONT>>",
               shape="oval", fillcolor="#e6eefc", peripheries="2", color="#3d7a3d")
        g.edge(ids[id(v)], oid)
    return g


def receptive_field_text(model) -> str:
    """One line per layer: name, op, receptive field and jump (for the report and tests)."""
    m = _ir(model)
    fields = receptive_fields(m)
    lines = []
    for n in m.nodes:
        rf = fields.get(n.name)
        if rf is None:
            continue
        jump = f"  jump {_fmt_jump(rf.jump)}" if rf.size is not None else ""
        lines.append(f"{n.name}  {op_label(n.kind, n.op.describe(n.attrs))}  RF {rf.text()}{jump}")
    return "\n".join(lines) + ("\n" if lines else "")
