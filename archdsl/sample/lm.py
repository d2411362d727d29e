"""Generating text from a trained language model, one token at a time.

    from archdsl.sample.lm import Vocab, Runner, generate
    vocab = Vocab.find(weights="run/best.npz")              # see "The vocabulary" below
    model = archdsl.compile("specs/lstm_lm.arch").model(vocab=len(vocab))
    runner = Runner(model.ir, load_weights("run/best.npz", model.ir), engine="numpy")
    text = generate(runner, vocab, "def ", length=200, temperature=0.8, seed=0)

A language model here is any model with an integer token input [N, T] and float logits
[N, T, V] (the next-token scores at every position): specs/lstm_lm.arch, elman_lm.arch,
gpt.arch. Other inputs (a seq2seq model's source) are "context", passed once.

Two ways to step, chosen from the model's graph (`Runner.mode`):

- "state" (recurrent LMs): the prompt is read once, then every new token is ONE time step
  whose recurrent layers start from the final states of the step before. This is a generic IR
  transform (`stateful`): a copy of the model's IR in which every recurrent node (RNN, LSTM,
  GRU, a user cell's Scan: whatever declares a `recurrence`) takes its initial states from new
  model inputs `state.<node>.h0` (`.c0`; a cell's states by their names, `state.<node>.c`) and
  returns its final states as new model outputs `state.<node>.h_n` (`.c_n`), exactly the layer's
  own `(x, h0, c0) -> LSTM(..., return_state=true)` form, so the NumPy engine and the ONNX
  lowering need nothing new. Nodes that only fed the states of a recurrent layer drop out (a seq2seq
  decoder's step graph no longer contains the encoder). The first call feeds zero states, which
  is what the layers start from without them; if a recurrent layer takes its initial state from
  the graph (a seq2seq decoder), the prompt is instead read by a "prefill" copy that keeps those
  inputs and only exposes the final states. Carrying state is exact only when nothing else in the
  model mixes time steps, so "state" is chosen only if every other node is position-wise
  (embedding, dense, dropout, activations along the feature axis, LayerNorm, Add/Sub/Mul,
  Concat of features, ScalarMix) and no recurrent layer is bidirectional or reversed.
- "window" (everything else, e.g. a GPT): the model is re-run on the last `window` tokens for
  every new token; `window` defaults to the smallest max_len of the model's PositionalEmbedding /
  PositionalEncoding nodes (the context length), else the whole history.

Engines: "numpy" (the NumPy executor) or "onnx" (the model exported on the fly, or a given
.onnx file, run by ONNX Runtime on device cpu / cuda / auto). An ONNX file written by
`save_onnx` (or `archdsl sample --save-onnx`) is the step model with the vocabulary and the
state names in its metadata (`archdsl.vocab`, `archdsl.states`); any other ONNX file of an LM
(e.g. from `archdsl export`) is run in window mode.

The vocabulary (id -> token) travels with the data or the checkpoint, looked up in this order:
`--vocab FILE` (.json or .npz); `vocab.json` beside the checkpoint (in the run directory);
the array `vocab` in the training-data .npz that the checkpoint names in its metadata (what
`archdsl train --data` records; a relative path is tried from the working directory, then from
the checkpoint's directory); `archdsl.vocab` in an ONNX file's metadata; `vocab.json` beside the
ONNX file. In an .npz, `vocab` is a 1-D array of strings (np.array(list("abc"))) or of int
Unicode code points; in JSON a list of strings or {"vocab": [...]}. When every entry is one
character, text is split into characters and joined with ""; otherwise it is split on
whitespace and joined with " " (a word vocabulary).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ArchError, did_you_mean
from ..ir.graph import Model, Node, Value
from ..ir.types import TensorType

STATE_PREFIX = "state."
META_VOCAB = "archdsl.vocab"
META_STATES = "archdsl.states"
META_LENGTHS = "archdsl.lengths"       # inputs the sampler fills with the number of tokens fed
SIDECAR = "vocab.json"
MAX_VOCAB_FILE = 256 << 20      # bytes of a .json vocabulary read at most (a bigger one is refused)


# =============================================================================
# The vocabulary
# =============================================================================

class Vocab:
    """id <-> token. `chars` is True when every token is one character."""

    def __init__(self, tokens, source: str = "<memory>"):
        tokens = [str(t) for t in tokens]
        if not tokens:
            raise ArchError(f"{source}: the vocabulary is empty")
        if any(t == "" for t in tokens):
            raise ArchError(f"{source}: the vocabulary has an empty token (id {tokens.index('')})")
        seen: dict[str, int] = {}
        for i, t in enumerate(tokens):
            if t in seen:
                raise ArchError(f"{source}: the vocabulary lists {t!r} twice (ids {seen[t]} and {i})",
                                hint="every token must have exactly one id")
            seen[t] = i
        self.tokens = tokens
        self.index = seen
        self.source = source
        self.chars = all(len(t) == 1 for t in tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"<Vocab {len(self)} {'characters' if self.chars else 'tokens'} from {self.source}>"

    def split(self, text: str) -> list[str]:
        return list(text) if self.chars else text.split()

    def encode(self, text: str) -> np.ndarray:
        """Token ids of `text` (int64); every token must be in the vocabulary."""
        parts = self.split(text)
        missing = sorted({p for p in parts if p not in self.index})
        if missing:
            shown = ", ".join(repr(m) for m in missing[:10]) + (" ..." if len(missing) > 10 else "")
            what = "character" if self.chars else "word"
            hint = None
            if not self.chars:
                hint = did_you_mean(missing[0], self.tokens)
            raise ArchError(f"the prompt has {len(missing)} {what}{'s' if len(missing) != 1 else ''} that "
                            f"the vocabulary ({len(self)} {what}s, from {self.source}) does not know: {shown}",
                            hint=hint or f"use only {what}s the model was trained on")
        return np.array([self.index[p] for p in parts], dtype=np.int64)

    def decode(self, ids) -> str:
        sep = "" if self.chars else " "
        return sep.join(self.tokens[int(i)] for i in ids)

    def to_json(self) -> str:
        return json.dumps({"vocab": self.tokens}, ensure_ascii=False)

    def save(self, path) -> Path:
        """Write the `vocab.json` form (atomically)."""
        from ..fileio import atomic_write
        atomic_write(Path(path), self.to_json() + "\n")
        return Path(path)

    # -- reading -------------------------------------------------------------------------
    @classmethod
    def from_array(cls, arr: np.ndarray, source: str) -> "Vocab":
        arr = np.asarray(arr)
        if arr.ndim != 1:
            raise ArchError(f"{source}: the vocabulary must be a 1-D array, got shape {list(arr.shape)}")
        if arr.dtype.kind == "U":
            return cls(arr.tolist(), source)
        if arr.dtype.kind in "iu":
            try:
                return cls([chr(int(c)) for c in arr], source)
            except (ValueError, OverflowError):
                raise ArchError(f"{source}: the vocabulary holds integers that are not Unicode code points") from None
        raise ArchError(f"{source}: the vocabulary array has dtype {arr.dtype}; expected strings or "
                        "int code points", hint="save it with np.savez(..., vocab=np.array(list(chars)))")

    @classmethod
    def load(cls, path) -> "Vocab":
        """From a .json file (a list, or {"vocab": [...]}) or an .npz with an array `vocab`."""
        p = str(path)
        if not os.path.exists(p):
            raise ArchError(f"no vocabulary file '{p}'")
        if p.endswith(".npz"):
            from ..train.data import read_npz
            arrays = read_npz(p)
            if "vocab" not in arrays:
                raise ArchError(f"{p}: no array 'vocab'", hint=f"arrays in the file: {', '.join(arrays) or 'none'}")
            return cls.from_array(arrays["vocab"], f"{p}:vocab")
        from ..fileio import open_input
        try:
            with open_input(p, "vocabulary") as fh:
                text = fh.read(MAX_VOCAB_FILE + 1)
            if len(text) > MAX_VOCAB_FILE:
                raise ArchError(f"the vocabulary '{p}' is larger than {MAX_VOCAB_FILE:,} bytes")
            data = json.loads(text.decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise ArchError(f"cannot read the vocabulary '{p}': {e}",
                            hint='a JSON list of tokens, or {"vocab": [...]}') from None
        return cls.from_json(data, p)

    @classmethod
    def from_json(cls, data, source: str) -> "Vocab":
        if isinstance(data, dict):
            data = data.get("vocab")
        if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
            raise ArchError(f"{source}: expected a JSON list of token strings or {{\"vocab\": [...]}}")
        return cls(data, source)

    @classmethod
    def find(cls, vocab=None, weights=None, onnx=None) -> "Vocab":
        """The vocabulary for a checkpoint and/or ONNX file (lookup order in the module docstring)."""
        if vocab is not None:
            return cls.load(vocab)
        tried = []
        if weights is not None:
            wp = Path(weights)
            ck_dir = wp if wp.is_dir() else wp.parent
            side = ck_dir / SIDECAR
            tried.append(str(side))
            if side.exists():
                return cls.load(side)
            data = _checkpoint_data_path(weights)
            if data is not None:
                cands = (Path(data),) if os.path.isabs(data) else (Path(data), ck_dir / data)
                for cand in cands:
                    tried.append(f"{cand} (array 'vocab', the training data named by the checkpoint)")
                    if cand.exists():
                        from ..train.data import read_npz
                        arrays = read_npz(cand)
                        if "vocab" in arrays:
                            return cls.from_array(arrays["vocab"], f"{cand}:vocab")
                        break
        if onnx is not None:
            meta = _onnx_meta(onnx)
            if META_VOCAB in meta:
                try:
                    return cls.from_json(json.loads(meta[META_VOCAB]), f"{onnx} (metadata)")
                except json.JSONDecodeError:
                    raise ArchError(f"{onnx}: the vocabulary in its metadata is not valid JSON") from None
            tried.append(f"{onnx} (metadata {META_VOCAB})")
            side = Path(onnx).parent / SIDECAR
            tried.append(str(side))
            if side.exists():
                return cls.load(side)
        raise ArchError("no vocabulary found for this model" + (f" (looked in: {'; '.join(tried)})" if tried else ""),
                        hint="pass --vocab FILE (.json list of tokens, or an .npz with an array 'vocab'), "
                             "or keep the array 'vocab' in the training data .npz")


def _checkpoint_data_path(weights) -> str | None:
    from ..train.checkpoint import read_checkpoint
    try:
        ck = read_checkpoint(weights)
    except ArchError:
        return None           # load_weights reports a bad checkpoint properly
    d = ck.meta.get("data")
    return d if isinstance(d, str) and d and not d.startswith("<") else None


def _onnx_meta(path) -> dict:
    import onnx
    if not os.path.exists(str(path)):
        raise ArchError(f"cannot load model '{path}': no such file")
    from ..fileio import check_input
    check_input(path, "model")                  # onnx.load would block forever on a FIFO
    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ArchError(f"cannot load model '{path}': not an ONNX model, or the file is truncated ({e})") from None
    return {p.key: p.value for p in m.metadata_props}


# =============================================================================
# The IR transforms
# =============================================================================

@dataclass(frozen=True)
class StateSlot:
    """One carried state of a recurrent node: fed through `input`, read back from `output`."""
    node: str
    kind: str            # "h0" or "c0"
    input: str           # model input of the step IR
    output: str          # model output (of the step and prefill IRs)
    type: TensorType     # [num_layers*directions, N, hidden]

    def to_json(self) -> dict:
        return {"node": self.node, "kind": self.kind, "input": self.input, "output": self.output,
                "shape": [str(d) for d in self.type.shape], "dtype": self.type.dtype}


def _recurrence(node: Node):
    """What a node that carries state over time declares (ops/base.py: Recurrence), or None."""
    return node.op.recurrence(node.app)


def _is_recurrent(node: Node) -> bool:
    return _recurrence(node) is not None


def time_local(node: Node) -> bool:
    """True when output step t of the node depends only on input step t (batch-first [N, T, ...]),
    or, for a recurrent node, when it is causal and runs forwards (its state carries the rest).
    The op declares it; padded-batch lengths must come from a model input (the sampler feeds no
    padding and sets them to the tokens of each call, Runner._feeds), not be computed."""
    if not node.op.time_local(node.app):
        return False
    rec = _recurrence(node)
    return rec is None or rec.lengths_input is None or node.inputs[rec.lengths_input].producer is None


def _live(outputs: list[Value]) -> set[int]:
    """ids of the nodes the given values depend on."""
    live: set[int] = set()
    stack = [v.producer for v in outputs if v.producer is not None]
    while stack:
        n = stack.pop()
        if id(n) in live:
            continue
        live.add(id(n))
        stack.extend(v.producer for v in n.inputs if v.producer is not None)
    return live


def stateful(ir: Model, feed_states: bool = True) -> tuple[Model, list[StateSlot]]:
    """A copy of `ir` whose live recurrent nodes return their final states as extra model outputs
    and, with feed_states, take their initial states from extra model inputs (replacing any
    states they were given in the graph; what only fed those drops out). Parameters, node names
    and weights are unchanged, so the original weights run it as they are."""
    vmap: dict[int, Value] = {}
    inputs = []
    for v in ir.inputs:
        nv = Value(v.name, v.type, span=v.span)
        vmap[id(v)] = nv
        inputs.append(nv)
    nodes: list[Node] = []
    extra: dict[int, tuple[list[Value], list[StateSlot]]] = {}   # node id -> (state outputs, slots)
    state_inputs: dict[int, list[Value]] = {}
    for n in ir.nodes:
        ins = [vmap[id(v)] for v in n.inputs]
        nn = Node(name=n.name, app=n.app, inputs=ins, outputs=[], params=dict(n.params),
                  span=n.span, scope=n.scope, instance=n.instance)
        outs = [Value(v.name, v.type, producer=nn, index=i, span=v.span) for i, v in enumerate(n.outputs)]
        rec = _recurrence(n)
        if rec is not None:
            slots = [StateSlot(n.name, k, f"{STATE_PREFIX}{n.name}.{k}",
                               f"{STATE_PREFIX}{n.name}.{k.removesuffix('0')}_n", rec.type_of(i))
                     for i, k in enumerate(rec.states)]
            if feed_states:
                sin = [Value(s.input, s.type, span=n.span) for s in slots]
                nn.inputs = ins[:rec.first_state] + sin
                state_inputs[id(nn)] = sin
            first = rec.first_state_output          # after the layer's (or cell's) outputs
            if rec.returns_states:
                # the node already returns its states (maybe used in the graph): expose them too
                souts = outs[first:first + len(slots)]
            else:
                souts = [Value(s.output, s.type, producer=nn, index=first + i, span=n.span)
                         for i, s in enumerate(slots)]
                outs += souts
            # bound again with the states as inputs and outputs (the op checks the new form)
            nn.app = n.app.rebind({**n.attrs, **rec.return_states}, [v.type for v in nn.inputs])
            extra[id(nn)] = (souts, slots)
        nn.outputs = outs
        for v, nv in zip(n.outputs, outs):
            vmap[id(v)] = nv
        nodes.append(nn)
    outputs = [vmap[id(v)] for v in ir.outputs]
    live = _live(outputs)
    nodes = [n for n in nodes if id(n) in live]
    slots_all: list[StateSlot] = []
    state_outs: list[Value] = []
    for n in nodes:
        if id(n) in extra:
            souts, slots = extra[id(n)]
            for v, s in zip(souts, slots):
                if v.name != s.output:      # an existing output: expose it under the slot's name
                    ident = _identity(n, v, s.output)
                    state_outs.append(ident)
                else:
                    state_outs.append(v)
            slots_all.extend(slots)
    used = {id(v) for n in nodes for v in n.inputs} | {id(v) for v in outputs}
    new_inputs = [v for v in inputs if id(v) in used]
    if feed_states:
        for n in nodes:
            new_inputs.extend(state_inputs.get(id(n), []))
    idents = [v.producer for v in state_outs if v.producer is not None and v.producer.name.startswith(STATE_PREFIX)]
    nodes.extend(idents)
    params = {k for n in nodes for k in n.params.values()}
    m = Model(name=ir.name, file=ir.file, span=ir.span, args=dict(ir.args), inputs=new_inputs,
              outputs=outputs + state_outs, nodes=nodes,
              parameters={k: p for k, p in ir.parameters.items() if k in params}, scopes=dict(ir.scopes))
    return m, slots_all


def _identity(node: Node, v: Value, name: str) -> Value:
    """An Identity node that renames `v` (an output of `node` already used in the graph)."""
    from ..ops.base import get_op
    app = get_op("Identity").bind({}, [v.type], node.span)
    ident = Node(name=name, app=app, inputs=[v], outputs=[], params={}, span=node.span,
                 scope=node.scope, instance=name)
    out = Value(name, v.type, producer=ident, index=0, span=node.span)
    ident.outputs = [out]
    return out


# =============================================================================
# Engines
# =============================================================================

class _NumpyEngine:
    name = "numpy"

    def __init__(self, ir: Model, weights: dict):
        from ..backends.numpy.executor import NumpyExecutor
        self.ex = NumpyExecutor(ir, weights)
        self.device = "numpy"

    def run(self, feeds: dict, on_device: bool = False) -> dict:
        return self.ex.run(feeds)


class _OrtEngine:
    name = "onnx"

    def __init__(self, source, device: str = "auto", precision: str = "fp32"):
        from ..runtime import Session
        self.sess = Session(source, device=device, precision=precision)
        self.device = self.sess.device

    def run(self, feeds: dict, on_device: bool = False) -> dict:
        return self.sess.run(feeds, on_device=on_device)


def _export(ir: Model, weights: dict, opset: int | None, metadata: dict | None = None):
    from ..backends.onnx.export import DEFAULT_OPSET, to_onnx
    return to_onnx(ir, weights, opset=opset or DEFAULT_OPSET, metadata=metadata)


# =============================================================================
# The runner: prompt in, next-token logits out, one step at a time
# =============================================================================

def lm_io(ir: Model, token_input: str | None = None, output: str | None = None) -> tuple[Value, Value]:
    """The token input (integer [N, T]) and the logits output (float [N, T, V]) of a language model."""
    if token_input is None:
        cands = [v for v in ir.inputs if not v.type.is_float and v.type.rank == 2]
        if len(cands) != 1:
            ins = ", ".join(f"{v.name}: {v.type}" for v in ir.inputs)
            raise ArchError(f"model {ir.name} is not a language model: sampling needs exactly one integer "
                            f"token input [N, T], it has ({ins})", ir.span,
                            hint="e.g. `input tokens: i64[N, T]` -> ... -> `output logits` [N, T, vocab]")
        tok = cands[0]
    else:
        tok = next((v for v in ir.inputs if v.name == token_input), None)
        if tok is None:
            raise ArchError(f"model {ir.name} has no input '{token_input}'", ir.span,
                            did_you_mean(token_input, [v.name for v in ir.inputs]))
    if output is None:
        cands = [v for v in ir.outputs if v.type.is_float and v.type.rank == 3]
        named = [v for v in cands if v.name == "logits"]
        if named:
            cands = named
        if len(cands) != 1:
            outs = ", ".join(f"{v.name}: {v.type}" for v in ir.outputs)
            raise ArchError(f"model {ir.name} is not a language model: sampling needs one float output of "
                            f"next-token scores [N, T, vocab], it has ({outs})", ir.span)
        out = cands[0]
    else:
        out = next((v for v in ir.outputs if v.name == output), None)
        if out is None:
            raise ArchError(f"model {ir.name} has no output '{output}'", ir.span,
                            did_you_mean(output, [v.name for v in ir.outputs]))
    return tok, out


def lengths_inputs(ir: Model) -> list[str]:
    """Model inputs that only give recurrent layers their `lengths` (lengths=true): while sampling
    no row is padded, so the sampler feeds the number of tokens of each call itself."""
    uses: dict[int, list[tuple[Node, int]]] = {}
    for n in ir.nodes:
        for i, v in enumerate(n.inputs):
            uses.setdefault(id(v), []).append((n, i))
    return [v.name for v in ir.inputs
            if uses.get(id(v)) and all(_is_recurrent(n) and _recurrence(n).lengths_input == i
                                       for n, i in uses[id(v)])]


def default_window(ir: Model) -> int | None:
    """The longest context the model's layers accept (their declared context lengths), or None."""
    lens = [c for c in (n.op.context_length(n.app) for n in ir.nodes) if c is not None]
    return min(lens) if lens else None


