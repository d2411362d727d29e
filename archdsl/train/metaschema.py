"""The schema of a checkpoint's `__meta__` (JSON): what `--resume` and `export --weights` rely on.

A checkpoint is data from disk: its metadata can be valid JSON with the wrong types (a string for
the epoch, null for the optimizer, a list for an RNG state). `check_meta(meta, SCHEMA, path)`
compares it with a schema before any field is used and raises an ArchError that names the first
field that does not fit, so a damaged checkpoint is a clear error instead of a traceback deep in
the training loop.

Schemas are built from a few pieces: a Python type (or a tuple of them), `Int(lo)`, `Num`,
`Opt(s)` (the value may be null), `Dict({key: s}, optional=...)` (required keys; others allowed),
`List(s)`, `Map(s, required)` (a dict whose values fit s) and `Any`.
"""
from __future__ import annotations

import dataclasses
import types
import typing

from ..errors import ArchError


class Any:
    def check(self, v, where: str) -> str | None:
        return None


class Int:
    def __init__(self, lo: int | None = 0):
        self.lo = lo

    def check(self, v, where):
        if not isinstance(v, int) or isinstance(v, bool):
            return f"{where} must be an integer, not {_show(v)}"
        if self.lo is not None and v < self.lo:
            return f"{where} must be at least {self.lo}, not {v}"
        return None


class Num:
    def check(self, v, where):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return f"{where} must be a number, not {_show(v)}"
        return None


class Opt:
    def __init__(self, inner):
        self.inner = _schema(inner)

    def check(self, v, where):
        return None if v is None else self.inner.check(v, where)


class Type:
    def __init__(self, *types_):
        self.types = types_

    def check(self, v, where):
        if not isinstance(v, self.types) or (isinstance(v, bool) and bool not in self.types):
            return f"{where} must be {self._name()}, not {_show(v)}"
        return None

    def _name(self):
        names = {str: "a string", bool: "true or false", dict: "an object", list: "a list", int: "an integer",
                 float: "a number"}
        return " or ".join(names.get(t, t.__name__) for t in self.types)


class List:
    def __init__(self, item):
        self.item = _schema(item)

    def check(self, v, where):
        if not isinstance(v, list):
            return f"{where} must be a list, not {_show(v)}"
        return _first(self.item.check(x, f"{where}[{i}]") for i, x in enumerate(v))


class Map:
    def __init__(self, value, required: tuple = ()):
        self.value = _schema(value)
        self.required = required

    def check(self, v, where):
        if not isinstance(v, dict):
            return f"{where} must be an object, not {_show(v)}"
        missing = next((k for k in self.required if k not in v), None)
        if missing is not None:
            return f"{where}.{missing} is missing"
        return _first(self.value.check(x, f"{where}.{k}") for k, x in v.items())


class Dict:
    def __init__(self, fields: dict, optional: dict | None = None):
        self.fields = {k: _schema(s) for k, s in fields.items()}
        self.optional = {k: _schema(s) for k, s in (optional or {}).items()}

    def check(self, v, where):
        if not isinstance(v, dict):
            return f"{where} must be an object, not {_show(v)}"
        missing = next((k for k in self.fields if k not in v), None)
        if missing is not None:
            return f"{where}.{missing} is missing"
        return _first(s.check(v[k], f"{where}.{k}") for k, s in [*self.fields.items(), *self.optional.items()]
                      if k in v)


class Where:
    """A schema and a condition across its fields (`says` what fails)."""
    def __init__(self, schema, holds, says: str):
        self.schema, self.holds, self.says = schema, holds, says

    def check(self, v, where):
        return self.schema.check(v, where) or (None if self.holds(v) else f"{where} {self.says}")


def _first(problems) -> str | None:
    """The first problem found (checks run lazily, in order), or None."""
    return next((p for p in problems if p), None)


def _schema(s):
    if isinstance(s, type):
        return Num() if s is float else Int(None) if s is int else Type(s)
    if isinstance(s, tuple):
        return Type(*s)
    return s


