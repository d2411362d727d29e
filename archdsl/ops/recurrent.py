"""Recurrent layers: RNN (Elman), LSTM (optionally with peepholes) and GRU.

Layout: batch-first everywhere in archdsl. Input x [N, T, C] (T may be symbolic, C must be
concrete); optional initial states as extra inputs in PyTorch's convention,
h0 (and c0 for the LSTM) [num_layers*directions, N, hidden], row k*directions + d for layer k,
direction d (0 forward, 1 backward). `(x, h0) -> GRU(...)`, `(x, h0, c0) -> LSTM(...)`; an LSTM
given only h0 starts from c0 = 0 (ONNX allows it; PyTorch does not).

Padded batches: `lengths=true` adds the input `lengths: i32 or i64 [N]`, the valid steps of
each row of a RIGHT-padded batch, always SECOND, right after x and before the optional states
(ONNX's order: X, ..., sequence_lens, initial_h, initial_c): `(x, lengths) -> LSTM(64,
lengths=true)`, `(x, lengths, h0, c0) -> LSTM(64, lengths=true)`. Semantics are ONNX's
`sequence_lens` and PyTorch's pack_padded_sequence: row n runs steps 0..lengths[n]-1 only (a
reversed direction from lengths[n]-1 down to 0), so its outputs are what the row alone,
unpadded, would give: the sequence is 0 at steps t >= lengths[n], h_n / c_n and the many-to-one
output are the states after the row's last valid step (forward) or at t = 0 (backward), and
every stacked layer gets the same lengths. Each length must be in 1..T (PyTorch rejects 0; ONNX
Runtime gives zero states for 0, not h0): the NumPy engine checks, ONNX Runtime does not.

Outputs, in this order:
- the sequence [N, T, directions*hidden] (return_sequences=true, many-to-many), else the last
  step [N, directions*hidden] (many-to-one): the final state of the last layer, i.e. the
  forward direction at t = T-1 (t = lengths[n]-1 with lengths) and, when bidirectional, the
  backward direction at t = 0, concatenated (PyTorch's h_n[-2:] side by side);
- with return_state=true also h_n (and c_n for the LSTM) [num_layers*directions, N, hidden].
  Unpack them: `y, h, c = x -> LSTM(64, return_state=true)`.

`reverse=true` runs one direction from t = T-1 down to 0 (the backward LM of ELMo) and returns
the sequence in the original time order; its last step is therefore the state at t = 0.
`bidirectional` already contains a reversed direction, so the two cannot be combined.

Parameters, per layer k and direction (suffix `_l{k}`, plus `_reverse` for the backward
direction of a bidirectional layer), exactly PyTorch's nn.RNN/LSTM/GRU names, shapes and gate
order, so counts match PyTorch and a state dict copies over unchanged:
weight_ih_l{k} [G*hidden, in], weight_hh_l{k} [G*hidden, hidden], bias_ih_l{k} and
bias_hh_l{k} [G*hidden] (bias=true), with G = 1 (RNN), 4 (LSTM: i, f, g, o), 3 (GRU: r, z, n);
in = C for layer 0, directions*hidden above. LSTM peepholes (peepholes=true, not in PyTorch):
p_i_l{k}, p_f_l{k}, p_o_l{k} [hidden], as in the lecture equations
(i and f look at c_{t-1}, o at c_t). Every parameter starts U(-1/sqrt(hidden), 1/sqrt(hidden)).

GRU formulation: PyTorch's (`linear_before_reset=true`, the default, = ONNX
linear_before_reset=1): n = tanh(W_n x + b_in + r * (R_n h + b_hn)). `linear_before_reset=false`
is ONNX's default and the original Cho et al. GRU: n = tanh(W_n x + b_in + R_n (r * h) + b_hn).

ONNX lowering: the native RNN / LSTM / GRU operator, one node per layer (stacked layers are
chained; a bidirectional layer is one node with direction="bidirectional"). Gate reordering
(PyTorch i,f,g,o -> ONNX i,o,f,c; r,z,n -> z,r,h), stacking of directions, bias
concatenation [Wb, Rb] and the peephole vector P (ONNX order i, o, f) are computed from the
weights at export time, so the runtime does no work for them. ONNX's `layout=1` (batch-first,
opset >= 14) would save the transposes, but onnxruntime's CPU kernels reject it ("Batchwise
recurrent operations (layout == 1) are not supported"), so the lowering uses layout 0:
Transpose x to [T, N, C] once, and Y [T, dirs, N, H] back to [N, T, dirs*H] with one
Transpose + Reshape (no copy). Layer-to-layer the sequence stays time-major (Squeeze, or
Transpose + Reshape when bidirectional). Initial and final states are already in ONNX's layout-0
shape [dirs, N, H] per layer (Split / Concat on axis 0 for stacks). N and T stay dynamic.
lengths go to every layer's `sequence_lens` (int32: an i64 input is Cast once); Y, Y_h and Y_c
then follow the semantics above (checked against ONNX Runtime in the tests).

NumPy engine: one fused primitive per layer and direction with hand-written BPTT
(archdsl/autodiff/recurrent.py: the input projection of all steps in one matmul, one
recurrent matmul per step for all gates).
"""
from __future__ import annotations

