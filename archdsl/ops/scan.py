"""Scan: a user-defined cell (a `cell` definition: one step of a recurrence) run over a sequence.

    h = x -> Scan(LSTMCell(128))                                        # every step's output
    y, alpha, s, c = (y_in, enc) -> Scan(BahdanauDecoder(64), return_state=true)
    h, h_n = (x, lengths, h0) -> Scan(GRUCell(64), lengths=true, reverse=true, return_state=true)

Inputs, in this order (the fused layers' order, with the cell's fixed tensors before the
states): one sequence [N, T, ...] per `input` of the cell (step t reads x[:, t]); with
lengths=true the valid steps of each right-padded row, lengths: i32/i64[N]; one tensor per
`fixed` of the cell (the same at every step: encoder outputs, an image's feature map); then,
optionally, initial states, one per `state` in order (those not given start at zero).

Outputs: each of the cell's outputs over the steps, [N, T, ...] (return_sequences=true), or at
the last step (the row's last valid step with lengths; t = 0 with reverse=true); then, with
return_state=true, the final states. Padded batches follow the fused layers (ONNX's
sequence_lens, PyTorch's packed sequences): row n runs steps 0..lengths[n]-1 only (reversed:
from lengths[n]-1 down to 0), its outputs are 0 at the other steps and its states are those
after its last valid step.

The application holds the cell's step graph (ir/cell.py), elaborated at the step types; its
parameters are the cell's, named under the scan (`lstmcell_1.ih.weight`). It declares itself
recurrent (`recurrence`, with the step graph as `body`), so sampling carries the cell's states,
summaries and `--explain` show the step, and `render --unroll` draws it step by step.

NumPy engine: the step graph's ops run once per step on the autodiff engine, so
backpropagation through time is the tape's; work that depends on no state is hoisted out of the
loop (`classify`): the input projections of x_t run once on all steps, a projection of the
fixed tensors once, and the weight gradients of the layers applied at every step are summed in
one GEMM per weight (autodiff/linear.py, deferred_weight_grads). ONNX: one `Scan` node whose
body is the step graph (lowered by the same ops), reading the weights, the fixed tensors and
what is computed from them alone from the outer graph; padded batches scan a [N, T] mask along
with the inputs and keep a row's state where it is done.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import helper

from ..autodiff import Tensor
from ..autodiff import functional as F
from ..backends.torch.lazy import torch
from ..errors import ArchError
from ..ir.cell import Cell, CellBody
from ..ir.types import Sym, TensorType, is_static, resolve_dim
from .base import DOT, Arg, Op, Recurrence, Sample, _prod

INT_LENGTH_DTYPES = ("i32", "i64")


@dataclass(eq=False)
class ScanLayout:
    """What `Scan.derive` works out: where each kind of input sits and the cell's step graph."""
    cell: Cell
    body: CellBody
    first_fixed: int                # input index of the first fixed tensor
    first_state: int                # input index of the first initial state
    lengths: int | None             # input index of lengths, if any
    given: int                      # initial states given
    batch: object                   # N
    time: object                    # T
    sources: dict                   # dim -> (input index, axis): where its size can be read
    plan: object = field(default=None, repr=False)      # the NumPy step plan, built on first use
    torch_plan: object = field(default=None, repr=False)    # the PyTorch engine's, likewise

    @property
    def n_seq(self) -> int:
        return len(self.cell.inputs)

    @property
    def n_out(self) -> int:
        return len(self.body.outputs)


