"""The supervised training loop: a spec's model, a TrainConfig and an .npz file -> trained weights.

    import archdsl
    from archdsl.train import train, config_for
    spec = archdsl.compile("specs/digits_cnn.arch")
    model = spec.model()
    result = train(model, "digits_train.npz", config_for(spec, model.name, epochs=5), run_dir="run/")
    result.weights                      # name -> float32 array, ready for model.to_onnx(weights=...)

One step: forward in training mode on the NumPy executor, the loss, `backward`, a check that the
loss and the gradients are finite, clipping by global norm (if asked), the learning rate from the
schedule, the optimizer's in-place update, and restoring the buffers of frozen layers.

What a run writes into run_dir (every file atomically):
    checkpoint.npz   the latest state, after every epoch (and on Ctrl-C, mid-epoch)
    best.npz         the state with the lowest validation loss (when there is validation data)
    metrics.jsonl    one JSON line per epoch: loss, metrics, val_loss, val metrics, lr, seconds

The run itself (position, random streams, resume, Ctrl-C, checkpoints, progress, metrics.jsonl)
is archdsl/train/run.py's `Run`; this module is its supervised policy: what one step does.

Determinism: the initial weights, the validation split, each epoch's shuffle and dropout all come
from generators seeded by `seed` (shuffling from (seed, 2), dropout from (seed, 3); checkpoints
keep their states), so the same seed and data give the same weights bit for
bit, and a run resumed from any checkpoint ends with exactly the weights of the uninterrupted run
(on the same machine and BLAS thread count: multi-threaded BLAS may sum in another order).

A NaN or inf loss stops the run with an ArchError that names the first layer whose output went
non-finite (found by running the batch again with `check_finite=True`); the last checkpoint is
left as it was. Ctrl-C finishes the current step, saves a checkpoint and returns (a second Ctrl-C
aborts at once).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..autodiff import backward, clear_tape, no_grad
from ..backends.numpy.executor import NonFiniteError, NumpyExecutor
from ..errors import ArchError
from ..ir.graph import Model
from ..ir.types import Sym
from ..passes.freeze import resolve_freeze
from ..passes.init import initialize
from ..passes.limits import check_resources
from .checkpoint import check_weights, init_from, read_checkpoint, save_checkpoint
from .config import TrainConfig, validate
from .data import Dataset, load_data, split
from .objective import Objective
from .metrics import METRIC_FINISH, METRICS
from .optim import (
    OPTIMIZERS, SCHEDULES, CosineSchedule, clip_grad_norm, global_grad_norm, schedule_factor,
)
from .run import Run, non_finite, upgrade_meta

EVAL_CHUNK = 512


@dataclass
class TrainResult:
    weights: dict[str, np.ndarray]
    history: list[dict]
    epochs_done: int
    steps: int
    seconds: float
    interrupted: bool = False
    run_dir: Path | None = None
    checkpoint: Path | None = None
    best: Path | None = None
    best_val_loss: float | None = None
    executor: NumpyExecutor | None = field(default=None, repr=False)

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}


# -- helpers ---------------------------------------------------------------------------------------

def _ir(model) -> Model:
    return model.ir if hasattr(model, "ir") else model


def build_optimizer(spec: dict, params: dict):
    name = spec["name"]
    kw = {k: v for k, v in spec.items() if k != "name"}
    if "betas" in kw:
        kw["betas"] = tuple(kw["betas"])
    try:
        return OPTIMIZERS[name](params, **kw)
    except (TypeError, ValueError) as e:
        raise ArchError(f"optimizer {name}: {e}") from None


def build_schedules(items: list[dict], base_lr: float) -> list:
    out = []
    for it in items:
        kw = {k: v for k, v in it.items() if k != "name"}
        try:
            if it["name"] == "cosine":
                out.append(CosineSchedule(min_factor=float(kw.get("min_lr", 0.0)) / base_lr))
            else:
                out.append(SCHEDULES[it["name"]](**kw))
        except (TypeError, ValueError, KeyError) as e:
            raise ArchError(f"schedule {it.get('name')}: {e}") from None
    return out


def _fmt_metric(k: str, v) -> str:
    if v is None:
        return f"{k} -"
    if k.endswith("accuracy"):
        return f"{k} {100 * v:.2f}%"
    return f"{k} {v:.4f}"


def data_dims(ir: Model, arrays: dict) -> dict[str, int]:
    """The sizes of the symbolic dims of the model's inputs (T, S, ...) in the training arrays
    (N, the example axis, is the batch and is left out)."""
    dims: dict[str, int] = {}
    for v in ir.inputs:
        arr = arrays.get(v.name)
        if arr is None or arr.ndim != len(v.type.shape):
            continue
        for d, n in zip(v.type.shape[1:], arr.shape[1:]):
            if isinstance(d, Sym) and d.const == 0 and len(d.terms) == 1 and next(iter(d.terms.values())) == 1:
                dims.setdefault(next(iter(d.terms)), int(n))
    return dims


def read_resumable(path):
    """The checkpoint `--resume` continues from, its metadata checked against the schema of a
    supervised run (metaschema.py) before any field is used."""
    from .metaschema import check_meta, train_schema
    ck = read_checkpoint(path)
    if not ck.is_full:
        raise ArchError(f"'{ck.path}' holds weights only; --resume needs a training checkpoint",
                        hint="use --init to start a new run from these weights")
    if ck.meta.get("kind") == "gan":
        raise ArchError(f"'{ck.path}' is a checkpoint of a gan run, not of a supervised one",
                        hint="resume it with the spec's gan section")
    ck.meta = upgrade_meta(ck.meta)
    check_meta(ck.meta, train_schema(), ck.path)
    return ck


class _Accum:
    """Running sums for one epoch's loss, loss terms and metrics (exact averages over examples)."""

    def __init__(self, metrics, state: dict | None = None, terms: tuple = ()):
        state = state or {}
        sums = state.get("sums", {})
        self.sums = {k: float(sums.get(k, 0.0)) for k in ("loss",) + tuple(terms)}
        self.sums["loss"] = float(state.get("loss_sum", self.sums["loss"]))
        self.count = int(state.get("count", 0))
        self.m = {m: [float(x) for x in state.get("metrics", {}).get(m, (0.0, 0))] for m in metrics}
        self.seconds = float(state.get("seconds", 0.0))

    def add(self, rec: dict) -> None:
        for k, v in rec["totals"].items():
            self.sums[k] += v
        self.count += rec["count"]
        for k, (s, n) in rec["metrics"].items():
            self.m[k][0] += s
            self.m[k][1] += n

    def state(self) -> dict:
        return {"loss_sum": self.sums["loss"], "sums": self.sums, "count": self.count, "metrics": self.m,
                "seconds": self.seconds}

    def values(self, prefix="") -> dict:
        out = {f"{prefix}{k}": s / self.count if self.count else None for k, s in self.sums.items()}
        for k, (s, n) in self.m.items():
            out[f"{prefix}{k}"] = METRIC_FINISH.get(k, float)(s / n) if n else None
        return out


