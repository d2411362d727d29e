"""A GAN run's settings, read from a spec's `gan` section, overridden by CLI flags, stored in
every checkpoint (as JSON) so that `--resume` continues the same run.

    gan Ring {
      generator     = Generator            # a model of this file or an imported one;
      discriminator = Critic(hidden=128)   #   arguments set its parameters
      noise         = normal(8)            # or uniform(8) (in [-1, 1]); the size is the number of
                                           #   values per sample the generator's input takes
      objective     = non_saturating       # (default) or minimax, least_squares
      d_steps       = 1                    # discriminator updates per generator update
      pack          = 1                    # samples the discriminator judges together (PacGAN,
                                           #   Lin et al. 2018): its input takes `pack` samples
                                           #   concatenated along dim 1, e.g. f32[N, 2 * pack]
      g_optimizer   = Adam(lr=2e-4, betas=(0.5, 0.999))    # the defaults for both
      d_optimizer   = Adam(lr=2e-4, betas=(0.5, 0.999))
      batch         = 64                   # real (and generated) samples per update
      epochs        = 10                   # passes over the real data ...
      steps         = 3000                 # ... or this many generator updates (wins over epochs)
      schedule      = cosine()             # learning-rate schedule of both optimizers, as in a
                                           #   train section: step(...), cosine(...), warmup(...)
      seed          = 0
      data          = "x"                  # the array of real samples in the .npz
                                           #   (default: the discriminator's input name)
    }

The objectives, on the discriminator's raw score d (a logit for the first two):

    minimax          D: -log s(d_real) - log(1 - s(d_fake))     G:  log(1 - s(d_fake))
    non_saturating   D: as minimax                              G: -log s(d_fake)
    least_squares    D: ((d_real - 1)^2 + d_fake^2) / 2         G: (d_fake - 1)^2 / 2
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ..elaborate.sections import Call, Ref, Section, call_kwargs, call_parts, number, plain
from ..errors import ArchError, ArchErrors, did_you_mean
from ..train.settings import SavedSettings

OBJECTIVES = ("non_saturating", "minimax", "least_squares")
NOISES = ("normal", "uniform")
DEFAULT_OPTIMIZER = {"name": "Adam", "lr": 2e-4, "betas": [0.5, 0.999]}


@dataclass
class GanConfig(SavedSettings):
    name: str                                     # the gan section's name
    generator: str
    discriminator: str
    generator_args: dict = field(default_factory=dict)
    discriminator_args: dict = field(default_factory=dict)
    noise: dict = field(default_factory=lambda: {"dist": "normal", "size": None})
    objective: str = "non_saturating"
    d_steps: int = 1
    pack: int = 1                                 # samples per discriminator decision (PacGAN)
    g_optimizer: dict = field(default_factory=lambda: copy.deepcopy(DEFAULT_OPTIMIZER))
    d_optimizer: dict = field(default_factory=lambda: copy.deepcopy(DEFAULT_OPTIMIZER))
    batch: int = 64
    epochs: int = 10
    steps: int | None = None
    schedule: list = field(default_factory=list)   # [{"name": "cosine", ...kwargs}]
    seed: int = 0
    data: str | None = None
    spans: dict = field(default_factory=dict, repr=False, compare=False)   # key -> Span (not saved)

    def with_overrides(self, **kw) -> "GanConfig":
        """A copy with CLI-style overrides (None = keep): epochs (clears steps), steps, batch, seed,
        lr (both optimizers), g_lr, d_lr."""
        c = GanConfig.from_json(self.to_json())
        c.spans = dict(self.spans)
        if kw.get("epochs") is not None:
            c.epochs, c.steps = int(kw["epochs"]), None
        for k in ("steps", "batch", "seed"):
            if kw.get(k) is not None:
                setattr(c, k, int(kw[k]))
        for opt, key in ((c.g_optimizer, "g_lr"), (c.d_optimizer, "d_lr")):
            lr = kw.get(key) if kw.get(key) is not None else kw.get("lr")
            if lr is not None:
                opt["lr"] = float(lr)
        return c


# -- reading a gan section --------------------------------------------------------------------------

def _model_ref(v, role: str, sec: Section, span) -> tuple[str, tuple, dict]:
    if isinstance(v, Ref):
        return v.name, (), {}
    if isinstance(v, Call):
        return v.func, v.args, dict(v.kwargs)
    raise ArchError(f"gan {sec.name}: {role} must name a model, e.g. {role} = MyModel or MyModel(width=64)",
                    span or sec.span)


def _model_args(ns, name: str, args: tuple, kwargs: dict, role: str, sec: Section, span) -> dict:
    """Positional and keyword arguments of `generator = G(...)` -> model parameter overrides."""
    params = [p.name for p in ns.models[name].params]
    if len(args) > len(params):
        raise ArchError(f"gan {sec.name}: model {name} takes {len(params)} parameter"
                        f"{'s' if len(params) != 1 else ''}, got {len(args)}", span)
    out = {p: plain(a, span) for p, a in zip(params, args)}
    for k, a in kwargs.items():
        if k not in params:
            raise ArchError(f"gan {sec.name}: model {name} has no parameter '{k}'", span,
                            did_you_mean(k, params) or (f"{name} takes: {', '.join(params)}" if params
                                                        else f"{name} takes no parameters"))
        if k in out:
            raise ArchError(f"gan {sec.name}: parameter '{k}' of {name} is given twice", span)
        out[k] = plain(a, span)
    return out


def _name(v, key: str, span, choices) -> str:
    if isinstance(v, Ref):
        s = v.name
    elif isinstance(v, str):
        s = v
    else:
        raise ArchError(f"{key} must be one of {', '.join(choices)}", span)
    if s not in choices:
        raise ArchError(f"unknown {key} '{s}'", span, did_you_mean(s, choices) or f"{key}s: {', '.join(choices)}")
    return s


def _optimizer(v, key: str, span) -> dict:
    from ..train.optim import OPTIMIZER_ARGS, OPTIMIZERS
    func, args, kwargs, ospan = call_parts(v, key, span)
    if func not in OPTIMIZERS:
        raise ArchError(f"unknown optimizer '{func}'", ospan,
                        did_you_mean(func, OPTIMIZERS) or f"optimizers: {', '.join(OPTIMIZERS)}")
    opt = {"name": func, **call_kwargs(func, args, kwargs, OPTIMIZER_ARGS[func], ospan, "optimizer")}
    opt.setdefault("lr", DEFAULT_OPTIMIZER["lr"] if func != "SGD" else 0.01)
    if func != "SGD" and "betas" not in opt:
        opt["betas"] = list(DEFAULT_OPTIMIZER["betas"])
    lr = opt["lr"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ArchError(f"{key}: the learning rate must be a positive number, got {lr!r}", ospan)
    # let the optimizer itself judge the other hyperparameters (betas, momentum, ...) now
    import numpy as np
    from ..autodiff import Tensor
    kw = {k: (tuple(v) if k == "betas" and isinstance(v, list) else v) for k, v in opt.items() if k != "name"}
    try:
        OPTIMIZERS[func]({"p": Tensor(np.zeros(1, np.float32), requires_grad=True)}, **kw)
    except (TypeError, ValueError) as err:
        raise ArchError(f"{key} {func}: {err}", ospan) from None
    return opt


def config_from_section(ns, sec: Section, errors: list | None = None) -> GanConfig:
    """Read and check every setting of a gan section (not the models' types: see pair.py).

    With `errors` (a list), a bad setting other than the two models is appended there and left
    at its default, so that independent mistakes are reported together."""
    e, sp = sec.entries, sec.spans
    refs, problems = {}, []
    for role in ("generator", "discriminator"):
        try:
            if role not in e:
                raise ArchError(f"gan {sec.name} needs '{role} = ModelName'", sec.span)
            name, args, kwargs = _model_ref(e[role], role, sec, sp[role])
            if name not in ns.models:
                raise ArchError(f"gan {sec.name}: {role} '{name}' is not a model", sp[role],
                                did_you_mean(name, ns.models) or (f"models: {', '.join(ns.models)}"
                                                                  if ns.models else "the file defines no model"))
            refs[role] = (name, _model_args(ns, name, args, kwargs, role, sec, sp[role]))
        except ArchError as err:
            problems.append(err)
    if problems:
        if errors is None or len(problems) == 1:
            raise problems[0]
        raise ArchErrors(problems)
    cfg = GanConfig(sec.name, refs["generator"][0], refs["discriminator"][0],
                    refs["generator"][1], refs["discriminator"][1], spans=dict(sp))
    for key in ("noise", "objective", "g_optimizer", "d_optimizer", "d_steps", "pack", "batch", "epochs", "steps", "seed",
                "data", "schedule"):
        if key in e:
            try:
                _setting(cfg, key, e[key], sp[key])
            except ArchError as err:
                if errors is None:
                    raise
                errors.append(err)
    return cfg


def _setting(cfg: GanConfig, key: str, v, span) -> None:
    if key == "noise":
        if isinstance(v, Call):
            dist = _name(v.func, "noise", v.span or span, NOISES)
            if v.kwargs:
                k = next(iter(v.kwargs))
                raise ArchError(f"noise {dist}(size) takes the number of values per sample only, not '{k}='",
                                v.span or span)
            if len(v.args) != 1:
                raise ArchError(f"noise {dist}(size) takes one argument, the number of values per sample, "
                                f"got {len(v.args)}", v.span or span)
            size = number(v.args[0], "the noise size", v.span or span, int, 1)
        else:
            dist, size = _name(v, "noise", span, NOISES), None
        cfg.noise = {"dist": dist, "size": size}
    elif key == "objective":
        cfg.objective = _name(v, "objective", span, OBJECTIVES)
    elif key in ("g_optimizer", "d_optimizer"):
        setattr(cfg, key, _optimizer(v, key, span))
    elif key == "d_steps":
        cfg.d_steps = number(v, "d_steps", span, int, 1)
    elif key == "pack":
        cfg.pack = number(v, "pack", span, int, 1, 64)
    elif key in ("batch", "epochs", "steps"):
        setattr(cfg, key, number(v, key, span, int, 1))
    elif key == "seed":
        cfg.seed = number(v, "seed", span, int, 0)
    elif key == "schedule":
        from ..train.optim import SCHEDULE_ARGS, SCHEDULES
        cfg.schedule = []
        for it in (v if isinstance(v, tuple) else (v,)):
            func, args, kwargs, sspan = call_parts(it, "schedule", span)
            if func not in SCHEDULES:
                raise ArchError(f"unknown schedule '{func}'", sspan,
                                did_you_mean(func, SCHEDULES) or f"schedules: {', '.join(SCHEDULES)}")
            cfg.schedule.append({"name": func, **call_kwargs(func, args, kwargs, SCHEDULE_ARGS[func], sspan, "schedule")})
    elif key == "data":
        if not isinstance(v, (str, Ref)):
            raise ArchError("data names the array of real samples in the .npz, e.g. data = \"x\"", span)
        cfg.data = v if isinstance(v, str) else v.name