class Scan(Op):
    """Runs a cell over the time steps of a sequence: step t maps the inputs at t, the cell's
    fixed tensors and the states of step t-1 to its outputs and the states of step t (forward,
    reverse=true, padded batches with lengths=true, initial states as inputs)."""
    name = "Scan"
    family = "recurrent"
    n_inputs = (1, -1)
    args = (Arg("cell", "cell", doc="the cell to run, e.g. LSTMCell(128)"),
            Arg("reverse", "bool", False, doc="run from the last step to the first"),
            Arg("return_sequences", "bool", True, doc="every step's outputs [N, T, ...] (else the last step's)"),
            Arg("return_state", "bool", False, doc="also return the final states"),
            Arg("lengths", "bool", False,
                doc="a second input lengths: i32/i64[N], the valid steps of each right-padded row"))
    _CELLS = 'import "std/cells.arch"'
    samples = (Sample("x: f32[N, T, 3] -> Scan(LSTMCell(4))", defs=_CELLS),
               Sample("(x: f32[N, T, 2], lengths: i64[N], h0: f32[N, 3]) -> "
                      "Scan(GRUCell(3), lengths=true, reverse=true, return_state=true)",
                      values={"lengths": (1, 6)}, defs=_CELLS),
               Sample("(x: f32[N, T, 2], m: f32[N, S, 3]) -> Scan(Attend(3), return_sequences=false, "
                      "return_state=true)",
                      defs="cell Attend(d: int) {\n  input x: f32[N, C]\n  fixed m: f32[N, S, D]\n"
                           "  state s: f32[N, d]\n  a = (m @ (s -> Unsqueeze(2))) -> Softmax(axis=1)\n"
                           "  ctx = ((a -> Transpose((0, 2, 1))) @ m)[:, 0]\n"
                           "  s = tanh(((x, ctx) -> Concat(axis=1) -> Linear(d)) + (s -> Linear(d)))\n"
                           "  output s\n  output a[..., 0]\n}\n"))

    # -- shape rule ----------------------------------------------------------------------------
    def derive(self, a) -> ScanLayout:
        cell = a.attrs["cell"]
        if not isinstance(cell, Cell):
            raise self.fail(f"needs a cell to run, got {cell!r}", "e.g. x -> Scan(LSTMCell(64)) with "
                                                                   "import \"std/cells.arch\"")
        lengths = a.attrs["lengths"]
        first_fixed = len(cell.inputs) + (1 if lengths else 0)
        first_state = first_fixed + len(cell.fixed)
        order = ", ".join(cell.inputs + (("lengths",) if lengths else ()) + cell.fixed
                          + tuple(f"{s}0" for s in cell.states))
        n = len(a.in_types)
        if not first_state <= n <= first_state + len(cell.states):
            raise self.fail(f"{cell.label} takes ({order}), the initial states optional; got {n} input"
                            f"{'s' if n != 1 else ''}",
                            "pipe a tuple: (" + ", ".join(cell.inputs + (("lengths",) if lengths else ()) + cell.fixed)
                            + ") -> Scan(...)")
        batch = time = None
        steps = []
        for name, t in zip(cell.inputs, a.in_types):
            if t.rank < 2:
                raise self.fail(f"the cell's input '{name}' must be a sequence [N, T, ...] (batch, time, ...), got {t}",
                                "a scan reads step t of each input along dim 1")
            if batch is None:
                batch, time = t.shape[0], t.shape[1]
            elif not (self.same_dim(a, t.shape[0], batch, "the sequences must share their batch dim")
                      and self.same_dim(a, t.shape[1], time, "the sequences must have the same length")):
                raise self.fail(f"the sequences must share their batch and time dims: {a.in_types[0]} vs {t}")
            steps.append(t.with_shape(t.shape[:1] + t.shape[2:]))
        if lengths:
            ln = a.in_types[len(cell.inputs)]
            if ln.dtype not in INT_LENGTH_DTYPES or ln.rank != 1:
                raise self.fail(f"lengths=true expects lengths i64[N] (or i32) after the sequences, got {ln}",
                                f"inputs in this order: ({order})")
            if not self.same_dim(a, ln.shape[0], batch, "the lengths must have one entry per batch row"):
                raise self.fail(f"the lengths' batch dim does not match the sequences': {ln} vs {a.in_types[0]}")
        body = cell.body(steps, a.in_types[first_fixed:first_state])
        for i, (name, t) in enumerate(zip(cell.states, a.in_types[first_state:])):
            want = body.state_types[i]
            if t.dtype != want.dtype or t.rank != want.rank or not all(
                    self.same_dim(a, x, y, f"initial state {name}0 must have the state's type")
                    for x, y in zip(t.shape, want.shape)):
                raise self.fail(f"initial state {name}0 must have the type of state '{name}' of {cell.label}, {want}; "
                                f"got {t}", f"state '{name}' is declared at {body.state_spans[i]}")
        for name, t in zip(body.outputs, body.output_types):
            if t.rank < 1:
                raise self.fail(f"the cell's output '{name}' must keep the batch dim, got {t}")
        sources: dict = {}
        for i, t in enumerate(a.in_types):
            for axis, d in enumerate(t.shape):
                if not is_static(d):
                    sources.setdefault(d, (i, axis))
        return ScanLayout(cell, body, first_fixed, first_state, len(cell.inputs) if lengths else None,
                          n - first_state, batch, time, sources)

    def infer(self, a):
        lay, attrs = a.derived, a.attrs
        outs = [t.with_shape(t.shape[:1] + (lay.time,) + t.shape[1:]) if attrs["return_sequences"] else t
                for t in lay.body.output_types]
        if attrs["return_state"]:
            outs += list(lay.body.state_types)
        return outs

    def params(self, a):
        return {k: p.spec for k, p in a.derived.body.model.parameters.items()}

    # -- what other passes need to know ----------------------------------------------------------
    def recurrence(self, a):
        lay, attrs = a.derived, a.attrs
        body = lay.body
        return Recurrence(states=lay.cell.states, first_state=lay.first_state, state_type=body.state_types[0],
                          returns_states=bool(attrs["return_state"]), lengths_input=lay.lengths,
                          forward_in_time=not attrs["reverse"] and attrs["return_sequences"],
                          return_states={"return_state": True}, cell=lay.cell.label, reverse=bool(attrs["reverse"]),
                          returns_sequence=bool(attrs["return_sequences"]), cell_params=(tuple(a.params),),
                          state_types=body.state_types, first_state_output=lay.n_out, body=body)

    def time_local(self, a):
        return self.recurrence(a).forward_in_time

    def stochastic(self, a):
        return any(n.op.stochastic(n.app) for n in a.derived.body.model.nodes)

    def batch_coupled(self, a):
        return any(n.op.batch_coupled(n.app) for n in a.derived.body.model.nodes)

    def macs(self, a, in_shapes, out_shapes):
        lay = a.derived
        binding = _bind_symbols(a.in_types, in_shapes)
        T = int(in_shapes[0][1])

        def shape(t):
            return [resolve_dim(d, binding) or 1 for d in t.shape]
        kind = classify(lay)
        total = 0
        for n in lay.body.model.nodes:       # what reads no step input or state is done once
            macs = int(n.op.macs(n.app, [shape(v.type) for v in n.inputs], [shape(v.type) for v in n.outputs]))
            total += macs if kind[id(n)] == "const" else T * macs
        return total

    def explain(self, a):
        lay, attrs = a.derived, a.attrs
        body, cell = lay.body, lay.cell
        m = body.model
        k = lay.n_seq + len(cell.fixed)
        ins = [f"{v.name}_t {v.type}" for v in m.inputs[:lay.n_seq]]
        ins += [f"{v.name} {v.type} (fixed)" for v in m.inputs[lay.n_seq:k]]
        ins += [f"{v.name}_(t-1) {v.type}" for v in m.inputs[k:]]
        outs = [f"{name}_t {t}" for name, t in zip(body.outputs, body.output_types)]
        steps = f"{lay.time} steps" if is_static(lay.time) else f"the {lay.time} steps"
        how = "last to first" if attrs["reverse"] else "first to last"
        lines = [f"Scan of {cell.label} over {steps} of {', '.join(cell.inputs)}, {how}"
                 + (", each row over its lengths[n] valid steps" if attrs["lengths"] else ""),
                 f"step t: {', '.join(ins)} \u2192 {', '.join(outs)}; next states "
                 + ", ".join(f"{name}_t" for name in cell.states)]
        for n in m.nodes:
            label = n.op.describe(n.attrs)
            lines.append(f"  {n.name}  {n.kind}{f'({label})' if label else ''}  \u2192 "
                         f"{', '.join(str(v.type) for v in n.outputs)}")
            lines += [f"      {ln}" for ln in n.op.explain(n.app)]
        shown = [f"{name} {t}" for name, t in zip(body.outputs, a.out_types)]
        lines.append("outputs: " + ", ".join(shown) + (" (every step)" if attrs["return_sequences"] else
                                                      " (the last step)")
                     + (", then the final states" if attrs["return_state"] else ""))
        trained = [(k, s) for k, s in a.params.items() if not s.buffer]
        if trained:
            total = sum(_prod(s.shape) for _, s in trained)
            terms = " + ".join(DOT.join(map(str, s.shape)) for _, s in trained)
            lines.append(f"params: {terms} = {total:,}, the same at every step (counted once)")
        return lines

    # -- NumPy ---------------------------------------------------------------------------------
    def forward(self, a, ctx, inputs, params):
        lay, attrs = a.derived, a.attrs
        plan = lay.plan or self._plan(lay)
        body = lay.body
        n_out, n_states = lay.n_out, len(lay.cell.states)
        T = int(inputs[0].shape[1])
        hoisted = _run_hoisted(plan, ctx, inputs, lay, params)
        states = list(inputs[lay.first_state:])
        dtype = _float_dtype(inputs, params)
        for i in range(len(states), n_states):
            states.append(Tensor(np.zeros(self._concrete(lay, body.state_types[i], inputs), dtype)))
        masks = None
        if lay.lengths is not None:
            lens = _lengths(self, a, inputs[lay.lengths], inputs[0].shape[0], T)
            masks = [lens > t for t in range(T)]
        per_node = [{k: params[p] for k, p in items} for items in plan.node_params]
        order = range(T - 1, -1, -1) if attrs["reverse"] else range(T)
        steps_in = [hoisted[s] for s in plan.step_slots]      # per step-varying slot: T tensors
        blank = [None] * plan.n
        for k, s in plan.constants:
            blank[k] = hoisted[s]
        with F.deferred_weight_grads(list(params.values())):
            states, ys, last = self._steps(plan, ctx, order, steps_in, blank, states, per_node, masks, n_out, T)
        outs = [F.stack(seq, axis=1) for seq in ys] if attrs["return_sequences"] else list(last)
        if attrs["return_state"]:
            outs += states
        return outs

    @staticmethod
    def _steps(plan, ctx, order, steps_in, blank, states, per_node, masks, n_out, T):
        """The step loop: every step's outputs, the last ones (per row, with lengths), the states."""
        ys = [[None] * T for _ in range(n_out)]
        last = [None] * n_out
        for t in order:
            env = list(blank)
            for slot, seq in zip(plan.step_slots, steps_in):
                env[slot] = seq[t]
            for i, st in enumerate(states):
                env[plan.state_slots[i]] = st
            for (fwd, app, ins, outs), p in zip(plan.steps, per_node):
                res = fwd(app, ctx, [env[i] for i in ins], p)
                for i, r in zip(outs, res):
                    env[i] = r
            got = [env[i] for i in plan.outputs]
            y, nxt = got[:n_out], got[n_out:]
            if masks is not None:
                m = masks[t]
                nxt = [F.where(_rows(m, s), s, old) for s, old in zip(nxt, states)]
                last = [F.where(_rows(m, o), o, 0.0 if prev is None else prev) for o, prev in zip(y, last)]
                y = [F.where(_rows(m, o), o, 0.0) for o in y]
            else:
                last = y
            states = nxt
            for j in range(n_out):
                ys[j][t] = y[j]
        return states, ys, last

    # -- PyTorch -------------------------------------------------------------------------------
    def torch_forward(self, a, ctx, inputs, params):
        """The step graph's ops (their torch_forward) run once per step, as the NumPy engine's
        loop runs them (without its hoisting: autograd records the steps)."""
        lay, attrs = a.derived, a.attrs
        if ctx.tracing:
            raise ArchError("export --format torch cannot write a Scan (a cell run over time steps) yet", a.span,
                            "export the model to ONNX (-o model.onnx); train --engine torch runs it")
        n_slots, nodes, out_slots = lay.torch_plan or self._torch_plan(lay)
        n_seq, n_out, n_fixed = lay.n_seq, lay.n_out, len(lay.cell.fixed)
        x0 = inputs[0]
        T = int(x0.shape[1])
        like = next((t for t in list(params.values()) + list(inputs) if t.is_floating_point()), None)
        dtype = like.dtype if like is not None else torch.float32
        states = list(inputs[lay.first_state:])
        for i in range(len(states), len(lay.cell.states)):
            states.append(torch.zeros(self._concrete(lay, lay.body.state_types[i], inputs), dtype=dtype,
                                      device=x0.device))
        masks = None
        if lay.lengths is not None:
            lens = _lengths(self, a, inputs[lay.lengths].detach().cpu().numpy(), int(x0.shape[0]), T)
            masks = [torch.as_tensor(lens > t, device=x0.device) for t in range(T)]
        fixed = inputs[lay.first_fixed:lay.first_state]
        ys, last = [[None] * T for _ in range(n_out)], [None] * n_out
        for t in (range(T - 1, -1, -1) if attrs["reverse"] else range(T)):
            env = [None] * n_slots
            env[:n_seq + n_fixed + len(states)] = [x[:, t] for x in inputs[:n_seq]] + list(fixed) + states
            for fwd, app, ins, outs, items in nodes:
                for k, r in zip(outs, fwd(app, ctx, [env[i] for i in ins], {k: params[p] for k, p in items})):
                    env[k] = r
            got = [env[i] for i in out_slots]
            y, nxt = got[:n_out], got[n_out:]
            if masks is not None:       # a finished row keeps its state; its outputs are 0
                m = masks[t]
                nxt = [torch.where(_rows(m, s), s, old) for s, old in zip(nxt, states)]
                last = [torch.where(_rows(m, o), o, torch.zeros_like(o) if prev is None else prev)
                        for o, prev in zip(y, last)]
                y = [torch.where(_rows(m, o), o, torch.zeros_like(o)) for o in y]
            else:
                last = y
            states = nxt
            for j in range(n_out):
                ys[j][t] = y[j]
        outs = [torch.stack(seq, 1) for seq in ys] if attrs["return_sequences"] else list(last)
        return outs + states if attrs["return_state"] else outs

    @staticmethod
    def _torch_plan(lay: ScanLayout):
        """(slots, the step graph's nodes as (torch_forward, app, input slots, output slots,
        parameter items), the output slots), cached on the layout."""
        m = lay.body.model
        slot = m.value_slots()
        nodes = [(n.op.torch_forward, n.app, tuple(slot[id(v)] for v in n.inputs),
                  tuple(slot[id(v)] for v in n.outputs), tuple(n.params.items())) for n in m.nodes]
        lay.torch_plan = (len(slot), nodes, [slot[id(v)] for v in m.outputs])
        return lay.torch_plan

    def _plan(self, lay: ScanLayout):
        lay.plan = _StepPlan(lay)
        return lay.plan

    def _concrete(self, lay: ScanLayout, t: TensorType, inputs) -> tuple:
        shape = []
        for d in t.shape:
            if is_static(d):
                shape.append(int(d))
                continue
            src = lay.sources.get(d)
            if src is None:
                raise ArchError(f"Scan: cannot tell the size {d} of a state of {lay.cell.label} from its inputs",
                                lay.cell.span, "give the initial states as inputs")
            shape.append(int(inputs[src[0]].shape[src[1]]))
        return tuple(shape)

    # -- ONNX ----------------------------------------------------------------------------------
    def lower(self, a, g, inputs):
        lay, attrs = a.derived, a.attrs
        body, cell = lay.body, lay.cell
        m = body.model
        n_seq, n_out = lay.n_seq, lay.n_out
        rev = 1 if attrs["reverse"] else 0
        keep_last = not attrs["return_sequences"]
        init = list(inputs[lay.first_state:])
        for i in range(len(init), len(cell.states)):
            init.append(self._zeros(a, g, inputs, body.state_types[i]))
        mask = self._mask(a, g, inputs) if lay.lengths is not None else None
        last_init = [self._zeros(a, g, inputs, t) for t in body.output_types] if keep_last and mask is not None else []
        node = g.node.name
        sub = g.child(node)
        s_in = [sub.fresh(f"{node}/{s}_prev") for s in cell.states]
        l_in = [sub.fresh(f"{node}/{o}_last") for o in body.outputs[:len(last_init)]]
        x_in = [sub.fresh(f"{node}/{x}_t") for x in cell.inputs]
        m_in = sub.fresh(f"{node}/mask_t") if mask is not None else None
        names = {id(v): nm for v, nm in zip(m.inputs, x_in + list(inputs[lay.first_fixed:lay.first_state]) + s_in)}
        kind = classify(lay)
        # what depends on the fixed tensors and parameters alone is computed once, before the
        # Scan (the body reads it from the outer graph): the attention keys U h_j, for one
        g.lower_nodes(m, names, g.param_names, nodes=[b for b in m.nodes if kind[id(b)] == "const"], prefix=node)
        sub.lower_nodes(m, names, g.param_names, nodes=[b for b in m.nodes if kind[id(b)] != "const"])
        got = [names[id(v)] for v in m.outputs]
        ys, nxt = got[:n_out], got[n_out:]
        lasts = []
        if m_in is not None:
            rows = {}

            def row_mask(rank):
                if rank not in rows:
                    rows[rank] = m_in if rank == 1 else sub.op("Unsqueeze", [m_in, sub.ints(list(range(1, rank)), "axes")])
                return rows[rank]
            nxt = [sub.op("Where", [row_mask(t.rank), s, old]) for s, old, t in zip(nxt, s_in, body.state_types)]
            if keep_last:
                lasts = [sub.op("Where", [row_mask(t.rank), y, prev]) for y, prev, t in zip(ys, l_in, body.output_types)]
            ys = [sub.op("Where", [row_mask(t.rank), y, sub.const(np.zeros((), t.np_dtype), hint="zero")])
                  for y, t in zip(ys, body.output_types)]
        scan_outs = [] if keep_last and mask is not None else ys
        made = {o for b in sub.nodes for o in b.output}
        body_outs, seen = [], set()
        for nm in nxt + lasts + scan_outs:       # each body output a name of its own, made in the body
            if nm in seen or nm not in made:
                out = sub.fresh(f"{node}/out")
                sub.nodes.append(helper.make_node("Identity", [nm], [out], name=f"{out}/Identity"))
                nm = out
            seen.add(nm)
            body_outs.append(nm)
        step_types = [v.type for v in m.inputs[:n_seq]]
        b_ins = ([(n, t) for n, t in zip(s_in, body.state_types)] + [(n, t) for n, t in zip(l_in, body.output_types)]
                 + list(zip(x_in, step_types)) + ([(m_in, TensorType("bool", (lay.batch,)))] if m_in else []))
        b_outs = list(zip(body_outs, list(body.state_types) + list(body.output_types)[:len(lasts)]
                          + list(body.output_types)[:len(scan_outs)]))
        graph = sub.graph(f"{node}/step", b_ins, b_outs)
        n_scan_in = n_seq + (1 if mask is not None else 0)
        scan_in = init + last_init + list(inputs[:n_seq]) + ([mask] if mask is not None else [])
        k = len(init) + len(lasts) + len(scan_outs)
        res = g.op("Scan", scan_in, n_out=k, body=graph, num_scan_inputs=n_scan_in,
                   scan_input_axes=[1] * n_scan_in, scan_input_directions=[rev] * n_scan_in,
                   scan_output_axes=[1] * len(scan_outs) or None, scan_output_directions=[rev] * len(scan_outs) or None)
        res = [res] if isinstance(res, str) else list(res)
        finals, seqs = res[:len(init)], res[len(init) + len(lasts):]
        if keep_last and mask is None:
            # no padding: the last step of each output, straight from the scan's sequences
            start, end = ([0], [1]) if rev else ([-1], [2 ** 62])
            results = [g.op("Squeeze", [g.op("Slice", [y, g.ints(start), g.ints(end), g.ints([1], "axes")]),
                                        g.ints([1], "axes")]) for y in seqs]
        elif keep_last:
            results = res[len(init):len(init) + len(lasts)]
        else:
            results = seqs
        if attrs["return_state"]:
            results += finals
        return results

    def _zeros(self, a, g, inputs, t: TensorType) -> str:
        """A zero state of type t: concrete dims in a constant, each symbolic one expanded to the
        size of the input that has it (device-side, builder.expand_like)."""
        lay = a.derived
        runtime = []
        for pos, d in enumerate(t.shape):
            if is_static(d):
                continue
            src = lay.sources.get(d)
            if src is None:
                raise ArchError(f"Scan: cannot tell the size {d} of a state of {lay.cell.label} from its inputs",
                                a.span, "give the initial states as inputs")
            runtime.append((pos, inputs[src[0]], a.in_types[src[0]].rank, src[1]))
        zero = g.const(np.zeros([int(d) if is_static(d) else 1 for d in t.shape], t.np_dtype), hint="zeros")
        return g.expand_like(zero, t.rank, runtime)

    def _mask(self, a, g, inputs) -> str:
        """[N, T] bool: step t of row n is valid (t < lengths[n])."""
        lay = a.derived
        lens = inputs[lay.lengths]
        if a.in_types[lay.lengths].dtype != "i64":
            lens = g.op("Cast", [lens], to=7)
        steps = g.arange(inputs[0], 1)         # 0..T-1, computed on the device
        return g.op("Less", [g.op("Unsqueeze", [steps, g.ints([0], "axes")]),
                             g.op("Unsqueeze", [lens, g.ints([1], "axes")])])


