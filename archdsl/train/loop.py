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

import contextlib
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..version import __version__
from ..autodiff import Tape, backward, clear_tape, no_grad
from ..backends.numpy.executor import NonFiniteError, NumpyExecutor
from ..crashpoints import crash_point
from ..errors import ArchError
from ..fileio import atomic_write
from ..ir.graph import Model
from ..passes.freeze import resolve_freeze
from ..passes.init import initialize
from ..autodiff.allocator import reused_memory
from .checkpoint import check_weights, init_from, read_checkpoint, save_checkpoint
from .config import TrainConfig, validate
from .data import Dataset, TargetSpec, load_data, shuffle_rng, split
from .losses import LOSSES, per_example_total
from .metrics import METRIC_FINISH, METRICS
from .optim import (
    OPTIMIZERS, SCHEDULES, CosineSchedule, clip_grad_norm, global_grad_norm, schedule_factor,
)

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


@contextlib.contextmanager
def blas_threads(n: int | None):
    """Limit BLAS threads (small networks run fastest on one; needs threadpoolctl)."""
    if not n:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise ArchError("--threads needs the threadpoolctl package (pip install threadpoolctl)") from None
    with threadpool_limits(limits=int(n), user_api="blas"):
        yield


# -- what the supervised and the GAN loop (archdsl/gan/loop.py) share -------------------------------

@contextlib.contextmanager
def training_run(trainer):
    """The surroundings of a whole run: a tape of its own, `trainer.threads` BLAS threads, Ctrl-C
    asking the trainer to stop, no NumPy warnings (the loop itself detects and reports non-finite
    values), and an allocator that keeps freed memory for the next step (autodiff/allocator.py)."""
    with reused_memory(), Tape(), blas_threads(trainer.threads), _stop_on_sigint(trainer), \
            np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        yield


@contextlib.contextmanager
def _stop_on_sigint(trainer):
    """A first Ctrl-C sets `trainer._stop` (finish the step, save a checkpoint, return); a second,
    or one after request_stop(), aborts at once. Handlers can only be set in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if trainer._stop:
            raise KeyboardInterrupt
        trainer._stop = True
        print("\ninterrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)",
              file=sys.stderr, flush=True)
    old = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def make_run_dir(run_dir) -> Path | None:
    """The run directory as a Path, created if missing (None: the run writes nothing)."""
    out_dir = Path(run_dir) if run_dir is not None else None
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ArchError(f"cannot create run directory '{out_dir}': {e.strerror or e}") from None
    return out_dir


def write_metrics(out_dir: Path, history: list[dict]) -> None:
    """metrics.jsonl: one JSON line per finished epoch."""
    atomic_write(out_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))


def last_good_note(ck_path) -> str:
    """The end of an error hint: the checkpoint a failed run left untouched, if there is one."""
    if ck_path is not None and Path(ck_path).exists():
        return f"; the last good checkpoint, {ck_path}, is unchanged"
    return ""


def _fmt_metric(k: str, v) -> str:
    if v is None:
        return f"{k} -"
    if k.endswith("accuracy"):
        return f"{k} {100 * v:.2f}%"
    return f"{k} {v:.4f}"


class _Accum:
    """Running sums for one epoch's loss and metrics (exact averages over examples)."""

    def __init__(self, metrics, state: dict | None = None):
        state = state or {}
        self.loss_sum = float(state.get("loss_sum", 0.0))
        self.count = int(state.get("count", 0))
        self.m = {m: [float(x) for x in state.get("metrics", {}).get(m, (0.0, 0))] for m in metrics}
        self.seconds = float(state.get("seconds", 0.0))

    def state(self) -> dict:
        return {"loss_sum": self.loss_sum, "count": self.count, "metrics": self.m, "seconds": self.seconds}

    def values(self, prefix="") -> dict:
        out = {f"{prefix}loss": self.loss_sum / self.count if self.count else None}
        for k, (s, n) in self.m.items():
            out[f"{prefix}{k}"] = METRIC_FINISH.get(k, float)(s / n) if n else None
        return out


# -- the trainer -------------------------------------------------------------------------------------

