"""--verify: run the source model (PyTorch, with transformers or torchvision where the mapping's
`from` names them) and the archdsl model on the same random input, and compare the outputs.

Shapes alone cannot catch every mapping mistake: GPT-2 without the transpose of its Conv1D
weights passes every shape check on the square q/k/v/out matrices, and its logits are off by
several units. Running both models catches it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ArchError, did_you_mean
from ..ir.graph import Model
from ..ir.types import resolve_dim
from .convert import canonical
from .mapping import Port, Section
from .sources import torch_module

DIMS = {"N": 2}          # symbolic dims of the random input: N=2, every other one 8
OTHER_DIM = 8
# Where `from "..."` may point: the libraries whose models the mappings describe.
LIBRARIES = {"transformers": "pip install transformers", "torchvision": "pip install torchvision",
             "torch": "pip install 'archdsl[torch]'"}


@dataclass
class Difference:
    output: str
    largest: float          # max |ours - theirs|
    scale: float            # max(1, max |theirs|): the tolerance is relative to it

    def __str__(self):
        return f"{self.output}: largest difference {self.largest:.3g} (outputs up to {self.scale:.3g})"


@dataclass
class VerifyReport:
    differences: list[Difference]
    tolerance: float
    engine: str

    @property
    def ok(self) -> bool:
        return all(d.largest <= self.tolerance * d.scale for d in self.differences)

    def describe(self) -> str:
        return (f"verified against the source model on {self.engine}, tolerance {self.tolerance:g} "
                f"(relative to outputs above 1): " + "; ".join(map(str, self.differences)))

    def check(self) -> "VerifyReport":
        if not self.ok:
            bad = [d for d in self.differences if d.largest > self.tolerance * d.scale]
            raise ArchError("the archdsl model and the source model differ: " + "; ".join(map(str, bad))
                            + f"; tolerance {self.tolerance:g}",
                            hint="a transform missing from the mapping (a transpose?), or a spec that "
                                 "computes something else than the source (an activation, an epsilon)")
        return self


def source_module(section: Section, model: Model, config: dict | None = None):
    """The source model of the mapping's `from "library.Class"`, built from `config` (a
    config.json) or from the spec's parameters through the `config` lines; random weights."""
    if not section.source:
        raise ArchError(f"the mapping {section.label} names no source model (from \"library.Class\"), so "
                        f"--verify has nothing to run", section.span,
                        hint="from Python: archdsl.interop.verify(model, weights, section, module=your_module)")
    lib, _, attr = section.source.rpartition(".")
    root = lib.split(".")[0]
    if root not in LIBRARIES:
        raise ArchError(f"from \"{section.source}\": --verify builds models of {', '.join(LIBRARIES)} only",
                        section.span)
    torch_module("--verify (running the source model)")
    import importlib
    try:
        mod = importlib.import_module(lib)
    except ImportError:
        raise ArchError(f"--verify builds the source model with {lib}, which is not installed",
                        hint=LIBRARIES[root]) from None
    cls = getattr(mod, attr, None)
    if cls is None:
        raise ArchError(f"from \"{section.source}\": {lib} has no {attr}", section.span,
                        hint=did_you_mean(attr, [n for n in dir(mod) if not n.startswith("_")]))
    args = section.config_args(model.args)
    if root == "transformers":
        cfg = cls.config_class.from_dict({**args, **(config or {})})
        module = cls(cfg)
    else:
        module = cls(**args)
    return module.float().eval()


