"""One training run, written once: what every kind of training shares.

A `Run` drives a `Policy`. The run owns the surroundings (a tape of its own, BLAS threads, Ctrl-C,
the allocator), the position (epoch, batch within the epoch, step), the named random streams,
the shuffled order of each epoch, the progress bar and the epoch lines, the history, the partial
sums of an interrupted epoch, checkpoints (after every epoch, and on Ctrl-C mid-epoch), metrics.jsonl,
the SIGKILL crash points, the `on_step` hook and the messages of a stopped run. A policy says what
one step does and what its checkpoint holds:

    class Policy:
        name                                     # "model LeNet5", "gan Ring" (for messages)
        def open(self, run, checkpoint)          # data, executors, optimizers; run.setup(...)
        def step(self, run, batch_index) -> dict # one update; its record (losses, ...)
        def accumulator(self, state) -> Accum    # sums of an epoch's records
        def end_epoch(self, run, acc) -> dict    # the epoch's record (validation, ...)
        def save(self, run, path, meta)          # the checkpoint (and the files beside it)
        def meta(self, run) -> dict              # what the checkpoint adds to the run's metadata
        def format(self, record) -> str          # a record as progress and epoch lines show it

Supervised training (archdsl/train/loop.py) and GAN training (archdsl/gan/loop.py) are the two
policies today. Determinism: every stream is seeded from the run's seed and its state goes into
each checkpoint, and the order of an interrupted epoch is restored from the shuffle stream's state
at the epoch's start, so a run resumed from any checkpoint ends with exactly the weights of the
run that was never interrupted (same machine and BLAS thread count).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ..autodiff import Tape, clear_tape
from ..autodiff.allocator import reused_memory
from ..autodiff.ortkernels import brief_blas_spin
from ..crashpoints import crash_point
from ..errors import ArchError
from ..fileio import atomic_write, refuse_overwriting_inputs
from ..version import __version__

SHOW_EVERY = 10          # progress-bar postfix refresh, in steps


class Run:
    """See the module docstring. After `fit`: `epoch`, `step`, `history`, `interrupted`,
    `seconds`, `checkpoint` (the path written last, or None), `out_dir`."""

    def __init__(self, policy, run_dir=None, *, resume=None, quiet: bool = False, log=None,
                 threads: int | None = None, on_step=None, seed: int = 0, overwrite: bool = False,
                 reads: tuple = ()):
        """reads: the files the run reads (data, --init, the spec), which it must never write."""
        self.policy = policy
        self.run_dir, self.resume = run_dir, resume
        self.overwrite, self.reads = overwrite, reads
        self.quiet, self.threads, self.on_step = quiet, threads, on_step
        self._plain_log = log is None
        self.log = log or (lambda s: print(s, flush=True))
        self.seed = seed
        self.streams: dict[str, np.random.Generator] = {"shuffle": np.random.default_rng([seed & 0xFFFFFFFF, 2])}
        self.epoch = self.batch = self.step = 0
        self.steps_per_epoch, self.total = 1, 0
        self.data_len, self.data_path = 0, ""
        self.history: list[dict] = []
        self.partial: dict | None = None
        self.order: np.ndarray | None = None
        self.interrupted = False
        self.stop_requested = False
        self.seconds = 0.0
        self.out_dir: Path | None = None
        self.checkpoint: Path | None = None
        self._epoch_start_shuffle = None

    # -- what a policy declares in `open` ------------------------------------------------------------
    def stream(self, name: str, key: int) -> np.random.Generator:
        """A named random stream seeded from (seed, key); its state is checkpointed."""
        g = self.streams[name] = np.random.default_rng([self.seed & 0xFFFFFFFF, key])
        return g

    def adopt(self, name: str, rng: np.random.Generator) -> None:
        """Checkpoint an existing generator (an executor's dropout stream) under `name`."""
        self.streams[name] = rng

    def setup(self, data_len: int, data_path: str, steps_per_epoch: int, total_steps: int) -> None:
        self.data_len, self.data_path = data_len, str(data_path)
        self.steps_per_epoch, self.total = max(1, steps_per_epoch), total_steps

    @property
    def epochs(self) -> int:
        return -(-self.total // self.steps_per_epoch)

    def request_stop(self) -> None:
        """Finish the current step, save a checkpoint and return, as on Ctrl-C."""
        self.stop_requested = True

    def last_good_note(self) -> str:
        """The end of an error hint: the checkpoint a failed run left untouched, if any."""
        ck = self.out_dir / "checkpoint.npz" if self.out_dir is not None else None
        if ck is not None and ck.exists():
            return f"; the last good checkpoint, {ck}, is unchanged"
        return ""

    # -- the run -------------------------------------------------------------------------------------
    def fit(self, checkpoint=None):
        """Run the policy from the start, or from `checkpoint` (already read by the caller)."""
        t_start = time.perf_counter()
        with training_run(self), run_directory(self.run_dir, resume=self.resume, overwrite=self.overwrite,
                                               reads=self.reads) as out:
            self.out_dir = out
            try:
                self._fit(checkpoint, t_start)
            finally:
                clear_tape()
        self.seconds = time.perf_counter() - t_start
        return self

    def _fit(self, ck, t_start):
        policy = self.policy
        policy.open(self, ck)
        if ck is not None:
            self._restore(ck.meta, ck.path)
        ck_path = self.out_dir / "checkpoint.npz" if self.out_dir is not None else None
        bar = None
        if not self.quiet and sys.stderr.isatty():
            from tqdm import tqdm
            bar = tqdm(total=self.total, initial=self.step, desc=policy.name, file=sys.stderr, dynamic_ncols=True,
                       unit="step", leave=False)
        say = self.log
        if bar is not None and self._plain_log:      # epoch lines above the bar, not through it
            say = lambda s: bar.write(s, file=sys.stdout)      # noqa: E731
        try:
            while self.step < self.total:
                shuffle = self.streams["shuffle"]
                self._epoch_start_shuffle = shuffle.bit_generator.state
                self.order = shuffle.permutation(self.data_len)
                acc = policy.accumulator(self.partial)
                self.partial = None
                t0 = time.perf_counter() - acc.seconds
                end = min(self.steps_per_epoch, self.total - self.epoch * self.steps_per_epoch)
                while self.batch < end:
                    rec = policy.step(self, self.batch)
                    self.step += 1
                    self.batch += 1
                    acc.add(rec)
                    if bar is not None:
                        bar.update(1)
                        if self.step % SHOW_EVERY == 0 or self.step == self.total:
                            bar.set_postfix_str(policy.format(acc.values()), refresh=False)
                    if self.on_step is not None:
                        self.on_step(self, rec)
                    crash_point("step", self.step)
                    if self.stop_requested and self.step < self.total:
                        acc.seconds = time.perf_counter() - t0
                        self.partial = acc.state()
                        return self._stopped(ck_path)
                acc.seconds = time.perf_counter() - t0
                rec = {"epoch": self.epoch + 1, "step": self.step, **policy.end_epoch(self, acc),
                       "seconds": round(acc.seconds, 3)}
                self.history.append(rec)
                say(f"epoch {self.epoch + 1:>{len(str(self.epochs))}}/{self.epochs}  {policy.format(rec)}  "
                    f"{rec['seconds']:.1f}s")
                if self.batch >= self.steps_per_epoch:
                    self.epoch += 1
                    self.batch = 0
                    self._epoch_start_shuffle = None
                else:        # the step budget ended the run inside an epoch: a longer run goes on in it
                    self.partial = acc.state()
                self._save(ck_path)
                policy.after_epoch(self, rec)
        finally:
            if bar is not None:
                bar.close()
        return self

    def _stopped(self, ck_path):
        self.interrupted = True
        if ck_path is not None:
            self._save(ck_path)
            self.log(f"interrupted at epoch {self.epoch + 1}, batch {self.batch} (step {self.step}); saved "
                     f"{ck_path} (continue with --resume {ck_path})")
        else:
            self.log(f"interrupted at epoch {self.epoch + 1}, batch {self.batch} (step {self.step})")
        return self

    # -- checkpoints ----------------------------------------------------------------------------------
    def meta(self) -> dict:
        shuffle = (self._epoch_start_shuffle if self._epoch_start_shuffle is not None
                   else self.streams["shuffle"].bit_generator.state)
        rng = {k: g.bit_generator.state for k, g in self.streams.items()}
        rng["shuffle"] = shuffle
        return {"archdsl": __version__, "data": self.data_path, "epoch": self.epoch, "batch": self.batch,
                "step": self.step, "rng": rng, "history": self.history, "partial": self.partial,
                **self.policy.meta(self)}

    def _save(self, ck_path) -> None:
        if ck_path is None:
            return
        self.policy.save(self, ck_path, self.meta())
        write_metrics(ck_path.parent, self.history)
        self.checkpoint = ck_path

    def _restore(self, meta: dict, path) -> None:
        meta = upgrade_meta(meta)
        self.epoch, self.batch, self.step = int(meta["epoch"]), int(meta["batch"]), int(meta["step"])
        with corrupt_state(path):
            for name, state in meta["rng"].items():
                if name in self.streams:
                    self.streams[name].bit_generator.state = state
        self._epoch_start_shuffle = None
        self.history = [h for h in meta.get("history", []) if h["epoch"] <= self.epoch]   # finished epochs
        self.partial = meta.get("partial") if self.batch else None
        self.log(f"resuming {self.policy.name} from {path}: epoch {self.epoch + 1}, "
                 f"batch {self.batch}, step {self.step}")
        if self.step >= self.total:
            self.log(f"nothing to do: the checkpoint already ran {self.step} of {self.total} steps")


def upgrade_meta(meta: dict) -> dict:
    """Checkpoints of version 1 (before runs were shared): the supervised loop kept its dropout
    stream as `rng` and the shuffle apart, the GAN loop its position in the epoch as `in_epoch`."""
    meta = dict(meta)
    if "batch" not in meta and "in_epoch" in meta:
        meta["batch"] = meta["in_epoch"]
    rng = meta.get("rng")
    if isinstance(rng, dict) and "bit_generator" in rng:
        meta["rng"] = {"dropout": rng, "shuffle": meta.get("shuffle")}
    return meta


class Accum:
    """Sums of an epoch's step records (exact averages over steps, or over examples where a
    record carries its count `n`)."""

    def __init__(self, keys: tuple, state: dict | None = None):
        state = state or {}
        self.sums = {k: float(state.get("sums", {}).get(k, 0.0)) for k in keys}
        self.n = int(state.get("n", 0))
        self.seconds = float(state.get("seconds", 0.0))

    def add(self, rec: dict) -> None:
        w = rec.get("n", 1)
        for k in self.sums:
            if k in rec:
                self.sums[k] += rec[k] * w
        self.n += w

    def values(self) -> dict:
        return {k: (s / self.n if self.n else None) for k, s in self.sums.items()}

    def state(self) -> dict:
        return {"sums": self.sums, "n": self.n, "seconds": self.seconds}


# -- the surroundings ------------------------------------------------------------------------------

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


@contextlib.contextmanager
def training_run(run):
    """The surroundings of a whole run: a tape of its own, `run.threads` BLAS threads, Ctrl-C
    asking the run to stop, no NumPy warnings (the policies detect and report non-finite values),
    an allocator that keeps freed memory for the next step (autodiff/allocator.py), and OpenBLAS's
    idle threads spinning briefly (autodiff/ortkernels.py)."""
    with reused_memory(), Tape(), blas_threads(run.threads), brief_blas_spin(), _stop_on_sigint(run), \
            np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        yield


@contextlib.contextmanager
def _stop_on_sigint(run):
    """A first Ctrl-C asks the run to stop (finish the step, save a checkpoint, return); a second,
    or one after request_stop(), aborts at once. Handlers can only be set in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if run.stop_requested:
            raise KeyboardInterrupt
        run.stop_requested = True
        print("\ninterrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)",
              file=sys.stderr, flush=True)
    old = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


RUN_FILES = ("checkpoint.npz", "best.npz", "metrics.jsonl", "generator.npz", "discriminator.npz")


@contextlib.contextmanager
def run_directory(run_dir, *, resume=None, overwrite: bool = False, reads=()):
    """The run directory (a Path, created if missing; None: the run writes nothing), locked for
    the whole run, with what would destroy files refused before any work is done:

    - another run holding the directory (an exclusive `flock` on it, released by the kernel
      when the process ends, also by SIGKILL): refused;
    - a directory that is not empty: refused, unless the run resumes from a checkpoint in it,
      or `overwrite` (the files a run writes, RUN_FILES, are then removed first, so no
      `best.npz` of an earlier run is left beside the new checkpoint);
    - a file the run reads (`reads`: data, --init, the spec) that the run would write: refused;
    - a directory the run cannot write (read-only, no permission): refused now, not after the
      first epoch.
    """
    if run_dir is None:
        yield None
        return
    out = Path(run_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as e:
        raise ArchError(f"cannot create run directory '{out}': {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArchError(f"run directory '{out}' is in use by another training run",
                            hint="wait for that run to finish, or train into another directory") from None
        resuming_here = resume is not None and _holds(out, resume)
        entries = sorted(os.listdir(out))
        if entries and not overwrite and not resuming_here:
            shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
            raise ArchError(f"run directory '{out}' is not empty ({shown}): a new run would overwrite it",
                            hint=f"continue that run with --resume {out}, train into a new directory, or "
                                 "pass --overwrite to replace its run files")
        for name in RUN_FILES:
            refuse_overwriting_inputs(out / name, [f for f in reads if isinstance(f, (str, os.PathLike))],
                                      flag=f"the run's {name}")
            if os.path.lexists(out / name) and not (out / name).is_file():
                raise ArchError(f"run directory '{out}' holds a {name} that is not a regular file",
                                hint="a run writes its files there: move that one away")
        if overwrite and not resuming_here:
            for name in RUN_FILES:
                with contextlib.suppress(FileNotFoundError):
                    if not (out / name).is_dir():
                        os.unlink(out / name)
        try:                                  # a run that cannot save fails now, not after an epoch
            probe, probe_path = tempfile.mkstemp(dir=out, prefix=".write-test.")
            os.close(probe)
            os.unlink(probe_path)
        except OSError as e:
            raise ArchError(f"cannot write into run directory '{out}': {e.strerror or e}",
                            hint="choose a directory you can write to") from None
        yield out
    finally:
        os.close(fd)


def _holds(directory: Path, checkpoint) -> bool:
    """Whether `checkpoint` (a file, or a run directory) lies in `directory`."""
    p = Path(checkpoint)
    where = p if p.is_dir() else p.parent
    try:
        return where.resolve() == directory.resolve() or where.samefile(directory)
    except OSError:
        return False


@contextlib.contextmanager
def corrupt_state(path):
    """Restoring a generator's state from a checkpoint: what the schema cannot see (a bit
    generator's own fields) is an ArchError too."""
    try:
        yield
    except (TypeError, ValueError, KeyError) as e:
        raise ArchError(f"'{path}': the checkpoint's metadata is corrupt: a random generator's state "
                        f"cannot be restored ({e})") from None


def write_metrics(out_dir: Path, history: list[dict]) -> None:
    """metrics.jsonl: one JSON line per finished epoch."""
    atomic_write(out_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))


def non_finite(value: float) -> str:
    return "NaN" if math.isnan(value) else "inf"