class Trainer:
    def __init__(self, model, config: TrainConfig, *, quiet: bool = False, log=None, threads: int | None = None,
                 spec_file: str | None = None, on_step=None):
        """on_step(trainer, epoch, batch, step, loss): called after every update (0-based epoch and
        batch, step = updates so far); call trainer.request_stop() to end the run as Ctrl-C does.
        trainer.executor is the NumpyExecutor being trained."""
        self.model = model
        self.executor: NumpyExecutor | None = None
        self.on_step = on_step
        self.ir = _ir(model)
        self.cfg = config
        self.quiet = quiet
        self.log = log or (lambda s: print(s, flush=True))
        self.threads = threads
        self.spec_file = spec_file or self.ir.file
        self._stop = False
        validate(config, self.ir)
        name = config.loss["name"]
        self.loss_fn, self.kind = LOSSES[name]
        self.loss_kwargs = dict(config.loss.get("kwargs", {}))
        self.out_name = config.loss["output"]
        self.target_name = config.loss["target"]
        otype = next(v.type for v in self.ir.outputs if v.name == self.out_name)
        self.targets = [TargetSpec(self.target_name, otype, self.kind, self.loss_kwargs.get("ignore_index"))]

    def request_stop(self) -> None:
        """Finish the current step, save a checkpoint (with a run_dir) and return, as on Ctrl-C."""
        self._stop = True

    # -- data -------------------------------------------------------------------------------------
    def load(self, data) -> Dataset:
        if isinstance(data, Dataset):
            return data
        cfg = self.cfg
        if isinstance(data, dict):
            return load_data("<arrays>", self.ir, self.targets, cfg.inputs, cfg.targets, files=dict(data))
        return load_data(data, self.ir, self.targets, cfg.inputs, cfg.targets)

    def _loss(self, out, target):
        return self.loss_fn(out, target, **self.loss_kwargs)

    def _metrics(self, acc: _Accum, out: np.ndarray, target: np.ndarray) -> None:
        for m in acc.m:
            s, n = METRICS[m](out, target, self.kind, self.loss_kwargs.get("ignore_index"))
            acc.m[m][0] += s
            acc.m[m][1] += n

    def evaluate(self, ex: NumpyExecutor, ds: Dataset, prefix: str = "") -> dict:
        """Loss and metrics of `ds` in inference mode (no dropout, BatchNorm running statistics)."""
        acc = _Accum(self.cfg.metrics)
        red = self.loss_kwargs.get("reduction", "mean")
        with no_grad():
            for _, b in ds.batches(EVAL_CHUNK):
                out = ex.forward({v.name: b[v.name] for v in self.ir.inputs}, training=False)[self.out_name]
                n = len(b[self.target_name])
                acc.loss_sum += per_example_total(float(self._loss(out, b[self.target_name]).data), red, n)
                acc.count += n
                self._metrics(acc, out.data, b[self.target_name])
        return acc.values(prefix)

    # -- checkpoints ------------------------------------------------------------------------------
    def _meta(self, ex, opt, epoch, batch, history, best, acc, data_path, frozen, shuffle) -> dict:
        return {"archdsl": __version__, "model": self.ir.name, "spec": str(self.spec_file or ""),
                "data": str(data_path), "epoch": epoch, "batch": batch, "step": opt.t,
                "rng": ex.ctx.rng.bit_generator.state, "shuffle": shuffle, "optimizer": opt.state_meta(),
                "config": self.cfg.to_json(), "history": history, "best_val_loss": best,
                "partial": acc.state() if acc is not None else None, "frozen": sorted(frozen)}

    def _save(self, path, ex, opt, meta) -> Path:
        return save_checkpoint(path, ex.weights(), opt.state_arrays(), meta)

    # -- the run ----------------------------------------------------------------------------------
    def fit(self, data, run_dir=None, *, resume=None, init=None) -> TrainResult:
        with training_run(self):
            return self._fit(data, run_dir, resume, init)

    def _fit(self, data, run_dir, resume, init) -> TrainResult:
        cfg, ir = self.cfg, self.ir
        t_start = time.perf_counter()
        ck = None
        if resume is not None:
            ck = read_checkpoint(resume)
            if not ck.is_full:
                raise ArchError(f"'{ck.path}' holds weights only; --resume needs a training checkpoint",
                                hint="use --init to start a new run from these weights")
            if ck.meta.get("model") != ir.name:
                raise ArchError(f"'{ck.path}' is a checkpoint of model {ck.meta.get('model')}, not {ir.name}")
        ds = self.load(data)
        if len(ds) == 0:
            raise ArchError(f"{ds.path}: no examples")
        train_ds, val_ds = split(ds, cfg.val_split, cfg.seed)

        frozen = set(resolve_freeze(ir, cfg.freeze, cfg.spans.get("freeze")))
        frozen |= {n for n, p in ir.parameters.items() if not p.trainable}
        if ck is not None:
            weights = check_weights(ck.weights, ir, ck.path)
        else:
            weights = initialize(ir, cfg.seed)
            init = init if init is not None else cfg.init
            if init is not None:
                rep = init_from(init, ir, weights)
                self.log(rep.describe(str(init)))
        ex = NumpyExecutor(ir, weights, seed=cfg.seed)
        ex.ctx.rng = np.random.default_rng([cfg.seed & 0xFFFFFFFF, 3])
        self.executor = ex
        for n in frozen:
            ex.params[n].requires_grad = False
        trainable = {n: t for n, t in ex.params.items() if t.requires_grad}
        if not trainable:
            raise ArchError(f"nothing to train: every parameter of model {ir.name} is frozen",
                            cfg.spans.get("freeze"))
        opt = build_optimizer(cfg.optimizer, trainable)
        schedules = build_schedules(cfg.schedule, opt.base_lr)
        frozen_buffers = {n: ex.params[n].data.copy() for n in frozen if ir.parameters[n].spec.buffer}
        if frozen:
            self.log(f"frozen: {len(frozen)} parameter tensors "
                     f"({sum(ir.parameters[n].numel for n in frozen if not ir.parameters[n].spec.buffer):,} "
                     f"weights) get no updates")

        history: list[dict] = []
        best = None
        shuffler = shuffle_rng(cfg.seed)
        start_epoch, start_batch, partial = 0, 0, None
        if ck is not None:
            opt.load_state(ck.optim, ck.meta["optimizer"])
            ex.ctx.rng.bit_generator.state = ck.meta["rng"]
            shuffler.bit_generator.state = ck.meta["shuffle"]
            start_epoch, start_batch = int(ck.meta["epoch"]), int(ck.meta["batch"])
            partial = ck.meta.get("partial") if start_batch else None
            history = [h for h in ck.meta.get("history", []) if h["epoch"] <= start_epoch]
            best = ck.meta.get("best_val_loss")
            self.log(f"resuming {ir.name} from {ck.path}: epoch {start_epoch + 1}, "
                     f"batch {start_batch}, step {opt.t}")

        out_dir = make_run_dir(run_dir)
        ck_path = out_dir / "checkpoint.npz" if out_dir else None
        best_path = out_dir / "best.npz" if out_dir and val_ds is not None else None

        spe = train_ds.num_batches(cfg.batch)
        total = spe * cfg.epochs
        red = self.loss_kwargs.get("reduction", "mean")
        in_names = [v.name for v in ir.inputs]
        tname, oname = self.target_name, self.out_name
        params = list(trainable.values())
        show_bar = not self.quiet and sys.stderr.isatty()
        if start_epoch >= cfg.epochs:
            self.log(f"nothing to do: the checkpoint already finished {start_epoch} of {cfg.epochs} epochs")

        result = TrainResult({}, history, start_epoch, opt.t, 0.0, run_dir=out_dir, best_val_loss=best)
        for epoch in range(start_epoch, cfg.epochs):
            shuffle_state = shuffler.bit_generator.state     # saved with a mid-epoch checkpoint
            order = shuffler.permutation(len(train_ds))
            acc = _Accum(cfg.metrics, partial if epoch == start_epoch else None)
            b0 = start_batch if epoch == start_epoch else 0
            t0 = time.perf_counter() - acc.seconds
            bar = None
            if show_bar:
                from tqdm import tqdm
                bar = tqdm(total=spe, initial=b0, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                           file=sys.stderr, dynamic_ncols=True, unit="batch")
            try:
                for b, batch in train_ds.batches(cfg.batch, order, start=b0):
                    step = opt.t
                    opt.lr = opt.base_lr * schedule_factor(schedules, step, total, spe) if schedules else opt.base_lr
                    inputs = {k: batch[k] for k in in_names}
                    target = batch[tname]
                    out = ex.forward(inputs, training=True)[oname]
                    loss = self._loss(out, target)
                    lv = float(loss.data)
                    if not math.isfinite(lv):
                        clear_tape()
                        self._diagnose(ex, inputs, lv, epoch, step, ck_path)
                    backward(loss)
                    norm = clip_grad_norm(params, cfg.clip_norm) if cfg.clip_norm else global_grad_norm(params)
                    if not math.isfinite(norm):
                        self._bad_grads(trainable, epoch, step, ck_path)
                    opt.step()
                    opt.zero_grad()
                    crash_point("step", opt.t)
                    for n, saved in frozen_buffers.items():
                        np.copyto(ex.params[n].data, saved)
                    n_ex = len(target)
                    acc.loss_sum += per_example_total(lv, red, n_ex)
                    acc.count += n_ex
                    self._metrics(acc, out.data, target)
                    if bar is not None:
                        bar.update(1)
                        vals = acc.values()
                        bar.set_postfix_str("  ".join(_fmt_metric(k, v) for k, v in vals.items()), refresh=False)
                    if self.on_step is not None:
                        self.on_step(self, epoch, b, opt.t, lv)
                    if self._stop:
                        acc.seconds = time.perf_counter() - t0
                        meta = self._meta(ex, opt, epoch, b + 1, history, best, acc, ds.path, frozen,
                                          shuffle_state)
                        return self._interrupted(result, ex, opt, meta, ck_path, t_start)
            finally:
                if bar is not None:
                    bar.close()
                clear_tape()
            rec = {"epoch": epoch + 1, "step": opt.t, "lr": opt.lr, **acc.values()}
            if val_ds is not None:
                rec.update(self.evaluate(ex, val_ds, prefix="val_"))
            rec["seconds"] = round(time.perf_counter() - t0, 3)
            history.append(rec)
            self.log(f"epoch {epoch + 1:>{len(str(cfg.epochs))}}/{cfg.epochs}  "
                     + "  ".join(_fmt_metric(k, v) for k, v in rec.items() if k not in ("epoch", "step", "lr", "seconds"))
                     + f"  lr {opt.lr:.2e}  {rec['seconds']:.1f}s")
            improved = val_ds is not None and rec["val_loss"] is not None and (best is None or rec["val_loss"] < best)
            if improved:
                best = rec["val_loss"]
            if out_dir is not None:
                meta = self._meta(ex, opt, epoch + 1, 0, history, best, None, ds.path, frozen,
                                  shuffler.bit_generator.state)
                self._save(ck_path, ex, opt, meta)
                if improved:
                    self._save(best_path, ex, opt, meta)
                    result.best = best_path
                write_metrics(out_dir, history)
            result.epochs_done = epoch + 1
        result.weights = {k: v.copy() for k, v in ex.weights().items()}
        result.steps = opt.t
        result.seconds = time.perf_counter() - t_start
        result.checkpoint = ck_path
        result.best_val_loss = best
        if best_path is not None and best_path.exists():
            result.best = best_path
        result.executor = ex
        return result

    def _interrupted(self, result, ex, opt, meta, ck_path, t_start):
        epoch, batch = meta["epoch"], meta["batch"]
        result.interrupted = True
        result.weights = {k: v.copy() for k, v in ex.weights().items()}
        result.steps = opt.t
        result.seconds = time.perf_counter() - t_start
        result.executor = ex
        if ck_path is not None:
            self._save(ck_path, ex, opt, meta)
            write_metrics(ck_path.parent, meta["history"])
            result.checkpoint = ck_path
            self.log(f"interrupted at epoch {epoch + 1}, batch {batch} (step {opt.t}); saved {ck_path} "
                     f"(continue with --resume {ck_path})")
        else:
            self.log(f"interrupted at epoch {epoch + 1}, batch {batch} (step {opt.t})")
        return result

    def _diagnose(self, ex, inputs, lv, epoch, step, ck_path):
        what = "NaN" if math.isnan(lv) else "inf"
        where = f"at epoch {epoch + 1}, step {step + 1}"
        hint = "lower the learning rate or set clip_norm" + last_good_note(ck_path)
        try:
            with no_grad():
                ex.forward(inputs, training=True, check_finite=True)
        except NonFiniteError as e:
            raise ArchError(f"training stopped {where}: the loss became {what}; {e.message}", e.span, hint) from None
        raise ArchError(f"training stopped {where}: the loss became {what}, although every layer output was "
                        f"finite (the loss overflowed)", None, "check the targets" + last_good_note(ck_path))

    def _bad_grads(self, trainable, epoch, step, ck_path):
        for n, t in trainable.items():
            if t.grad is not None and not np.isfinite(t.grad).all():
                raise ArchError(f"training stopped at epoch {epoch + 1}, step {step + 1}: the gradient of {n} "
                                f"became non-finite (NaN or inf)", None,
                                "lower the learning rate or set clip_norm" + last_good_note(ck_path))
        raise ArchError(f"training stopped at epoch {epoch + 1}, step {step + 1}: the gradient norm overflowed",
                        None, "set clip_norm or lower the learning rate" + last_good_note(ck_path))


def train(model, data, config: TrainConfig | None = None, run_dir=None, *, resume=None, init=None,
          quiet: bool = False, log=None, threads: int | None = None, on_step=None, **overrides) -> TrainResult:
    """Train `model` (a CompiledModel or IR Model) on `data` (an .npz path, a dict of arrays, or a
    Dataset). `config` defaults to the model's train section; with `resume`, to the checkpoint's
    config (where `epochs` may be raised). Overrides: epochs, batch, lr, seed, val_split, clip_norm,
    freeze (a list, added), init."""
    ir = _ir(model)
    if resume is not None and config is None:
        ck = read_checkpoint(resume)
        if not ck.is_full:
            raise ArchError(f"'{ck.path}' holds weights only; --resume needs a training checkpoint")
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
    trainer = Trainer(model, config, quiet=quiet, log=log, threads=threads, spec_file=spec_file, on_step=on_step)
    return trainer.fit(data, run_dir, resume=resume, init=init)
