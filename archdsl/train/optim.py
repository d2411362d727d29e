"""Optimizers, learning-rate schedules and gradient clipping.

Optimizers update the parameter arrays in place with NumPy ufuncs writing into preallocated
scratch buffers (`out=`), so a step allocates nothing; with parameters of one dtype each formula
is one ufunc call over flat buffers holding every parameter's state (see Optimizer). Updates
follow PyTorch's formulas (torch.optim.SGD / Adam / AdamW, single-tensor path), so results agree
with torch within float rounding; the one difference is that moment buffers are flushed of
subnormal numbers every FLUSH_EVERY steps (values that change no update, but slow every later
step down):

    SGD       g += wd * p;  b = mu * b + g;  g = g + mu * b (Nesterov) or b;  p -= lr * g
    Adam      g += wd * p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
              p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    AdamW     p *= 1 - lr * wd  (decoupled), then Adam without the L2 term

"Online" SGD (one example per update, as in the lecture notes) is SGD with batch = 1.

State (moment buffers, step count) round-trips through `state_arrays()` / `load_state()` for
checkpoints; with it a resumed run is bit-for-bit the uninterrupted one.

Schedules multiply the base learning rate by a factor of the optimizer step (0-based):

    step(step_size=E, gamma=0.1)       gamma ** (epoch // E)
    cosine(min_lr=0.0)                 half cosine from 1 down to min_lr / lr over the whole run
    warmup(steps=S) / warmup(epochs=E) linear from 1/S up to 1 over the first S steps

and compose by multiplication: `schedule = [warmup(steps=100), cosine()]`.
"""
from __future__ import annotations

import math

import numpy as np

from ..autodiff import Tensor, jit