class Runner:
    """Runs a language model a token at a time: `start(prompt_ids, context)` reads the prompt
    [N, P] and returns the next-token logits [N, V]; `step(ids)` appends one token per row and
    returns the logits after it.

    engine "numpy" or "onnx" (device cpu / cuda / auto, precision fp32 / tf32 / fp16: runtime.py);
    mode "auto" (see the module docstring), "state" or "window"; window: tokens the model sees in
    window mode (default: its context length, else everything). `onnx_file` runs a saved .onnx
    file instead of exporting. on_device (ONNX Runtime only; default: on CUDA): the recurrent
    states and the logits stay in device memory between steps and `generate_ids` picks the next
    token there (DevicePicker), copying back one id per row and step."""

    def __init__(self, ir: Model | None, weights: dict | None = None, *, engine: str = "numpy",
                 device: str = "auto", mode: str = "auto", window: int | None = None,
                 token_input: str | None = None, output: str | None = None, opset: int | None = None,
                 onnx_file=None, precision: str = "fp32", on_device: bool | None = None):
        self.engine_name = engine
        self.precision = precision
        self._on_device = on_device
        self.slots: list[StateSlot] = []
        self._prefill = None
        self.lengths_inputs: list[str] = []
        self._lengths_dtype: dict = {}
        if onnx_file is not None:
            self._init_file(onnx_file, device, mode, window, token_input, output)
            return self._resolve_on_device()
        if ir is None or weights is None:
            raise ValueError("Runner needs an IR and its weights, or an onnx_file")
        self.ir = ir
        tok, out = lm_io(ir, token_input, output)
        self.token_input, self.output = tok.name, out.name
        self.vocab_size = int(out.type.shape[-1]) if isinstance(out.type.shape[-1], int) else None
        if mode == "auto":
            mode = "state" if self.can_carry_state(ir) else "window"
        elif mode == "state" and not self.can_carry_state(ir):
            raise ArchError(f"model {ir.name} cannot be run with carried state: "
                            + self._why_not_state(ir), ir.span, hint="use the window mode")
        self.mode = mode
        self.window = window if window is not None else default_window(ir)
        self.lengths_inputs = lengths_inputs(ir)
        self._lengths_dtype = {v.name: v.type.np_dtype for v in ir.inputs if v.name in self.lengths_inputs}
        self.context_names = [v.name for v in ir.inputs if v.name != self.token_input]
        if mode == "state":
            step_ir, self.slots = stateful(ir, feed_states=True)
            self.step_ir = step_ir
            self.context_names = [v.name for v in step_ir.inputs
                                  if v.name != self.token_input and not v.name.startswith(STATE_PREFIX)]
            self.engine = self._make(step_ir, weights, engine, device, opset)
            if self.needs_prefill(ir):
                pre_ir, _ = stateful(ir, feed_states=False)
                self.prefill_ir = pre_ir
                self.prefill_context = [v.name for v in pre_ir.inputs if v.name != self.token_input]
                self._prefill = self._make(pre_ir, weights, engine, device, opset)
        else:
            self.engine = self._make(ir, weights, engine, device, opset)
        self.device = self.engine.device
        self._resolve_on_device()

    def _resolve_on_device(self) -> None:
        wanted = self._on_device if self._on_device is not None else self.device == "cuda"
        if wanted and self.engine.name != "onnx":
            raise ArchError("on_device keeps values in ONNX Runtime's device memory; the NumPy engine has none")
        self.on_device = bool(wanted)

    def _init_file(self, path, device, mode, window, token_input, output):
        meta = _onnx_meta(path)
        self.ir = None
        self.engine = _OrtEngine(str(path), device, self.precision)
        self.device = self.engine.device
        sess = self.engine.sess
        ints = [i for i in sess.inputs if i.dtype is not None and i.dtype.kind in "iu"
                and i.shape is not None and len(i.shape) == 2]
        if token_input is None:
            if len(ints) != 1:
                raise ArchError(f"{path} is not a language model: sampling needs one integer token input "
                                f"[N, T], it has ({', '.join(map(str, sess.inputs))})")
            token_input = ints[0].name
        self.token_input = token_input
        if output is None:
            outs = [o for o in sess.outputs if o.shape is not None and len(o.shape) == 3
                    and not o.name.startswith(STATE_PREFIX)]
            named = [o for o in outs if o.name == "logits"]
            outs = named or outs
            if len(outs) != 1:
                raise ArchError(f"{path} is not a language model: sampling needs one output of next-token "
                                f"scores [N, T, vocab], it has ({', '.join(map(str, sess.outputs))})")
            output = outs[0].name
        self.output = output
        oinfo = next(o for o in sess.outputs if o.name == output)
        self.vocab_size = oinfo.shape[-1] if isinstance(oinfo.shape[-1], int) else None
        self.window = window
        states = []
        if META_STATES in meta:
            try:
                states = json.loads(meta[META_STATES])
            except json.JSONDecodeError:
                raise ArchError(f"{path}: the state list in its metadata is not valid JSON") from None
        names = {i.name for i in sess.inputs}
        ok = bool(states) and all(s["input"] in names for s in states)
        if mode == "state" and not ok:
            raise ArchError(f"{path} does not carry recurrent state (no {META_STATES} metadata)",
                            hint="write a step model with `archdsl sample ... --save-onnx FILE`, or use "
                                 "the window mode")
        self.mode = "state" if ok and mode != "window" else "window"
        if self.mode == "state":
            info = {i.name: i for i in sess.inputs}
            for s in states:
                shape = info[s["input"]].shape
                self.slots.append(StateSlot(s["node"], s["kind"], s["input"], s["output"],
                                            TensorType(s.get("dtype", "f32"), tuple(shape))))
        if META_LENGTHS in meta:
            try:
                self.lengths_inputs = [n for n in json.loads(meta[META_LENGTHS]) if n in names]
                self._lengths_dtype = {i.name: i.dtype for i in sess.inputs if i.name in self.lengths_inputs}
            except json.JSONDecodeError:
                raise ArchError(f"{path}: the lengths list in its metadata is not valid JSON") from None
        self.context_names = [i.name for i in sess.inputs
                              if i.name != token_input and not i.name.startswith(STATE_PREFIX)]

    def _make(self, ir, weights, engine, device, opset):
        if engine == "numpy":
            return _NumpyEngine(ir, weights)
        if engine == "onnx":
            return _OrtEngine(_export(ir, weights, opset), device, self.precision)
        raise ArchError(f"unknown engine '{engine}'", hint="numpy or onnx")

    # -- analysis --------------------------------------------------------------------------
    @staticmethod
    def can_carry_state(ir: Model) -> bool:
        alive = _live(ir.outputs)
        live = [n for n in ir.nodes if id(n) in alive]
        return any(_is_recurrent(n) for n in live) and all(time_local(n) for n in live
                                                          if not _feeds_only_states(n, ir))

    @staticmethod
    def _why_not_state(ir: Model) -> str:
        if not any(_is_recurrent(n) for n in ir.nodes):
            return "it has no recurrent layer"
        bad = [n for n in ir.nodes if not time_local(n) and not _feeds_only_states(n, ir)]
        return ("these layers mix time steps: " + ", ".join(f"{n.name} ({n.kind})" for n in bad[:5]))

    @staticmethod
    def needs_prefill(ir: Model) -> bool:
        return any(_is_recurrent(n) and len(n.inputs) > _recurrence(n).first_state for n in ir.nodes)

    # -- running ---------------------------------------------------------------------------
    def _check_ids(self, ids: np.ndarray) -> None:
        if self.vocab_size is not None and ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ArchError(f"token id {int(ids.max() if ids.max() >= self.vocab_size else ids.min())} is outside "
                            f"the model's vocabulary of {self.vocab_size}")

    def start(self, prompt: np.ndarray, context: dict | None = None, keep: bool = False):
        """The next-token logits [N, V] after the prompt [N, P]; keep=True (on_device runners):
        the model's whole logits output, left in device memory (for DevicePicker)."""
        prompt = np.asarray(prompt, dtype=np.int64)
        if prompt.ndim != 2 or prompt.shape[1] == 0:
            raise ArchError(f"the prompt must be a non-empty [N, P] array of token ids, got shape {list(prompt.shape)}",
                            hint="give at least one token to start from")
        self._check_ids(prompt)
        self.context = dict(context or {})
        missing = [c for c in self.context_names if c not in self.context and c not in self.lengths_inputs]
        if missing:
            raise ArchError(f"the model needs the context input{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(missing)} besides the tokens")
        self.history = prompt
        if self.mode == "window":
            return self._window(keep)
        device = keep or self.on_device       # states stay on the device between steps
        if self._prefill is not None:
            feeds = self._feeds(self.prefill_context, prompt)
            outs = self._prefill.run(feeds, on_device=device)
        else:
            n = prompt.shape[0]
            feeds = self._feeds(self.context_names, prompt)
            for s in self.slots:
                shape = [int(d) if isinstance(d, int) else n for d in s.type.shape]
                feeds[s.input] = np.zeros(shape, s.type.np_dtype)
            outs = self.engine.run(feeds, on_device=device)
        self.states = {s.input: outs[s.output] for s in self.slots}
        return self._logits(outs[self.output], keep)

    def step(self, ids, keep: bool = False):
        """Append one token per row; the logits after it (keep: as `start`)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1, 1)
        self._check_ids(ids)
        self.history = np.concatenate([self.history, ids], axis=1)
        if self.mode == "window":
            return self._window(keep)
        feeds = self._feeds(self.context_names, ids)
        feeds.update(self.states)
        outs = self.engine.run(feeds, on_device=keep or self.on_device)
        self.states = {s.input: outs[s.output] for s in self.slots}
        return self._logits(outs[self.output], keep)

    def _window(self, keep: bool = False):
        h = self.history if self.window is None else self.history[:, -self.window:]
        feeds = self._feeds(self.context_names, h)
        return self._logits(self.engine.run(feeds, on_device=keep)[self.output], keep)

    @staticmethod
    def _logits(value, keep: bool):
        if keep:
            return value
        return np.asarray(value.numpy() if hasattr(value, "numpy") and not isinstance(value, np.ndarray)
                          else value)[:, -1]

    def picker(self, temperature: float, top_k: int | None):
        """A DevicePicker for this runner's logits, or None where tokens are picked on the host
        (not on_device, or a vocabulary size unknown until the first step)."""
        if not self.on_device or self.vocab_size is None:
            return None
        info = next(o for o in self.engine.sess.outputs if o.name == self.output)
        return DevicePicker(self.vocab_size, info.type, temperature, top_k, self.engine.sess.device)

    def _feeds(self, names, tokens: np.ndarray) -> dict:
        """The tokens, the context inputs among `names`, and each recurrent layer's `lengths`
        input set to the number of tokens fed (every row is whole: nothing is padded)."""
        feeds = {c: self.context[c] for c in names if c in self.context}
        feeds[self.token_input] = tokens
        for c in self.lengths_inputs:
            if c in names:
                feeds[c] = np.full(tokens.shape[0], tokens.shape[1], self._lengths_dtype.get(c) or np.int64)
        return feeds

    # -- saving ------------------------------------------------------------------------------
    def save_onnx(self, path, weights: dict, vocab: Vocab | None = None, opset: int | None = None) -> Path:
        """Write the model this runner steps (the step IR in state mode) with the vocabulary and the
        state names in its metadata, for `Runner(None, onnx_file=path)` / `archdsl sample --onnx`."""
        from ..backends.onnx.export import save
        if self.ir is None:
            raise ArchError("this runner runs an ONNX file already")
        if self._prefill is not None:
            raise ArchError(f"model {self.ir.name} reads its initial recurrent state from the graph; a single "
                            "step model cannot hold both the prefill and the step graphs")
        meta = {}
        if vocab is not None:
            meta[META_VOCAB] = vocab.to_json()
        if self.lengths_inputs:
            meta[META_LENGTHS] = json.dumps(self.lengths_inputs)
        if self.mode == "state":
            meta[META_STATES] = json.dumps([s.to_json() for s in self.slots])
            proto = _export(self.step_ir, weights, opset, meta)
        else:
            proto = _export(self.ir, weights, opset, meta)
        save(proto, path)
        return Path(path)


def _feeds_only_states(node: Node, ir: Model) -> bool:
    """True when every consumer path of the node ends in a recurrent node's state input (a seq2seq
    encoder, whose output only initialises the decoder): dropped from the step graph."""
    consumers: dict[int, list[tuple[Node, int]]] = {}
    for n in ir.nodes:
        for i, v in enumerate(n.inputs):
            consumers.setdefault(id(v), []).append((n, i))
    outs = {id(v) for v in ir.outputs}
    memo: dict[int, bool] = {}

    def only_states(n: Node) -> bool:
        if id(n) in memo:
            return memo[id(n)]
        memo[id(n)] = False
        ok = True
        for v in n.outputs:
            if id(v) in outs:
                ok = False
                break
            for c, i in consumers.get(id(v), []):
                if _is_recurrent(c) and i >= _recurrence(c).first_state:
                    continue
                if not only_states(c):
                    ok = False
                    break
            if not ok:
                break
        memo[id(n)] = ok
        return ok

    return only_states(node)


# =============================================================================
# Picking tokens
# =============================================================================

def pick(logits: np.ndarray, temperature: float, top_k: int | None, rng: np.random.Generator) -> np.ndarray:
    """One token id per row of `logits` [N, V]: argmax at temperature 0, else a draw from
    softmax(logits / temperature) restricted to the top_k scores (None or 0: all)."""
    logits = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return logits.argmax(axis=-1)
    z = logits / temperature
    if top_k and top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k][:, None]
        z = np.where(z >= kth, z, -np.inf)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    cdf = np.cumsum(p, axis=-1)
    u = rng.random((len(p), 1)) * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=-1), p.shape[-1] - 1)


class DevicePicker:
    """`pick` as a small ONNX model run on the LM's device: the last step's logits stay in device
    memory, and one token id per row comes back. It computes in float64 from the same uniform
    draws as `pick` (one per row, from the same generator), so it picks the same tokens from the
    same logits; its ops all have CUDA kernels in float64 (tests/test_serving.py checks)."""

    def __init__(self, vocab: int, logits_type: str, temperature: float, top_k: int | None, device: str):
        from ..runtime import Session
        self.temperature = temperature
        self.proto = picker_model(vocab, logits_type, temperature, top_k)
        self.sess = Session(self.proto, device=device)

    def __call__(self, logits, rng: np.random.Generator) -> np.ndarray:
        n = logits.shape()[0] if callable(getattr(logits, "shape", None)) else logits.shape[0]
        feeds = {"logits": logits}
        if self.temperature != 0:
            feeds["u"] = rng.random((n, 1))
        return self.sess.run(feeds)["token"]


def picker_model(vocab: int, logits_type: str, temperature: float, top_k: int | None):
    """The ONNX graph of `pick` on logits [N, T, vocab] (its last step): token int64 [N]."""
    import onnx
    from onnx import TensorProto as TP
    from onnx import helper as h
    elem = {"tensor(float)": TP.FLOAT, "tensor(float16)": TP.FLOAT16, "tensor(double)": TP.DOUBLE}[logits_type]
    nodes, inits = [], []

    def const(name, value, dtype):
        inits.append(onnx.numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def node(op, ins, out, **attrs):
        nodes.append(h.make_node(op, ins, [out], name=out, **attrs))
        return out

    last = node("Gather", ["logits", const("last", -1, np.int64)], "last_step", axis=1)
    z = node("Cast", [last], "z64", to=TP.DOUBLE)
    inputs = [h.make_tensor_value_info("logits", elem, ["N", "T", vocab])]
    if temperature == 0:
        node("ArgMax", [z], "token", axis=-1, keepdims=0)
    else:
        inputs.append(h.make_tensor_value_info("u", TP.DOUBLE, ["N", 1]))
        axis = const("axis", [-1], np.int64)
        z = node("Div", [z, const("temperature", temperature, np.float64)], "scaled")
        if top_k and top_k < vocab:
            node("TopK", [z, const("k", [top_k], np.int64)], "top", axis=-1)
            nodes[-1].output.append("top_i")
            kth = node("Slice", ["top", const("k1", [top_k - 1], np.int64), const("k2", [top_k], np.int64),
                                 const("axis1", [1], np.int64)], "kth")
            keep = node("GreaterOrEqual", [z, kth], "in_top")
            z = node("Where", [keep, z, const("neg_inf", -np.inf, np.float64)], "top_only")
        m = node("ReduceMax", [z, axis], "max", keepdims=1)
        p = node("Exp", [node("Sub", [z, m], "shifted")], "unnormalised")
        p = node("Div", [p, node("ReduceSum", [p, axis], "total", keepdims=1)], "p")
        cdf = node("CumSum", [p, const("axis0", -1, np.int64)], "cdf")
        end = node("Slice", [cdf, const("minus1", [-1], np.int64), const("big", [vocab], np.int64),
                             const("axis1b", [1], np.int64)], "cdf_end")
        below = node("LessOrEqual", [cdf, node("Mul", ["u", end], "threshold")], "below")
        count = node("ReduceSum", [node("Cast", [below], "below_i", to=TP.INT64), axis], "count", keepdims=0)
        node("Min", [count, const("vmax", vocab - 1, np.int64)], "token")
    out = h.make_tensor_value_info("token", TP.INT64, ["N"])
    graph = h.make_graph(nodes, "pick", inputs, [out], initializer=inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 18)], producer_name="archdsl")
    model.ir_version = 8
    return model


def generate_ids(runner: Runner, prompt: np.ndarray, length: int, temperature: float = 1.0,
                 top_k: int | None = None, seed: int = 0, context: dict | None = None) -> np.ndarray:
    """`length` new token ids per row of `prompt` [N, P]: [N, length]. A runner that keeps its
    values on the device (Runner.on_device) picks each token there (DevicePicker)."""
    if temperature < 0:
        raise ArchError(f"the temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 0:
        raise ArchError(f"top-k must be >= 0, got {top_k}")
    rng = np.random.default_rng(seed)
    picker = runner.picker(temperature, top_k)
    if picker is not None:
        out = np.empty((prompt.shape[0], length), np.int64)
        logits = runner.start(prompt, context, keep=True)
        for i in range(length):
            out[:, i] = picker(logits, rng)
            if i + 1 < length:
                logits = runner.step(out[:, i], keep=True)
        return out
    logits = runner.start(prompt, context)
    if runner.vocab_size is None:
        runner.vocab_size = logits.shape[-1]
    out = np.empty((prompt.shape[0], length), np.int64)
    for i in range(length):
        tok = pick(logits, temperature, top_k, rng)
        out[:, i] = tok
        if i + 1 < length:
            logits = runner.step(tok)
    return out


def generate(runner: Runner, vocab: Vocab, prompt: str, length: int, temperature: float = 1.0,
             top_k: int | None = None, seed: int = 0, n: int = 1) -> list[str]:
    """`n` continuations of `prompt` (the generated text only, without the prompt)."""
    if runner.vocab_size is not None and runner.vocab_size != len(vocab):
        raise ArchError(f"the model scores {runner.vocab_size} tokens but the vocabulary ({vocab.source}) "
                        f"has {len(vocab)}", hint="is this the vocabulary the model was trained with?")
    ids = vocab.encode(prompt)
    if len(ids) == 0:
        raise ArchError("the prompt is empty", hint="give at least one character to start from, e.g. --prompt 'The '")
    ids = generate_ids(runner, np.tile(ids, (n, 1)), length, temperature, top_k, seed)
    return [vocab.decode(row) for row in ids]
