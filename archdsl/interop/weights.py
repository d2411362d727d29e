"""Weights in and out of an archdsl model through a mapping section.

`import_weights` reads a foreign checkpoint into the model's parameter names, strictly: missing,
unexpected and mis-shaped tensors are one error that names both sides (source name, rule,
archdsl name) with a did-you-mean against the mapping; a config.json is checked against the
spec's parameters. `export_weights` runs the mapping backwards, so the source framework loads
the result with load_state_dict(strict=True).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ArchError, did_you_mean
from ..ir.graph import Model
from .convert import Conversion, canonical, convert, targets
from .mapping import IDENTITY, MappingFile, Section, find_mapping, load_mapping, where
from .sources import Source, read_source, write_config, write_safetensors

SHOW = 6          # entries of each kind in an error before "... (N more)"


@dataclass
class Imported:
    weights: dict[str, np.ndarray]
    source: Source
    section: Section
    unused: list[str] = field(default_factory=list)        # source tensors no rule takes
    dropped: list[str] = field(default_factory=list)
    tied: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)    # lenient mode: mapped, but not in the model

    def describe(self) -> str:
        how = "names as they are" if self.section is IDENTITY else f"mapping {self.section.label}"
        s = f"read {len(self.weights)} parameters through the {how}"
        extra = [f"{len(self.dropped)} dropped"] if self.dropped else []
        extra += [f"{len(self.tied)} tied copies checked"] if self.tied else []
        return s + (f" ({', '.join(extra)})" if extra else "")


def mapping_for(model: Model, mapping=None) -> MappingFile | None:
    """The mapping file given (a path or a MappingFile), else the one beside the model's spec."""
    if isinstance(mapping, MappingFile):
        return mapping
    if mapping is not None:
        return load_mapping(mapping)
    found = find_mapping(model.file)
    return load_mapping(found) if found else None


def sections_for(model: Model, mf: MappingFile | None, explicit: bool) -> list[Section]:
    if mf is None:
        return []
    found = mf.for_model(model.name)
    if not found and explicit:
        maps = sorted({m for s in mf.sections for m in s.models})
        raise ArchError(f"the mapping file '{mf.path}' has no section for model {model.name}",
                        hint=did_you_mean(model.name, maps) or f"it maps: {', '.join(maps) or 'nothing'}")
    for sec in found:
        _check_params(sec, model)
    return found


def _check_params(sec: Section, model: Model) -> None:
    for c in sec.configs:
        if c.param is not None and c.param not in model.args:
            raise ArchError(f"config {c.field} = {c.param}: model {model.name} has no parameter '{c.param}'",
                            c.span, did_you_mean(c.param, model.args) or f"its parameters: {', '.join(model.args)}")


def choose(src_names: list[str], model: Model, sections: list[Section]) -> Section:
    """The section that maps the most source tensors onto the model's parameters; the names as
    they are when that fits better (an archdsl-named file)."""
    best, best_score = IDENTITY, sum(n in model.parameters for n in src_names)
    for sec in sections:
        score = 0
        for n in src_names:
            _, names = targets(sec, canonical(sec, n))
            score += bool(names) and all(t in model.parameters for t in names)
        if score >= best_score and (score > best_score or best is IDENTITY):
            best, best_score = sec, score
    return best


def check_config(src: Source, sec: Section, model: Model) -> None:
    """config.json against the spec: a field the mapping ties to a spec parameter must have the
    parameter's value (fixable with --set), a field tied to literals one of them."""
    if not src.config:
        return
    bad, sets = [], []
    for c in sec.configs:
        v = src.config.get(c.field)
        if v is None:
            continue
        if c.param is not None:
            have = model.args[c.param]
            if not _same(v, have):
                bad.append(f"{c.field} = {v!r} in the config, but model {model.name} has {c.param} = {have!r}")
                sets.append(f"--set {c.param}={v}")
        elif not any(_same(v, lit) for lit in c.literals):
            want = " or ".join(repr(x) for x in c.literals)
            bad.append(f"{c.field} = {v!r} in the config, but the spec computes {want} ({where(c.span)})")
    if bad:
        raise ArchError(f"'{src.config_path}' does not match model {model.name}:\n  " + "\n  ".join(bad),
                        hint=(f"set the spec's parameters to the checkpoint's: {' '.join(sets)}" if sets
                              else "this checkpoint computes something else than the spec"))


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def import_weights(source, model: Model, *, mapping=None, strict: bool = True) -> Imported:
    """The model's weights from `source` (a path or a Source). strict: every parameter must come
    from the source with its shape; lenient (--init): what maps is taken, the rest reported."""
    src = source if isinstance(source, Source) else read_source(source)
    mf = mapping_for(model, mapping)
    sec = choose(list(src.tensors), model, sections_for(model, mf, mapping is not None))
    check_config(src, sec, model)
    conv = convert(src.tensors, sec, reading=True, params=set(model.parameters))
    imp = Imported({}, src, sec, conv.unused, conv.dropped, conv.tied)
    unexpected = [t for t in conv.out if t not in model.parameters]
    if not strict:
        imp.weights = {t: p.array for t, p in conv.out.items() if t in model.parameters}
        imp.unexpected = [n for t in unexpected for n in conv.out[t].origin]
        return imp
    missing = [n for n in model.parameters if n not in conv.out]
    shapes = [t for t, p in conv.out.items() if t in model.parameters
              and tuple(p.array.shape) != tuple(int(d) for d in model.parameters[t].shape)]
    if missing or unexpected or shapes:
        raise _mismatch(src, sec, model, conv, missing, unexpected, shapes)
    imp.weights = {t: conv.out[t].array for t in model.parameters}
    return imp


