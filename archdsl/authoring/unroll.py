"""`archdsl render --unroll K`: a recurrent model drawn unrolled over K time steps, the way the
lecture figures draw an RNN: one column per step, the input x_t at the bottom, the cell above it,
the hidden state h_t passed along to the next step's cell, and the output y_t above.

    g = unroll_dot(model, 4)            # a graphviz.Digraph
    save_graph(g, "lstm_lm.svg")        # archdsl.authoring.drawing

What is drawn per step and what once:

- a user cell (`Scan(LSTMCell(64))`) is drawn as its step graph at every step, one cluster per
  step, with its states going from the layer that makes them to the layers that read them at
  the next step, and its fixed tensors drawn once and read by every step;
- the recurrent layers (op kinds RNN, LSTM, GRU) are drawn as one cell per step and per layer
  and direction (`num_layers=2` gives two rows of cells, `bidirectional=true` a forward row and
  a backward row whose states flow right to left, `reverse=true` one row flowing right to
  left); state edges carry h_t (and c_t for an LSTM);
- a model input [N, T, ...] whose dim 1 is the time dim of a recurrent layer is drawn per step
  (`tokens_1, tokens_2, ...`, each with its per-step type [N, ...]), and so is every layer that
  maps such sequences to sequences of the same length (Embedding, Linear, Dropout, Concat over
  features, +): those layers work on each step on its own;
- everything else (a layer on a whole sequence, a layer after a many-to-one recurrent layer,
  an initial-state network) is drawn once. The output of a many-to-one layer
  (`return_sequences=false`) and final states (`return_state=true`) leave from the last step;
  initial states (`(x, h0, c0) -> LSTM`) enter the first step;
- weights: a layer drawn per step is the SAME layer at every step. Each such layer gets one
  "shared weights" note, listing its parameters with their shapes, tied to every copy by a
  dashed edge, and every copy's label says "shared".

When the sequence length is not K (T symbolic, or a larger T), steps 1 .. K-1 are drawn, then
an ellipsis, then the last step T. Several time dims (an encoder over S, a decoder over T) are
unrolled side by side with K steps each.
"""
from __future__ import annotations

import graphviz

from ..errors import ArchError
from ..ir.types import TensorType, is_static
from ..passes.cost import op_label
from .drawing import FONT, e, label, sub


def recurrence(n):
    """What a node that carries state over time declares (ops/base.py: Recurrence), or None."""
    return n.op.recurrence(n.app)

_CELL = dict(shape="box", style="rounded,filled", fillcolor="#fde9d9", color="#c0504d", penwidth="1.4")
_OP = dict(shape="box", style="rounded,filled", fillcolor="#eef3fb", color="#4a6fa5")
_IN = dict(shape="oval", style="filled", fillcolor="#e3f4e3", color="#3d7a3d")
_OUT = dict(shape="oval", style="filled", fillcolor="#e6eefc", color="#3d7a3d", peripheries="2")
_NOTE = dict(shape="note", style="filled", fillcolor="#fff8dc", color="#b08d2b", fontsize="9")
_SHARED = dict(style="dashed", color="#b08d2b", arrowhead="none", constraint="false")
_STATE = dict(color="#c0504d", penwidth="1.6", fontcolor="#c0504d", fontsize="10")
_ELLIPSIS = dict(shape="plaintext", label="\u22ef", fontsize="18")


def _ir(model):
    return getattr(model, "ir", model)


def _same(a, b) -> bool:
    """Two dims are the same time axis: equal ints, or equal symbolic dims."""
    if is_static(a) and is_static(b):
        return int(a) == int(b)
    return type(a) is type(b) and a == b


def _step_type(t: TensorType) -> TensorType:
    """The per-step slice [N, ...] of a sequence [N, T, ...]."""
    return t.with_shape(t.shape[:1] + t.shape[2:])