# -- the supervised policy ---------------------------------------------------------------------------

class Trainer:
    """Supervised training: one model, its loss (a built-in loss of an output and a target array,
    or named terms: archdsl/train/objective.py), metrics, an optional validation split (best.npz
    keeps the lowest validation loss); a policy of a Run."""

    def __init__(self, model, config: TrainConfig, *, quiet: bool = False, log=None, threads: int | None = None,
                 spec_file: str | None = None, on_step=None):
        """on_step(trainer, epoch, batch, step, loss): called after every update (0-based epoch and
        batch, step = updates so far); call trainer.request_stop() to end the run as Ctrl-C does.
        trainer.executor is the NumpyExecutor being trained."""
        self.model = model
        self.executor: NumpyExecutor | None = None
        self.user_on_step = on_step
        self.ir = _ir(model)
        self.cfg = config
        self.quiet = quiet
        self.log = log
        self.threads = threads
        self.spec_file = spec_file or self.ir.file
        self.run: Run | None = None
        spec = getattr(model, "spec", None)
        self.objective = Objective(self.ir, config.loss, config.terms, config.spans,
                                   spec.ns if spec is not None else None)
        validate(config, self.ir, self.objective)
        self.targets = self.objective.targets
        self.term_names = () if self.objective.single else tuple(self.objective.names)
        clf = self.objective.classifier
        self.kind = clf.kind if clf is not None else None
        self.clf_kwargs = dict(clf.loss["kwargs"]) if clf is not None else {}

    @property
    def name(self) -> str:
        return self.ir.name

    def request_stop(self) -> None:
        """Finish the current step, save a checkpoint (with a run_dir) and return, as on Ctrl-C."""
        if self.run is not None:
            self.run.request_stop()

    # -- data -------------------------------------------------------------------------------------
    def load(self, data) -> Dataset:
        if isinstance(data, Dataset):
            return data
        cfg = self.cfg
        if isinstance(data, dict):
            return load_data("<arrays>", self.ir, self.targets, cfg.inputs, cfg.targets, files=dict(data))
        return load_data(data, self.ir, self.targets, cfg.inputs, cfg.targets)

    def _metrics(self, outs: dict, batch: dict) -> dict:
        if not self.cfg.metrics:
            return {}
        clf = self.objective.classifier
        out, target = self.as_array(outs[clf.loss["output"]]), batch[clf.loss["target"]]
        return {m: METRICS[m](out, target, self.kind, self.clf_kwargs.get("ignore_index")) for m in self.cfg.metrics}

    def as_array(self, t) -> np.ndarray:
        """An output of the engine as a NumPy array."""
        return t.data

    def evaluate(self, ex: NumpyExecutor, ds: Dataset, prefix: str = "", step: int = 0, steps_per_epoch: int = 1) -> dict:
        """Loss, loss terms and metrics of `ds` in inference mode (no dropout, BatchNorm running
        statistics); ramped term weights at `step`."""
        acc = _Accum(self.cfg.metrics, terms=self.term_names)
        for _, b in ds.batches(EVAL_CHUNK):
            acc.add(self.eval_batch(ex, b, step, steps_per_epoch))
        return acc.values(prefix)

    def eval_batch(self, ex, batch: dict, step: int, steps_per_epoch: int) -> dict:
        """One batch's record in inference mode: its loss and term totals, count, metrics."""
        with no_grad():
            outs = ex.forward({v.name: batch[v.name] for v in self.ir.inputs}, training=False)
            _, _, totals, n = self.objective(outs, batch, step, steps_per_epoch)
            return {"totals": totals, "count": n, "metrics": self._metrics(outs, batch)}

    # -- the run ----------------------------------------------------------------------------------
    def fit(self, data, run_dir=None, *, resume=None, init=None, overwrite: bool = False) -> TrainResult:
        ck = None
        if resume is not None:
            ck = read_resumable(resume)
            if ck.meta.get("model") != self.ir.name:
                raise ArchError(f"'{ck.path}' is a checkpoint of model {ck.meta.get('model')}, not {self.ir.name}")
        self._data, self._init = data, init
        self.run = run = Run(self, run_dir, resume=resume, quiet=self.quiet, log=self.log, threads=self.threads,
                             on_step=self._on_step if self.user_on_step is not None else None, seed=self.cfg.seed,
                             overwrite=overwrite, reads=(data, init, self.cfg.init, self.spec_file))
        run.fit(ck)
        ex = self.executor
        best_path = run.out_dir / "best.npz" if run.out_dir is not None else None
        return TrainResult({k: v.copy() for k, v in ex.weights().items()}, run.history, run.epoch, run.step,
                           run.seconds, interrupted=run.interrupted, run_dir=run.out_dir, checkpoint=run.checkpoint,
                           best=best_path if best_path is not None and best_path.exists() else None,
                           best_val_loss=self.best, executor=ex)

    def _on_step(self, run: Run, rec: dict) -> None:
        self.user_on_step(self, run.epoch, run.batch - 1, run.step, rec["loss"])

    def open(self, run: Run, ck) -> None:
        cfg, ir = self.cfg, self.ir
        ds = self.load(self._data)
        if len(ds) == 0:
            raise ArchError(f"{ds.path}: no examples")
        self.train_ds, self.val_ds = split(ds, cfg.val_split, cfg.seed)
        frozen = set(resolve_freeze(ir, cfg.freeze, cfg.spans.get("freeze")))
        frozen |= {n for n, p in ir.parameters.items() if not p.trainable}
        self.frozen = frozen
        # parameters, optimizer state and activations at the batch and the data's dims, before a
        # weight is allocated (passes/limits.py)
        check_resources(ir, batch=min(cfg.batch, len(self.train_ds)), dims=data_dims(ir, ds.arrays))
        if ck is not None:
            weights = check_weights(ck.weights, ir, ck.path)
        else:
            weights = initialize(ir, cfg.seed)
            init = self._init if self._init is not None else cfg.init
            if init is not None:
                run.log(init_from(init, ir, weights).describe(str(init)))
        self.open_engine(run, weights, frozen)
        if not self.trainable:
            raise ArchError(f"nothing to train: every parameter of model {ir.name} is frozen", cfg.spans.get("freeze"))
        self.schedules = build_schedules(cfg.schedule, self.opt.base_lr)
        if frozen:
            run.log(f"frozen: {len(frozen)} parameter tensors "
                    f"({sum(ir.parameters[n].numel for n in frozen if not ir.parameters[n].spec.buffer):,} "
                    f"weights) get no updates")
        self.best = None
        if ck is not None:
            self.opt.load_state(ck.optim, ck.meta["optimizer"])
            self.best = ck.meta.get("best_val_loss")
            ck.meta["path"] = str(ck.path)
        spe = self.train_ds.num_batches(cfg.batch)
        run.setup(len(self.train_ds), ds.path, spe, spe * cfg.epochs)
        self.in_names = [v.name for v in ir.inputs]
        self.params = list(self.trainable.values())

    def open_engine(self, run: Run, weights: dict, frozen: set) -> None:
        """The engine's part of `open`: the executor, its trainable parameters, the optimizer,
        the frozen buffers to restore after each update (here: the NumPy engine's)."""
        ex = self.executor = NumpyExecutor(self.ir, weights, seed=self.cfg.seed)
        ex.ctx.rng = run.stream("dropout", 3)
        for n in frozen:
            ex.params[n].requires_grad = False
        self.trainable = {n: t for n, t in ex.params.items() if t.requires_grad}
        self.opt = build_optimizer(self.cfg.optimizer, self.trainable) if self.trainable else None
        self.frozen_buffers = {n: ex.params[n].data.copy() for n in frozen if self.ir.parameters[n].spec.buffer}

    def accumulator(self, state):
        return _Accum(self.cfg.metrics, state, self.term_names)

    def next_batch(self, run: Run, b: int) -> dict:
        """Batch b of the epoch's order (every array it needs); sets the step's learning rate."""
        cfg, opt = self.cfg, self.opt
        batch = self.train_ds.batch(run.order[b * cfg.batch:(b + 1) * cfg.batch])
        opt.lr = opt.base_lr * schedule_factor(self.schedules, opt.t, run.total, run.steps_per_epoch) \
            if self.schedules else opt.base_lr
        return batch

    def step(self, run: Run, b: int) -> dict:
        cfg, ex, opt = self.cfg, self.executor, self.opt
        batch = self.next_batch(run, b)
        inputs = {k: batch[k] for k in self.in_names}
        outs = ex.forward(inputs, training=True)
        loss, values, totals, n_ex = self.objective(outs, batch, run.step, run.steps_per_epoch)
        lv = float(loss.data)
        if not math.isfinite(lv):
            clear_tape()
            self._diagnose(run, inputs, lv, values)
        backward(loss)
        norm = clip_grad_norm(self.params, cfg.clip_norm) if cfg.clip_norm else global_grad_norm(self.params)
        if not math.isfinite(norm):
            self._bad_grads(run)
        opt.step()
        opt.zero_grad()
        for n, saved in self.frozen_buffers.items():
            np.copyto(ex.params[n].data, saved)
        return {"loss": lv, "totals": totals, "count": n_ex, "metrics": self._metrics(outs, batch)}

    def end_epoch(self, run: Run, acc: _Accum) -> dict:
        rec = {"lr": self.opt.lr, **acc.values(), **self.objective.ramped_weights(run.step, run.steps_per_epoch)}
        if self.val_ds is not None:
            rec.update(self.evaluate(self.executor, self.val_ds, "val_", run.step, run.steps_per_epoch))
        self._improved = self.val_ds is not None and rec["val_loss"] is not None and (
            self.best is None or rec["val_loss"] < self.best)
        if self._improved:
            self.best = rec["val_loss"]
        return rec

    def after_epoch(self, run: Run, rec: dict) -> None:
        if self._improved and run.out_dir is not None:
            self.save(run, run.out_dir / "best.npz", run.meta())

    def format(self, rec: dict) -> str:
        text = "  ".join(_fmt_metric(k, v) for k, v in rec.items() if k not in ("epoch", "step", "lr", "seconds"))
        return text + (f"  lr {rec['lr']:.2e}" if "lr" in rec else "")

    # -- checkpoints ------------------------------------------------------------------------------
    def meta(self, run: Run) -> dict:
        return {"model": self.ir.name, "spec": str(self.spec_file or ""), "optimizer": self.opt.state_meta(),
                "config": self.cfg.to_json(), "best_val_loss": self.best, "frozen": sorted(self.frozen)}

    def save(self, run: Run, path, meta: dict) -> Path:
        return save_checkpoint(path, self.executor.weights(), self.opt.state_arrays(), meta)

    def _diagnose(self, run: Run, inputs, lv, values: dict):
        where = f"at epoch {run.epoch + 1}, step {run.step + 1}"
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad and not self.objective.single:
            where += f" (loss term{'s' if len(bad) > 1 else ''} {', '.join(bad)})"
        hint = "lower the learning rate or set clip_norm" + run.last_good_note()
        try:
            with no_grad():
                self.executor.forward(inputs, training=True, check_finite=True)
        except NonFiniteError as e:
            raise ArchError(f"training stopped {where}: the loss became {non_finite(lv)}; {e.message}", e.span,
                            hint) from None
        raise ArchError(f"training stopped {where}: the loss became {non_finite(lv)}, although every layer output "
                        f"was finite (the loss overflowed)", None, "check the targets" + run.last_good_note())

    def grad_finite(self, t) -> bool:
        return t.grad is None or bool(np.isfinite(t.grad).all())

    def _bad_grads(self, run: Run):
        where = f"at epoch {run.epoch + 1}, step {run.step + 1}"
        for n, t in self.trainable.items():
            if not self.grad_finite(t):
                raise ArchError(f"training stopped {where}: the gradient of {n} became non-finite (NaN or inf)", None,
                                "lower the learning rate or set clip_norm" + run.last_good_note())
        raise ArchError(f"training stopped {where}: the gradient norm overflowed", None,
                        "set clip_norm or lower the learning rate" + run.last_good_note())


