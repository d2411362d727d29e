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
`fake.detach()`: it is recorded on a tape of its own, which the discriminator's backward pass
does not touch, and the generator's update goes on recording on it. When D has no BatchNorm
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

The run itself (position, random streams, resume, Ctrl-C, checkpoints, progress, metrics.jsonl)
is archdsl/train/run.py's `Run`; this module is its GAN policy: what one step does.

A conditional pair (archdsl/gan/pair.py) feeds the real batch's conditions from the data and
draws the generated batch's: class labels uniformly over the classes in the data (the checkpoint
keeps them, for `archdsl sample --class K`), other conditions as random rows of the data's array;
D judges each sample with its condition, and the generator update reuses the drawn ones.

Determinism: G's weights come from the seed, D's from seed + 1; the real data order from
(seed, 2), dropout in G from (seed, 3) and in D from (seed, 5), the noise from (seed, 4), the
generated batch's conditions from (seed, 6); all
of them are in the checkpoint, so a run resumed from any checkpoint ends with exactly the
weights of the uninterrupted run (same machine and BLAS thread count).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..autodiff import Tape, backward, clear_tape, no_grad
from ..backends.numpy.executor import NumpyExecutor
from ..errors import ArchError
from ..passes.init import initialize
from ..train.checkpoint import check_weights
from ..ir.graph import Value
from ..train.data import Dataset, load_data, read_npz
from ..passes.limits import check_resources
from ..train.loop import build_optimizer, build_schedules, data_dims
from ..train.optim import schedule_factor
from ..train.run import Accum, Run, non_finite
from . import objectives as O
from .checkpoint import read_gan_checkpoint, save_gan_checkpoint, save_weights
from .config import GanConfig
from .pair import pack_rows


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
    return any(n.op.batch_coupled(n.app) for n in ir.nodes)


def format_record(vals: dict) -> str:
    """A step or epoch record as the progress shows it: both losses, D(x), D(G(z))."""
    names = {"d_loss": "d_loss", "g_loss": "g_loss", "d_real": "D(x)", "d_fake": "D(G(z))"}
    parts = []
    for k, label in names.items():
        v = vals.get(k)
        parts.append(f"{label} -" if v is None else f"{label} {v:.4f}" if k.endswith("loss") else f"{label} {v:.3f}")
    return "  ".join(parts)


