"""Runs a model's IR on the NumPy autodiff engine, in training or inference mode."""
from __future__ import annotations

import sys

import numpy as np

from ...autodiff import Tensor, no_grad
from ...errors import ArchError
from ...ir.constraints import check_inputs
from ...ir.graph import Model
from .context import ExecContext


class NonFiniteError(ArchError):
    pass


class NumpyExecutor:
    """Holds a model's parameters as engine Tensors; `forward` maps named inputs to named outputs.

    Parameters are float32 Tensors with requires_grad for trainable ones; buffers (BatchNorm
    running statistics) are Tensors the op updates in place in training mode. All parameter
    arrays are consecutive views of one flat buffer (`self.flat`, in `model.parameters` order),
    so an optimizer can update them with one ufunc call per formula step.

    `forward` runs a plan built once: per node, its op's forward and the positions of its inputs
    and outputs in a flat list of values (small networks are bound by per-node overhead).
    """

    def __init__(self, model: Model, weights: dict[str, np.ndarray], seed: int = 0,
                 dtype=np.float32):
        self.model = model
        missing = [n for n in model.parameters if n not in weights]
        if missing:
            raise ArchError(f"weights are missing {len(missing)} parameter(s) of model {model.name}: "
                            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        # copies: training never mutates the caller's arrays
        arrays = {name: np.asarray(weights[name]) for name in model.parameters}
        self.flat = np.empty(sum(a.size for a in arrays.values()), dtype)
        self.params: dict[str, Tensor] = {}
        off = 0
        for name, p in model.parameters.items():
            a = arrays[name]
            view = self.flat[off:off + a.size].reshape(a.shape)
            np.copyto(view, a, casting="unsafe")
            off += a.size
            self.params[name] = Tensor(view, requires_grad=p.trainable and not p.spec.buffer)
        self.ctx = ExecContext(training=False, rng=np.random.default_rng(seed))
        self.dtype = dtype
        # the plan: values live in a list, model inputs first, then node outputs in order
        slot = model.value_slots()
        self._nslots = len(slot)
        self._inputs = [(v.name, slot[id(v)], v.type.is_float,
                         None if v.type.is_float else v.type.np_dtype, str(v.type)) for v in model.inputs]
        self._plan = [(n, n.app, n.op.forward, tuple(slot[id(v)] for v in n.inputs),
                       tuple(slot[id(v)] for v in n.outputs),
                       {k: self.params[v] for k, v in n.params.items()}) for n in model.nodes]
        self._outputs = [(v.name, slot[id(v)]) for v in model.outputs]
        self._fitting: set = set()      # input shapes known to satisfy the model's constraints
        self._dead = _last_uses(self._plan, len(model.inputs), {s for _, s in self._outputs})

    def trainable(self) -> dict[str, Tensor]:
        return {n: t for n, t in self.params.items() if t.requires_grad}

    def weights(self) -> dict[str, np.ndarray]:
        return {n: t.data for n, t in self.params.items()}

    def _wrap_inputs(self, inputs: dict) -> list:
        env = [None] * self._nslots
        dtype = self.dtype
        for name, i, is_float, np_dtype, typ in self._inputs:
            if name not in inputs:
                raise ArchError(f"model {self.model.name} needs input '{name}' ({typ})")
            a = inputs[name]
            if not isinstance(a, Tensor):
                a = Tensor(np.asarray(a).astype(dtype if is_float else np_dtype, copy=False))
            env[i] = a
        if self.model.constraints:
            shapes = {name: env[i].shape for name, i, *_ in self._inputs}
            key = tuple(shapes.values())
            if key not in self._fitting:
                check_inputs(self.model, shapes)
                self._fitting.add(key)
        return env

    def forward(self, inputs: dict, training: bool = False, check_finite: bool = False) -> dict[str, Tensor]:
        ctx = self.ctx
        ctx.training = training
        env = self._wrap_inputs(inputs)
        for (node, app, fwd, ins, outs, params), dead in zip(self._plan, self._dead):
            res = fwd(app, ctx, [env[i] for i in ins], params)
            if len(outs) == 1:
                env[outs[0]] = res[0]
            else:
                for i, t in zip(outs, res):
                    env[i] = t
            if dead:
                _drop(env, dead)
            if check_finite:
                for t in res:
                    if np.issubdtype(t.data.dtype, np.floating) and not np.all(np.isfinite(t.data)):
                        raise NonFiniteError(f"the output of {node.name} ({node.kind}) became non-finite "
                                             f"(NaN or inf)", node.span,
                                             "lower the learning rate, clip gradients, or check the data")
        return {name: env[i] for name, i in self._outputs}

    def run(self, inputs: dict, training: bool = False) -> dict[str, np.ndarray]:
        """Inference without recording a tape: name -> array."""
        with no_grad():
            return {k: t.data for k, t in self.forward(inputs, training=training).items()}


# Values released once their last consumer has run: their arrays from 64 KiB up.
_RELEASE_BYTES = 1 << 16


def _last_uses(plan, n_inputs: int, outputs: set) -> list[tuple]:
    """Per plan step, the node-output slots no later step reads (model outputs excepted)."""
    last = {}
    for i, (_, _, _, ins, outs, _) in enumerate(plan):
        for s in outs:
            last[s] = i                      # an output nobody reads dies where it is made
        for s in ins:
            last[s] = i
    dead = [[] for _ in plan]
    for s, i in last.items():
        if s >= n_inputs and s not in outputs:
            dead[i].append(s)
    return [tuple(d) for d in dead]


def _drop(env: list, slots: tuple) -> None:
    """Forget values whose last consumer has run. An unrecorded value is freed with its last
    reference; a recorded one stays on the tape (its gradient is routed through it), so its
    array is released when nothing else holds it: no backward closure captured it, no other
    value is a view of it, no other slot is the same tensor. That frees, for example, a
    BatchNorm output once the ReLU after it has run (the ReLU keeps its own output for its
    mask): what PyTorch frees by reference counting."""
    for s in slots:
        t = env[s]
        env[s] = None
        if t is None or not t._op:
            continue
        d = t.data
        if d is None or d.nbytes < _RELEASE_BYTES:
            continue
        del d
        if sys.getrefcount(t.data) <= 2 and not any(u is t for u in env):
            t.data = None