import math

import numpy as np

from ..autodiff import functional as F
from ..autodiff.recurrent import gru_layer, lstm_layer, rnn_layer
from ..backends.torch.lazy import TK
from ..errors import ArchError
from ..ir.graph import ParamSpec
from ..ir.types import TensorType, is_static
from .base import Arg, Op, Recurrence, Sample

_HIDDEN = Arg("hidden", "int", doc="features of the hidden state")
_LAYERS = Arg("num_layers", "int", 1, doc="stacked layers (deep RNN)")
MAX_STACKED_LAYERS = 10_000      # a limit, like the elaborator's, so no spec can exhaust memory
_BIDI = Arg("bidirectional", "bool", False, doc="a forward and a backward direction, concatenated")
_REVERSE = Arg("reverse", "bool", False, doc="run from the last step to the first")
_SEQ = Arg("return_sequences", "bool", True, doc="every step [N, T, D*H] (else the last [N, D*H])")
_STATE = Arg("return_state", "bool", False, doc="also return the final states [L*D, N, H]")
_BIAS = Arg("bias", "bool", True)
_LENGTHS = Arg("lengths", "bool", False,
               doc="a second input lengths: i32/i64[N], the valid steps of each right-padded row")
INT_LENGTH_DTYPES = ("i32", "i64")


def _suffix(k: int, d: int) -> str:
    return f"_l{k}" + ("_reverse" if d else "")