class Optimizer:
    """Base class. Subclasses name their state `slots` and implement `_direction`.

    When every parameter has the same dtype, the state slots and the scratch buffer are each one
    flat array, and `self.state[slot][name]` are views of it. A step then copies all gradients
    into one flat buffer and runs each update formula as one ufunc call per CHUNK elements across
    every parameter (a small network has many small tensors, and per-call overhead dominates; a
    large one's chunk stays in cache through the formula's passes); only the
    final `p -= delta` is per parameter. Parameters that have no gradient this step make the step
    fall back to one update per parameter (the parameter arrays themselves are never replaced).
    """
    name = "Optimizer"
    slots: tuple[str, ...] = ()
    decoupled = False    # weight decay that scales the parameters themselves (AdamW)

    def __init__(self, params: dict[str, Tensor], lr: float, weight_decay: float = 0.0):
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.params = dict(params)
        self.base_lr = float(lr)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.t = 0      # number of steps taken
        self._tensors = list(self.params.values())
        datas = [p.data for p in self._tensors]
        dtypes = {d.dtype for d in datas}
        self._flat = len(dtypes) == 1
        if self._flat:
            dtype = dtypes.pop()
            total = sum(d.size for d in datas)
            self._sflat = {slot: np.zeros(total, dtype) for slot in self.slots}
            self._tflat = np.empty(total, dtype)
            self._gflat = np.empty(total, dtype)
            self._gviews = _views(self._gflat, datas)
            self._pflat = None      # gathered parameters, for L2 weight decay (made on first use)
            self.state: dict[str, dict[str, np.ndarray]] = {
                slot: dict(zip(self.params, _views(buf, datas))) for slot, buf in self._sflat.items()}
            self._tmps = _views(self._tflat, datas)
            # parameters that tile one buffer in order (NumpyExecutor lays them out so) are
            # updated through a single view of it; `_datas` checks they are still the same arrays
            self._pspan = _span(datas)
            self._datas = datas
        else:
            self.state = {slot: {n: np.zeros_like(d) for n, d in zip(self.params, datas)}
                          for slot in self.slots}
            self._tmps = [np.empty_like(d) for d in datas]
        self._sviews = [{slot: self.state[slot][n] for slot in self.slots} for n in self.params]

    def zero_grad(self) -> None:
        for p in self._tensors:
            p.grad = None

    def _begin(self) -> None:
        """Per-step scalars (bias corrections), computed once before the updates."""

    def _fused_step(self, p, g, decay, out) -> bool:
        """One compiled pass over the flat gradients `g` and the state, if this optimizer has such
        a kernel and it may run here (False leaves the step to `_direction`): with `out` None,
        it updates the flat parameters `p` in place (scaled by AdamW's `decay` first, unless
        None); otherwise it writes the amount to subtract into `out`, reading `p` (None unless
        L2 decay needs it) as `_direction` would."""
        return False

    def _direction(self, st, p, g, tmp) -> None:   # pragma: no cover - abstract
        """Write into `tmp` the amount to subtract from `p` and advance the state arrays `st`
        (slot -> array). `p` is only read; `g` may be modified in place."""
        raise NotImplementedError

    def step(self) -> None:
        self.t += 1
        self._begin()
        tensors = self._tensors
        grads = [p.grad for p in tensors]
        decay = 1.0 - self.lr * self.weight_decay if self.decoupled and self.weight_decay else None
        if self._flat and all(g is not None for g in grads):
            gflat = self._gflat
            for dst, g in zip(self._gviews, grads):
                dst[...] = g
            span = self._pspan
            if span is not None and not all(p.data is d for p, d in zip(tensors, self._datas)):
                span = None
            pflat = span
            if pflat is None and self.weight_decay and not self.decoupled:
                if self._pflat is None:
                    self._pflat = np.empty_like(gflat)
                pflat = self._pflat
                np.concatenate([p.data.reshape(-1) for p in tensors], out=pflat)
            tflat, n = self._tflat, gflat.size
            if self._fused_step(pflat, gflat, decay, None if span is not None else tflat):
                if span is not None:
                    return
            else:
                for a in range(0, n, CHUNK):
                    sl = slice(a, min(n, a + CHUNK))
                    tmp = tflat[sl]
                    self._direction({k: v[sl] for k, v in self._sflat.items()},
                                    pflat[sl] if pflat is not None else None, gflat[sl], tmp)
                    if span is not None:
                        if decay is not None:
                            span[sl] *= decay
                        span[sl] -= tmp
                if span is not None:
                    return
            for p, tmp in zip(tensors, self._tmps):
                d = p.data
                if decay is not None:
                    d *= decay
                d -= tmp
            return
        for p, g, st, tmp in zip(tensors, grads, self._sviews, self._tmps):
            if g is not None:
                d = p.data
                self._direction(st, d, g, tmp)
                if decay is not None:
                    d *= decay
                d -= tmp

    def hyper(self) -> dict:
        return {"lr": self.base_lr, "weight_decay": self.weight_decay}

    # -- checkpoints ----------------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """slot/param -> array (copies are not needed: the caller writes them out at once)."""
        return {f"{slot}/{n}": a for slot, d in self.state.items() for n, a in d.items()}

    def state_meta(self) -> dict:
        return {"name": self.name, "t": self.t, "lr": self.lr, "hyper": self.hyper()}

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        from ..errors import ArchError
        if meta.get("name") != self.name:
            raise ArchError(f"the checkpoint's optimizer is {meta.get('name')}, this run uses {self.name}")
        for slot, d in self.state.items():
            for n, a in d.items():
                key = f"{slot}/{n}"
                if key not in arrays:
                    raise ArchError(f"the checkpoint has no optimizer state '{key}'",
                                    hint="was it written for a different set of trainable parameters?")
                src = arrays[key]
                if src.shape != a.shape:
                    raise ArchError(f"optimizer state '{key}' has shape {list(src.shape)}, expected {list(a.shape)}")
                np.copyto(a, src, casting="same_kind")
        self.t = int(meta.get("t", 0))
        self.lr = float(meta.get("lr", self.base_lr))


# Every FLUSH_EVERY steps, moment buffers are flushed of subnormal numbers. A parameter whose
# gradient stays zero (a weight from an input pixel that is always 0, a dead unit) has its moments
# multiplied by beta every step: they decay into the subnormal range and, rounding to nearest,
# stay at the smallest subnormal for good. CPUs compute on subnormals many times slower, and every
# later step multiplies them. Values that small change no update: |m| < 1.2e-38 moves a parameter
# by less than lr * 1e-30; v enters as sqrt(v) next to eps.
FLUSH_EVERY = 16


