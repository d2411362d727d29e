"""A model's IR as a `torch.nn.Module`: the PyTorch engine's executor.

    from archdsl.backends.torch.module import TorchModel
    net = TorchModel(spec.model().ir)                   # archdsl's seeded initial weights
    net = TorchModel(ir, weights, device="cuda")        # or a checkpoint's
    out = net({"image": batch})["logits"]               # name -> torch tensor, with autograd
    net.weights()                                       # name -> NumPy array, for checkpoints

Parameters and buffers carry archdsl's names: "conv1.weight" is the parameter `weight` of a
submodule `conv1`, "repeat_1.0.block.fc.bias" nests likewise, so `state_dict()` keys are the
names in archdsl's checkpoints and ONNX files, and weights move between the engines unchanged.

`forward` runs a plan built once, as the NumPy executor does: per node, its op's `torch_forward`
and the positions of its inputs and outputs in a flat list of values. Each op's parameters are
read from the module at call time, so `.to(device)`, DistributedDataParallel and torch.fx (which
sees them as attributes of the module: export.py) all work on the same module.
"""
from __future__ import annotations

import numpy as np

from ...errors import ArchError
from ...ir.constraints import check_inputs
from ...ir.graph import Model
from ..numpy.executor import NonFiniteError
from .context import NumpyRandom, TorchContext, TorchRandom
from .lazy import require_torch

torch = require_torch()
nn = torch.nn


def torch_dtype(np_dtype) -> "torch.dtype":
    """The torch dtype of a NumPy dtype (f32 -> torch.float32, i64 -> torch.int64, ...)."""
    return torch.from_numpy(np.zeros(0, np_dtype)).dtype


def resolve_device(device=None) -> "torch.device":
    """'cpu', 'cuda', 'cuda:1' (None: the CPU) as a torch.device, or an ArchError saying why not."""
    dev = torch.device(device or "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ArchError(f"--device {device}: PyTorch sees no CUDA device (torch.cuda.is_available() is false)",
                        hint="install a CUDA build of PyTorch on a machine with a GPU, or train on the CPU")
    return dev