def _show(v) -> str:
    text = repr(v) if not isinstance(v, (dict, list)) else type(v).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def from_settings(cls) -> Dict:
    """The schema of a settings dataclass's JSON form (TrainConfig, GanConfig), from its field
    annotations: every field optional (from_json fills defaults), `X | None` nullable."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.name == "spans":
            continue
        out[f.name] = _from_hint(hints[f.name])
    return Dict({}, optional=out)


def _from_hint(h):
    args = typing.get_args(h)
    if isinstance(h, types.UnionType) or typing.get_origin(h) is typing.Union:
        rest = [a for a in args if a is not type(None)]
        inner = _from_hint(rest[0]) if len(rest) == 1 else Any()
        return Opt(inner) if type(None) in args else inner
    return {int: Int(None), float: Num(), str: Type(str), bool: Type(bool), dict: Type(dict),
            list: Type(list)}.get(h, Any())


# -- the checkpoints' schemas -------------------------------------------------------------------

BASE = Dict({"format": str, "version": Int(0)}, optional={"kind": str})     # what every reader checks
RNG = Dict({"bit_generator": str, "state": dict})
STREAMS = Map(RNG, required=("shuffle",))        # a run's named random streams (train/run.py)
OPTIMIZER = Dict({"name": str}, optional={"t": Int(0), "lr": Num(), "hyper": dict})
HISTORY = List(Dict({"epoch": Int(0)}))


def train_schema() -> Dict:
    from .config import TrainConfig
    config = from_settings(TrainConfig)
    config.fields["loss"] = Opt(Dict({"name": str, "output": str, "target": str}, optional={"kwargs": dict}))  # None: named terms
    config.optional.update(optimizer=OPTIMIZER, batch=Int(1), epochs=Int(1), metrics=List(str),
                           schedule=List(Dict({"name": str})), freeze=List(str), inputs=Map(str),
                           targets=Map(str))
    partial = Dict({}, optional={"loss_sum": Num(), "count": Int(0), "metrics": Map(List(Num())), "seconds": Num()})
    config = Where(config, lambda c: c["loss"] is not None or bool(c.get("terms")), "has neither a loss nor loss terms")
    return Dict({"model": str, "epoch": Int(0), "batch": Int(0), "rng": STREAMS,
                 "optimizer": OPTIMIZER, "config": config},
                optional={"data": Opt(str), "step": Int(0), "history": HISTORY, "best_val_loss": Opt(Num()),
                          "partial": Opt(partial), "frozen": List(str), "spec": str})


def gan_schema() -> Dict:
    from ..gan.config import GanConfig
    config = from_settings(GanConfig)
    config.fields.update(name=Type(str), generator=Type(str), discriminator=Type(str))
    config.optional.update(noise=Dict({"dist": str}, optional={"size": Opt(Int(1))}), g_optimizer=OPTIMIZER, d_optimizer=OPTIMIZER, batch=Int(1), epochs=Int(1),
                           steps=Opt(Int(1)), d_steps=Int(1), schedule=List(Dict({"name": str})))
    partial = Dict({}, optional={"sums": Map(Num()), "n": Int(0), "seconds": Num()})
    return Dict({"gan": str, "generator": str, "discriminator": str, "step": Int(0), "epoch": Int(0),
                 "batch": Int(0), "rng": STREAMS,
                 "g_optimizer": OPTIMIZER, "d_optimizer": OPTIMIZER, "config": config},
                optional={"data": Opt(str), "history": HISTORY, "partial": Opt(partial), "spec": str})


def check_meta(meta: dict, schema, path) -> None:
    """ArchError naming the first field of `meta` that does not fit `schema`."""
    problem = schema.check(meta, "__meta__")
    if problem:
        raise ArchError(f"'{path}': the checkpoint's metadata is corrupt: {problem}",
                        hint="resume from another checkpoint (best.npz, or an earlier copy), or start a new run "
                             "with --init to keep its weights")
