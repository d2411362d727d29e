"""Training on the PyTorch engine: the supervised and GAN policies of archdsl/train/run.py's
`Run`, with forward, backward and updates in PyTorch (CPU, a GPU, or several processes).

`TorchTrainer` is the supervised `Trainer` (archdsl/train/loop.py) and `TorchGanTrainer` the
`GanTrainer` (archdsl/gan/loop.py) with their engine parts replaced: the data, its order,
validation, metrics, schedules, freezing, the checkpoint format, progress and metrics.jsonl are
theirs, so a run continues on either engine (`--resume` reads the same checkpoint).

    optimizers   `TorchOptimizer`: torch.optim's SGD, Adam and AdamW, whose formulas archdsl's
                 own follow (archdsl/train/optim.py), with archdsl's argument checks, state names
                 (momentum/<param>, m/<param>, v/<param>) and step count in checkpoints
    losses       `loss_terms`: cross_entropy (labels or probabilities, label smoothing,
                 ignore_index), binary_cross_entropy on logits and mse, as archdsl defines them;
                 named terms, their ramped weights and expression terms through the section's
                 Objective (archdsl/train/objective.py), an expression run by this engine
    clipping     by global norm, as torch.nn.utils.clip_grad_norm_
    randomness   dropout and noise from the run's seeded streams (context.py), so a resumed run
                 draws what the uninterrupted one drew

With `random="numpy"` the engine draws the NumPy engine's own masks and noise: the two engines
then take the same steps up to float rounding (what the equivalence tests check).
"""
from __future__ import annotations

import math

import numpy as np

from ...errors import ArchError
from ...gan import objectives as O
from ...gan.loop import GanTrainer
from ...gan.pair import pack_rows
from ...train.loop import Trainer, build_optimizer
from ...train.losses import LOSSES, per_example_total
from ...train.run import Run
from .context import TorchRandom
from .lazy import require_torch
from .module import TorchModel, resolve_device

torch = require_torch()
F = torch.nn.functional

# archdsl's optimizer state slots -> torch.optim's state keys
_SLOTS = {"momentum": "momentum_buffer", "m": "exp_avg", "v": "exp_avg_sq"}


class TorchOptimizer:
    """archdsl's optimizer interface (base_lr, lr, t, step, zero_grad, state_arrays, state_meta,
    load_state) over torch.optim, for named parameters."""

    def __init__(self, spec: dict, params: dict):
        self.spec = spec
        self.names, self.tensors = list(params), list(params.values())
        ref = build_optimizer(spec, {})          # archdsl's checks of the arguments
        self.name, self.slots, self.base_lr, self.t = ref.name, ref.slots, ref.base_lr, 0
        self._hyper = ref.hyper()
        wd = ref.weight_decay
        if ref.name == "SGD":
            self.opt = torch.optim.SGD(self.tensors, lr=ref.base_lr, momentum=ref.momentum, nesterov=ref.nesterov,
                                       weight_decay=wd)
        else:
            cls = torch.optim.AdamW if ref.name == "AdamW" else torch.optim.Adam
            self.opt = cls(self.tensors, lr=ref.base_lr, betas=(ref.b1, ref.b2), eps=ref.eps, weight_decay=wd)

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = value

    def step(self) -> None:
        self.t += 1
        self.opt.step()

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def state_arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for n, p in zip(self.names, self.tensors):
            st = self.opt.state.get(p, {})
            for slot in self.slots:
                v = st.get(_SLOTS[slot])
                out[f"{slot}/{n}"] = v.detach().cpu().numpy() if v is not None else np.zeros(tuple(p.shape), np.float32)
        return out

    def state_meta(self) -> dict:
        return {"name": self.name, "t": self.t, "lr": self.lr, "hyper": self._hyper}

    def load_state(self, arrays: dict, meta: dict) -> None:
        """A checkpoint's optimizer state (either engine's), checked as archdsl checks it."""
        from ...autodiff import Tensor
        ref = build_optimizer(self.spec, {n: Tensor(np.zeros(tuple(p.shape), np.float32))
                                          for n, p in zip(self.names, self.tensors)})
        ref.load_state(arrays, meta)
        self.t, self.lr = ref.t, ref.lr
        if not self.t:
            return
        for n, p in zip(self.names, self.tensors):
            st = self.opt.state[p]
            for slot in self.slots:
                st[_SLOTS[slot]] = torch.as_tensor(ref.state[slot][n]).to(p.device, p.dtype).clone()
            if self.name != "SGD":
                st["step"] = torch.tensor(float(self.t), dtype=torch.float32)