def _mismatch(src, sec, model, conv: Conversion, missing, unexpected, shapes) -> ArchError:
    params = model.parameters
    lines, hints = [], []
    if missing:
        lines.append(f"missing {len(missing)} (the model needs them, the checkpoint does not have them):")
        wanted: dict[str, list] = {}             # expected source name -> (rule, the parameters it makes)
        for n in missing:
            rule, names = targets(sec, n, reading=False)
            key = n if rule is None else names[0]
            wanted.setdefault(key, [rule, []])[1].append(n)
        spare = conv.unused + [o for t in unexpected for o in conv.out[t].origin]
        for expected, (rule, made) in list(wanted.items())[:SHOW]:
            also = f" (and {len(made) - 1} more from it)" if len(made) > 1 else ""
            if rule is None and sec is not IDENTITY:
                lines.append(f"  {made[0]}: no rule of {sec.label} makes it")
                continue
            guess = did_you_mean(expected, spare)
            lines.append(f"  {made[0]}{also}: read from '{expected}'{f' by {rule.where()}' if rule else ''}, "
                         f"which is not in the checkpoint" + (f"; {guess}" if guess else ""))
        lines += _more(list(wanted))
    if unexpected:
        by_origin: dict[tuple, list[str]] = {}
        for t in unexpected:
            by_origin.setdefault(conv.out[t].origin, []).append(t)
        lines.append(f"unexpected {len(by_origin)} (the checkpoint has them, model {model.name} does not):")
        for made in list(by_origin.values())[:SHOW]:
            also = f" (and {len(made) - 1} more)" if len(made) > 1 else ""
            guess = did_you_mean(made[0], [n for n in params if n not in conv.out])
            lines.append(f"  {conv.out[made[0]].trace()} -> '{made[0]}'{also}" + (f"; {guess}" if guess else ""))
        lines += _more(list(by_origin))
    if shapes:
        lines.append(f"{len(shapes)} with the wrong shape:")
        for t in shapes[:SHOW]:
            p = conv.out[t]
            src_shapes = ", ".join(f"{list(src.tensors[o].shape)}" for o in p.origin if o in src.tensors)
            lines.append(f"  {p.trace()} {src_shapes} -> '{t}' {list(p.array.shape)}, but model {model.name} "
                         f"needs {[int(d) for d in params[t].shape]}")
        lines += _more(shapes)
    if sec is IDENTITY and missing and unexpected:
        hints.append(f"no mapping matched these names; write a mapping file beside the spec "
                     f"({Path(model.file).with_suffix('.map').name}) or pass --map FILE")
    elif sec.configs and not src.config:
        pairs = ", ".join(f"{c.field} = {c.param}" for c in sec.configs if c.param)
        hints.append(f"is the checkpoint another size than the spec's defaults? set the spec's parameters "
                     f"with --set (the mapping relates {pairs})")
    if conv.unused and not hints:
        hints.append(f"unused in the checkpoint: {_names(conv.unused)}")
    return ArchError(f"'{src.path}' does not fit model {model.name}"
                     + ("" if sec is IDENTITY else f" (mapping {sec.label})") + ":\n  " + "\n  ".join(lines),
                     hint="; ".join(hints) or None)


def _more(items) -> list[str]:
    return [f"  ... ({len(items) - SHOW} more)"] if len(items) > SHOW else []


def _names(names: list[str], k: int = 5) -> str:
    return ", ".join(names[:k]) + (f", ... ({len(names) - k} more)" if len(names) > k else "")


# -- writing ------------------------------------------------------------------------------------

def export_weights(weights: dict[str, np.ndarray], model: Model, *, mapping=None) -> tuple[dict, Section]:
    """The model's weights under the source framework's names (the first section for the model,
    or the names as they are when there is no mapping)."""
    mf = mapping_for(model, mapping)
    found = sections_for(model, mf, mapping is not None)
    sec = found[0] if found else IDENTITY
    conv = convert({k: np.asarray(weights[k], dtype=np.float32) for k in model.parameters}, sec, reading=False)
    if conv.unused:
        raise ArchError(f"the mapping {sec.label} has no rule for {len(conv.unused)} parameter(s) of model "
                        f"{model.name}: {_names(conv.unused)}", sec.span,
                        hint="add a rule for each, so the written file is complete")
    return {k: p.array for k, p in conv.out.items()}, sec


def save_exported(tensors: dict, sec: Section, model: Model, path) -> list[Path]:
    """Write `path`: a .safetensors file, or a folder with model.safetensors and (for a Hugging
    Face source) the config.json that from_pretrained reads."""
    p = Path(path)
    if p.suffix.lower() == ".safetensors":
        return [write_safetensors(tensors, p)]
    if p.suffix:
        raise ArchError(f"cannot write weights to '{p}': expected a .safetensors file or a folder")
    p.mkdir(parents=True, exist_ok=True)
    wrote = [write_safetensors(tensors, p / "model.safetensors")]
    if sec.configs:
        cfg = sec.config_args(model.args)
        if sec.source and sec.source.startswith("transformers."):
            cfg["architectures"] = [sec.source.rsplit(".", 1)[1]]
        wrote.append(write_config(cfg, p / "config.json"))
    return wrote