class _Unroller:
    def __init__(self, model, steps: int):
        self.m = _ir(model)
        self.K = int(steps)
        rec = [n for n in self.m.nodes if recurrence(n) is not None]
        if not rec:
            raise ArchError(f"model {self.m.name} has no recurrent layer to unroll",
                            hint="--unroll draws RNN, LSTM and GRU layers over time steps; "
                                 "for other models use plain `archdsl render`")
        if self.K < 1:
            raise ArchError(f"--unroll needs at least 1 time step, got {steps}")
        self.times: list = []
        for n in rec:
            t = n.inputs[0].type.shape[1]
            if not any(_same(t, u) for u in self.times):
                self.times.append(t)
        for t in self.times:
            if is_static(t) and self.K > int(t):
                raise ArchError(f"model {self.m.name} has sequences of {t} steps: cannot unroll {self.K}",
                                hint=f"use --unroll {int(t)} or fewer")
        self._classify()
        self._n = 0

    # -- which values are sequences, which nodes work per step ------------------------------
    def _time_of(self, t: TensorType):
        if t.rank >= 2:
            for u in self.times:
                if _same(t.shape[1], u):
                    return u
        return None

    def _classify(self) -> None:
        self.kind: dict[int, tuple] = {}        # id(value) -> ("seq", T) | ("last", node) | ("final", node, i)
        self.per_step: dict[int, object] = {}   # id(node) -> its time dim
        for v in self.m.inputs:
            t = self._time_of(v.type)
            if t is not None:
                self.kind[id(v)] = ("seq", t)
        for n in self.m.nodes:
            rec = recurrence(n)
            if rec is not None:
                t = n.inputs[0].type.shape[1]
                t = next(u for u in self.times if _same(t, u))
                self.per_step[id(n)] = t
                k = rec.first_state_output
                for j, v in enumerate(n.outputs[:k]):
                    self.kind[id(v)] = ("seq", t) if rec.returns_sequence else ("last", n, j)
                for i, v in enumerate(n.outputs[k:]):
                    self.kind[id(v)] = ("final", n, i)
                continue
            seq_times = [self.kind[id(v)][1] for v in n.inputs if self.kind.get(id(v), ("",))[0] == "seq"]
            if seq_times and all(_same(t, seq_times[0]) for t in seq_times):
                t = seq_times[0]
                if all(o.type.rank >= 2 and _same(o.type.shape[1], t) for o in n.outputs):
                    self.per_step[id(n)] = t
                    for o in n.outputs:
                        self.kind[id(o)] = ("seq", t)

    # -- steps ---------------------------------------------------------------------------
    def _labels(self, t) -> tuple[list[str], bool]:
        """Step labels for time dim t, and whether an ellipsis stands before the last."""
        if is_static(t) and int(t) == self.K:
            return [str(i + 1) for i in range(self.K)], False
        if self.K == 1:
            return ["1"], False
        return [str(i + 1) for i in range(self.K - 1)] + [str(t)], True

    def _fresh(self, kind: str) -> str:
        self._n += 1
        return f"{kind}{self._n}"

    # -- drawing -------------------------------------------------------------------------
    def draw(self) -> graphviz.Digraph:
        m = self.m
        g = graphviz.Digraph(name=f"{m.name}_unrolled")
        g.attr(rankdir="BT", fontname=FONT, newrank="true", nodesep="0.35", ranksep="0.45",
               label=label(f"{m.name} unrolled over {self.K} time step{'s' if self.K != 1 else ''}",
                           "the same weights at every step (dashed: shared)"), labelloc="t")
        g.attr("node", fontname=FONT, fontsize="11")
        g.attr("edge", fontname=FONT, color="#555555", fontsize="9")
        self.g = g
        self.copies: dict[int, list[str]] = {}      # id(value or node) -> node ids, one per step
        self.single: dict[int, str] = {}            # id(value) -> node id of a value drawn once
        self.rows: dict[int, list[dict]] = {}       # id(recurrent node) -> its rows of cells
        self.notes: dict[tuple, str] = {}           # (layer instance, params) -> its note
        self.cell_steps: dict[int, list] = {}       # id(scan node) -> per step: id(body value) -> node id

        for v in m.inputs:
            if id(v) in self.kind:
                labs, _ = self._labels(self.kind[id(v)][1])
                ids = self._row([label(sub(v.name, s), e(str(_step_type(v.type))), raw_title=True) for s in labs],
                                _IN, self.kind[id(v)][1])
                self.copies[id(v)] = ids
            else:
                nid = self._fresh("in")
                g.node(nid, label=label(v.name, e(str(v.type))), **_IN)
                self.single[id(v)] = nid

        for n in m.nodes:
            rec = recurrence(n)
            if rec is not None and rec.body is not None:
                self._cell(n, rec)
            elif rec is not None:
                self._recurrent(n)
            elif id(n) in self.per_step:
                self._per_step(n)
            else:
                self._once(n)

        for v in m.outputs:
            k = self.kind.get(id(v), ("",))
            if k[0] == "seq":
                labs, _ = self._labels(k[1])
                ids = self._row([label(sub(v.name, s), e(str(_step_type(v.type))), raw_title=True) for s in labs],
                                _OUT, k[1])
                for j, oid in enumerate(ids):
                    if oid is not None:
                        g.edge(self._src(v, j), oid)
            else:
                oid = self._fresh("out")
                g.node(oid, label=label(v.name, e(str(v.type))), **_OUT)
                for src, lab in self._final_sources(v):
                    g.edge(src, oid, label=lab)
        return g

    def _row(self, labels: list[str], style: dict, t, order: bool = True) -> list[str | None]:
        """One node per step in one rank, left to right (an ellipsis node before the last step
        when the sequence is longer than drawn). Returns the step nodes' ids."""
        _, ellipsis = self._labels(t)
        ids = [self._fresh("s") for _ in labels]
        with self.g.subgraph() as s:
            s.attr(rank="same")
            chain = list(ids)
            for nid, lab in zip(ids, labels):
                s.node(nid, label=lab, **style)
            if ellipsis:
                el = self._fresh("dots")
                s.node(el, **_ELLIPSIS)
                chain.insert(len(chain) - 1, el)
                self._last_ellipsis = el
            else:
                self._last_ellipsis = None
            if order:       # recurrent rows are ordered by their state edges
                for a, b in zip(chain, chain[1:]):
                    s.edge(a, b, style="invis")
        return ids

    def _src(self, v, j: int) -> str:
        """The node that gives value v to step j (a per-step copy, or the node drawn once)."""
        if id(v) in self.copies:
            return self.copies[id(v)][j]
        if id(v) in self.single:
            return self.single[id(v)]
        k = self.kind.get(id(v))
        if k and k[0] in ("last", "final"):
            return self._final_sources(v)[0][0]
        raise AssertionError(f"unrolled drawing lost track of {v.name}")   # pragma: no cover

    def _final_sources(self, v) -> list[tuple[str, str]]:
        """(node id, edge label) of where a value drawn once comes from: the last step of a
        many-to-one layer / final state, or the node itself."""
        k = self.kind.get(id(v), ("",))
        if k[0] in ("last", "final") and id(k[1]) in self.cell_steps:
            return [self._cell_final(k[1], k[0], k[2])]
        if k[0] in ("last", "final"):
            n = k[1]
            rows = self.rows[id(n)]
            top = max(r["layer"] for r in rows)
            state = ""
            if k[0] == "final":
                state = n.op.states[k[2]].rstrip("0")
            out = []
            for r in rows:
                if r["layer"] == top or k[0] == "final":
                    last = r["ids"][0] if r["backward"] else r["ids"][-1]
                    t_lab = self._labels(self.per_step[id(n)])[0]
                    step = t_lab[0] if r["backward"] else t_lab[-1]
                    name = state or "h"
                    out.append((last, f"<{sub(name, step)}>"))
            return out
        if id(v) in self.copies:     # a whole sequence into a layer drawn once: every step
            return [(c, "") for c in self.copies[id(v)]]
        return [(self.single[id(v)], "")]

    def _inputs_to(self, n, dst_of_step) -> None:
        """Edges into a per-step node: step j from step j of each sequence input, from the node
        drawn once for others."""
        for v in n.inputs:
            k = self.kind.get(id(v), ("",))
            if k[0] == "seq":
                for j, dst in enumerate(dst_of_step):
                    self.g.edge(self.copies[id(v)][j], dst)
            else:
                for src, lab in self._final_sources(v):
                    for dst in dst_of_step:
                        self.g.edge(src, dst, label=lab)

    def _shared_note(self, n, local_names: list[str], ids: list[str], title: str) -> None:
        """A note at the right end of the row listing the layer's parameters, tied to every
        copy by a dashed edge: one set of weights, used at every step."""
        if not local_names:
            return
        key = (n.instance or n.name, tuple(local_names))
        if key in self.notes:       # a layer applied twice (weight sharing): one note for both
            for c in ids:
                self.g.edge(self.notes[key], c, **_SHARED)
            return
        params = self.m.parameters
        lines = [f"{e(k)} [{', '.join(map(str, params[n.params[k]].shape))}]" for k in local_names]
        nid = self.notes[key] = self._fresh("w")
        with self.g.subgraph() as s:
            s.attr(rank="same")
            s.node(ids[-1])         # same rank as the row, right of its last step
            s.node(nid, label=label(title, *lines), **_NOTE)
            s.edge(ids[-1], nid, style="invis")
        for c in ids:
            self.g.edge(nid, c, **_SHARED)

    def _per_step(self, n) -> None:
        t = self.per_step[id(n)]
        labs, _ = self._labels(t)
        out_t = ", ".join(str(_step_type(o.type)) for o in n.outputs)
        shared = " \u00b7 shared" if n.params else ""
        ids = self._row([label(op_label(n.kind, n.op.describe(n.attrs)), f"{e(n.name)} \u00b7 t={e(s)}{shared}",
                               e(out_t)) for s in labs], _OP, t)
        self._inputs_to(n, ids)
        for o in n.outputs:
            self.copies[id(o)] = ids
        self._shared_note(n, list(n.params), ids, f"{n.name}: shared weights")

    def _once(self, n) -> None:
        nid = self._fresh("n")
        self.g.node(nid, label=label(op_label(n.kind, n.op.describe(n.attrs)), e(n.name),
                                     e(", ".join(str(o.type) for o in n.outputs))), **_OP)
        for v in n.inputs:
            for src, lab in self._final_sources(v):
                self.g.edge(src, nid, label=lab)
        for o in n.outputs:
            self.single[id(o)] = nid

    def _recurrent(self, n) -> None:
        rec = recurrence(n)
        t = self.per_step[id(n)]
        labs, ellipsis = self._labels(t)
        L, D = rec.layers, rec.directions
        states = ", ".join(s.rstrip("0") for s in rec.states)
        step_state = ", ".join(map(str, rec.state_type.shape[1:]))
        rows: list[dict] = []
        for k in range(L):
            for d in range(D):
                backward = d == 1 or rec.reverse
                arrow = "\u2190" if backward else "\u2192"
                where = " ".join(x for x in (f"layer {k + 1}" if L > 1 else "",
                                             arrow if D == 2 or rec.reverse else "") if x)
                ids = self._row([label(rec.cell, f"{e(' '.join(filter(None, (n.name, where))))} \u00b7 t={e(s)} \u00b7 shared",
                                       e(f"{states}: [{step_state}]")) for s in labs], _CELL, t, order=False)
                row = dict(layer=k, backward=backward, ids=ids, ellipsis=self._last_ellipsis)
                if d == 1:      # the backward row one rank above the forward one, step under step
                    for x, y in zip(rows[-1]["ids"], ids):
                        self.g.edge(x, y, style="invis")
                rows.append(row)
                # into the cells: the sequence (layer 0) or the layer below (both directions)
                if k == 0:
                    v = n.inputs[0]
                    for j, dst in enumerate(ids):
                        if id(v) in self.copies:
                            self.g.edge(self.copies[id(v)][j], dst)
                        else:       # a sequence made by a layer drawn once: step j of it
                            for src, _ in self._final_sources(v):
                                self.g.edge(src, dst, label=f"<{sub('step', labs[j])}>")
                else:
                    for below in rows:
                        if below["layer"] == k - 1:
                            for src, dst in zip(below["ids"], ids):
                                self.g.edge(src, dst)
                # the state along time: forward rows left to right, backward rows right to left
                # (drawn from left to right with the arrow at the tail, which keeps the order)
                chain = list(ids)
                if row["ellipsis"] is not None:
                    chain.insert(len(chain) - 1, row["ellipsis"])

                def step_of(node, backward=backward):
                    if node == row["ellipsis"]:
                        return str(len(labs)) if backward else str(t - 1)
                    return labs[ids.index(node)]

                for x, y in zip(chain, chain[1:]):
                    if backward:
                        self.g.edge(x, y, label=_state_label(states, step_of(y)), dir="back", **_STATE)
                    else:
                        self.g.edge(x, y, label=_state_label(states, step_of(x)), **_STATE)
                # initial states enter the first step of the row
                first = ids[-1] if backward else ids[0]
                for i, v in enumerate(n.inputs[rec.first_state:]):   # (after x [, lengths])
                    name = rec.states[i].rstrip("0")
                    for src, _ in self._final_sources(v):
                        self.g.edge(src, first, label=f"<{sub(name, 0)}>", **_STATE)
                self._shared_note(n, list(rec.cell_params[k * D + d]), ids,
                                  f"{n.name}{' ' + where if where else ''}: shared weights")
        self.rows[id(n)] = rows
        if rec.returns_sequence:
            top = [r for r in rows if r["layer"] == L - 1]
            if len(top) == 1:
                self.copies[id(n.outputs[0])] = top[0]["ids"]
            else:       # both directions' states at step j, concatenated
                ids = self._row(["<&#8853;>" for _ in labs],
                                dict(shape="circle", width="0.3", fixedsize="true", style="filled",
                                     fillcolor="#ffffff", color="#777777", fontsize="12",
                                     tooltip="the two directions concatenated"), t)
                for r in top:
                    for src, dst in zip(r["ids"], ids):
                        self.g.edge(src, dst)
                self.copies[id(n.outputs[0])] = ids


    # -- a user cell (Scan): the step graph drawn at every step ------------------------------------
    def _cell(self, n, rec) -> None:
        """Each drawn step of the cell as a cluster holding the step graph's layers; the states
        go from the layer that makes them at one step to the layers that read them at the next
        (right to left when reversed), the step inputs come in from the sequence's step, the
        fixed tensors from where they are made, once for every step."""
        body = rec.body
        bm = body.model
        t = self.per_step[id(n)]
        labs, ellipsis = self._labels(t)
        n_seq, n_fixed = len(body.inputs), len(body.fixed)
        state_in = bm.inputs[n_seq + n_fixed:]
        next_state = bm.outputs[len(body.outputs):]
        steps: list[dict] = []
        for j, s in enumerate(labs):
            ids: dict[int, str] = {}
            with self.g.subgraph(name=f"cluster_{self._fresh('step')}") as c:
                c.attr(label=label(f"{rec.cell} \u00b7 t={s}", e(n.name)), style="rounded,filled", fillcolor="#fdf3ee",
                       color="#c0504d", fontname=FONT, fontsize="10")
                for b in bm.nodes:
                    nid = self._fresh("c")
                    shared = " \u00b7 shared" if b.params else ""
                    c.node(nid, label=label(op_label(b.kind, b.op.describe(b.attrs)), f"{e(b.name)}{shared}",
                                            e(", ".join(str(o.type) for o in b.outputs))), **_OP)
                    for o in b.outputs:
                        ids[id(o)] = nid
                    ids[id(b)] = nid
            steps.append(ids)
        self.cell_steps[id(n)] = steps
        order = list(range(len(labs)))
        if rec.reverse:
            order.reverse()
        # the step inputs (x_t) and the fixed tensors
        for j, ids in enumerate(steps):
            for b in bm.nodes:
                for v in b.inputs:
                    if v.producer is not None:
                        self.g.edge(ids[id(v.producer)], ids[id(b)])
                        continue
                    i = bm.inputs.index(v)
                    if i < n_seq:
                        outer = n.inputs[i]
                        if id(outer) in self.copies:
                            self.g.edge(self.copies[id(outer)][j], ids[id(b)])
                        else:
                            for src, _ in self._final_sources(outer):
                                self.g.edge(src, ids[id(b)], label=f"<{sub('step', labs[j])}>")
                    elif i < n_seq + n_fixed:
                        outer = n.inputs[rec.first_state - n_fixed + (i - n_seq)]
                        for src, lab in self._final_sources(outer):
                            self.g.edge(src, ids[id(b)], label=lab)
        # the states along time
        dots = None
        for k, (sin, sout) in enumerate(zip(state_in, next_state)):
            name = rec.states[k]
            readers = [b for b in bm.nodes if any(v is sin for v in b.inputs)]
            for pos in range(len(order)):
                j = order[pos]
                if pos == 0:            # the first step drawn reads the initial state
                    given = rec.first_state + k < len(n.inputs)
                    if given:
                        srcs = [src for src, _ in self._final_sources(n.inputs[rec.first_state + k])]
                    else:
                        zero = self._fresh("zero")
                        self.g.node(zero, label=label(f"{name} = 0", "initial state"), **_IN)
                        srcs = [zero]
                    for b in readers:
                        for src in srcs:
                            self.g.edge(src, steps[j][id(b)], label=f"<{sub(name, 0)}>", **_STATE)
                    continue
                prev = order[pos - 1]
                src = self._value_at(steps[prev], sout, n, prev)
                if ellipsis and {prev, j} == {len(labs) - 2, len(labs) - 1}:
                    if dots is None:        # one ellipsis for all the states between the steps
                        dots = self._fresh("dots")
                        self.g.node(dots, **_ELLIPSIS)
                    self.g.edge(src, dots, label=f"<{sub(name, labs[prev])}>", constraint="false", **_STATE)
                    src, step_lab = dots, (str(t - 1) if not rec.reverse else str(len(labs)))
                else:
                    step_lab = labs[prev]
                for b in readers:       # (no rank constraint: the steps stand side by side)
                    self.g.edge(src, steps[j][id(b)], label=f"<{sub(name, step_lab)}>", constraint="false",
                                **_STATE)
        # every step's outputs
        if rec.returns_sequence:
            for jj, v in enumerate(n.outputs[:rec.first_state_output]):
                self.copies[id(v)] = [self._value_at(steps[j], bm.outputs[jj], n, j) for j in range(len(labs))]
        params = list(n.params)
        if params:
            anchors = [next((ids[id(b)] for b in bm.nodes if b.params), None) for ids in steps]
            self._shared_note(n, params, [a for a in anchors if a is not None], f"{n.name}: shared weights")

    def _value_at(self, ids: dict, v, n, j: int) -> str:
        """The node giving the step graph's value v at drawn step j."""
        if id(v) in ids:
            return ids[id(v)]
        bm = recurrence(n).body.model
        i = bm.inputs.index(v)          # a value the step passes straight through
        outer = n.inputs[i] if i < len(n.inputs) else None
        if outer is not None and id(outer) in self.copies:
            return self.copies[id(outer)][j]
        return self._final_sources(outer)[0][0]

    def _cell_final(self, n, kind: str, i: int) -> tuple[str, str]:
        """Where a scanned cell's last output or final state i leaves: its last step."""
        rec = recurrence(n)
        steps = self.cell_steps[id(n)]
        j = 0 if rec.reverse else len(steps) - 1
        labs = self._labels(self.per_step[id(n)])[0]
        bm = rec.body.model
        v = bm.outputs[i] if kind == "last" else bm.outputs[rec.first_state_output + i]
        name = rec.body.outputs[i] if kind == "last" else rec.states[i]
        return self._value_at(steps[j], v, n, j), f"<{sub(name, labs[j])}>"


def _state_label(states: str, step) -> str:
    return "<" + ", ".join(sub(s.strip(), step) for s in states.split(",")) + ">"


def unroll_dot(model, steps: int) -> graphviz.Digraph:
    """The unrolled drawing of a recurrent model over `steps` time steps (see the module doc)."""
    return _Unroller(model, steps).draw()