def grad_norm(params, max_norm: float | None) -> float:
    """The global gradient norm before clipping; clips to max_norm (torch's rule) when given."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    if max_norm:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))


def loss_terms(name: str, kwargs: dict, out, target) -> tuple:
    """(the loss summed over what it averages, how many terms that is) for a train section's
    loss `name`: the mean is sum / count, and a distributed run sums both over its processes."""
    kind = LOSSES[name][1]
    if kind == "classes":
        c = out.shape[-1]
        z = out.reshape(-1, c)
        ls = kwargs.get("label_smoothing", 0.0)
        if target.is_floating_point() and target.dim() == out.dim():        # class probabilities
            return F.cross_entropy(z, target.reshape(-1, c).to(z.dtype), label_smoothing=ls, reduction="sum"), z.shape[0]
        t = target.reshape(-1).long()
        ignore = kwargs.get("ignore_index")
        s = F.cross_entropy(z, t, ignore_index=-100 if ignore is None else ignore, label_smoothing=ls, reduction="sum")
        return s, (t.numel() if ignore is None else int((t != ignore).sum()))
    if target.dim() == out.dim() - 1 and out.shape[-1] == 1:     # [N] targets for [N, 1] outputs
        target = target.unsqueeze(-1)
    target = target.to(out.dtype)
    if kind == "binary":
        return F.binary_cross_entropy_with_logits(out, target, reduction="sum"), out.numel()
    return F.mse_loss(out, target, reduction="sum"), out.numel()


def _reaches_everything(ir, output: str, names) -> bool:
    """Does every parameter in `names` feed the output `output` (else DistributedDataParallel
    must look for unused ones each step)?"""
    want = next(v for v in ir.outputs if v.name == output)
    seen, todo, used = set(), [want.producer], set()
    while todo:
        n = todo.pop()
        if n is None or id(n) in seen:
            continue
        seen.add(id(n))
        used.update(n.params.values())
        todo.extend(v.producer for v in n.inputs)
    return set(names) <= used


class TorchTrainer(Trainer):
    """Supervised training on PyTorch (see the module docstring). device: 'cpu', 'cuda',
    'cuda:1'; group: this process's place in a distributed run (distributed.py), or None."""

    def __init__(self, model, config, *, device=None, random: str = "torch", group=None, **options):
        super().__init__(model, config, **options)
        self.device = group.device if group is not None else resolve_device(device)
        self.random, self.group = random, group
        self._graphs: dict = {}          # an expression term's graph as a module
        if group is not None and not (self.objective.single and self.objective.terms[0].loss is not None):
            raise ArchError("--nproc trains a model whose loss is one built-in loss (cross_entropy, mse, ...); "
                            f"model {self.ir.name}'s loss has named terms or expressions",
                            config.spans.get("loss"), "drop --nproc (--device cuda trains it on a GPU)")

    def open_engine(self, run: Run, weights: dict, frozen: set) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        net = self.executor = TorchModel(self.ir, weights, device=self.device)
        stream = run.stream("dropout", 3)
        if self.random == "numpy":
            net.use_numpy_random(stream)
        else:
            net.ctx.random = TorchRandom(stream, offset=self.group.rank if self.group else 0)
        for n in frozen:
            net.tensor(n).requires_grad_(False)
        self.trainable = {n: t for n, t in net.tensors().items() if t.requires_grad}
        self.opt = TorchOptimizer(self.cfg.optimizer, self.trainable) if self.trainable else None
        self.frozen_buffers = {n: net.tensor(n).detach().clone() for n in frozen if self.ir.parameters[n].spec.buffer}
        self.net = net
        if self.group is not None:
            out = self.objective.terms[0].loss["output"]
            self.net = self.group.wrap(net, find_unused=not _reaches_everything(self.ir, out, self.trainable))
            run.log(f"{self.group.world} processes ({torch.distributed.get_backend()}, DistributedDataParallel): "
                    f"each takes its share of every batch of {self.cfg.batch}")

    def fit(self, *args, **kwargs):
        try:
            return super().fit(*args, **kwargs)
        finally:
            if self.group is not None:      # no DistributedDataParallel outlives its run (distributed.leave)
                self.net = getattr(self, "executor", None)

    def as_array(self, t) -> np.ndarray:
        return t.detach().cpu().numpy()

    def term_value(self, t, outs: dict, batch: dict):
        """A loss term on torch tensors: a built-in loss, or an expression's graph run by this
        engine (the Objective's term_value, archdsl/train/objective.py)."""
        if t.loss is not None:
            total, count = self._summed(t.loss, outs, batch)
            red = t.loss["kwargs"].get("reduction", "mean")
            return (total / max(count, 1) if red == "mean" else total), red
        net = self._graphs.get(t.name)
        if net is None:
            net = self._graphs[t.name] = TorchModel(t.graph, {}, device=self.device)
        feeds = {x.name: (outs[x.name] if x.name in outs else batch[x.name]) for x in t.graph.inputs}
        return next(iter(net(feeds, training=False).values())), "mean"

    def _summed(self, loss: dict, outs: dict, batch: dict) -> tuple:
        """A built-in loss of the batch as (its sum, how many terms it averages): loss_terms."""
        return loss_terms(loss["name"], loss["kwargs"], outs[loss["output"]],
                          torch.as_tensor(batch[loss["target"]], device=self.device))

    def step(self, run: Run, b: int) -> dict:
        batch = self.next_batch(run, b)
        if self.group is not None:
            return self._distributed_step(run, batch)
        inputs = {k: batch[k] for k in self.in_names}
        self.net.train()
        outs = self.net(inputs)
        loss, values, totals, n_ex = self.objective(outs, batch, run.step, run.steps_per_epoch, self.term_value)
        lv = loss.item()
        if not math.isfinite(lv):
            self._diagnose(run, inputs, lv, values)
        self._update(loss)
        return {"loss": lv, "totals": totals, "count": n_ex, "metrics": self._metrics(outs, batch)}

    def _distributed_step(self, run: Run, batch: dict) -> dict:
        """One step of a process of a distributed run: its share of the batch, the whole batch's
        loss and metrics summed over the processes (one built-in loss: its sum and count)."""
        group, term = self.group, self.objective.terms[0]
        rows = group.share(np.arange(len(next(iter(batch.values())))))
        batch = {k: v[rows] for k, v in batch.items()}
        inputs = {k: batch[k] for k in self.in_names}
        red = term.loss["kwargs"].get("reduction", "mean")
        self.net.train()
        outs = self.net(inputs)
        total, count = self._summed(term.loss, outs, batch)
        metrics = self._metrics(outs, batch)
        # the whole batch's numbers, and a stop asked for in any process
        flat = [total.item(), float(count), float(len(rows)), float(run.stop_requested)]
        flat = group.all_sum(flat + [x for m in metrics.values() for x in m])
        s, n, rows_all = flat[:3]
        run.stop_requested = run.stop_requested or flat[3] > 0
        metrics = {k: (flat[4 + 2 * i], int(flat[5 + 2 * i])) for i, k in enumerate(metrics)}
        lv = s / max(n, 1.0) if red == "mean" else s
        if not math.isfinite(lv):
            self._diagnose(run, inputs, lv, {"loss": lv})
        # DistributedDataParallel averages the processes' gradients: scaled so the update is the
        # whole batch's (each process's share of the sum, times the number of processes)
        self._update(total * (group.world / max(n, 1.0) if red == "mean" else group.world))
        rows_all = int(rows_all)
        return {"loss": lv, "totals": {"loss": per_example_total(lv, red, rows_all)}, "count": rows_all,
                "metrics": metrics}

    def _update(self, loss) -> None:
        """Backward, clipping, the optimizer's step, frozen buffers restored."""
        self.opt.zero_grad()
        loss.backward()
        norm = grad_norm(self.trainable.values(), self.cfg.clip_norm)
        if not math.isfinite(norm):
            self._bad_grads(self.run)
        self.opt.step()
        with torch.no_grad():
            for name, saved in self.frozen_buffers.items():
                self.executor.tensor(name).copy_(saved)

    def eval_batch(self, ex, batch: dict, step: int, steps_per_epoch: int) -> dict:
        with torch.no_grad():
            outs = ex({v.name: batch[v.name] for v in self.ir.inputs}, training=False)
            _, _, totals, n = self.objective(outs, batch, step, steps_per_epoch, self.term_value)
            return {"totals": totals, "count": n, "metrics": self._metrics(outs, batch)}

    def grad_finite(self, t) -> bool:
        return t.grad is None or bool(torch.isfinite(t.grad).all())