def train(model, data, config: TrainConfig | None = None, run_dir=None, *, resume=None, init=None,
          quiet: bool = False, log=None, threads: int | None = None, on_step=None, overwrite: bool = False,
          policy=None, **overrides) -> TrainResult:
    """Train `model` (a CompiledModel or IR Model) on `data` (an .npz path, a dict of arrays, or a
    Dataset). `config` defaults to the model's train section; with `resume`, to the checkpoint's
    config (where `epochs` may be raised). Overrides: epochs, batch, lr, seed, val_split, clip_norm,
    freeze (a list, added), init. `policy(model, config, **options)` makes the trainer (default:
    Trainer, the NumPy engine; the PyTorch engine passes its own)."""
    ir = _ir(model)
    if resume is not None and config is None:
        ck = read_resumable(resume)
        config = TrainConfig.from_json(ck.meta["config"])
        changed = [k for k in ("batch", "lr", "seed", "val_split", "clip_norm")
                   if overrides.get(k) is not None
                   and overrides[k] != (config.lr if k == "lr" else getattr(config, k))]
        if changed or overrides.get("freeze"):
            raise ArchError(f"--resume continues the checkpoint's run; it cannot change "
                            f"{', '.join(changed + (['freeze'] if overrides.get('freeze') else []))}",
                            hint="only --epochs may differ (to train longer); use --init to start a new run "
                                 "from these weights with other settings")
        config = config.with_overrides(epochs=overrides.get("epochs"))
        if data is None:
            data = ck.meta.get("data")
    elif config is None:
        spec = getattr(model, "spec", None)
        if spec is None:
            raise ArchError("train() needs a config (or a CompiledModel whose spec has a train section)")
        from .config import config_for
        config = config_for(spec, ir.name, **overrides)
    else:
        config = config.with_overrides(**overrides)
    if data is None:
        raise ArchError("no training data: pass --data DATA.npz")
    spec_file = getattr(getattr(model, "spec", None), "file", None)
    trainer = (policy or Trainer)(model, config, quiet=quiet, log=log, threads=threads, spec_file=spec_file,
                                  on_step=on_step)
    return trainer.fit(data, run_dir, resume=resume, init=init, overwrite=overwrite)