# -- the step plan of the NumPy engine ---------------------------------------------------------

def classify(lay: ScanLayout) -> dict:
    """What each node and value of the step graph depends on: "const" (only the fixed tensors
    and parameters: computed once per scan, in the NumPy engine and in the ONNX graph), "step"
    (the step inputs but no state, in a node that keeps rows apart: computed for all steps at
    once, the time folded into the batch) or "state" (computed step by step). Keyed by id()."""
    m = lay.body.model
    n_seq, n_fixed = lay.n_seq, len(lay.cell.fixed)
    kind = {}
    for i, v in enumerate(m.inputs):
        kind[id(v)] = "step" if i < n_seq else "const" if i < n_seq + n_fixed else "state"
    for n in m.nodes:
        kinds = [kind[id(v)] for v in n.inputs]
        if "state" in kinds or n.op.stochastic(n.app) or ("step" in kinds and not _rows_apart(n, lay.batch, kinds)):
            k = "state"
        else:
            k = "step" if "step" in kinds else "const"
        kind[id(n)] = k
        for v in n.outputs:
            kind[id(v)] = k
    return kind


class _StepPlan:
    """The step graph as a list of op calls on slots, split in three: nodes that read no state
    and no step input (constants of the fixed tensors and parameters: run once), nodes that read
    step inputs but no state and do not mix rows (run once on all steps, the time folded into
    the batch), and the rest (run every step)."""

    def __init__(self, lay: ScanLayout):
        m = lay.body.model
        slot = m.value_slots()
        self.n = len(slot)
        n_seq, n_fixed = lay.n_seq, len(lay.cell.fixed)
        kind = classify(lay)
        self.pre: list = []         # (fwd, app, ins, outs, param items): run once
        self.steps: list = []       # (fwd, app, ins, outs): run every step
        self.node_params: list = []
        for n in m.nodes:
            items = tuple(n.params.items())
            entry = (n.op.forward, n.app, tuple(slot[id(v)] for v in n.inputs), tuple(slot[id(v)] for v in n.outputs))
            if kind[id(n)] == "state":
                self.steps.append(entry)
                self.node_params.append(items)
            else:
                self.pre.append(entry + (items,))
        # what the step loop reads from the hoisted values
        read = {i for _, _, ins, _ in self.steps for i in ins} | {slot[id(v)] for v in m.outputs}
        self.step_slots = [i for i in sorted(read) if i in self._kinds(kind, slot, "step")]
        self.constants = [(i, i) for i in sorted(read) if i in self._kinds(kind, slot, "const")]
        self.state_slots = [slot[id(v)] for v in m.inputs[n_seq + n_fixed:]]
        self.outputs = [slot[id(v)] for v in m.outputs]
        self.n_seq, self.n_fixed = n_seq, n_fixed

    @staticmethod
    def _kinds(kind, slot, which) -> set:
        return {slot[k] for k, v in kind.items() if v == which and k in slot}