class TorchModel(nn.Module):
    """The IR on PyTorch. forward(inputs, training=None, check_finite=False): inputs maps each
    model input name to an array or tensor; returns output name -> tensor. `training` switches
    the module's mode first (None keeps it: `.train()` / `.eval()`)."""

    def __init__(self, model: Model, weights: dict | None = None, *, seed: int = 0, device=None,
                 dtype=None, random=None):
        super().__init__()
        if weights is None:
            from ...passes.init import initialize
            weights = initialize(model, seed)
        missing = [n for n in model.parameters if n not in weights]
        if missing:
            raise ArchError(f"weights are missing {len(missing)} parameter(s) of model {model.name}: "
                            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        self.ir = model
        self.float_dtype = dtype or torch.float32
        self._slots: dict[str, tuple] = {}        # parameter name -> (owning module, attribute)
        for name, p in model.parameters.items():
            owner, attr = self._owner(name)
            value = torch.as_tensor(np.asarray(weights[name]), dtype=self.float_dtype).clone()
            try:
                if p.spec.buffer:
                    owner.register_buffer(attr, value)
                else:
                    owner.register_parameter(attr, nn.Parameter(value, requires_grad=p.trainable))
            except KeyError:
                raise ArchError(f"parameter {name} of model {model.name} cannot be a PyTorch module attribute: "
                                f"'{attr}' is taken by torch.nn.Module", hint="rename the layer (name=\"...\")") from None
            self._slots[name] = (owner, attr)
        self.ctx = TorchContext(random if random is not None else TorchRandom(np.random.default_rng(seed)))
        self._build_plan()
        self._fitting: set = set()
        if device is not None:
            self.to(resolve_device(device))

    def _owner(self, name: str):
        """The submodule holding parameter `name` (made on the way) and its last name part."""
        *path, attr = name.split(".")
        mod = self
        for part in path:
            sub = mod._modules.get(part)
            if sub is None:
                sub = nn.Module()
                try:
                    mod.add_module(part, sub)
                except KeyError:
                    raise ArchError(f"'{part}' in the parameter name {name} cannot be a PyTorch submodule name",
                                    hint="rename the layer (name=\"...\")") from None
            mod = sub
        return mod, attr

    def _build_plan(self) -> None:
        ir = self.ir
        slot = ir.value_slots()
        self.n_slots = len(slot)
        self.input_slots = [(v.name, slot[id(v)], v.type) for v in ir.inputs]
        # per node: (node, application, its torch_forward, input slots, output slots,
        #            ((local name, owning module, attribute, parameter name), ...))
        self.plan = [(n, n.app, n.op.torch_forward, tuple(slot[id(v)] for v in n.inputs),
                      tuple(slot[id(v)] for v in n.outputs),
                      tuple((k,) + self._slots[v] + (v,) for k, v in n.params.items())) for n in ir.nodes]
        self.output_slots = [(v.name, slot[id(v)]) for v in ir.outputs]

    # -- weights ------------------------------------------------------------------------------------
    def tensor(self, name: str):
        """The parameter or buffer named `name` (archdsl's name)."""
        owner, attr = self._slots[name]
        return getattr(owner, attr)

    def tensors(self) -> dict:
        return {n: self.tensor(n) for n in self._slots}

    def weights(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer as a NumPy array (on the CPU), by archdsl's name."""
        return {n: t.detach().cpu().numpy() for n, t in self.tensors().items()}

    @torch.no_grad()
    def load_weights(self, weights: dict) -> None:
        for n, t in self.tensors().items():
            t.copy_(torch.as_tensor(np.asarray(weights[n])))

    @property
    def device(self):
        for t in self.tensors().values():
            return t.device
        return torch.device("cpu")

    def use_numpy_random(self, rng: np.random.Generator) -> None:
        """Draw dropout masks and noise exactly as the NumPy engine does, from `rng`."""
        self.ctx.random = NumpyRandom(rng)

    # -- running ------------------------------------------------------------------------------------
    def as_inputs(self, inputs: dict) -> list:
        """The value list, model inputs in their slots (arrays converted, on the module's device)."""
        env = [None] * self.n_slots
        device = self.device
        for name, i, typ in self.input_slots:
            if name not in inputs:
                raise ArchError(f"model {self.ir.name} needs input '{name}' ({typ})")
            a = inputs[name]
            dtype = self.float_dtype if typ.is_float else torch_dtype(typ.np_dtype)
            env[i] = torch.as_tensor(a, dtype=dtype, device=device) if not torch.is_tensor(a) else a.to(device, dtype)
        if self.ir.constraints:
            key = tuple(tuple(env[i].shape) for _, i, _ in self.input_slots)
            if key not in self._fitting:
                check_inputs(self.ir, {name: env[i].shape for name, i, _ in self.input_slots})
                self._fitting.add(key)
        return env

    def run_plan(self, env: list, ctx, check_finite: bool = False) -> dict:
        """Every node in order on the value list `env`; output name -> value."""
        for node, app, fwd, ins, outs, params in self.plan:
            res = fwd(app, ctx, [env[i] for i in ins], {k: getattr(owner, attr) for k, owner, attr, _ in params})
            for i, t in zip(outs, res):
                env[i] = t
            if check_finite:
                for t in res:
                    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                        raise NonFiniteError(f"the output of {node.name} ({node.kind}) became non-finite (NaN or inf)",
                                             node.span, "lower the learning rate, clip gradients, or check the data")
        return {name: env[i] for name, i in self.output_slots}

    def forward(self, inputs: dict, training: bool | None = None, check_finite: bool = False) -> dict:
        if training is not None and training != self.training:
            self.train(training)
        ctx = self.ctx
        ctx.training = self.training
        ctx.random.begin()
        return self.run_plan(self.as_inputs(inputs), ctx, check_finite)

    def run(self, inputs: dict, training: bool = False) -> dict[str, np.ndarray]:
        """Inference without autograd: output name -> NumPy array."""
        with torch.no_grad():
            outs = self.forward(inputs, training=training)
        return {k: v.detach().cpu().numpy() for k, v in outs.items()}