class _Recurrent(Op):
    family = "recurrent"
    gates = 1
    states = ("h0",)            # names of the optional state inputs, in order
    onnx_op = ""
    onnx_gate_order: tuple = (0,)   # ONNX gate block b = PyTorch gate block onnx_gate_order[b]

    # -- shape rule --------------------------------------------------------------------
    @staticmethod
    def dirs(attrs) -> int:
        return 2 if attrs["bidirectional"] else 1

    @staticmethod
    def first_state(attrs) -> int:
        """Index of the first initial-state input: after x, and after lengths with lengths=true."""
        return 2 if attrs.get("lengths") else 1

    def infer(self, a):
        attrs, in_types, x = a.attrs, a.in_types, a.x
        if x.rank != 3:
            hint = ("token ids go through an Embedding first" if not x.is_float and x.rank == 2 else
                    "a recurrent layer reads a batch-first sequence [N, T, features]")
            raise self.fail(f"expects a 3-D input [N, T, C] (batch, time, features), got {x}", hint)
        self.expect_float(x)
        if not is_static(x.shape[2]):
            raise self.fail(f"the feature dim (dim 2) of the input must be concrete, got {x}",
                            "the time dim T may be symbolic; the features size the weights")
        H, L = attrs["hidden"], attrs["num_layers"]
        if H < 1:
            raise self.fail(f"hidden must be positive, got {H}")
        if L < 1:
            raise self.fail(f"num_layers must be positive, got {L}")
        if L > MAX_STACKED_LAYERS:      # (each stacked layer has its own weights and ONNX node)
            raise self.fail(f"num_layers={L} is more than {MAX_STACKED_LAYERS:,} stacked layers",
                            "raise archdsl.ops.recurrent.MAX_STACKED_LAYERS if you really mean it")
        if attrs["bidirectional"] and attrs["reverse"]:
            raise self.fail("bidirectional=true and reverse=true cannot be combined",
                            "a bidirectional layer already runs one direction backwards")
        first = self.first_state(attrs)
        lead = "x, lengths" if first == 2 else "x"
        if len(in_types) > first + len(self.states):
            raise self.fail(f"takes {lead} and at most {len(self.states)} initial state"
                            f"{'s' if len(self.states) > 1 else ''} ({', '.join(self.states)}), "
                            f"got {len(in_types)} inputs")
        if first == 2:
            self._check_lengths(x, in_types[1:2])
        elif len(in_types) > 1 and in_types[1].dtype in INT_LENGTH_DTYPES + ("bool",):
            raise self.fail(f"initial state h0 must be a float tensor [num_layers*directions, N, hidden], "
                            f"got {in_types[1]}",
                            "for sequence lengths of a padded batch add lengths=true: (x, lengths, ...)"
                            if in_types[1].dtype in INT_LENGTH_DTYPES else None)
        D = self.dirs(attrs)
        want = (L * D, x.shape[0], H)
        for name, s in zip(self.states, in_types[first:]):
            if s.dtype != x.dtype:
                raise self.fail(f"initial state {name} has dtype {s.dtype} but the input is {x}")
            if s.rank != 3 or any(a != b for a, b in zip(s.shape, want)):
                raise self.fail(
                    f"initial state {name} must be [num_layers*directions, N, hidden] = "
                    f"[{', '.join(map(str, want))}] for the input {x}, got {s}" + _dim_diff(s, want),
                    f"num_layers={L}, directions={D}, hidden={H}; from a [N, hidden] vector use "
                    f"Reshape((1, -1, {H}))" if s.rank == 2 else None)
        T, N = x.shape[1], x.shape[0]
        seq = x.with_shape((N, T, D * H) if attrs["return_sequences"] else (N, D * H))
        outs = [seq]
        if attrs["return_state"]:
            outs += [x.with_shape(want)] * len(self.states)
        return outs

    def time_local(self, a):
        # padded-batch lengths from a model input are fine (the sampler feeds no padding);
        # computed lengths are not: they are checked by the sampler, which sees the graph
        r = self.recurrence(a)
        return r.forward_in_time

    def recurrence(self, a):
        attrs, x = a.attrs, a.x
        L, D, H = attrs["num_layers"], self.dirs(attrs), attrs["hidden"]
        first = self.first_state(attrs)
        cells = tuple(tuple(p for p in a.params if p.endswith(_suffix(k, d)))
                      for k in range(L) for d in range(D))
        return Recurrence(states=self.states, first_state=first, state_type=x.with_shape((L * D, x.shape[0], H)),
                          returns_states=bool(attrs["return_state"]), lengths_input=1 if first == 2 else None,
                          forward_in_time=(D == 1 and not attrs["reverse"] and attrs["return_sequences"]),
                          return_states={"return_state": True}, cell=f"{self.name} cell", layers=L, directions=D,
                          reverse=bool(attrs["reverse"]), returns_sequence=bool(attrs["return_sequences"]),
                          cell_params=cells)

    def _check_lengths(self, x: TensorType, given: list) -> None:
        order = f"({', '.join(('x', 'lengths') + self.states)})"
        if not given:
            raise self.fail("lengths=true expects a second input lengths: i64[N] (or i32), got only x",
                            f"inputs in this order: {order}")
        n = given[0]
        if n.dtype not in INT_LENGTH_DTYPES or n.rank != 1:
            raise self.fail(f"lengths=true expects its second input to be lengths i64[N] (or i32), one "
                            f"per batch row, got {n}",
                            f"the lengths come right after x: {order}" if n.is_float else
                            "cast the lengths to i64 (or i32)" if n.rank == 1 else None)
        a, b = n.shape[0], x.shape[0]
        if a != b and is_static(a) == is_static(b):
            raise self.fail(f"the lengths' batch dim does not match the input's: {n} vs {x} ({a} vs {b})")

    # -- parameters and cost -------------------------------------------------------------
    def layer_inputs(self, attrs, c: int) -> list[int]:
        D, H = self.dirs(attrs), attrs["hidden"]
        return [c] + [D * H] * (attrs["num_layers"] - 1)

    def params(self, a):
        attrs = a.attrs
        H, G = attrs["hidden"], self.gates
        bound = 1.0 / math.sqrt(H)          # PyTorch: U(-1/sqrt(hidden), 1/sqrt(hidden)) for all
        p = {}
        for k, c_in in enumerate(self.layer_inputs(attrs, int(a.x.shape[2]))):
            for d in range(self.dirs(attrs)):
                s = _suffix(k, d)
                p[f"weight_ih{s}"] = ParamSpec((G * H, c_in), "uniform", bound=bound, fan_in=c_in, fan_out=G * H)
                p[f"weight_hh{s}"] = ParamSpec((G * H, H), "uniform", bound=bound, fan_in=H, fan_out=G * H)
                if attrs["bias"]:
                    p[f"bias_ih{s}"] = ParamSpec((G * H,), "uniform", bound=bound, fan_in=H)
                    p[f"bias_hh{s}"] = ParamSpec((G * H,), "uniform", bound=bound, fan_in=H)
                for name in self.extra_params(attrs):
                    p[f"{name}{s}"] = ParamSpec((H,), "uniform", bound=bound, fan_in=H)
        return p

    def extra_params(self, attrs) -> tuple[str, ...]:
        return ()

    def macs(self, a, in_shapes, out_shapes):
        n, t, c = in_shapes[0]
        H, G, D = a.attrs["hidden"], self.gates, self.dirs(a.attrs)
        return n * t * sum(D * G * H * (c_in + H) for c_in in self.layer_inputs(a.attrs, c))

    # -- ONNX --------------------------------------------------------------------------------
    def onnx_attrs(self, attrs) -> dict:
        return {}

    def _reorder(self, w: np.ndarray, H: int) -> np.ndarray:
        return np.concatenate([w[g * H:(g + 1) * H] for g in self.onnx_gate_order], axis=0)

    def _stacked(self, b, a, k: int, what: str, dt) -> str:
        """[dirs, ...] initializer of layer k for ONNX input W, R, B or P, from PyTorch's params."""
        H = a.attrs["hidden"]
        per_dir = []
        for d in range(self.dirs(a.attrs)):
            s = _suffix(k, d)
            if what == "W":
                v = self._reorder(b.param_value(f"weight_ih{s}"), H)
            elif what == "R":
                v = self._reorder(b.param_value(f"weight_hh{s}"), H)
            elif what == "B":
                v = np.concatenate([self._reorder(b.param_value(f"bias_ih{s}"), H),
                                    self._reorder(b.param_value(f"bias_hh{s}"), H)])
            else:   # P: peepholes in ONNX order i, o, f
                v = np.concatenate([b.param_value(f"p_{g}{s}") for g in "iof"])
            per_dir.append(v)
        return b.const(np.stack(per_dir).astype(dt), hint=f"{what}_l{k}")

    def lower(self, app, b, inputs):
        a = app.attrs
        L, D, H = a["num_layers"], self.dirs(a), a["hidden"]
        dt = app.x.np_dtype
        direction = "bidirectional" if D == 2 else "reverse" if a["reverse"] else None
        peep = bool(a.get("peepholes"))
        # layout 0 (time-major): see the module docstring for why not layout=1
        seq = b.op("Transpose", [inputs[0]], perm=[1, 0, 2])
        first = self.first_state(a)
        lens = ""
        if first == 2:      # sequence_lens is int32 in ONNX; one Cast serves every layer
            lens = inputs[1] if app.in_types[1].dtype == "i32" else b.op("Cast", [inputs[1]], to=6)
        states = []
        for s in inputs[first:]:
            states.append([s] if L == 1 else b.op("Split", [s, b.ints([D] * L, "split")], n_out=L, axis=0))
        n_state_out = len(self.states)
        finals: list[list[str]] = [[] for _ in range(n_state_out)]
        y = None
        for k in range(L):
            last = k == L - 1
            ins = [seq, self._stacked(b, app, k, "W", dt), self._stacked(b, app, k, "R", dt),
                   self._stacked(b, app, k, "B", dt) if a["bias"] else "", lens]
            ins += [st[k] for st in states] + [""] * (n_state_out - len(states))
            if peep:
                ins.append(self._stacked(b, app, k, "P", dt))
            while ins and ins[-1] == "":
                ins.pop()
            need = [not last or a["return_sequences"],
                    a["return_state"] or (last and not a["return_sequences"])]
            need += [a["return_state"]] * (n_state_out - 1)
            outs = [b.fresh(f"{b.node.name}/{self.onnx_op}_l{k}:{o}") if n else ""
                    for o, n in zip(("Y", "Y_h", "Y_c"), need)]
            while outs[-1] == "":
                outs.pop()
            b.op(self.onnx_op, ins, n_out=len(outs), outputs=outs, hidden_size=H, direction=direction,
                 **self.onnx_attrs(a))
            outs += [""] * (1 + n_state_out - len(outs))
            y = outs[0]
            for i in range(n_state_out):
                finals[i].append(outs[1 + i])
            if not last:        # Y [T, D, N, H] -> next layer's input [T, N, D*H]
                if D == 1:
                    seq = b.op("Squeeze", [y, b.ints([1], "axes")])
                else:
                    seq = b.op("Reshape", [b.op("Transpose", [y], perm=[0, 2, 1, 3]), b.ints([0, 0, -1])])
        if a["return_sequences"]:   # [T, D, N, H] -> [N, T, D*H]
            result = b.op("Reshape", [b.op("Transpose", [y], perm=[2, 0, 1, 3]), b.ints([0, 0, -1])])
        elif D == 1:                # Y_h [1, N, H] -> [N, H]
            result = b.op("Squeeze", [finals[0][-1], b.ints([0], "axes")])
        else:                       # Y_h [2, N, H] -> [N, 2H]
            result = b.op("Reshape", [b.op("Transpose", [finals[0][-1]], perm=[1, 0, 2]), b.ints([0, -1])])
        results = [result]
        if a["return_state"]:
            for f in finals:
                results.append(f[0] if L == 1 else b.op("Concat", f, axis=0))
        return results

    # -- NumPy -----------------------------------------------------------------------------
    def run_layer(self, attrs, x, params: dict, s: str, init: list, reverse: bool, lengths) -> tuple:
        raise NotImplementedError

    def forward(self, app, ctx, inputs, params):
        a = app.attrs
        L, D = a["num_layers"], self.dirs(a)
        first = self.first_state(a)
        x, init = inputs[0], list(inputs[first:])
        lengths = self._lengths(app, inputs[1], x.shape[0], x.shape[1]) if first == 2 else None
        finals: list[list] = [[] for _ in self.states]
        for k in range(L):
            ys = []
            for d in range(D):
                row = k * D + d
                st = [F.getitem(s, row) for s in init]
                out = self.run_layer(a, x, params, _suffix(k, d), st, d == 1 or a["reverse"], lengths)
                ys.append(out[0])
                for i, f in enumerate(out[1:]):
                    finals[i].append(f)
            x = ys[0] if D == 1 else F.concat(ys, axis=2)
        seq = x if a["return_sequences"] else (finals[0][-1] if D == 1 else F.concat(finals[0][-D:], axis=1))
        outs = [seq]
        if a["return_state"]:
            outs += [F.stack(f, axis=0) for f in finals]
        return outs

    def torch_forward(self, app, ctx, inputs, params):
        a = app.attrs
        first = self.first_state(a)
        lengths = inputs[1] if first == 2 else None
        if lengths is not None and not ctx.tracing:
            self._lengths(app, lengths.cpu().numpy(), inputs[0].shape[0], inputs[0].shape[1])
        cells = [_suffix(k, d) for k in range(a["num_layers"]) for d in range(self.dirs(a))]
        weights = [[params[f"weight_ih{s}"], params[f"weight_hh{s}"], params.get(f"bias_ih{s}"),
                    params.get(f"bias_hh{s}")] + [params[f"{p}{s}"] for p in self.extra_params(a)] for s in cells]
        outs = TK.recurrent(self.name, inputs[0], lengths, list(inputs[first:]), weights, num_layers=a["num_layers"],
                            bidirectional=a["bidirectional"], reverse=a["reverse"],
                            return_sequences=a["return_sequences"], nonlinearity=a.get("nonlinearity", "tanh"),
                            linear_before_reset=a.get("linear_before_reset", True))
        return [outs[i] for i in range(len(app.out_types))]


    def _lengths(self, app, v, n: int, t: int) -> np.ndarray:
        a = np.asarray(v.data if hasattr(v, "data") else v)
        if a.shape != (n,):
            raise ArchError(f"{self.name}: lengths must have shape [{n}] (one per batch row), got {list(a.shape)}",
                            app.span)
        a = a.astype(np.int64)
        if n and (a.min() < 1 or a.max() > t):
            raise ArchError(f"{self.name}: sequence lengths must be in 1..{t} (the time dim), got {a.tolist()}",
                            app.span, "every row needs at least one valid step; rows are right-padded")
        return a