class GanTrainer:
    """GAN training, a policy of a Run: d_steps discriminator updates, then one generator update."""
    KEYS = ("d_loss", "g_loss", "d_real", "d_fake")

    def __init__(self, pair, config: GanConfig | None = None, *, quiet: bool = False, log=None,
                 threads: int | None = None, on_step=None):
        """pair: a GanPair (spec.gan()); config: defaults to the pair's section.
        on_step(trainer, step, record): called after every step (record: that step's d_loss,
        g_loss, d_real, d_fake); trainer.request_stop() ends the run as Ctrl-C does."""
        self.pair = pair
        self.cfg = config if config is not None else pair.config
        self.quiet = quiet
        self.log = log
        self.threads = threads
        self.user_on_step = on_step
        self.g_ir = pair.generator.ir
        self.d_ir = pair.discriminator.ir
        self.gen: NumpyExecutor | None = None
        self.disc: NumpyExecutor | None = None
        self.run: Run | None = None

    @property
    def name(self) -> str:
        return f"gan {self.pair.name}"

    def request_stop(self) -> None:
        if self.run is not None:
            self.run.request_stop()

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
        # real samples have the generated samples' type (the discriminator may take them packed);
        # a conditional pair's conditions come from the arrays of their names
        samples = SimpleNamespace(inputs=[Value(din, self.pair.sample_output.type)] + self.pair.condition_inputs)
        return load_data(path, samples, [], inputs_map={din: key}, files=files)

    # -- the run ----------------------------------------------------------------------------------
    def fit(self, data, run_dir=None, *, resume=None, overwrite: bool = False) -> GanResult:
        ck = None
        if resume is not None:
            ck, self._ck_w, self._ck_o = read_gan_checkpoint(resume)
            for role, ir in (("generator", self.g_ir), ("discriminator", self.d_ir)):
                if ck.meta.get(role) != ir.name:
                    raise ArchError(f"'{ck.path}' is a checkpoint of gan {ck.meta.get('gan')} with {role} "
                                    f"{ck.meta.get(role)}, not {ir.name}")
        self._data = data
        self.run = run = Run(self, run_dir, resume=resume, quiet=self.quiet, log=self.log, threads=self.threads,
                             on_step=self._on_step if self.user_on_step is not None else None, seed=self.cfg.seed,
                             overwrite=overwrite, reads=(data, self.pair.spec.file))
        run.fit(ck)
        return GanResult(self.gen, self.disc, run.history, run.step, run.epoch, run.seconds,
                         interrupted=run.interrupted, run_dir=run.out_dir, checkpoint=run.checkpoint, config=self.cfg)

    def _on_step(self, run: Run, rec: dict) -> None:
        self.user_on_step(self, run.step, rec)

    def open(self, run: Run, ck) -> None:
        cfg, pair = self.cfg, self.pair
        ds = self.load(self._data)
        B = cfg.batch
        if len(ds) < B * cfg.d_steps:
            raise ArchError(f"{ds.path}: {len(ds)} real samples, fewer than one step needs "
                            f"(batch {B} x d_steps {cfg.d_steps})", hint="lower the batch size")
        if B % cfg.pack:
            raise ArchError(f"gan {pair.name}: batch {B} is not a multiple of pack {cfg.pack} (the discriminator "
                            f"judges groups of {cfg.pack} samples)", cfg.spans.get("pack"))
        self.din, self.dout = pair.real_input.name, pair.score_output.name
        self.zin, self.gout = pair.noise_input.name, pair.sample_output.name
        self.real = ds.arrays[self.din]
        # both models' parameters, optimizer state and activations at the batch (D sees the real
        # and the generated samples, packed), before a weight is allocated (passes/limits.py)
        check_resources(self.g_ir, batch=B)
        check_resources(self.d_ir, batch=2 * B // cfg.pack, dims=data_dims(self.d_ir, ds.arrays))
        self.conds = {v.name: ds.arrays[v.name] for v in pair.condition_inputs}
        self.classes = {v.name: sorted(int(c) for c in np.unique(self.conds[v.name]))
                        for v in pair.condition_inputs if v is pair.class_input}
        if ck is not None:
            gw = check_weights(self._ck_w["generator"], self.g_ir, f"{ck.path} (generator)")
            dw = check_weights(self._ck_w["discriminator"], self.d_ir, f"{ck.path} (discriminator)")
        else:
            gw, dw = initialize(self.g_ir, cfg.seed), initialize(self.d_ir, cfg.seed + 1)
        g_params, d_params = self.open_engine(run, gw, dw)
        self.noise_rng = run.stream("noise", 4)
        self.cond_rng = run.stream("conditions", 6) if self.conds else None
        for what, ps, ir in (("generator", g_params, self.g_ir), ("discriminator", d_params, self.d_ir)):
            if not ps:
                raise ArchError(f"nothing to train: the {what} {ir.name} has no trainable parameters")
        self.g_opt = self.optimizer(cfg.g_optimizer, g_params)
        self.d_opt = self.optimizer(cfg.d_optimizer, d_params)
        try:
            self.g_sched = build_schedules(cfg.schedule, self.g_opt.base_lr)
            self.d_sched = build_schedules(cfg.schedule, self.d_opt.base_lr)
        except ArchError as e:
            raise ArchError(e.message, cfg.spans.get("schedule")) from None
        if ck is not None:
            self.g_opt.load_state(self._ck_o["generator"], ck.meta["g_optimizer"])
            self.d_opt.load_state(self._ck_o["discriminator"], ck.meta["d_optimizer"])
            ck.meta["path"] = str(ck.path)
        spe = max(1, len(ds) // (B * cfg.d_steps))
        run.setup(len(ds), ds.path, spe, cfg.steps if cfg.steps is not None else cfg.epochs * spe)
        self.joint = not _couples_batch(self.d_ir)
        self.d_list = list(d_params.values())

    def open_engine(self, run: Run, gw: dict, dw: dict) -> tuple[dict, dict]:
        """The engine's executors for both models, with their random streams; returns their
        trainable parameters (here: the NumPy engine's)."""
        gen = self.gen = NumpyExecutor(self.g_ir, gw, seed=self.cfg.seed)
        disc = self.disc = NumpyExecutor(self.d_ir, dw, seed=self.cfg.seed)
        gen.ctx.rng = run.stream("generator", 3)
        disc.ctx.rng = run.stream("discriminator", 5)
        return gen.trainable(), disc.trainable()

    def optimizer(self, spec: dict, params: dict):
        return build_optimizer(spec, params)

    def accumulator(self, state):
        return Accum(self.KEYS, state)

    def end_epoch(self, run: Run, acc: Accum) -> dict:
        return acc.values()

    def after_epoch(self, run: Run, rec: dict) -> None:
        pass

    def format(self, rec: dict) -> str:
        return (f"step {rec['step']}  " if "step" in rec else "") + format_record(rec)

    def draw_conditions(self, n: int) -> dict:
        """The generated batch's conditions: class labels uniform over the data's classes, other
        conditions rows of the data's arrays drawn at random."""
        out = {}
        for name, arr in self.conds.items():
            if name in self.classes:
                out[name] = np.asarray(self.classes[name], arr.dtype)[self.cond_rng.integers(0, len(self.classes[name]), n)]
            else:
                out[name] = arr[self.cond_rng.integers(0, len(arr), n)]
        return out

    def set_lrs(self, run: Run) -> None:
        """Both learning rates for this step, from the schedule."""
        if self.g_sched:
            self.g_opt.lr = self.g_opt.base_lr * schedule_factor(self.g_sched, run.step, run.total, run.steps_per_epoch)
            self.d_opt.lr = self.d_opt.base_lr * schedule_factor(self.d_sched, run.step, run.total, run.steps_per_epoch)

    def real_batch(self, run: Run, in_epoch: int, k: int) -> tuple[np.ndarray, dict]:
        """The real samples of discriminator update k of this step, packed for D, and their
        conditions."""
        B = self.cfg.batch
        i0 = (in_epoch * self.cfg.d_steps + k) * B
        idx = run.order[i0:i0 + B]
        return pack_rows(self.real[idx], self.cfg.pack), {name: arr[idx] for name, arr in self.conds.items()}

    def step(self, run: Run, in_epoch: int) -> dict:
        self.set_lrs(run)
        cfg, B, pk = self.cfg, self.cfg.batch, self.cfg.pack
        gen, disc, obj = self.gen, self.disc, cfg.objective
        d_real_p = d_fake_p = d_lv = 0.0
        fake = None
        g_tape = Tape()     # the generator's forward, kept for its update while D trains
        for k in range(cfg.d_steps):
            z = self.pair.noise(B, self.noise_rng)
            c_fake = self.draw_conditions(B)
            if k == cfg.d_steps - 1:           # the fake the generator update reuses: on its own tape
                with g_tape:
                    fake = gen.forward({self.zin: z, **c_fake}, training=True)[self.gout]
                fake_data = fake.data
            else:
                with no_grad():
                    fake_data = gen.forward({self.zin: z, **c_fake}, training=True)[self.gout].data
            x, c_real = self.real_batch(run, in_epoch, k)
            fake_data = pack_rows(fake_data, pk)
            if self.joint:
                both = {name: np.concatenate([c_real[name], c_fake[name]]) for name in self.conds}
                scores = disc.forward({self.din: np.concatenate([x, fake_data]), **both}, training=True)[self.dout]
                loss = O.d_loss_joint(obj, scores, B // pk)
                sc = scores.data
                sr, sf = sc[:B // pk], sc[B // pk:]
            else:
                sr_t = disc.forward({self.din: x, **c_real}, training=True)[self.dout]
                sf_t = disc.forward({self.din: fake_data, **c_fake}, training=True)[self.dout]
                loss = O.d_loss(obj, sr_t, sf_t)
                sr, sf = sr_t.data, sf_t.data
            lv = float(loss.data)
            if not math.isfinite(lv):
                clear_tape()
                self._non_finite(run, "discriminator", lv)
            backward(loss)
            self.d_opt.step()
            self.d_opt.zero_grad()
            d_lv += lv
            d_real_p += O.probability(obj, sr)
            d_fake_p += O.probability(obj, sf)

        # generator update: gradients flow through D (held) into G
        for p in self.d_list:
            p.requires_grad = False
        try:
            with g_tape:
                sg = disc.forward({self.din: pack_rows(fake, pk), **c_fake}, training=True)[self.dout]
                gl = O.g_loss(obj, sg)
                glv = float(gl.data)
                if not math.isfinite(glv):
                    clear_tape()
                    self._non_finite(run, "generator", glv)
                backward(gl)
        finally:
            for p in self.d_list:
                p.requires_grad = True
        self.g_opt.step()
        self.g_opt.zero_grad()
        n = cfg.d_steps
        return {"d_loss": d_lv / n, "g_loss": glv, "d_real": d_real_p / n, "d_fake": d_fake_p / n}

    def _non_finite(self, run: Run, who: str, value: float) -> None:
        raise ArchError(f"training stopped at step {run.step + 1}: the {who} loss became {non_finite(value)}", None,
                        "lower the learning rates (g_optimizer / d_optimizer)" + run.last_good_note())

    # -- checkpoints ------------------------------------------------------------------------------
    def meta(self, run: Run) -> dict:
        return {"gan": self.pair.name, "spec": str(self.pair.spec.file), "generator": self.g_ir.name,
                "discriminator": self.d_ir.name, "model": self.g_ir.name, "g_optimizer": self.g_opt.state_meta(),
                "d_optimizer": self.d_opt.state_meta(), "config": self.cfg.to_json(), "classes": self.classes}

    def save(self, run: Run, path: Path, meta: dict) -> None:
        save_gan_checkpoint(path, {"generator": self.gen.weights(), "discriminator": self.disc.weights()},
                            {"generator": self.g_opt.state_arrays(), "discriminator": self.d_opt.state_arrays()},
                            meta)
        save_weights(path.parent / "generator.npz", self.gen.weights())
        save_weights(path.parent / "discriminator.npz", self.disc.weights())


def train_gan(pair, data, config: GanConfig | None = None, run_dir=None, *, resume=None, quiet: bool = False,
              log=None, threads: int | None = None, on_step=None, overwrite: bool = False, policy=None,
              **overrides) -> GanResult:
    """Train the pair (a GanPair, from spec.gan()) on real samples `data` (an .npz path, an array,
    a dict of arrays). `config` defaults to the pair's gan section; with `resume`, to the
    checkpoint's config (where only epochs / steps may change). Overrides: epochs, steps, batch,
    seed, lr, g_lr, d_lr. `policy(pair, config, **options)` makes the trainer (default: GanTrainer,
    the NumPy engine)."""
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
    return (policy or GanTrainer)(pair, config, quiet=quiet, log=log, threads=threads, on_step=on_step).fit(
        data, run_dir, resume=resume, overwrite=overwrite)