def load_source(module, tensors: dict[str, np.ndarray], section: Section | None = None, strict: bool = False):
    """Load named arrays into a torch module. strict: exactly its state dict (load_state_dict
    strict=True); else every parameter must be found (under its name as the mapping spells it:
    aliases renamed, with or without its base prefix; or as the original of a tied copy), and
    missing buffers keep their values."""
    torch = torch_module()
    if strict:
        sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
        try:
            module.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise ArchError(f"the source model does not load these tensors: {str(e).splitlines()[0]}") from None
        return module
    params = dict(module.named_parameters())
    named = {canonical(section, k): v for k, v in tensors.items()} if section is not None else tensors
    sd, missing = {}, []
    for k, t in module.state_dict().items():
        a = _find(k, named, section)
        if a is None:
            if k in params:
                missing.append(k)
            continue
        sd[k] = torch.from_numpy(np.ascontiguousarray(a)).to(t.dtype)
    if missing:
        raise ArchError(f"the source model needs {len(missing)} tensor(s) the checkpoint does not have: "
                        + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
    module.load_state_dict(sd, strict=False)
    return module


def _find(name, tensors, section):
    """A tensor by the name the module gives it, or as the original of a tied copy."""
    if name in tensors or section is None:
        return tensors.get(name)
    for tie in section.ties:
        b = tie.copy.match(name)
        if b is not None:
            return tensors.get(tie.of.format(b))
    return None


def random_inputs(model: Model, section: Section, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ports = {p.name: p for p in section.inputs}
    feeds = {}
    dims = {s: DIMS.get(s, OTHER_DIM) for s in model.symbols()}
    for v in model.inputs:
        port = ports.get(v.name)
        if port is None:
            raise ArchError(f"the mapping {section.label} does not say how the source model takes "
                            f"input '{v.name}'", section.span, hint=f"add: inputs ARG = {v.name}")
        shape = tuple(resolve_dim(d, dims) for d in v.type.shape)
        if v.type.is_float:
            feeds[v.name] = rng.standard_normal(shape).astype(np.float32)
        elif v.type.dtype == "bool":
            keep = rng.random(shape) < 0.8
            keep[..., 0] = True                  # no row without a single kept position
            feeds[v.name] = keep
        else:
            feeds[v.name] = rng.integers(0, _bound(port, model), shape).astype(v.type.np_dtype)
    return feeds


def _bound(port: Port, model: Model) -> int:
    if port.bound is None:
        raise ArchError(f"input '{port.name}' holds integers: say below what, e.g. `{port.key or port.name} = "
                        f"{port.name} < vocab`", port.span)
    if isinstance(port.bound, int):
        return port.bound
    if port.bound not in model.args:
        raise ArchError(f"'{port.bound}' is not a parameter of model {model.name}", port.span,
                        did_you_mean(port.bound, model.args))
    return int(model.args[port.bound])


def run_source(module, section: Section, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    torch = torch_module()
    args, kwargs = [], {}
    for p in section.inputs:
        x = torch.from_numpy(feeds[p.name])
        if x.dtype == torch.bool:
            x = x.long()                      # attention masks: 1 = keep
        if p.key:
            kwargs[p.key] = x
        else:
            args.append(x)
    with torch.no_grad():
        out = module(*args, **kwargs)
    res, positional = {}, 0
    for p in section.outputs:
        if p.key:
            r = out[p.key] if isinstance(out, dict) else getattr(out, p.key, None)
            if r is None:
                raise ArchError(f"the source model's output has no '{p.key}'", p.span)
        elif isinstance(out, torch.Tensor):
            r = out
        else:
            r = out[positional]
            positional += 1
        res[p.name] = r.detach().float().numpy()
    return res


def compare(ours: dict, theirs: dict, tolerance: float, engine: str) -> VerifyReport:
    diffs = []
    for name, b in theirs.items():
        a = ours[name]
        if a.shape != b.shape:
            raise ArchError(f"output {name}: the archdsl model gives {list(a.shape)}, the source model {list(b.shape)}")
        diffs.append(Difference(name, float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0,
                                max(1.0, float(np.max(np.abs(b))) if b.size else 1.0)))
    return VerifyReport(diffs, tolerance, engine)


def verify(model: Model, weights: dict, section: Section, *, module=None, source_tensors=None,
           config: dict | None = None, onnx_model=None, tolerance: float = 1e-4, seed: int = 0,
           strict_load: bool = False) -> VerifyReport:
    """Run both models on one random input and compare their outputs (not raising; see .check()).

    module: a torch module holding the source weights already; else it is built from the
    mapping's `from` and loaded with `source_tensors`. The archdsl model runs on ONNX Runtime
    when `onnx_model` (a path or a ModelProto) is given, else on the NumPy engine."""
    for p in section.outputs:
        if p.name not in {v.name for v in model.outputs}:
            raise ArchError(f"model {model.name} has no output '{p.name}'", p.span,
                            did_you_mean(p.name, [v.name for v in model.outputs]))
    if not section.outputs:
        raise ArchError(f"the mapping {section.label} does not say which outputs to compare", section.span,
                        hint="add: outputs KEY = " + (model.outputs[0].name if model.outputs else "NAME"))
    feeds = random_inputs(model, section, seed)
    if module is None:
        module = source_module(section, model, config)
        load_source(module, source_tensors, section, strict=strict_load)
    theirs = run_source(module, section, feeds)
    if onnx_model is not None:
        from ..runtime import Session
        sess = Session(onnx_model, device="cpu")
        ours, engine = sess.run(feeds), "ONNX Runtime"
    else:
        from ..backends.numpy.executor import NumpyExecutor
        ours, engine = NumpyExecutor(model, weights).run(feeds), "the NumPy engine"
    return compare(ours, theirs, tolerance, engine)