class TorchGanTrainer(GanTrainer):
    """GAN training on PyTorch: d_steps discriminator updates, then one generator update, as the
    NumPy engine's GanTrainer (archdsl/gan/loop.py) does them."""

    def __init__(self, pair, config=None, *, device=None, random: str = "torch", **options):
        super().__init__(pair, config, **options)
        self.device, self.random = resolve_device(device), random

    def open_engine(self, run: Run, gw: dict, dw: dict) -> tuple[dict, dict]:
        if self.threads:
            torch.set_num_threads(self.threads)
        self.gen = TorchModel(self.g_ir, gw, device=self.device)
        self.disc = TorchModel(self.d_ir, dw, device=self.device)
        for net, stream in ((self.gen, run.stream("generator", 3)), (self.disc, run.stream("discriminator", 5))):
            if self.random == "numpy":
                net.use_numpy_random(stream)
            else:
                net.ctx.random = TorchRandom(stream)
        return ({n: t for n, t in net.tensors().items() if t.requires_grad} for net in (self.gen, self.disc))

    def optimizer(self, spec: dict, params: dict):
        return TorchOptimizer(spec, params)

    def step(self, run: Run, in_epoch: int) -> dict:
        self.set_lrs(run)
        cfg, B, pk, obj = self.cfg, self.cfg.batch, self.cfg.pack, self.cfg.objective
        gen, disc, dev = self.gen, self.disc, self.device
        gen.train()
        disc.train()
        d_real_p = d_fake_p = d_lv = 0.0
        fake = None
        for k in range(cfg.d_steps):
            z = torch.as_tensor(self.pair.noise(B, self.noise_rng), device=dev)
            c_fake = self.draw_conditions(B)
            if k == cfg.d_steps - 1:           # the fake the generator update reuses, with its graph
                fake = gen({self.zin: z, **c_fake})[self.gout]
                fake_d = fake.detach()
            else:
                with torch.no_grad():
                    fake_d = gen({self.zin: z, **c_fake})[self.gout]
            x, c_real = self.real_batch(run, in_epoch, k)
            x = torch.as_tensor(x, device=dev)
            fake_d = pack_rows(fake_d, pk)
            if self.joint:
                both = {name: np.concatenate([c_real[name], c_fake[name]]) for name in self.conds}
                scores = disc({self.din: torch.cat([x, fake_d]), **both})[self.dout]
                loss = d_loss_joint(obj, scores, B // pk)
                sc = scores.detach().cpu().numpy()
                sr, sf = sc[:B // pk], sc[B // pk:]
            else:
                sr_t = disc({self.din: x, **c_real})[self.dout]
                sf_t = disc({self.din: fake_d, **c_fake})[self.dout]
                loss = d_loss(obj, sr_t, sf_t)
                sr, sf = sr_t.detach().cpu().numpy(), sf_t.detach().cpu().numpy()
            d_lv += self._descend(run, self.d_opt, loss, "discriminator")
            d_real_p += O.probability(obj, sr)
            d_fake_p += O.probability(obj, sf)
        # generator update: gradients flow through D into G; D's own are dropped before its next update
        gl = g_loss(obj, disc({self.din: pack_rows(fake, pk), **c_fake})[self.dout])
        glv = self._descend(run, self.g_opt, gl, "generator")
        n = cfg.d_steps
        return {"d_loss": d_lv / n, "g_loss": glv, "d_real": d_real_p / n, "d_fake": d_fake_p / n}

    def _descend(self, run: Run, opt, loss, who: str) -> float:
        """One update of `opt` down `loss`, whose value (returned) must be finite."""
        lv = loss.item()
        if not math.isfinite(lv):
            self._non_finite(run, who, lv)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return lv


# -- the adversarial objectives (archdsl/gan/objectives.py) on torch tensors ------------------------

def _pair_loss(objective: str, score, target: float):
    t = torch.full_like(score, target)
    return F.mse_loss(score, t) if objective == "least_squares" else F.binary_cross_entropy_with_logits(score, t)


def d_loss(objective: str, d_real, d_fake):
    total = _pair_loss(objective, d_real, 1.0) + _pair_loss(objective, d_fake, 0.0)
    return total * 0.5 if objective == "least_squares" else total


def d_loss_joint(objective: str, scores, n_real: int):
    targets = torch.zeros_like(scores)
    targets[:n_real] = 1.0
    if objective == "least_squares":
        return F.mse_loss(scores, targets)
    return F.binary_cross_entropy_with_logits(scores, targets) * 2.0


def g_loss(objective: str, d_fake):
    if objective == "minimax":
        return -_pair_loss(objective, d_fake, 0.0)
    if objective == "least_squares":
        return _pair_loss(objective, d_fake, 1.0) * 0.5
    return _pair_loss(objective, d_fake, 1.0)


def engine_policy(kind: str, device=None, random: str = "torch", group=None):
    """The trainer factory `train()` / `train_gan()` take (policy=...) for this engine."""
    if kind == "gan":
        if group is not None:
            raise ArchError("--nproc trains supervised models; a gan trains in one process",
                            hint="drop --nproc (use --device cuda for a GPU)")
        return lambda pair, config, **kw: TorchGanTrainer(pair, config, device=device, random=random, **kw)
    return lambda model, config, **kw: TorchTrainer(model, config, device=device, random=random, group=group, **kw)

