"""Runs a model's IR on the NumPy autodiff engine, in training or inference mode."""
from __future__ import annotations

import numpy as np

from ...autodiff import Tensor, no_grad
from ...errors import ArchError
from ...ir.graph import Model
from .context import ExecContext


class NonFiniteError(ArchError):
    pass


class NumpyExecutor:
    """Holds a model's parameters as engine Tensors; `forward` maps named inputs to named outputs.

    Parameters are float32 Tensors with requires_grad for trainable ones; buffers (BatchNorm
    running statistics) are Tensors the op updates in place in training mode.
    """

    def __init__(self, model: Model, weights: dict[str, np.ndarray], seed: int = 0,
                 dtype=np.float32):
        self.model = model
        missing = [n for n in model.parameters if n not in weights]
        if missing:
            raise ArchError(f"weights are missing {len(missing)} parameter(s) of model {model.name}: "
                            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        self.params: dict[str, Tensor] = {}
        for name, p in model.parameters.items():
            arr = np.array(weights[name], dtype=dtype)   # a copy: training never mutates the caller's
            self.params[name] = Tensor(arr, requires_grad=p.trainable and not p.spec.buffer)
        self.ctx = ExecContext(training=False, rng=np.random.default_rng(seed))
        self.dtype = dtype
        # Per node: the local->Tensor parameter dicts, built once (forward is the hot path).
        self._node_params = [{k: self.params[v] for k, v in n.params.items()} for n in model.nodes]

    def trainable(self) -> dict[str, Tensor]:
        return {n: t for n, t in self.params.items() if t.requires_grad}

    def weights(self) -> dict[str, np.ndarray]:
        return {n: t.data for n, t in self.params.items()}

    def _wrap_inputs(self, inputs: dict) -> dict:
        env = {}
        for v in self.model.inputs:
            if v.name not in inputs:
                raise ArchError(f"model {self.model.name} needs input '{v.name}' ({v.type})")
            a = inputs[v.name]
            if isinstance(a, Tensor):
                env[id(v)] = a
                continue
            a = np.asarray(a)
            if v.type.is_float:
                a = a.astype(self.dtype, copy=False)
            else:
                a = a.astype(v.type.np_dtype, copy=False)
            env[id(v)] = Tensor(a)
        return env

    def forward(self, inputs: dict, training: bool = False, check_finite: bool = False) -> dict[str, Tensor]:
        self.ctx.training = training
        env = self._wrap_inputs(inputs)
        for node, params in zip(self.model.nodes, self._node_params):
            outs = node.op.forward(node, self.ctx, [env[id(v)] for v in node.inputs], params)
            for v, t in zip(node.outputs, outs):
                env[id(v)] = t
            if check_finite:
                for t in outs:
                    if np.issubdtype(t.data.dtype, np.floating) and not np.all(np.isfinite(t.data)):
                        raise NonFiniteError(f"the output of {node.name} ({node.kind}) became non-finite "
                                             f"(NaN or inf)", node.span,
                                             "lower the learning rate, clip gradients, or check the data")
        return {v.name: env[id(v)] for v in self.model.outputs}

    def run(self, inputs: dict, training: bool = False) -> dict[str, np.ndarray]:
        """Inference without recording a tape: name -> array."""
        with no_grad():
            return {k: t.data for k, t in self.forward(inputs, training=training).items()}