# The flat update runs its formula over chunks of this many elements: the ten-odd passes of
# Adam's formula then reread a chunk from L2 cache instead of each streaming every parameter from
# memory (ResNet-18's 11M parameters: 45 -> 30 ms a step). Each element sees the same operations
# in the same order either way, so the results are identical.
CHUNK = 32768


def _flush_subnormals(a: np.ndarray, scratch: np.ndarray) -> None:
    """Set the subnormal entries of `a` to zero (`scratch`: a float buffer of a's shape)."""
    np.abs(a, out=scratch)
    np.copyto(a, 0, where=scratch < np.finfo(a.dtype).tiny)


def _views(flat: np.ndarray, like: list[np.ndarray]) -> list[np.ndarray]:
    """Consecutive views of `flat` shaped like the arrays in `like`."""
    out, off = [], 0
    for a in like:
        out.append(flat[off:off + a.size].reshape(a.shape))
        off += a.size
    return out


def _span(arrays: list[np.ndarray]) -> np.ndarray | None:
    """The 1-D view of the buffer that `arrays` tile, if they are consecutive C-contiguous views
    of one 1-D buffer in this order, else None."""
    if not arrays:
        return None
    base = arrays[0].base
    if (base is None or base.ndim != 1 or not base.flags.c_contiguous
            or base.dtype != arrays[0].dtype):
        return None
    start = addr = arrays[0].__array_interface__["data"][0]
    for a in arrays:
        if a.base is not base or not a.flags.c_contiguous or a.__array_interface__["data"][0] != addr:
            return None
        addr += a.nbytes
    first = (start - base.__array_interface__["data"][0]) // base.itemsize
    return base[first:first + (addr - start) // base.itemsize]


class SGD(Optimizer):
    name = "SGD"

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov needs a momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.slots = ("momentum",) if momentum else ()
        super().__init__(params, lr, weight_decay)

    def hyper(self):
        return {**super().hyper(), "momentum": self.momentum, "nesterov": self.nesterov}

    def _direction(self, st, p, g, tmp):
        wd, mu = self.weight_decay, self.momentum
        if wd:
            np.multiply(p, wd, out=tmp)
            g += tmp
        if mu:
            buf = st["momentum"]
            buf *= mu
            buf += g
            if self.t % FLUSH_EVERY == 0:
                _flush_subnormals(buf, tmp)
            if self.nesterov:
                np.multiply(buf, mu, out=tmp)
                g += tmp
            else:
                g = buf
        np.multiply(g, self.lr, out=tmp)


class Adam(Optimizer):
    name = "Adam"
    slots = ("m", "v")
    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        b1, b2 = (float(b) for b in betas)
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {tuple(betas)}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.b1, self.b2, self.eps = b1, b2, float(eps)
        super().__init__(params, lr, weight_decay)

    def hyper(self):
        return {**super().hyper(), "betas": [self.b1, self.b2], "eps": self.eps}

    def _begin(self):
        # bias corrections once per step, as Python floats (keep float32 arrays float32)
        self._step_size = self.lr / (1.0 - self.b1 ** self.t)
        self._inv_bc2_sqrt = 1.0 / math.sqrt(1.0 - self.b2 ** self.t)

    def _fused_step(self, p, g, decay, out):
        # one pass over p, g, m and v on every BLAS thread instead of ten single-threaded ones;
        # the same float32 operations in the same order, so the same bits (NumPy turns Python
        # floats into float32 scalars just so)
        if g.dtype != np.float32 or g.size < jit.MIN_ELEMENTS:
            return False
        jk = jit.kernels()
        if jk is None:
            return False
        f = np.float32
        wd = 0.0 if self.decoupled else self.weight_decay
        args = (g if p is None else p, g, self._sflat["m"], self._sflat["v"], f(self.b1), f(1.0 - self.b1),
                f(self.b2), f(1.0 - self.b2), f(wd), f(self._step_size), f(self._inv_bc2_sqrt), f(self.eps),
                f(1.0 if decay is None else decay), self.t % FLUSH_EVERY == 0, np.finfo(np.float32).tiny,
                g if out is None else out, out is None)
        jit.split(g.size, lambda lo, hi: jk.adam(*args, lo, hi), 7)      # p, g, m, v read; p, m, v written
        return True

    def _direction(self, st, p, g, tmp):
        b1, b2, wd = self.b1, self.b2, self.weight_decay
        if wd and not self.decoupled:
            np.multiply(p, wd, out=tmp)
            g += tmp
        m = st["m"]
        v = st["v"]
        m *= b1
        np.multiply(g, 1.0 - b1, out=tmp)
        m += tmp
        v *= b2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - b2
        v += tmp
        if self.t % FLUSH_EVERY == 0:
            _flush_subnormals(m, tmp)
            _flush_subnormals(v, tmp)
        np.sqrt(v, out=tmp)
        tmp *= self._inv_bc2_sqrt
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= self._step_size


class AdamW(Adam):
    name = "AdamW"
    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(params, lr, betas, eps, weight_decay)


OPTIMIZERS = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}
OPTIMIZER_ARGS = {
    "SGD": ("lr", "momentum", "nesterov", "weight_decay"),
    "Adam": ("lr", "betas", "eps", "weight_decay"),
    "AdamW": ("lr", "betas", "eps", "weight_decay"),
}


