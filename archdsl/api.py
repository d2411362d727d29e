"""The public Python API.

    import archdsl
    spec = archdsl.compile("specs/lenet5.arch")     # or .arch source text
    lenet = spec.model("LeNet5")                     # a CompiledModel (IR + conveniences)
    print(lenet.summary())
    lenet.render("lenet.svg")
    lenet.to_onnx("lenet.onnx", opset=17, seed=0)
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .elaborate.elaborator import Elaborator
from .elaborate.loader import Namespace, load
from .elaborate.sections import check_sections
from .errors import ArchError, collect_errors, did_you_mean, raise_errors
from .ir.graph import Model


def compile(source: str | os.PathLike, **overrides) -> "Spec":
    """Compile a spec from a path (str ending in .arch, or a Path) or from source text.

    Every model in the file is elaborated and shape-checked with its default parameters (and
    `overrides` where a model declares them); all independent errors are raised together.
    """
    if isinstance(source, Path) or (isinstance(source, str) and source.endswith(".arch") and "\n" not in source):
        ns = load(path=source)
    else:
        ns = load(text=str(source))
    return Spec(ns, overrides)


def parse_set(items: list[str]) -> dict:
    """`--set k=v` strings -> values (int, float, bool or string)."""
    out = {}
    for it in items or []:
        if "=" not in it:
            raise ArchError(f"--set expects NAME=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        k = k.strip()
        v = v.strip()
        if v.lower() in ("true", "false"):
            out[k] = v.lower() == "true"
            continue
        try:
            out[k] = int(v.replace("_", ""))
            continue
        except ValueError:
            pass
        try:
            out[k] = float(v)
            continue
        except ValueError:
            pass
        out[k] = v
    return out


def _section_checkers() -> dict:
    """What each kind of section checks beyond its keys (a gan section: its pair of models; a
    train section: its loss, compiled against its model, and a VAE's decoder)."""
    from .gan.pair import check_gan_sections
    from .train.objective import check_train_sections
    return {"gan": check_gan_sections, "train": check_train_sections}


class Spec:
    """A compiled .arch file: its models (elaborated on demand, cached) and sections."""

    def __init__(self, ns: Namespace, overrides: dict | None = None):
        self.ns = ns
        self.file = ns.file
        self._cache: dict = {}
        errors: list[ArchError] = []
        for name in ns.own_models:
            with collect_errors(errors):
                self.model(name, **self.applicable(name, overrides or {}))
        with collect_errors(errors):
            self.sections = check_sections(ns, self, _section_checkers())
        raise_errors(errors)

    def applicable(self, name: str, overrides: dict) -> dict:
        """The overrides that model `name` declares as parameters."""
        params = {p.name for p in self.ns.models[name].params}
        return {k: v for k, v in overrides.items() if k in params}

    @property
    def model_names(self) -> list[str]:
        return list(self.ns.own_models)

    def model(self, name: str | None = None, **overrides) -> "CompiledModel":
        if name is None:
            gan = getattr(self, "sections", {}).get("gan")
            if not self.ns.own_models and not gan:
                raise ArchError(f"{self.file} defines no model")
            name = self.ns.own_models[-1] if len(self.ns.own_models) == 1 and not gan else self._default_model()
            if not overrides and gan:
                cfg = self.gan().config      # the generator with its section arguments: G(width=64)
                overrides = dict(cfg.generator_args) if name == cfg.generator else {}
        if name not in self.ns.models:
            gans = [sec.name for sec in getattr(self, "sections", {}).get("gan", [])]
            listing = f"models: {', '.join(self.ns.models)}" + (f"; gan sections: {', '.join(gans)}" if gans else "")
            raise ArchError(f"no model named '{name}' in {self.file}",
                            hint=did_you_mean(name, list(self.ns.models) + gans) or listing)
        key = (name, tuple(sorted(overrides.items())))
        if key not in self._cache:
            self._cache[key] = CompiledModel(self.elaborate(name, overrides), self)
        if hasattr(self, "sections"):   # the train section's `freeze` list (once sections are checked)
            from .passes.freeze import apply_section_freeze
            apply_section_freeze(self, self._cache[key].ir)
        return self._cache[key]

    def elaborate(self, name: str, overrides: dict) -> Model:
        """Model `name`'s IR, elaborated afresh (the language server overrides this to trace it)."""
        return Elaborator(self.ns).model(name, overrides)

    def _default_model(self) -> str:
        """With several models, the last one in the file (`archdsl train` picks the model its
        train section names instead); in a file with a gan section, its generator."""
        if getattr(self, "sections", {}).get("gan"):
            return self.gan().config.generator
        return self.ns.own_models[-1]

    def gan(self, name: str | None = None):
        """The checked generator/discriminator pair of a gan section (archdsl.gan.pair.GanPair):
        the section called `name`, or whose generator or discriminator is `name`; default: the first."""
        from .gan.pair import gan_section, resolve
        return resolve(self, gan_section(self, name))

    def models(self) -> list["CompiledModel"]:
        return [self.model(n) for n in self.ns.own_models]

    def target(self, name: str | None = None, training: bool = False, **overrides):
        """What a command acts on (archdsl/targets.py): the gan section or model `name` means,
        by default the file's gan section or its default model."""
        from .targets import resolve
        return resolve(self, name, overrides, training=training)


class CompiledModel:
    """One model's IR with the things people do with it."""

    def __init__(self, ir: Model, spec: Spec | None = None):
        self.ir = ir
        self.spec = spec

    @property
    def name(self) -> str:
        return self.ir.name

    @property
    def graph(self):
        return self.ir.graph

    def __repr__(self):
        ins = ", ".join(f"{v.name}: {v.type}" for v in self.ir.inputs)
        outs = ", ".join(f"{v.name}: {v.type}" for v in self.ir.outputs)
        return f"<model {self.name}({ins}) -> ({outs})>"

    # -- analysis -------------------------------------------------------------------------
    def cost(self, dims: dict | None = None, batch: int = 1):
        from .passes.cost import analyze
        return analyze(self.ir, dims=dims, batch=batch)

    def summary(self, dims: dict | None = None, batch: int = 1) -> str:
        from .summary import format_summary
        return format_summary(self.cost(dims, batch), self.ir)

    @property
    def param_count(self) -> int:
        return self.ir.param_count()

    # -- drawing --------------------------------------------------------------------------
    def to_dot(self, rankdir: str = "TB", collapse=False):
        from .backends.render import to_dot
        return to_dot([self.ir], rankdir=rankdir, collapse=collapse)

    def render(self, path: str | os.PathLike, rankdir: str = "TB", collapse=False) -> Path:
        from .backends.render import render
        return render([self.ir], path, rankdir=rankdir, collapse=collapse)

    def _repr_svg_(self):
        try:
            return self.to_dot().pipe(format="svg").decode()
        except Exception:   # no `dot` binary: notebooks fall back to the text repr
            return None

    def _repr_html_(self):
        """Jupyter: the drawing (SVG, when graphviz is installed) above the summary table."""
        from .authoring.report import model_html
        return model_html(self)

    # -- weights, ONNX, NumPy ---------------------------------------------------------------
    def init_weights(self, seed: int = 0) -> dict[str, np.ndarray]:
        from .passes.init import initialize
        from .passes.limits import check_resources
        check_resources(self.ir, for_training=False)   # refuse before allocating, not after
        return initialize(self.ir, seed)

    def to_onnx(self, path: str | os.PathLike | None = None, opset: int | None = None, seed: int = 0,
                weights: dict | None = None):
        """The ONNX ModelProto (written atomically to `path` if given)."""
        from .backends.onnx.export import DEFAULT_OPSET, save, to_onnx
        weights = weights if weights is not None else self.init_weights(seed)
        proto = to_onnx(self.ir, weights, opset=DEFAULT_OPSET if opset is None else opset)
        if path is not None:
            save(proto, path)
        return proto

    def save_onnx(self, path: str | os.PathLike, opset: int | None = None, seed: int = 0,
                  weights: dict | None = None):
        """Write the ONNX file (atomically) holding about one weight in memory at a time: seeded
        weights are made one by one as they are written (backends/onnx/export.py: write_onnx).
        Returns the model without its initializers (the graph)."""
        from .backends.onnx.export import DEFAULT_OPSET, write_onnx
        from .passes.init import SeededWeights
        from .passes.limits import check_resources
        if weights is None:
            check_resources(self.ir, for_training=False)
            weights = SeededWeights(self.ir, seed)
        return write_onnx(self.ir, weights, path, opset=DEFAULT_OPSET if opset is None else opset)

    def deploy(self, path: str | os.PathLike | None = None, *, target: str | None = None,
               opset: int | None = None, precision: str = "fp32", half_io: bool = False, seed: int = 0,
               weights: dict | None = None):
        """The ONNX file for a deployment target ("cpu", "cuda" or None: portable), at the opset
        the target runs (or `opset`), in `precision` ("fp32", "fp16", "bf16"): a
        backends.onnx.deploy.Export (proto, opset, fallbacks, warnings()); written if `path`."""
        from .backends.onnx.deploy import export
        from .backends.onnx.export import save
        if weights is None:
            from .passes.limits import check_resources
            check_resources(self.ir, for_training=False)
            weights = self.init_weights(seed)
        result = export(self.ir, weights, target=target, opset=opset, precision=precision, half_io=half_io)
        if path is not None:
            save(result.proto, path)
        return result

    def executor(self, weights: dict | None = None, seed: int = 0):
        from .backends.numpy.executor import NumpyExecutor
        return NumpyExecutor(self.ir, weights if weights is not None else self.init_weights(seed), seed=seed)