def _rows_apart(n, batch, kinds) -> bool:
    """Whether a node that reads step inputs may run on all steps at once, the time folded into
    the batch: the op declares each output row to depend on the same input row alone (rowwise),
    every step-dependent input and every output has the batch dim first, and what else it reads
    (parameters, values of them) has no batch dim to mismatch the folded one."""
    if not n.op.rowwise(n.app):
        return False
    for v, k in zip(n.inputs, kinds):
        t = v.type
        if k == "step" and not (t.rank >= 1 and t.shape[0] == batch):
            return False
        if k == "const" and any(not is_static(d) for d in t.shape):
            return False
    return all(v.type.rank >= 1 and v.type.shape[0] == batch for v in n.outputs)


def _run_hoisted(plan: _StepPlan, ctx, inputs, lay: ScanLayout, params) -> list:
    """Run the nodes that read no state once: returns per slot the value (fixed) or the list of
    per-step values (T tensors, for what depends on the step inputs)."""
    n_seq = lay.n_seq
    env: list = [None] * plan.n
    T = int(inputs[0].shape[1])
    N = int(inputs[0].shape[0])
    for i in range(n_seq):      # [N, T, ...] -> [T*N, ...], time-major, so step t is rows t*N..
        x = inputs[i]
        env[i] = F.reshape(F.transpose(x, (1, 0) + tuple(range(2, x.ndim))), (T * N,) + tuple(x.shape[2:]))
    for j in range(plan.n_fixed):
        env[n_seq + j] = inputs[lay.first_fixed + j]
    for fwd, app, ins, outs, items in plan.pre:
        res = fwd(app, ctx, [env[i] for i in ins], {k: params[p] for k, p in items})
        for i, r in zip(outs, res):
            env[i] = r
    out = list(env)
    for s in plan.step_slots:
        v = env[s]
        out[s] = F.unstack(F.reshape(v, (T, N) + tuple(v.shape[1:])), axis=0)
    return out