def _dim_diff(s: TensorType, want: tuple) -> str:
    if s.rank != 3:
        return f" ({s.rank}-D)"
    names = ("num_layers*directions", "N (the batch dim of the input)", "hidden")
    bad = [f"dim {i} is {s.shape[i]}, expected {names[i]} = {want[i]}" for i in range(3) if s.shape[i] != want[i]]
    return ": " + "; ".join(bad)


class RNN(_Recurrent):
    """Elman RNN: h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), act tanh or relu."""
    name = "RNN"
    gates = 1
    onnx_op = "RNN"
    n_inputs = (1, 3)
    args = (_HIDDEN, Arg("nonlinearity", "str", "tanh", choices=("tanh", "relu")), _LAYERS, _BIDI, _REVERSE,
            _SEQ, _STATE, _BIAS, _LENGTHS)
    samples = (Sample("x: f32[N, T, 3] -> RNN(4, num_layers=2, nonlinearity='relu')"),
               Sample("(x: f32[N, T, 3], h0: f32[2, N, 4]) -> RNN(4, bidirectional=true, return_state=true)"))

    def onnx_attrs(self, attrs):
        return {"activations": ["Relu"] * self.dirs(attrs)} if attrs["nonlinearity"] == "relu" else {}

    def run_layer(self, attrs, x, params, s, init, reverse, lengths):
        return rnn_layer(x, params[f"weight_ih{s}"], params[f"weight_hh{s}"], params.get(f"bias_ih{s}"),
                         params.get(f"bias_hh{s}"), init[0] if init else None, reverse=reverse,
                         nonlinearity=attrs["nonlinearity"], lengths=lengths)