# -- gradient clipping -----------------------------------------------------------------------------

def global_grad_norm(params) -> float:
    """sqrt of the sum of squares of every gradient (params without a gradient are skipped)."""
    total = 0.0
    for p in params:
        g = p.grad
        if g is not None:
            flat = g.reshape(-1)
            total += float(np.dot(flat, flat))
    return math.sqrt(total)


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale all gradients together so their global norm is at most `max_norm` (as
    torch.nn.utils.clip_grad_norm_: factor max_norm / (norm + 1e-6)); returns the norm before."""
    params = list(params)
    norm = global_grad_norm(params)
    if norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        for p in params:
            if p.grad is not None:
                p.grad *= scale
    return norm


# -- schedules -------------------------------------------------------------------------------------

class Schedule:
    """factor(step, total_steps, steps_per_epoch) -> multiplier of the base learning rate."""
    name = "schedule"

    def factor(self, step: int, total: int, per_epoch: int) -> float:   # pragma: no cover
        raise NotImplementedError


class StepSchedule(Schedule):
    name = "step"

    def __init__(self, step_size: int = 10, gamma: float = 0.1):
        if int(step_size) < 1:
            raise ValueError(f"step_size must be >= 1 epoch, got {step_size}")
        self.step_size, self.gamma = int(step_size), float(gamma)

    def factor(self, step, total, per_epoch):
        return self.gamma ** ((step // max(1, per_epoch)) // self.step_size)


class CosineSchedule(Schedule):
    name = "cosine"

    def __init__(self, min_factor: float = 0.0):
        self.min_factor = float(min_factor)

    def factor(self, step, total, per_epoch):
        frac = min(1.0, step / max(1, total))
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * frac))


class WarmupSchedule(Schedule):
    name = "warmup"

    def __init__(self, steps: int | None = None, epochs: float | None = None):
        if (steps is None) == (epochs is None):
            raise ValueError("warmup takes steps=S or epochs=E")
        if (steps is not None and int(steps) < 1) or (epochs is not None and epochs <= 0):
            raise ValueError("warmup length must be positive")
        self.steps, self.epochs = steps, epochs

    def factor(self, step, total, per_epoch):
        w = int(self.steps) if self.steps is not None else max(1, round(self.epochs * per_epoch))
        return min(1.0, (step + 1) / w)


SCHEDULES = {"step": StepSchedule, "cosine": CosineSchedule, "warmup": WarmupSchedule}
SCHEDULE_ARGS = {"step": ("step_size", "gamma"), "cosine": ("min_lr",), "warmup": ("steps", "epochs")}


def schedule_factor(schedules, step: int, total: int, per_epoch: int) -> float:
    f = 1.0
    for s in schedules:
        f *= s.factor(step, total, per_epoch)
    return f