def _rows(mask: np.ndarray, t) -> np.ndarray:
    """A per-row mask [N] shaped to broadcast against t [N, ...]."""
    return mask.reshape((-1,) + (1,) * (t.ndim - 1))


def _float_dtype(inputs, params):
    for t in list(params.values()) + list(inputs):
        if np.issubdtype(t.data.dtype, np.floating):
            return t.data.dtype
    return np.float32


def _lengths(op, a, v, n: int, t: int) -> np.ndarray:
    arr = np.asarray(v.data if hasattr(v, "data") else v).astype(np.int64)
    if arr.shape != (n,):
        raise ArchError(f"Scan: lengths must have shape [{n}] (one per batch row), got {list(arr.shape)}", a.span)
    if n and (arr.min() < 1 or arr.max() > t):
        raise ArchError(f"Scan: sequence lengths must be in 1..{t} (the time dim), got {arr.tolist()}", a.span,
                        "every row needs at least one valid step; rows are right-padded")
    return arr


def _bind_symbols(types, shapes) -> dict:
    """Values of the named symbols of `types` read off concrete `shapes`."""
    out = {}
    for t, s in zip(types, shapes):
        for d, v in zip(t.shape, s):
            if isinstance(d, Sym) and d.const == 0 and len(d.terms) == 1:
                (name, c), = d.terms.items()
                if c == 1:
                    out.setdefault(name, int(v))
    return out