class LSTM(_Recurrent):
    """Long short-term memory (Hochreiter & Schmidhuber), optionally with peephole connections
    p_i, p_f, p_o (Gers & Schmidhuber; the lecture's equations). Inputs x [, lengths] [, h0 [, c0]];
    outputs the sequence (or last step) [, h_n, c_n]."""
    name = "LSTM"
    gates = 4
    states = ("h0", "c0")
    onnx_op = "LSTM"
    onnx_gate_order = (0, 3, 1, 2)      # ONNX i, o, f, c  <-  PyTorch i, f, g, o
    n_inputs = (1, 4)
    args = (_HIDDEN, _LAYERS, _BIDI, _REVERSE, Arg("peepholes", "bool", False), _SEQ, _STATE, _BIAS, _LENGTHS)
    samples = (Sample("x: f32[N, T, 3] -> LSTM(4, peepholes=true)"),
               Sample("(x: f32[N, T, 3], lengths: i64[N], h0: f32[2, N, 4], c0: f32[2, N, 4]) -> "
                      "LSTM(4, num_layers=2, lengths=true, return_sequences=false, return_state=true)",
                      values={"lengths": (1, 6)}),
               Sample("x: f32[N, T, 2] -> LSTM(3, reverse=true)"))

    def extra_params(self, attrs):
        return ("p_i", "p_f", "p_o") if attrs["peepholes"] else ()

    def run_layer(self, attrs, x, params, s, init, reverse, lengths):
        peep = [params[f"p_{g}{s}"] for g in "ifo"] if attrs["peepholes"] else [None] * 3
        h0 = init[0] if init else None
        c0 = init[1] if len(init) > 1 else None
        return lstm_layer(x, params[f"weight_ih{s}"], params[f"weight_hh{s}"], params.get(f"bias_ih{s}"),
                          params.get(f"bias_hh{s}"), h0, c0, *peep, reverse=reverse, lengths=lengths)


