"""The alternating GAN training loop on the NumPy engine.

    import archdsl
    from archdsl.gan import train_gan
    pair = archdsl.compile("specs/gan_ring.arch").gan()
    result = train_gan(pair, "ring.npz", run_dir="run/")     # follows the gan section
    result.generator.run({"z": noise})                        # the trained NumpyExecutors

One step (what `steps` counts) is `d_steps` discriminator updates followed by one generator
update, as in Goodfellow et al.'s Algorithm 1 and PyTorch's DCGAN example:

    for each of d_steps:   z ~ noise; x ~ the next real batch; fake = G(z)       (G in training mode)
                           D loss on D(x) and D(fake), fake held constant; update D
    generator:             D loss on D(fake) of the *last* fake, now with gradients flowing
                           through D (whose weights are held) into G; update G

The last fake is generated once and reused by the generator update, as PyTorch does with
`fake.detach()`: its tape is set aside while the discriminator's backward pass runs (the tape is
global, one forward per backward) and put back before the generator's. When D has no BatchNorm
(nothing couples the examples of a batch), real and generated samples go through D in one pass
of 2B rows: the same loss and gradients with half the per-op overhead.

An epoch is one pass over the real data in batches of `batch` (the last partial batch is
dropped, so every BatchNorm batch is full): len(data) // (batch * d_steps) steps. `steps` in
the section (or --steps) ends the run after that many steps instead of `epochs` passes.

What a run writes into run_dir (every file atomically), after every epoch, at the end, and on
Ctrl-C (which finishes the current step first):
    checkpoint.npz     both models, both optimizer states, RNG states, position, config, history
    generator.npz      G's weights alone (for `archdsl export SPEC --weights run/generator.npz`)
    discriminator.npz  D's weights alone
    metrics.jsonl      one JSON line per epoch: step, d_loss, g_loss, d_real, d_fake, seconds

Determinism: G's weights come from the seed, D's from seed + 1; the real data order from
(seed, 2), dropout in G from (seed, 3) and in D from (seed, 5), the noise from (seed, 4); all
of them are in the checkpoint, so a run resumed from any checkpoint ends with exactly the
weights of the uninterrupted run (same machine and BLAS thread count).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..autodiff import backward, clear_tape, no_grad, put_back_tape, take_tape
from ..backends.numpy.executor import NumpyExecutor
from ..errors import ArchError
from ..passes.init import initialize
from ..passes.limits import check_resources
from ..train.checkpoint import check_weights
from ..train.data import Dataset, load_data, read_npz, shuffle_rng
from ..train.loop import (build_optimizer, build_schedules, corrupt_state, data_dims, last_good_note, run_directory,
                          training_run, write_metrics)
from ..train.optim import schedule_factor
from . import objectives as O
from .checkpoint import read_gan_checkpoint, save_gan_checkpoint, save_weights
from .config import GanConfig

SHOW_EVERY = 10          # progress-bar postfix refresh, in steps


@dataclass
class GanResult:
    generator: NumpyExecutor
    discriminator: NumpyExecutor
    history: list[dict]
    steps: int
    epochs_done: int
    seconds: float
    interrupted: bool = False
    run_dir: Path | None = None
    checkpoint: Path | None = None
    config: GanConfig | None = field(default=None, repr=False)

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}

    @property
    def generator_weights(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.generator.weights().items()}

    @property
    def discriminator_weights(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.discriminator.weights().items()}


def _couples_batch(ir) -> bool:
    """Does a training-mode forward mix the examples of a batch (BatchNorm's batch statistics)?"""
    return any(n.kind.startswith("BatchNorm") for n in ir.nodes)


class _Accum:
    KEYS = ("d_loss", "g_loss", "d_real", "d_fake")

    def __init__(self, state: dict | None = None):
        state = state or {}
        self.sums = {k: float(state.get("sums", {}).get(k, 0.0)) for k in self.KEYS}
        self.n = int(state.get("n", 0))
        self.seconds = float(state.get("seconds", 0.0))

    def add(self, **vals) -> None:
        for k, v in vals.items():
            self.sums[k] += v
        self.n += 1

    def values(self) -> dict:
        return {k: (s / self.n if self.n else None) for k, s in self.sums.items()}

    def state(self) -> dict:
        return {"sums": self.sums, "n": self.n, "seconds": self.seconds}


def _fmt(vals: dict) -> str:
    names = {"d_loss": "d_loss", "g_loss": "g_loss", "d_real": "D(x)", "d_fake": "D(G(z))"}
    parts = []
    for k, label in names.items():
        v = vals.get(k)
        parts.append(f"{label} -" if v is None else f"{label} {v:.4f}" if k.endswith("loss") else f"{label} {v:.3f}")
    return "  ".join(parts)


class GanTrainer:
    def __init__(self, pair, config: GanConfig | None = None, *, quiet: bool = False, log=None,
                 threads: int | None = None, on_step=None):
        """pair: a GanPair (spec.gan()); config: defaults to the pair's section.
        on_step(trainer, step, record): called after every step (record: that step's d_loss,
        g_loss, d_real, d_fake); trainer.request_stop() ends the run as Ctrl-C does."""
        self.pair = pair
        self.cfg = config if config is not None else pair.config
        self.quiet = quiet
        self._plain_log = log is None
        self.log = log or (lambda s: print(s, flush=True))
        self.threads = threads
        self.on_step = on_step
        self._stop = False
        self.g_ir = pair.generator.ir
        self.d_ir = pair.discriminator.ir
        self.gen: NumpyExecutor | None = None
        self.disc: NumpyExecutor | None = None

    def request_stop(self) -> None:
        self._stop = True

    # -- data -------------------------------------------------------------------------------------
    def load(self, data) -> Dataset:
        """The real samples: an .npz path (array `data` of the section, default the discriminator's
        input name, or the file's only array), a dict of arrays, an array, or a Dataset."""
        if isinstance(data, Dataset):
            return data
        din = self.pair.real_input.name
        if isinstance(data, np.ndarray):
            files, path = {din: data}, "<array>"
        elif isinstance(data, dict):
            files, path = dict(data), "<arrays>"
        else:
            path = str(data)
            files = read_npz(path)
        key = self.cfg.data or din
        if key not in files and self.cfg.data is None and len(files) == 1:
            key = next(iter(files))
        ds = load_data(path, self.d_ir, [], inputs_map={din: key}, files=files)
        return ds

    # -- the run ----------------------------------------------------------------------------------
    def fit(self, data, run_dir=None, *, resume=None, overwrite: bool = False) -> GanResult:
        reads = (data, self.pair.spec.file)
        with training_run(self), run_directory(run_dir, resume=resume, overwrite=overwrite, reads=reads) as out:
            try:
                return self._fit(data, out, resume)
            finally:
                clear_tape()

    def _fit(self, data, run_dir, resume) -> GanResult:
        cfg, pair = self.cfg, self.pair
        t_start = time.perf_counter()
        ck = None
        if resume is not None:
            ck, ck_w, ck_o = read_gan_checkpoint(resume)
            for role, ir in (("generator", self.g_ir), ("discriminator", self.d_ir)):
                if ck.meta.get(role) != ir.name:
                    raise ArchError(f"'{ck.path}' is a checkpoint of gan {ck.meta.get('gan')} with {role} "
                                    f"{ck.meta.get(role)}, not {ir.name}")
        ds = self.load(data)
        B = cfg.batch
        if len(ds) < B * cfg.d_steps:
            raise ArchError(f"{ds.path}: {len(ds)} real samples, fewer than one step needs "
                            f"(batch {B} x d_steps {cfg.d_steps})", hint="lower the batch size")
        din, dout = pair.real_input.name, pair.score_output.name
        zin, gout = pair.noise_input.name, pair.sample_output.name
        real = ds.arrays[din]

        # both models' parameters, optimizer state and activations at the batch (D sees real and
        # generated samples together), before a weight is allocated (passes/limits.py)
        check_resources(self.g_ir, batch=B)
        check_resources(self.d_ir, batch=2 * B, dims=data_dims(self.d_ir, ds.arrays))
        if ck is not None:
            gw = check_weights(ck_w["generator"], self.g_ir, f"{ck.path} (generator)")
            dw = check_weights(ck_w["discriminator"], self.d_ir, f"{ck.path} (discriminator)")
        else:
            gw, dw = initialize(self.g_ir, cfg.seed), initialize(self.d_ir, cfg.seed + 1)
        gen = NumpyExecutor(self.g_ir, gw, seed=cfg.seed)
        disc = NumpyExecutor(self.d_ir, dw, seed=cfg.seed)
        gen.ctx.rng = np.random.default_rng([cfg.seed & 0xFFFFFFFF, 3])
        disc.ctx.rng = np.random.default_rng([cfg.seed & 0xFFFFFFFF, 5])
        self.gen, self.disc = gen, disc
        g_params, d_params = gen.trainable(), disc.trainable()
        for what, ps, ir in (("generator", g_params, self.g_ir), ("discriminator", d_params, self.d_ir)):
            if not ps:
                raise ArchError(f"nothing to train: the {what} {ir.name} has no trainable parameters")
        g_opt = self.g_opt = build_optimizer(cfg.g_optimizer, g_params)
        d_opt = self.d_opt = build_optimizer(cfg.d_optimizer, d_params)
        try:
            g_sched = build_schedules(cfg.schedule, g_opt.base_lr)
            d_sched = build_schedules(cfg.schedule, d_opt.base_lr)
        except ArchError as e:
            raise ArchError(e.message, cfg.spans.get("schedule")) from None
        noise_rng = np.random.default_rng([cfg.seed & 0xFFFFFFFF, 4])
        shuffler = shuffle_rng(cfg.seed)

        spe = max(1, len(ds) // (B * cfg.d_steps))
        total = cfg.steps if cfg.steps is not None else cfg.epochs * spe
        n_epochs = -(-total // spe)
        history: list[dict] = []
        step, epoch, in_epoch, partial = 0, 0, 0, None
        if ck is not None:
            m = ck.meta
            g_opt.load_state(ck_o["generator"], m["g_optimizer"])
            d_opt.load_state(ck_o["discriminator"], m["d_optimizer"])
            with corrupt_state(ck.path):
                gen.ctx.rng.bit_generator.state = m["rng"]["generator"]
                disc.ctx.rng.bit_generator.state = m["rng"]["discriminator"]
                noise_rng.bit_generator.state = m["rng"]["noise"]
                shuffler.bit_generator.state = m["rng"]["shuffle"]
            step, epoch, in_epoch = m["step"], m["epoch"], m["in_epoch"]
            history = [h for h in m.get("history", []) if h["epoch"] <= epoch]
            partial = m.get("partial") if in_epoch else None
            self.log(f"resuming gan {pair.name} from {ck.path}: step {step}, epoch {epoch + 1}")
            if step >= total:
                self.log(f"nothing to do: the checkpoint already ran {step} of {total} steps")

        out_dir = run_dir          # created, locked and checked by run_directory()
        ck_path = out_dir / "checkpoint.npz" if out_dir is not None else None

        joint = not _couples_batch(self.d_ir)
        obj = cfg.objective
        d_steps = cfg.d_steps
        d_list = list(d_params.values())
        bar = None
        if not self.quiet and sys.stderr.isatty():
            from tqdm import tqdm
            bar = tqdm(total=total, initial=step, desc=f"gan {pair.name}", file=sys.stderr, dynamic_ncols=True,
                       unit="step", leave=False)
        say = self.log
        if bar is not None and self._plain_log:      # epoch lines above the bar, not through it
            say = lambda s: bar.write(s, file=sys.stdout)      # noqa: E731
        result = GanResult(gen, disc, history, step, epoch, 0.0, run_dir=out_dir, config=cfg)
        try:
            while step < total:                  # one epoch per iteration
                shuffle_state = shuffler.bit_generator.state   # (a mid-epoch resume restored it)
                order = shuffler.permutation(len(ds))
                acc = _Accum(partial)
                partial = None
                t0 = time.perf_counter() - acc.seconds
                ep_end = min(spe, total - epoch * spe)
                while in_epoch < ep_end:
                    if g_sched:
                        g_opt.lr = g_opt.base_lr * schedule_factor(g_sched, step, total, spe)
                        d_opt.lr = d_opt.base_lr * schedule_factor(d_sched, step, total, spe)
                    rec = self._step(gen, disc, g_opt, d_opt, d_list, real, order, in_epoch, noise_rng,
                                     B, d_steps, zin, gout, din, dout, obj, joint, step, ck_path)
                    step += 1
                    in_epoch += 1
                    acc.add(**rec)
                    if bar is not None:
                        bar.update(1)
                        if step % SHOW_EVERY == 0 or step == total:
                            bar.set_postfix_str(_fmt(rec), refresh=False)
                    if self.on_step is not None:
                        self.on_step(self, step, rec)
                    if self._stop and step < total:
                        acc.seconds = time.perf_counter() - t0
                        meta = self._meta(noise_rng, step, epoch, in_epoch, history, acc, shuffle_state, ds.path)
                        return self._interrupted(result, meta, ck_path, step, t_start)
                acc.seconds = time.perf_counter() - t0
                rec = {"epoch": epoch + 1, "step": step, **acc.values(), "seconds": round(acc.seconds, 3)}
                history.append(rec)
                width = len(str(n_epochs))
                say(f"epoch {epoch + 1:>{width}}/{n_epochs}  step {step}  {_fmt(rec)}  {rec['seconds']:.1f}s")
                if in_epoch >= spe:
                    epoch += 1
                    in_epoch = 0
                    meta = self._meta(noise_rng, step, epoch, 0, history, None, shuffler.bit_generator.state,
                                      ds.path)
                else:        # `steps` ended the run inside an epoch: a longer resumed run goes on in it
                    meta = self._meta(noise_rng, step, epoch, in_epoch, history, acc, shuffle_state, ds.path)
                if ck_path is not None:
                    self._save(ck_path, meta)
                result.epochs_done = epoch
        finally:
            if bar is not None:
                bar.close()
        result.steps = step
        result.epochs_done = epoch
        result.seconds = time.perf_counter() - t_start
        result.checkpoint = ck_path
        return result

    def _step(self, gen, disc, g_opt, d_opt, d_list, real, order, in_epoch, noise_rng, B, d_steps,
              zin, gout, din, dout, obj, joint, step, ck_path) -> dict:
        d_real_p = d_fake_p = d_lv = 0.0
        fake = None
        g_tape: list = []
        for k in range(d_steps):
            z = self.pair.noise(B, noise_rng)
            if k == d_steps - 1:           # the fake the generator update reuses: keep its tape
                fake = gen.forward({zin: z}, training=True)[gout]
                g_tape = take_tape()
                fake_data = fake.data
            else:
                with no_grad():
                    fake_data = gen.forward({zin: z}, training=True)[gout].data
            i0 = (in_epoch * d_steps + k) * B
            x = real[order[i0:i0 + B]]
            if joint:
                scores = disc.forward({din: np.concatenate([x, fake_data])}, training=True)[dout]
                loss = O.d_loss_joint(obj, scores, B)
                s = scores.data
                sr, sf = s[:B], s[B:]
            else:
                sr_t = disc.forward({din: x}, training=True)[dout]
                sf_t = disc.forward({din: fake_data}, training=True)[dout]
                loss = O.d_loss(obj, sr_t, sf_t)
                sr, sf = sr_t.data, sf_t.data
            lv = float(loss.data)
            if not math.isfinite(lv):
                clear_tape()
                self._non_finite("discriminator", lv, step, ck_path)
            backward(loss)
            d_opt.step()
            d_opt.zero_grad()
            d_lv += lv
            d_real_p += O.probability(obj, sr)
            d_fake_p += O.probability(obj, sf)

        # generator update: gradients flow through D (held) into G
        put_back_tape(g_tape)
        for p in d_list:
            p.requires_grad = False
        try:
            sg = disc.forward({din: fake}, training=True)[dout]
            gl = O.g_loss(obj, sg)
            glv = float(gl.data)
            if not math.isfinite(glv):
                clear_tape()
                self._non_finite("generator", glv, step, ck_path)
            backward(gl)
        finally:
            for p in d_list:
                p.requires_grad = True
        g_opt.step()
        g_opt.zero_grad()
        return {"d_loss": d_lv / d_steps, "g_loss": glv, "d_real": d_real_p / d_steps, "d_fake": d_fake_p / d_steps}

    def _non_finite(self, who: str, value: float, step: int, ck_path) -> None:
        what = "NaN" if math.isnan(value) else "inf"
        raise ArchError(f"training stopped at step {step + 1}: the {who} loss became {what}", None,
                        "lower the learning rates (g_optimizer / d_optimizer)" + last_good_note(ck_path))

    # -- checkpoints ------------------------------------------------------------------------------
    def _meta(self, noise_rng, step, epoch, in_epoch, history, acc, shuffle_state, data_path) -> dict:
        return {"archdsl": __version__, "gan": self.pair.name, "spec": str(self.pair.spec.file),
                "generator": self.g_ir.name, "discriminator": self.d_ir.name, "model": self.g_ir.name,
                "data": str(data_path), "step": step, "epoch": epoch, "in_epoch": in_epoch,
                "rng": {"generator": self.gen.ctx.rng.bit_generator.state,
                        "discriminator": self.disc.ctx.rng.bit_generator.state,
                        "noise": noise_rng.bit_generator.state, "shuffle": shuffle_state},
                "g_optimizer": self.g_opt.state_meta(), "d_optimizer": self.d_opt.state_meta(),
                "config": self.cfg.to_json(), "history": history,
                "partial": acc.state() if acc is not None else None}

    def _save(self, path: Path, meta: dict) -> None:
        save_gan_checkpoint(path, {"generator": self.gen.weights(), "discriminator": self.disc.weights()},
                            {"generator": self.g_opt.state_arrays(), "discriminator": self.d_opt.state_arrays()},
                            meta)
        save_weights(path.parent / "generator.npz", self.gen.weights())
        save_weights(path.parent / "discriminator.npz", self.disc.weights())
        write_metrics(path.parent, meta["history"])

    def _interrupted(self, result: GanResult, meta: dict, ck_path, step: int, t_start: float) -> GanResult:
        result.interrupted = True
        result.steps = step
        result.seconds = time.perf_counter() - t_start
        if ck_path is not None:
            self._save(ck_path, meta)
            result.checkpoint = ck_path
            self.log(f"interrupted at step {step}; saved {ck_path} (continue with --resume {ck_path})")
        else:
            self.log(f"interrupted at step {step}")
        return result


def train_gan(pair, data, config: GanConfig | None = None, run_dir=None, *, resume=None, quiet: bool = False,
              log=None, threads: int | None = None, on_step=None, overwrite: bool = False, **overrides) -> GanResult:
    """Train the pair (a GanPair, from spec.gan()) on real samples `data` (an .npz path, an array,
    a dict of arrays). `config` defaults to the pair's gan section; with `resume`, to the
    checkpoint's config (where only epochs / steps may change). Overrides: epochs, steps, batch,
    seed, lr, g_lr, d_lr."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if resume is not None and config is None:
        ck, _, _ = read_gan_checkpoint(resume)
        config = GanConfig.from_json(ck.meta["config"])
        changed = [k for k in overrides if k not in ("epochs", "steps")]
        if changed:
            raise ArchError(f"--resume continues the checkpoint's run; it cannot change {', '.join(sorted(changed))}",
                            hint="only --epochs (or steps) may differ, to train longer")
        config = config.with_overrides(**overrides)
        if data is None:
            data = ck.meta.get("data")
            if data is None or str(data).startswith("<"):
                raise ArchError(f"'{ck.path}' was trained on arrays in memory; pass the data again to resume")
    elif config is None:
        config = pair.config.with_overrides(**overrides)
    else:
        config = config.with_overrides(**overrides)
    if data is None:
        raise ArchError("no training data: pass --data REAL.npz (an array of real samples)")
    return GanTrainer(pair, config, quiet=quiet, log=log, threads=threads, on_step=on_step).fit(
        data, run_dir, resume=resume, overwrite=overwrite)
