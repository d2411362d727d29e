"""A run's settings: read from a spec's `train` section, overridden by CLI flags, stored in every
checkpoint (as JSON) so that `--resume` continues the same run.

    train DigitsCNN {
      loss      = cross_entropy(logits, label, label_smoothing=0.1)   # model output, target array
                                             # or named terms: dict(recon=..., kl=...), with
      loss_weights = dict(kl=ramp(0.0, 1.0, epochs=10))     # their weights (archdsl/train/objective.py)
      optimizer = Adam(lr=1e-3)              # or SGD(lr=0.1, momentum=0.9, nesterov=true), AdamW(...)
      batch     = 64
      epochs    = 30
      metrics   = [accuracy]
      schedule  = [warmup(steps=50), cosine()]   # or step(step_size=10, gamma=0.1)
      clip_norm = 5.0                        # clip gradients by global norm
      freeze    = [backbone]                 # layer or block names (transfer learning)
      val_split = 0.1                        # hold out a seeded 10% for validation
      seed      = 0
      inputs    = dict(image="x")            # model input -> array name in the .npz (default: same)
      targets   = dict(label="y")            # loss target -> array name in the .npz (default: same)
      init      = "backbone.npz"             # start from these weights (names matched; spec-relative)
      decoder   = Decoder                    # a VAE's decoder: a model of the file that takes the
                                             #   latent and shares this model's weights by name
    }
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..elaborate.sections import Ref, Section, call_kwargs, call_parts, mapping, number, plain
from ..errors import ArchError, did_you_mean
from ..ir.graph import Model
from .objective import Objective, read_loss, read_weights
from .metrics import METRIC_KINDS, METRICS
from .optim import OPTIMIZER_ARGS, OPTIMIZERS, SCHEDULE_ARGS, SCHEDULES
from .settings import SavedSettings


@dataclass
class TrainConfig(SavedSettings):
    loss: dict | None                            # one built-in loss: {"name", "output", "target", "kwargs"}
    terms: list = field(default_factory=list)    # or named terms (archdsl/train/objective.py)
    optimizer: dict = field(default_factory=lambda: {"name": "Adam", "lr": 1e-3})
    batch: int = 32
    epochs: int = 10
    metrics: list = field(default_factory=list)
    schedule: list = field(default_factory=list)  # [{"name": "cosine", ...kwargs}]
    clip_norm: float | None = None
    freeze: list = field(default_factory=list)
    val_split: float = 0.0
    seed: int = 0
    inputs: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)
    init: str | None = None
    decoder: str | None = None                   # a VAE's decoder model (archdsl/targets.py)
    spans: dict = field(default_factory=dict, repr=False, compare=False)   # key -> Span (not saved)

    @property
    def lr(self) -> float:
        return float(self.optimizer.get("lr", 1e-3))

    def with_overrides(self, **kw) -> "TrainConfig":
        """A copy with CLI-style overrides (None = keep): epochs, batch, lr, seed, val_split, clip_norm,
        freeze (added to the section's), init."""
        c = TrainConfig.from_json(self.to_json())
        c.spans = dict(self.spans)
        for k in ("epochs", "batch", "seed", "val_split", "clip_norm", "init"):
            if kw.get(k) is not None:
                setattr(c, k, kw[k])
                c.spans.pop(k, None)
        if kw.get("lr") is not None:
            c.optimizer["lr"] = float(kw["lr"])
        for name in kw.get("freeze") or []:
            if name not in c.freeze:
                c.freeze.append(name)
        return c


# -- reading a train section ---------------------------------------------------------------------

def section_for(spec, model_name: str) -> Section | None:
    for s in getattr(spec, "sections", {}).get("train", []):
        if s.name == model_name:
            return s
    return None


def config_from_section(sec: Section, base_dir: str | None = None) -> TrainConfig:
    e, sp = sec.entries, sec.spans
    if "loss" not in e:
        raise ArchError(f"train {sec.name} needs a loss, e.g. loss = cross_entropy(logits, label)", sec.span)
    loss, terms, exprs = read_loss(e["loss"], sp["loss"])
    cfg = TrainConfig(loss=loss, terms=terms, spans=dict(sp))
    cfg.spans.update({f"expr.{k}": x for k, x in exprs.items()})      # the syntax trees, for positions
    if "loss_weights" in e:
        read_weights(e["loss_weights"], sp["loss_weights"], cfg.terms)
    if "decoder" in e:
        if not isinstance(e["decoder"], Ref):
            raise ArchError("decoder names a model of the file, e.g. decoder = Decoder", sp["decoder"])
        cfg.decoder = e["decoder"].name
    if "optimizer" in e:
        func, args, kwargs, ospan = call_parts(e["optimizer"], "optimizer", sp["optimizer"])
        if func not in OPTIMIZERS:
            raise ArchError(f"unknown optimizer '{func}'", ospan,
                            did_you_mean(func, OPTIMIZERS) or f"optimizers: {', '.join(OPTIMIZERS)}")
        cfg.optimizer = {"name": func, **call_kwargs(func, args, kwargs, OPTIMIZER_ARGS[func], ospan, "optimizer")}
        cfg.optimizer.setdefault("lr", 1e-3 if func != "SGD" else 0.01)
    if "batch" in e:
        cfg.batch = number(e["batch"], "batch", sp["batch"], int, 1)
    if "epochs" in e:
        cfg.epochs = number(e["epochs"], "epochs", sp["epochs"], int, 1)
    if "seed" in e:
        cfg.seed = number(e["seed"], "seed", sp["seed"], int, 0)
    if "val_split" in e:
        cfg.val_split = number(e["val_split"], "val_split", sp["val_split"], float, 0.0, 0.99)
    if "clip_norm" in e:
        cfg.clip_norm = number(e["clip_norm"], "clip_norm", sp["clip_norm"], float, 0.0, lo_open=True)
    if "metrics" in e:
        ms = e["metrics"] if isinstance(e["metrics"], tuple) else (e["metrics"],)
        cfg.metrics = [str(plain(m, sp["metrics"])) for m in ms]
    if "schedule" in e:
        items = e["schedule"] if isinstance(e["schedule"], tuple) else (e["schedule"],)
        for it in items:
            func, args, kwargs, sspan = call_parts(it, "schedule", sp["schedule"])
            if func not in SCHEDULES:
                raise ArchError(f"unknown schedule '{func}'", sspan,
                                did_you_mean(func, SCHEDULES) or f"schedules: {', '.join(SCHEDULES)}")
            cfg.schedule.append({"name": func, **call_kwargs(func, args, kwargs, SCHEDULE_ARGS[func], sspan, "schedule")})
    if "freeze" in e:
        from ..passes.freeze import freeze_names
        cfg.freeze = freeze_names(e["freeze"])
    if "inputs" in e:
        cfg.inputs = mapping(e["inputs"], "inputs", sp["inputs"])
    if "targets" in e:
        cfg.targets = mapping(e["targets"], "targets", sp["targets"])
    if "init" in e:
        if not isinstance(e["init"], str):
            raise ArchError("init must be a checkpoint path in quotes", sp["init"])
        p = e["init"]
        cfg.init = p if os.path.isabs(p) or base_dir is None else os.path.join(base_dir, p)
    return cfg


def config_for(spec, model_name: str, **overrides) -> TrainConfig:
    """The train section of `model_name` in `spec` with overrides applied."""
    sec = section_for(spec, model_name)
    if sec is None:
        raise ArchError(f"model {model_name} has no train section in {spec.file}",
                        hint=f"add one, e.g.  train {model_name} {{ loss = cross_entropy(logits, label)  "
                             "optimizer = Adam(lr=1e-3)  batch = 64  epochs = 10  metrics = [accuracy] }")
    base = os.path.dirname(str(spec.file)) if spec.file and os.path.exists(str(spec.file)) else None
    return config_from_section(sec, base).with_overrides(**overrides)


def validate(cfg: TrainConfig, model: Model, objective=None) -> None:
    """Check the config against the model: the loss (compiled: `objective`), metrics, numbers."""
    sp = cfg.spans
    if objective is None:
        objective = Objective(model, cfg.loss, cfg.terms, sp)
    clf = objective.classifier
    name, kind = (clf.loss["name"], clf.kind) if clf is not None else ("this loss", None)
    for m in cfg.metrics:
        if m not in METRICS:
            raise ArchError(f"unknown metric '{m}'", sp.get("metrics"),
                            did_you_mean(m, METRICS) or f"metrics: {', '.join(METRICS)}")
        if kind not in METRIC_KINDS[m]:
            needs = " or ".join({"classes": "cross_entropy", "binary": "binary_cross_entropy"}[k]
                                for k in METRIC_KINDS[m])
            raise ArchError(f"metric {m} needs a classification loss ({needs}), not {name}", sp.get("metrics"))
    if cfg.optimizer.get("name") not in OPTIMIZERS:
        raise ArchError(f"unknown optimizer '{cfg.optimizer.get('name')}'", sp.get("optimizer"),
                        did_you_mean(str(cfg.optimizer.get("name")), OPTIMIZERS))
    if not (isinstance(cfg.batch, int) and cfg.batch >= 1):
        raise ArchError(f"batch must be a positive integer, got {cfg.batch}", sp.get("batch"))
    if not (isinstance(cfg.epochs, int) and cfg.epochs >= 1):
        raise ArchError(f"epochs must be a positive integer, got {cfg.epochs}", sp.get("epochs"))
    if not 0.0 <= cfg.val_split < 1.0:
        raise ArchError(f"val_split must be a fraction in [0, 1), got {cfg.val_split}", sp.get("val_split"))
    if cfg.clip_norm is not None and not cfg.clip_norm > 0:
        raise ArchError(f"clip_norm must be positive, got {cfg.clip_norm}", sp.get("clip_norm"))
    if not cfg.optimizer.get("lr", 1) > 0:
        raise ArchError(f"the learning rate must be positive, got {cfg.optimizer.get('lr')}", sp.get("optimizer"))