class GRU(_Recurrent):
    """Gated recurrent unit (Cho et al.). Default: PyTorch's formulation (linear_before_reset)."""
    name = "GRU"
    gates = 3
    onnx_op = "GRU"
    onnx_gate_order = (1, 0, 2)         # ONNX z, r, h  <-  PyTorch r, z, n
    n_inputs = (1, 3)
    args = (_HIDDEN, _LAYERS, _BIDI, _REVERSE, _SEQ, _STATE, _BIAS, Arg("linear_before_reset", "bool", True),
            _LENGTHS)
    samples = (Sample("x: f32[N, T, 3] -> GRU(4, bidirectional=true)"),
               Sample("(x: f32[N, T, 2], lengths: i32[N]) -> GRU(3, linear_before_reset=false, lengths=true)",
                      values={"lengths": (1, 6)}))

    def onnx_attrs(self, attrs):
        return {"linear_before_reset": 1} if attrs["linear_before_reset"] else {}

    def run_layer(self, attrs, x, params, s, init, reverse, lengths):
        return gru_layer(x, params[f"weight_ih{s}"], params[f"weight_hh{s}"], params.get(f"bias_ih{s}"),
                         params.get(f"bias_hh{s}"), init[0] if init else None, reverse=reverse,
                         linear_before_reset=attrs["linear_before_reset"], lengths=lengths)
