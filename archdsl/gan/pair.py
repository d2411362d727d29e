"""A GAN as a checked pair of models: the generator G and the discriminator D of a `gan` section.

Checked at compile time (so `archdsl check` reports it), each error naming both models and both
types where it is about the pair:

- G takes a floating input first, the noise, whose size per sample (the product of its non-batch
  dims) equals the section's `noise = normal(k)`; G has one output, the generated sample;
- D takes the sample first, whose type equals G's output type (dtype and every dim; the leading
  batch dim is symbolic in all three, e.g. N);
- a conditional GAN: the inputs after the first are conditions (class labels, or any array),
  the same names and types in G and D. The real batch takes them from the data (arrays of
  those names), the generated batch draws them (uniform classes for `i64[N]` labels, else rows
  of the data's array); packing (pack > 1) is for unconditional pairs;
- D has one floating output with one score per sample ([N], [N, 1], [N, 1, 1, 1], ...).

    pair = spec.gan()                   # the spec's (only / first) gan section, checked
    pair.generator, pair.discriminator  # CompiledModels
    print(pair.summary())               # both layer tables and the totals of the pair
    pair.render("gan.svg")              # side by side, with the generated-sample edge
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..elaborate.sections import Section
from ..errors import ArchError, ArchErrors, collect_errors, did_you_mean, raise_errors
from ..ir.types import Sym, TensorType, is_static
from .config import GanConfig, config_from_section


def _batch_ok(t: TensorType) -> bool:
    return t.rank >= 1 and isinstance(t.shape[0], Sym)


def _same_type(a: TensorType, b: TensorType) -> bool:
    """Equal dtypes and dims; the leading batch dims only need to be symbolic on both sides."""
    if a.dtype != b.dtype or a.rank != b.rank:
        return False
    return all(x == y for x, y in zip(a.shape[1:], b.shape[1:]))


@dataclass
class GanPair:
    spec: object                  # archdsl.api.Spec
    section: Section
    config: GanConfig
    generator: object             # CompiledModel
    discriminator: object         # CompiledModel

    @property
    def name(self) -> str:
        return self.section.name

    # -- the pair's interface --------------------------------------------------------------------
    @property
    def noise_input(self):
        return self.generator.ir.inputs[0]

    @property
    def condition_inputs(self) -> list:
        """A conditional generator's inputs after the noise (class labels, ...); [] otherwise."""
        return list(self.generator.ir.inputs[1:])

    @property
    def class_input(self):
        """The condition that is a class label (an integer input [N]), if there is exactly one."""
        c = self.condition_inputs
        return c[0] if len(c) == 1 and c[0].type.rank == 1 and not c[0].type.is_float else None

    @property
    def sample_output(self):
        return self.generator.ir.outputs[0]

    @property
    def real_input(self):
        return self.discriminator.ir.inputs[0]

    @property
    def score_output(self):
        return self.discriminator.ir.outputs[0]

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the generator's input (its non-batch dims)."""
        return tuple(int(d) for d in self.noise_input.type.shape[1:])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.sample_output.type.shape[1:])

    def noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` noise vectors for the generator: float32 [n, *noise_shape]."""
        shape = (int(n),) + self.noise_shape
        if self.config.noise["dist"] == "uniform":
            return rng.uniform(-1.0, 1.0, shape).astype(np.float32)
        return rng.standard_normal(shape, dtype=np.float32)

    def describe_noise(self) -> str:
        return f"{self.config.noise['dist']}({math.prod(self.noise_shape)})"

    # -- summary and drawing ---------------------------------------------------------------------
    def summary(self, dims: dict | None = None, batch: int = 1) -> str:
        from ..summary import format_summary
        cfg = self.config
        g, d = self.generator, self.discriminator
        gr, dr = g.cost(dims, batch), d.cost(dims, batch)
        out = [f"gan {self.name}: generator {g.name} -> discriminator {d.name}",
               f"  noise {self.describe_noise()} -> {self.noise_input.name}: {self.noise_input.type}; "
               f"generated sample {self.sample_output.name}: {self.sample_output.type} -> "
               f"{self.real_input.name}; score {self.score_output.name}: {self.score_output.type}"
               + (f"; conditions {_listing(self.condition_inputs)} (from the data for real samples, drawn for "
                  f"generated ones)" if self.condition_inputs else ""),
               f"  objective {cfg.objective}, d_steps {cfg.d_steps}, batch {cfg.batch}, "
               + (f"steps {cfg.steps}" if cfg.steps else f"epochs {cfg.epochs}")
               + f", g_optimizer {_opt(cfg.g_optimizer)}, d_optimizer {_opt(cfg.d_optimizer)}",
               "", format_summary(gr, g.ir), "", format_summary(dr, d.ir), "",
               f"Pair params: {gr.total_params + dr.total_params:,} "
               f"(generator {gr.total_params:,}, discriminator {dr.total_params:,})",
               f"Pair MACs per generated sample scored: {gr.macs + dr.macs:,}"]
        return "\n".join(out)

    def summary_json(self, dims: dict | None = None, batch: int = 1) -> dict:
        from ..summary import summary_json
        g, d = self.generator, self.discriminator
        return {"gan": self.name, "config": self.config.to_json(),
                "generator": summary_json(g.cost(dims, batch), g.ir),
                "discriminator": summary_json(d.cost(dims, batch), d.ir)}

    def _link(self) -> dict:
        return {"from": (0, self.sample_output.name), "to": (1, self.real_input.name),
                "label": f"generated {self.sample_output.type}",
                "noise": (0, self.noise_input.name, f"noise {self.describe_noise()}")}

    def to_dot(self, rankdir: str = "TB", collapse=False):
        from ..backends.render import to_dot
        return to_dot([self.generator.ir, self.discriminator.ir], rankdir=rankdir, collapse=collapse,
                      links=[self._link()], title=f"gan {self.name}")

    def render(self, path: str | os.PathLike, rankdir: str = "TB", collapse=False) -> Path:
        from ..backends.render import render
        return render([self.generator.ir, self.discriminator.ir], path, rankdir=rankdir, collapse=collapse,
                      links=[self._link()], title=f"gan {self.name}")

    def _repr_svg_(self):       # Jupyter: the pair's drawing
        try:
            return self.to_dot().pipe(format="svg").decode()
        except Exception:       # no `dot` binary: notebooks fall back to the text repr
            return None

    def __repr__(self):
        return (f"<gan {self.name}: {self.generator.name}({self.noise_input.type}) -> {self.sample_output.type} "
                f"-> {self.discriminator.name} -> {self.score_output.type}>")


def _opt(o: dict) -> str:
    kw = ", ".join(f"{k}={v}" for k, v in o.items() if k != "name")
    return f"{o['name']}({kw})"


# -- checks ------------------------------------------------------------------------------------------

def resolve(spec, sec: Section, config: GanConfig | None = None) -> GanPair:
    """Elaborate both models of `sec` and check them as a pair (ArchError on a mismatch)."""
    cfg = config if config is not None else config_from_section(spec.ns, sec)
    g = spec.model(cfg.generator, **cfg.generator_args)
    d = spec.model(cfg.discriminator, **cfg.discriminator_args)
    check_pair(sec, cfg, g.ir, d.ir)
    return GanPair(spec, sec, cfg, g, d)


def check_pair(sec: Section, cfg: GanConfig, g, d) -> None:
    gname, dname = g.name, d.name
    where = f"gan {sec.name}"
    gspan = sec.spans.get("generator", sec.span)
    dspan = sec.spans.get("discriminator", sec.span)
    if len(g.outputs) != 1:
        raise ArchError(f"{where}: generator {gname} must have one output, the generated sample; it has "
                        f"{len(g.outputs)} ({', '.join(f'{v.name}: {v.type}' for v in g.outputs)})", gspan)
    gc, dc = _listing(g.inputs[1:]), _listing(d.inputs[1:])
    if gc != dc:
        raise ArchError(f"{where}: generator {gname} and discriminator {dname} must take the same conditions "
                        f"after their first input; {gname} takes {gc or 'none'}, {dname} takes {dc or 'none'}",
                        dspan if g.inputs[1:] else gspan,
                        "a conditional GAN feeds the same condition (e.g. label: i64[N]) to both models")
    if g.inputs[1:] and cfg.pack != 1:
        raise ArchError(f"{where}: pack = {cfg.pack} packs unconditional samples; generator {gname} is conditional "
                        f"({gc})", sec.spans.get("pack", sec.span), "remove pack for a conditional GAN")
    if len(d.outputs) != 1:
        raise ArchError(f"{where}: discriminator {dname} must have one output, its score; it has "
                        f"{len(d.outputs)} ({', '.join(f'{v.name}: {v.type}' for v in d.outputs)})", dspan)
    z, x = g.inputs[0], g.outputs[0]
    xin, score = d.inputs[0], d.outputs[0]
    for what, v, model, span in (("input", z, f"generator {gname}", gspan), ("output", x, f"generator {gname}", gspan),
                                 ("input", xin, f"discriminator {dname}", dspan),
                                 ("output", score, f"discriminator {dname}", dspan),
                                 *(("condition", c, f"generator {gname}", gspan) for c in g.inputs[1:])):
        if not _batch_ok(v.type):
            raise ArchError(f"{where}: the {what} {v.name} of {model} is {v.type}; its first dim must be the "
                            f"symbolic batch dim (e.g. N) so that batches of any size go through", span)
    if not z.type.is_float:
        raise ArchError(f"{where}: generator {gname} takes {z.name}: {z.type}, but noise is floating point",
                        gspan, "declare it as f32[N, ...]")
    if not all(is_static(s) for s in z.type.shape[1:]):
        raise ArchError(f"{where}: generator {gname}'s input {z.name}: {z.type} needs concrete sizes after "
                        f"the batch dim (the noise is drawn with that shape)", gspan)
    if not all(is_static(s) for s in x.type.shape[1:]):
        raise ArchError(f"{where}: generator {gname}'s output {x.name}: {x.type} needs concrete sizes after "
                        f"the batch dim", gspan)
    for c in g.inputs[1:]:
        if not all(is_static(s) for s in c.type.shape[1:]):
            raise ArchError(f"{where}: generator {gname}'s condition {c.name}: {c.type} needs concrete sizes after "
                            f"the batch dim", gspan)
    problems: list[ArchError] = []
    judged = packed_type(x.type, cfg.pack)
    if not _same_type(judged, xin.type):
        diff = _first_difference(judged, xin.type)
        if cfg.pack == 1:
            problems.append(ArchError(
                f"{where}: generator {gname} outputs {x.name}: {x.type}, but discriminator {dname} takes "
                f"{xin.name}: {xin.type}{diff}", dspan,
                f"generated samples go into the discriminator: make {gname}'s output type equal {dname}'s "
                f"input type"))
        else:
            problems.append(ArchError(
                f"{where}: with pack = {cfg.pack} discriminator {dname} judges {cfg.pack} samples of "
                f"{x.type} at once, as {judged}, but it takes {xin.name}: {xin.type}{diff}",
                sec.spans.get("pack", dspan),
                f"the samples are concatenated along dim 1: declare {dname}'s input as {judged}"))
    per_sample = math.prod(int(s) for s in z.type.shape[1:])
    size = cfg.noise.get("size")
    if size is None:
        cfg.noise["size"] = per_sample
    elif size != per_sample:
        problems.append(ArchError(f"{where}: noise {cfg.noise['dist']}({size}) draws {size} value{'s' if size != 1 else ''} "
                        f"per sample, but generator {gname} takes {z.name}: {z.type} ({per_sample} per sample)",
                        sec.spans.get("noise", sec.span),
                        f"write noise = {cfg.noise['dist']}({per_sample}), or change {gname}'s input"))
    rest = score.type.shape[1:]
    if not score.type.is_float:
        problems.append(ArchError(f"{where}: discriminator {dname} outputs {score.name}: {score.type}; its score "
                                  f"must be floating point", dspan))
    elif not all(is_static(s) for s in rest) or math.prod(int(s) for s in rest) != 1:
        problems.append(ArchError(f"{where}: discriminator {dname} must output one score per sample ([N] or "
                                  f"[N, 1]), got {score.name}: {score.type}", dspan,
                                  "end it with Linear(1) (after Flatten for images)"))
    if problems:
        raise problems[0] if len(problems) == 1 else ArchErrors(problems)


def _listing(values) -> str:
    return ", ".join(f"{v.name}: {v.type}" for v in values)


def packed_type(t: TensorType, pack: int) -> TensorType:
    """What the discriminator takes when it judges `pack` samples of type t at once: the samples
    concatenated along dim 1 (PacGAN), e.g. f32[N, 2] -> f32[N, 2 * pack]."""
    if pack == 1 or t.rank < 2:
        return t
    return t.with_shape((t.shape[0], t.shape[1] * pack) + tuple(t.shape[2:]))


def pack_rows(x, pack: int):
    """Consecutive groups of `pack` samples [B, C, ...] -> [B // pack, pack * C, ...] (arrays or
    engine Tensors: a reshape, so gradients flow back to each sample)."""
    if pack == 1:
        return x
    shape = tuple(x.shape)
    return x.reshape((shape[0] // pack, pack * shape[1]) + shape[2:])


def _first_difference(a: TensorType, b: TensorType) -> str:
    if a.dtype != b.dtype:
        return f" (dtype {a.dtype} vs {b.dtype})"
    if a.rank != b.rank:
        return f" (rank {a.rank} vs {b.rank})"
    for i, (x, y) in enumerate(zip(a.shape, b.shape)):
        if i and x != y:
            return f" (dim {i}: {x} vs {y})"
    return ""


def check_gan_sections(spec, sections: list[Section]) -> None:
    """The compile-path hook (elaborate/sections.py): settings and the pair check of every gan
    section; all independent errors together. A model that failed to elaborate was reported
    already, so its pair is not checked again."""
    errors: list[ArchError] = []
    for sec in sections:
        try:
            cfg = config_from_section(spec.ns, sec, errors)
        except ArchErrors as e:
            errors.extend(e.errors)
            continue
        except ArchError as e:
            errors.append(e)
            continue
        try:
            g = spec.model(cfg.generator, **cfg.generator_args)
            d = spec.model(cfg.discriminator, **cfg.discriminator_args)
        except (ArchError, ArchErrors) as e:
            if cfg.generator not in spec.ns.own_models or cfg.discriminator not in spec.ns.own_models \
                    or cfg.generator_args or cfg.discriminator_args:
                # not elaborated with these arguments before (imported, or section arguments)
                errors.extend(e.errors if isinstance(e, ArchErrors) else [e])
            continue
        with collect_errors(errors):
            check_pair(sec, cfg, g.ir, d.ir)
    raise_errors(errors)


def gan_section(spec, name: str | None = None) -> Section:
    """The gan section called `name` (or whose generator or discriminator is `name`); without a
    name, the only one (the first when there are several)."""
    secs = getattr(spec, "sections", {}).get("gan", [])
    if not secs:
        raise ArchError(f"{spec.file} has no gan section",
                        hint="add one, e.g.  gan Pair { generator = G  discriminator = D  noise = normal(64) }")
    if name is None:
        return secs[0]
    for s in secs:
        if s.name == name:
            return s
    for s in secs:
        cfg = config_from_section(spec.ns, s)
        if name in (cfg.generator, cfg.discriminator):
            return s
    raise ArchError(f"no gan section named '{name}' in {spec.file}",
                    hint=did_you_mean(name, [s.name for s in secs]) or f"gan sections: {', '.join(s.name for s in secs)}")
