"""Initialisers a spec chooses for parameters: `init=` and `bias_init=` on any layer with weights,
and the value of a `param` declaration (`param cls: f32[1, 1, d] = normal(std=0.02)`).

Each is the torch.nn.init function of the same name, with PyTorch's defaults and formulas:

    zeros, ones, constant(value)
    normal(mean=0.0, std=1.0), uniform(a=0.0, b=1.0)
    trunc_normal(mean=0.0, std=1.0, a=-2.0, b=2.0)      a, b: absolute cut-offs, as in PyTorch
    kaiming_normal(a=0.0, mode='fan_in', nonlinearity='leaky_relu')
    kaiming_uniform(a=0.0, mode='fan_in', nonlinearity='leaky_relu')
    xavier_normal(gain=1.0), xavier_uniform(gain=1.0)

Only `constant`'s value may be given by position: `normal(0.02)` would be the mean in PyTorch, a
slip a spec must not make silently, so every other argument is named. Fan-in and fan-out come from
the parameter's shape as in PyTorch (dim 1 and dim 0 times the product of the rest), so the
kaiming and xavier families need a parameter of rank 2 or more.

An `Initializer` only describes the choice; archdsl.passes.init draws the values (seeded).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ArchError, did_you_mean
from ..errors import show_value as _show
from .graph import MAX_INIT_STD

_REQUIRED = object()
NONLINEARITIES = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                  "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu")
MODES = ("fan_in", "fan_out")
_FAN = {"mode": MODES, "nonlinearity": NONLINEARITIES}
_KAIMING = (("a", 0.0), ("mode", "fan_in"), ("nonlinearity", "leaky_relu"))

# name -> ((argument, default), ...); only `constant`'s value is positional
SCHEMAS: dict[str, tuple] = {
    "zeros": (),
    "ones": (),
    "constant": (("value", _REQUIRED),),
    "normal": (("mean", 0.0), ("std", 1.0)),
    "uniform": (("a", 0.0), ("b", 1.0)),
    "trunc_normal": (("mean", 0.0), ("std", 1.0), ("a", -2.0), ("b", 2.0)),
    "kaiming_normal": _KAIMING,
    "kaiming_uniform": _KAIMING,
    "xavier_normal": (("gain", 1.0),),
    "xavier_uniform": (("gain", 1.0),),
}
_POSITIONAL = {"constant": 1}
_F32_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class Initializer:
    """One choice of initialiser: its name and every argument (defaults filled in)."""
    kind: str
    args: tuple = ()        # ((name, value), ...) in schema order

    def __getitem__(self, name: str):
        return dict(self.args)[name]

    @property
    def needs_fans(self) -> bool:
        return self.kind.startswith(("kaiming", "xavier"))

    def __str__(self) -> str:
        defaults = dict(SCHEMAS[self.kind])
        shown = []
        for k, v in self.args:
            if defaults.get(k) is _REQUIRED:
                shown.append(_show(v))
            elif v != defaults.get(k):
                shown.append(f"{k}={_show(v)}")
        return f"{self.kind}({', '.join(shown)})" if shown else self.kind

    def describe_value(self) -> str:
        return f"initialiser {self}"

    def check_shape(self, shape: tuple, what: str) -> None:
        """Refuse a parameter this initialiser cannot fill (PyTorch raises the same)."""
        if self.needs_fans and len(shape) < 2:
            raise ArchError(f"{self.kind} needs a parameter of rank 2 or more (its fan-in and fan-out), "
                            f"but {what} has shape [{', '.join(map(str, shape))}]",
                            hint="use normal(std=...), uniform(a=..., b=...), zeros or constant(...) for it")


def make(kind: str, positional: list, keywords: dict) -> Initializer:
    """`kind(*positional, **keywords)` checked against the schema; ArchError when it does not fit."""
    schema = SCHEMAS[kind]
    names = [n for n, _ in schema]
    n_pos = _POSITIONAL.get(kind, 0)
    if len(positional) > n_pos:
        hint = (f"name the arguments: {kind}({', '.join(f'{n}=...' for n in names)})" if names
                else f"write {kind} or {kind}()")
        raise ArchError(f"{kind}() takes {n_pos or 'no'} positional argument{'s' if n_pos != 1 else ''}, "
                        f"got {len(positional)}", hint=hint)
    given = dict(zip(names, positional))
    for k, v in keywords.items():
        if k not in names:
            raise ArchError(f"{kind}() has no argument '{k}'",
                            hint=did_you_mean(k, names) or (f"{kind}() takes: {', '.join(names)}" if names
                                                             else f"{kind}() takes no arguments"))
        if k in given:
            raise ArchError(f"{kind}() got argument '{k}' twice", hint="give each argument once")
        given[k] = v
    args = []
    for name, default in schema:
        if name not in given:
            if default is _REQUIRED:
                raise ArchError(f"{kind}() needs a value for '{name}'", hint=f"e.g. {kind}(1e-6)")
            args.append((name, default))
            continue
        args.append((name, _check(kind, name, given[name])))
    init = Initializer(kind, tuple(args))
    _check_ranges(init)
    return init


def _check(kind: str, name: str, v):
    if name in _FAN:
        if not isinstance(v, str) or v not in _FAN[name]:
            raise ArchError(f"{kind}() argument '{name}' must be one of {', '.join(map(repr, _FAN[name]))}, "
                            f"got {_show(v)}", hint=did_you_mean(str(v), _FAN[name]))
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ArchError(f"{kind}() argument '{name}' must be a number, got {_show(v)}",
                        hint=f"e.g. {kind}({name}=0.02)")
    v = float(v)
    if not math.isfinite(v) or abs(v) > _F32_MAX:
        raise ArchError(f"{kind}() argument '{name}' must be a finite float32 number, got {v}",
                        hint="parameters are float32: at most about 3.4e38 in size")
    return v


def _check_ranges(init: Initializer) -> None:
    k = init.kind
    if k in ("normal", "trunc_normal") and not 0.0 <= init["std"] <= MAX_INIT_STD:
        raise ArchError(f"{k}() needs 0 <= std <= {MAX_INIT_STD:g}, got std={init['std']}",
                        hint="std is a standard deviation, e.g. std=0.02")
    if k in ("uniform", "trunc_normal") and not init["a"] < init["b"]:
        raise ArchError(f"{k}() needs a < b, got a={init['a']}, b={init['b']}",
                        hint="a is the lower bound, b the upper one")
    if k == "trunc_normal":
        if init["std"] > 0:
            lo, hi = ((init[x] - init["mean"]) / init["std"] for x in ("a", "b"))
        else:
            lo, hi = (-1.0, 1.0) if init["a"] <= init["mean"] <= init["b"] else (0.0, 0.0)
        if _normal_mass(lo, hi) < 1e-3:
            raise ArchError(f"trunc_normal(): [a, b] = [{init['a']}, {init['b']}] holds almost none of "
                            f"N({init['mean']}, {init['std']}^2)",
                            hint="the cut-offs a and b are absolute values, as in PyTorch, not multiples of std")
    if k.startswith("xavier") and not 0.0 <= init["gain"] <= MAX_INIT_STD:
        raise ArchError(f"{k}() needs 0 <= gain <= {MAX_INIT_STD:g}, got gain={init['gain']}",
                        hint="the gain of torch.nn.init.calculate_gain: 1 for linear layers")
    if k.startswith("kaiming") and not abs(init["a"]) <= MAX_INIT_STD:
        raise ArchError(f"{k}() needs |a| <= {MAX_INIT_STD:g}, got a={init['a']}",
                        hint="a is the negative slope of a leaky ReLU, e.g. a=0.01")


def _normal_mass(lo: float, hi: float) -> float:
    """P(lo <= Z <= hi) for a standard normal Z."""
    return 0.5 * (math.erf(hi / math.sqrt(2.0)) - math.erf(lo / math.sqrt(2.0)))


def fans(shape: tuple) -> tuple[int, int]:
    """PyTorch's fan-in and fan-out: dim 1 and dim 0, each times the size of the other dims."""
    receptive = math.prod(int(d) for d in shape[2:])
    return int(shape[1]) * receptive, int(shape[0]) * receptive


def gain(nonlinearity: str, a: float = 0.0) -> float:
    """torch.nn.init.calculate_gain."""
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        return math.sqrt(2.0 / (1.0 + a * a))
    if nonlinearity == "selu":
        return 0.75
    return 1.0
