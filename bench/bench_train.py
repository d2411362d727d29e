"""Training-throughput benchmark of archdsl's NumPy engine, with its peers measured in the same run.

Workloads (Adam, batch 64, scikit-learn's 8x8 digits scaled to [0, 1], float32):
  * mlp  specs/digits_mlp.arch  64-128-64-10, cross-entropy, Adam(lr=1e-3)
  * cnn  specs/digits_cnn.arch  conv16-pool-conv32-pool-fc64-fc10, cross-entropy with label
         smoothing 0.1, Adam(lr=3e-3)   (loss and optimizer as the spec's train section says;
         the spec's cosine schedule is left out: it only changes the learning-rate scalar)

Engines, all starting from the same initial weights and fed the same batches:
  * archdsl         what `archdsl train` runs per step: the compiled spec's IR on NumpyExecutor
                    (training mode), the train section's loss from archdsl.train.losses,
                    backward, Adam from archdsl.train.optim (build_optimizer), zero_grad
  * archdsl-loop    the whole Trainer.fit loop (batching, shuffling, metrics, the finite
                    gradient-norm check), each call a fresh run of whole epochs: for reference,
                    not a peer
  * torch           PyTorch CPU (nn.Sequential, nn.CrossEntropyLoss, torch.optim.Adam)
  * autograd        HIPS autograd (autograd.numpy model, autograd.grad, Adam in NumPy)
  * numpy           hand-written NumPy forward/backward + in-place Adam (MLP only), written
                    carefully (parameters and gradients in flat buffers, Adam as a dozen
                    whole-buffer ufunc calls): the practical limit for a NumPy engine
  * numpy-plain     the same written the plain way (an array per parameter, Adam looping over
                    them): for reference

Each step is forward + loss + backward + optimizer update + reading the loss as a Python float.
Before timing, every engine runs one step on the same batch and the losses are compared.
Timing (wall clock): warm-up steps, then `--reps` repetitions; in each repetition every engine
runs the same number of steps in turn (about `--seconds` of archdsl's; the order rotates from one
repetition to the next), so machine load hits all engines alike and all of them are always at the
same point of training (how fast NumPy multiplies Adam's state changes as training goes on: the
first moments of units that get no gradient decay into float32 subnormals). Reported: the median
over repetitions of samples/s, and ratios to the peers.

Peak memory, per engine in a fresh subprocess (so engines cannot hide in each other's peaks):
  * RSS delta: the peak RSS (VmHWM, reset just before building) after building the model and optimizer and training 50 steps (the
    loop: 2 epochs), minus the RSS just before building (imports and data loaded): what
    training adds to the peak.
  * tracemalloc peak: the peak of traced Python/NumPy allocations over building the model and
    optimizer and 5 steps (the loop: 1 epoch); NumPy registers its array buffers with
    tracemalloc, PyTorch does not, so it is shown only for the NumPy-based engines.

    python bench/bench_train.py                    # 1 BLAS thread, writes bench/train.md
    python bench/bench_train.py --threads 2 --reps 9 --out /tmp/train.md
    python bench/bench_train.py --workloads mlp --engines archdsl numpy torch --no-write

Not a test: it asserts nothing beyond the loss cross-check.
"""
from __future__ import annotations

import argparse
import os
import sys


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS threads for NumPy and torch.set_num_threads (default 1)")
    p.add_argument("--reps", type=int, default=7, help="timed repetitions (median; default 7)")
    p.add_argument("--seconds", type=float, default=0.3,
                   help="seconds of archdsl steps per repetition; every engine runs that many "
                        "steps (default 0.3)")
    p.add_argument("--workloads", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"])
    p.add_argument("--engines", nargs="+", default=None,
                   help="subset of archdsl archdsl-loop torch autograd numpy numpy-plain")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--out", default=None, help="Markdown report (default bench/train.md)")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--_mem", nargs=2, metavar=("WORKLOAD", "ENGINE"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


ARGS = _args()
# BLAS threads must be fixed before NumPy (and its BLAS) is loaded.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = str(ARGS.threads)

import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import archdsl  # noqa: E402
from benchlib import cpu_model, peak_rss_kib, reset_peak_rss  # noqa: E402
from archdsl.autodiff import backward  # noqa: E402
from archdsl.autodiff.allocator import keep_freed_memory  # noqa: E402
from archdsl.backends.numpy.executor import NumpyExecutor  # noqa: E402
from archdsl.train.config import config_for  # noqa: E402
from archdsl.train.loop import Trainer, build_optimizer  # noqa: E402
from archdsl.train.losses import LOSSES  # noqa: E402

BATCH = 64
SPECS = {"mlp": ROOT / "specs" / "digits_mlp.arch", "cnn": ROOT / "specs" / "digits_cnn.arch"}
ALL_ENGINES = ("archdsl", "archdsl-loop", "torch", "autograd", "numpy", "numpy-plain")


def _optional(name):
    try:
        return __import__(name)
    except ImportError:
        return None


torch = _optional("torch")
autograd = _optional("autograd")
if torch is not None:
    torch.set_num_threads(ARGS.threads)


# -- workload --------------------------------------------------------------------------------------

class Workload:
    """A spec's model, its train config (batch 64), initial weights and the digits batches."""

    def __init__(self, key: str):
        self.key = key
        self.spec = archdsl.compile(str(SPECS[key]))
        self.model = self.spec.model()
        self.ir = self.model.ir
        self.cfg = config_for(self.spec, self.ir.name, batch=BATCH, val_split=0.0)
        self.weights = self.model.init_weights(seed=0)
        self.loss_kwargs = dict(self.cfg.loss.get("kwargs", {}))
        self.smoothing = float(self.loss_kwargs.get("label_smoothing", 0.0))
        self.opt = dict(self.cfg.optimizer)
        if self.opt["name"] != "Adam":
            raise SystemExit(f"{key}: the benchmark's peers implement Adam, the spec asks for {self.opt['name']}")
        self.lr = float(self.opt.get("lr", 1e-3))
        x, y = _digits()
        self.input_name = self.ir.inputs[0].name
        shape = tuple(int(d) for d in self.ir.inputs[0].type.shape[1:])
        self.x = x.reshape((-1,) + shape)
        self.y = y
        n = len(self.x) // BATCH
        self.batches = [(np.ascontiguousarray(self.x[i * BATCH:(i + 1) * BATCH]), self.y[i * BATCH:(i + 1) * BATCH])
                        for i in range(n)]
        self.title = {"mlp": "digits MLP 64-128-64-10",
                      "cnn": "digits CNN conv16-pool-conv32-pool-fc64-fc10"}[key]


_DIGITS = None


def _digits():
    """scikit-learn's digits (1,797 x 64, scaled to [0, 1]); random stand-ins without sklearn."""
    global _DIGITS
    if _DIGITS is None:
        try:
            from sklearn.datasets import load_digits
            d = load_digits()
            _DIGITS = ((d.data / 16.0).astype(np.float32), d.target.astype(np.int64), "scikit-learn digits")
        except ImportError:
            rng = np.random.default_rng(0)
            _DIGITS = (rng.random((1792, 64), dtype=np.float32), rng.integers(0, 10, 1792),
                       "random stand-in (scikit-learn not installed)")
    return _DIGITS[0], _DIGITS[1]


# -- engines -----------------------------------------------------------------------------------------

class ArchdslEngine:
    """One training step as archdsl.train.loop runs it (without the loop's bookkeeping)."""

    def __init__(self, w: Workload):
        keep_freed_memory()            # as Trainer.fit does (process-wide: the peers get it too)
        self.ex = NumpyExecutor(w.ir, w.weights, seed=0)
        self.opt = build_optimizer(w.cfg.optimizer, self.ex.trainable())
        self.loss_fn = LOSSES[w.cfg.loss["name"]][0]
        self.kw = w.loss_kwargs
        self.iname = w.input_name
        self.oname = w.cfg.loss["output"]

    def step(self, x, y):
        out = self.ex.forward({self.iname: x}, training=True)[self.oname]
        loss = self.loss_fn(out, y, **self.kw)
        lv = float(loss.data)
        backward(loss)
        self.opt.step()
        self.opt.zero_grad()
        return lv


class ArchdslLoopEngine:
    """Trainer.fit, the complete loop of `archdsl train` (batching, shuffling, metrics, the
    finite-gradient check, Adam), on the workload's batches for a number of epochs. Each call
    is a fresh run from the initial weights (setup included), so it is a reference for the
    loop's own cost, not a peer at the same point of training."""

    def __init__(self, w: Workload):
        self.w = w
        self.epoch_steps = len(w.batches)
        n = self.epoch_steps * BATCH
        self.data = {w.input_name: w.x[:n], w.cfg.loss["target"]: w.y[:n]}

    def run_epochs(self, epochs: int):
        cfg = self.w.cfg.with_overrides(epochs=epochs)
        res = Trainer(self.w.model, cfg, quiet=True, log=lambda s: None).fit(self.data)
        return res.history[-1]["loss"]


class TorchEngine:
    def __init__(self, w: Workload):
        nn = torch.nn
        if w.key == "mlp":
            self.net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
            names = ["linear_1", None, "linear_2", None, "linear_3"]
        else:
            self.net = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
            names = ["conv2d_1", None, None, "conv2d_2", None, None, None, "linear_1", None, "linear_2"]
        with torch.no_grad():
            for mod, name in zip(self.net, names):
                if name:
                    mod.weight.copy_(torch.from_numpy(w.weights[f"{name}.weight"]))
                    mod.bias.copy_(torch.from_numpy(w.weights[f"{name}.bias"]))
        self.net.train()
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=w.smoothing)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=w.lr)
        self.tb = {}

    def prepare(self, batches):
        # zero-copy views of the same arrays, made before timing
        for x, y in batches:
            self.tb[id(x)] = (torch.from_numpy(x), torch.from_numpy(y))

    def step(self, x, y):
        tx, ty = self.tb[id(x)]
        self.opt.zero_grad()
        loss = self.loss_fn(self.net(tx), ty)
        loss.backward()
        self.opt.step()
        return loss.item()


class _NumpyAdam:
    """In-place Adam (PyTorch's formula) over float32 arrays that are views of one flat buffer,
    with the gradients in another: one ufunc call per operation for all parameters together."""

    def __init__(self, flat, lr, b1=0.9, b2=0.999, eps=1e-8):
        self.p, self.lr, self.b1, self.b2, self.eps = flat, lr, b1, b2, eps
        self.m = np.zeros_like(flat)
        self.v = np.zeros_like(flat)
        self.tmp = np.empty_like(flat)
        self.t = 0

    def step(self, g):
        self.t += 1
        b1, b2, m, v, tmp = self.b1, self.b2, self.m, self.v, self.tmp
        m *= b1
        np.multiply(g, 1.0 - b1, out=tmp)
        m += tmp
        v *= b2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - b2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp *= 1.0 / (1.0 - b2 ** self.t) ** 0.5
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= self.lr / (1.0 - b1 ** self.t)
        self.p -= tmp


def _flat_views(shapes, dtype=np.float32):
    """One flat buffer and a view of it per shape."""
    flat = np.empty(sum(int(np.prod(s)) for s in shapes), dtype)
    views, off = [], 0
    for s in shapes:
        n = int(np.prod(s))
        views.append(flat[off:off + n].reshape(s))
        off += n
    return flat, views


class NumpyMLPEngine:
    """The MLP written by hand in NumPy as a careful programmer would: parameters and gradients
    in flat buffers (GEMMs write the weight gradients in place), Adam as a dozen whole-buffer
    ufunc calls. The practical limit of a NumPy implementation."""

    def __init__(self, w: Workload):
        if w.key != "mlp":
            raise NotImplementedError
        names = [f"linear_{i}.{k}" for i in (1, 2, 3) for k in ("weight", "bias")]
        shapes = [w.weights[n].shape for n in names]
        self.flat, ps = _flat_views(shapes)
        for v, n in zip(ps, names):
            v[...] = w.weights[n]
        self.gflat, gs = _flat_views(shapes)
        self.W, self.B = ps[0::2], ps[1::2]
        self.GW, self.GB = gs[0::2], gs[1::2]
        self.opt = _NumpyAdam(self.flat, w.lr)
        self.rows = np.arange(BATCH)

    def step(self, x, y):
        W, B, GW, GB = self.W, self.B, self.GW, self.GB
        h1 = x @ W[0].T
        h1 += B[0]
        np.maximum(h1, 0, out=h1)
        h2 = h1 @ W[1].T
        h2 += B[1]
        np.maximum(h2, 0, out=h2)
        z = h2 @ W[2].T
        z += B[2]
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        n = len(y)
        rows = self.rows if n == BATCH else np.arange(n)
        loss = float(np.log(s).sum() - z[rows, y].sum()) / n
        e /= s                         # softmax; gradient of the mean loss:
        e[rows, y] -= 1.0
        e *= 1.0 / n
        np.matmul(e.T, h2, out=GW[2])
        np.add.reduce(e, axis=0, out=GB[2])
        d2 = e @ W[2]
        d2 *= h2 > 0
        np.matmul(d2.T, h1, out=GW[1])
        np.add.reduce(d2, axis=0, out=GB[1])
        d1 = d2 @ W[1]
        d1 *= h1 > 0
        np.matmul(d1.T, x, out=GW[0])
        np.add.reduce(d1, axis=0, out=GB[0])
        self.opt.step(self.gflat)
        return loss


class NumpyPlainMLPEngine:
    """The same MLP hand-written the plain way: one array per parameter, Adam looping over them
    (in place, with a scratch buffer each). For reference: what a straightforward NumPy version
    costs; `numpy` above is the practical limit."""

    def __init__(self, w: Workload):
        if w.key != "mlp":
            raise NotImplementedError
        self.W = [w.weights[f"linear_{i}.weight"].copy() for i in (1, 2, 3)]
        self.B = [w.weights[f"linear_{i}.bias"].copy() for i in (1, 2, 3)]
        self.opts = [_NumpyAdam(p, w.lr) for p in self.W + self.B]

    def step(self, x, y):
        W, B = self.W, self.B
        acts = [x]
        h = x
        for i in range(3):
            h = h @ W[i].T + B[i]
            if i < 2:
                h = np.maximum(h, 0)
            acts.append(h)
        n = len(y)
        rows = np.arange(n)
        z = h - h.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(s[:, 0]) - z[rows, y]))
        g = e / s
        g[rows, y] -= 1.0
        g /= n
        gw, gb = [None] * 3, [None] * 3
        for i in (2, 1, 0):
            gw[i] = g.T @ acts[i]
            gb[i] = g.sum(axis=0)
            if i:
                g = (g @ W[i]) * (acts[i] > 0)
        for opt, grad in zip(self.opts, gw + gb):
            opt.step(grad)
        return loss


class AutogradEngine:
    """HIPS autograd: the model in autograd.numpy, gradients by autograd.grad, Adam in NumPy."""

    def __init__(self, w: Workload):
        import autograd.numpy as anp
        from autograd import value_and_grad
        self.key = w.key
        eps = w.smoothing
        if w.key == "mlp":
            names = ["linear_1", "linear_2", "linear_3"]
            self.params = [w.weights[f"{n}.{k}"].copy() for n in names for k in ("weight", "bias")]

            def logits(ps, x):
                h = x
                for i in range(3):
                    h = anp.dot(h, ps[2 * i].T) + ps[2 * i + 1]
                    if i < 2:
                        h = anp.maximum(h, 0.0)
                return h
        else:
            names = ["conv2d_1", "conv2d_2", "linear_1", "linear_2"]
            self.params = [w.weights[f"{n}.{k}"].copy() for n in names for k in ("weight", "bias")]
            idx = {s: _im2col_index(s) for s in (8, 4)}

            def conv3x3(x, wt, b):
                # im2col by gathering the 3x3 windows of the zero-padded input, then one GEMM
                N, C, H, _ = x.shape
                xp = anp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="constant")
                r, c = idx[H]
                cols = xp[:, :, r, c]                              # [N, C, H*W, 9]
                cols = anp.transpose(cols, (0, 2, 1, 3)).reshape(N * H * H, C * 9)
                out = anp.dot(cols, wt.reshape(wt.shape[0], -1).T) + b   # [N*H*W, O]
                return anp.transpose(out.reshape(N, H, H, -1), (0, 3, 1, 2))

            def pool2(x):
                N, C, H, W = x.shape
                return anp.max(x.reshape(N, C, H // 2, 2, W // 2, 2), axis=(3, 5))

            def logits(ps, x):
                h = pool2(anp.maximum(conv3x3(x, ps[0], ps[1]), 0.0))
                h = pool2(anp.maximum(conv3x3(h, ps[2], ps[3]), 0.0))
                h = h.reshape(h.shape[0], -1)
                h = anp.maximum(anp.dot(h, ps[4].T) + ps[5], 0.0)
                return anp.dot(h, ps[6].T) + ps[7]

        def loss(ps, x, onehot):
            z = logits(ps, x)
            z = z - anp.max(z, axis=1, keepdims=True)
            logp = z - anp.log(anp.sum(anp.exp(z), axis=1, keepdims=True))
            C = z.shape[1]
            q = onehot * (1.0 - eps) + eps / C
            return -anp.sum(q * logp) / z.shape[0]

        self.vg = value_and_grad(loss)
        self.flat, views = _flat_views([p.shape for p in self.params])
        for v, p in zip(views, self.params):
            v[...] = p
        self.params = views
        self.gflat, self.gviews = _flat_views([p.shape for p in self.params])
        self.opt = _NumpyAdam(self.flat, w.lr)
        self.eye = np.eye(10, dtype=np.float32)

    def step(self, x, y):
        val, grads = self.vg(self.params, x, self.eye[y])
        for gv, g in zip(self.gviews, grads):
            gv[...] = g
        self.opt.step(self.gflat)
        return float(val)


def _im2col_index(H):
    """Row/column indices [H*H, 9] of the 3x3 windows of an (H+2) x (H+2) padded map."""
    i, j = np.meshgrid(np.arange(H), np.arange(H), indexing="ij")
    di, dj = np.meshgrid(np.arange(3), np.arange(3), indexing="ij")
    r = (i.reshape(-1, 1) + di.reshape(1, -1))
    c = (j.reshape(-1, 1) + dj.reshape(1, -1))
    return r, c


def available(engine: str, key: str) -> str | None:
    """None if `engine` can run workload `key`, else why not."""
    if engine == "torch" and torch is None:
        return "PyTorch not installed"
    if engine == "autograd" and autograd is None:
        return "autograd not installed"
    if engine in ("numpy", "numpy-plain") and key != "mlp":
        return "hand-written for the MLP only"
    return None


def make(engine: str, w: Workload):
    cls = {"archdsl": ArchdslEngine, "archdsl-loop": ArchdslLoopEngine, "torch": TorchEngine,
           "autograd": AutogradEngine, "numpy": NumpyMLPEngine, "numpy-plain": NumpyPlainMLPEngine}[engine]
    e = cls(w)
    if hasattr(e, "prepare"):
        e.prepare(w.batches)
    return e


# -- timing --------------------------------------------------------------------------------------------

def _runner(name, eng, w):
    """run(k): k training steps of engine `eng` (whole epochs for archdsl-loop), continuing
    through the batches where the previous call stopped; returns the number of samples."""
    batches = w.batches
    nb = len(batches)
    if name == "archdsl-loop":
        per = eng.epoch_steps

        def run(k):
            epochs = max(1, round(k / per))
            eng.run_epochs(epochs)
            return epochs * per * BATCH
        return run
    pos = [0]

    def run(k):
        i = pos[0]
        step = eng.step
        for _ in range(k):
            x, y = batches[i]
            step(x, y)
            i = (i + 1) % nb
        pos[0] = i
        return k * BATCH
    return run


def measure(w: Workload, engines: list[str], reps: int, seconds: float) -> dict:
    """Median samples/s per engine over `reps` interleaved repetitions.

    Every engine trains from the same initial weights on the same sequence of batches, and in
    each repetition every engine runs the same number of steps (so all are always at the same
    point of training: Adam's state, and how fast NumPy multiplies it, changes as training goes
    on); the order of the engines rotates from one repetition to the next."""
    eng = {n: make(n, w) for n in engines}
    runs = {n: _runner(n, e, w) for n, e in eng.items()}
    # cross-check: one step on the same batch from the same weights gives the same loss
    x0, y0 = w.batches[0]
    first = {n: e.step(x0, y0) for n, e in eng.items() if n != "archdsl-loop"}
    for n, run in runs.items():          # warm-up
        run(5)
    # steps per repetition: about `seconds` of archdsl (or of the first engine)
    ref = "archdsl" if "archdsl" in runs else engines[0]
    t0 = time.perf_counter()
    k = 0
    while time.perf_counter() - t0 < 0.2:
        runs[ref](5)
        k += 5
    steps = max(10, int(round(seconds / ((time.perf_counter() - t0) / k))))
    for n, run in runs.items():          # keep every engine at the same step count
        if n != ref and n != "archdsl-loop":
            run(k)
    rates = {n: [] for n in engines}
    cpu_rates = {n: [] for n in engines}
    order = list(engines)
    for r in range(reps):
        rot = order[r % len(order):] + order[:r % len(order)]
        for n in rot:
            c0 = time.process_time()
            t0 = time.perf_counter()
            samples = runs[n](steps)
            t1 = time.perf_counter()
            c1 = time.process_time()
            rates[n].append(samples / (t1 - t0))
            cpu_rates[n].append(samples / max(c1 - c0, 1e-9))
    return {"rates": {n: statistics.median(v) for n, v in rates.items()},
            "cpu_rates": {n: statistics.median(v) for n, v in cpu_rates.items()},
            "all": rates, "first_loss": first, "steps": steps, "total_steps": 1 + 5 + k + reps * steps}


# -- memory (subprocess) -------------------------------------------------------------------------------

def memory_child(key: str, engine: str) -> None:
    w = Workload(key)
    batches = w.batches
    nb = len(batches)
    rss0 = reset_peak_rss()
    e = make(engine, w)
    if engine == "archdsl-loop":
        e.run_epochs(2)
    else:
        for i in range(50):
            e.step(*batches[i % nb])
    rss1 = peak_rss_kib()
    del e
    traced = None
    if engine != "torch":
        tracemalloc.start()
        e = make(engine, w)
        if engine == "archdsl-loop":
            e.run_epochs(1)
        else:
            for i in range(5):
                e.step(*batches[i % nb])
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    print(json.dumps({"rss_delta_kib": rss1 - rss0, "tracemalloc_peak_b": traced}))


def memory(key: str, engine: str) -> dict | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--threads", str(ARGS.threads),
           "--_mem", key, engine]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as e:
        print(f"memory {key}/{engine}: {e}", file=sys.stderr)
        return None


# -- report -----------------------------------------------------------------------------------------------

def versions() -> dict:
    from threadpoolctl import threadpool_info
    v = {"python": platform.python_version(), "numpy": np.__version__, "archdsl": archdsl.__version__}
    if torch is not None:
        v["torch"] = torch.__version__
    if autograd is not None:
        from importlib.metadata import version
        v["autograd"] = version("autograd")
    blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    v["blas"] = "; ".join(blas) or "?"
    return v


def machine() -> str:
    return f"{platform.system()} {platform.machine()}, {cpu_model()}, {os.cpu_count()} logical CPUs"

def fmt_rate(v):
    return f"{v:,.0f}" if v is not None else "—"


def fmt_kib(v):
    return "—" if v is None else f"{v / 1024:.1f} MiB" if v >= 1024 else f"{v} KiB"


def report(results: dict, mem: dict, args, cmd: str, load: tuple) -> str:
    v = versions()
    lines = ["# Training throughput: archdsl's NumPy engine vs its peers", "",
             "Written by `bench/bench_train.py` (not a test; rerun it to refresh this file).", "",
             f"- Command: `{cmd}`",
             f"- Machine: {machine()}; load average {load[0]:.1f} before, {load[1]:.1f} after the run",
             "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if k != "blas"),
             f"- BLAS (NumPy): {v['blas']}",
             f"- Threads: OPENBLAS/OMP/MKL_NUM_THREADS={args.threads}"
             + (f", torch.set_num_threads({args.threads}) (torch reports {torch.get_num_threads()})"
                if torch is not None else ""),
             f"- Data: {_DIGITS[2]}, batches of {BATCH}, float32; Adam; each step = forward, loss, "
             "backward, Adam update, loss read back as a float",
             f"- Timing: per workload, {args.reps} interleaved repetitions (rotating order); in each "
             "repetition every engine runs the same number of steps (about "
             f"{args.seconds:g} s of archdsl's), so all engines are always at the same point of "
             "training; warm-up first. samples/s is by wall clock (time.perf_counter), samples/CPU-s "
             "by the process's CPU time (time.process_time: what a busy, shared machine does not "
             "inflate); both are medians over the repetitions",
             "- Peak memory: each engine in a fresh subprocess; RSS delta = the peak RSS (VmHWM, reset "
             "just before building) after building the model and optimizer and 50 steps (archdsl-loop: "
             "2 epochs) minus the RSS before building; tracemalloc peak = traced allocations over building and 5 steps (archdsl-loop: "
             "1 epoch; NumPy registers its buffers "
             "with tracemalloc, PyTorch does not: n/a)", ""]
    for key, res in results.items():
        w = res["workload"]
        rates, cpu = res["rates"], res["cpu_rates"]
        a, ac = rates.get("archdsl"), cpu.get("archdsl")
        lines += [f"## {w.title}", "",
                  f"Spec `{SPECS[key].relative_to(ROOT)}`, loss `{w.cfg.loss['name']}"
                  f"({', '.join(f'{k}={val}' for k, val in w.loss_kwargs.items())})`, "
                  f"Adam(lr={w.lr:g}), batch {BATCH}; {res['steps']} steps per engine per repetition, "
                  f"{res['total_steps']} steps in all.", "",
                  "| engine | samples/s | min–max | archdsl ÷ engine | samples/CPU-s | archdsl ÷ engine "
                  "(CPU) | first-step loss | peak RSS delta | tracemalloc peak |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for n in res["engines"]:
            if n in rates:
                allv = res["all"][n]
                ratio = f"{a / rates[n]:.2f}×" if a and n != "archdsl" else "—"
                cratio = f"{ac / cpu[n]:.2f}×" if ac and n != "archdsl" else "—"
                fl = res["first_loss"].get(n)
                m = mem.get((key, n)) or {}
                tm = m.get("tracemalloc_peak_b")
                lines.append(f"| {n} | {fmt_rate(rates[n])} | {fmt_rate(min(allv))}–{fmt_rate(max(allv))} | "
                             f"{ratio} | {fmt_rate(cpu[n])} | {cratio} | "
                             f"{'—' if fl is None else f'{fl:.6f}'} | "
                             f"{fmt_kib(m.get('rss_delta_kib'))} | "
                             f"{'n/a' if n == 'torch' else fmt_kib(None if tm is None else tm // 1024)} |")
            else:
                lines.append(f"| {n} | — | — | — | — | — | — | — | — ({res['skipped'][n]}) |")
        lines.append("")
    lines += targets(results)
    lines += NOTES
    return "\n".join(lines) + "\n"


NOTES = [
    "## Notes", "",
    "- `numpy` is the MLP hand-written with care: parameters and gradients in flat buffers, GEMMs "
    "writing the weight gradients in place, Adam as a dozen whole-buffer ufunc calls. It is the "
    "target's peer (the practical limit). `numpy-plain` is the same network written the usual way "
    "(an array per parameter, Adam looping over them), for reference.",
    "- Every engine trains from the same initial weights on the same batches, and all engines run "
    "the same number of steps per repetition; the first-step losses show they compute the same "
    "function.",
    "- `archdsl-loop` is `Trainer.fit` (what `archdsl train` runs), each call a fresh run of whole "
    "epochs including its setup, so it is not at the same point of training as the others.",
    "- The allocator: `archdsl train` keeps freed memory in the heap for the next step "
    "(`archdsl/autodiff/allocator.py`, glibc `mallopt`); this process does the same before timing, "
    "so every engine here runs with it. Without it, a step of the CNN re-faulted its pages and ran at "
    "about half the speed once PyTorch had run in the same process.",
    "- A small network is bound by per-call overhead (Python, and NumPy's dispatch on arrays of a "
    "few thousand elements), not by arithmetic: the MLP's three GEMMs are a small part of a step.",
    "- PyTorch's RSS delta includes its one-time lazy initialisation (kernels, thread pool).",
    "",
]


TARGETS = [("mlp", "torch", 2.0), ("mlp", "numpy", 0.7), ("cnn", "torch", 1.0),
           ("mlp", "autograd", 1.0), ("cnn", "autograd", 1.0)]


def targets(results) -> list[str]:
    out = ["## Targets (ratios measured in this run)", "",
           "| workload | archdsl ÷ | target | by wall clock | by CPU time | met |",
           "|---|---|---:|---:|---:|---|"]
    for key, peer, goal in TARGETS:
        res = results.get(key, {})
        r, c = res.get("rates", {}), res.get("cpu_rates", {})
        if "archdsl" in r and peer in r:
            got, gotc = r["archdsl"] / r[peer], c["archdsl"] / c[peer]
            met = "yes" if got >= goal and gotc >= goal else "no" if got < goal and gotc < goal else "one clock"
            out.append(f"| {key} | {peer} | ≥ {goal:g}× | {got:.2f}× | {gotc:.2f}× | {met} |")
    out.append("")
    return out


def main():
    args = ARGS
    if args._mem:
        memory_child(*args._mem)
        return
    engines = args.engines or list(ALL_ENGINES)
    bad = [e for e in engines if e not in ALL_ENGINES]
    if bad:
        raise SystemExit(f"unknown engine(s) {bad}; choose from {ALL_ENGINES}")
    cmd = "python bench/bench_train.py" + "".join(f" {a}" for a in sys.argv[1:])
    load0 = os.getloadavg()[0]
    results, mem = {}, {}
    for key in args.workloads:
        w = Workload(key)
        run = [e for e in engines if available(e, key) is None]
        skipped = {e: available(e, key) for e in engines if e not in run}
        print(f"{w.title}: timing {', '.join(run)}" + (f" (skipped: {skipped})" if skipped else ""), flush=True)
        res = measure(w, run, args.reps, args.seconds)
        res.update(workload=w, engines=engines, skipped=skipped)
        results[key] = res
        fl = res["first_loss"]
        if "archdsl" in fl:
            for n, val in fl.items():
                if abs(val - fl["archdsl"]) > 1e-4:
                    print(f"  warning: {n}'s first-step loss {val:.6f} differs from archdsl's "
                          f"{fl['archdsl']:.6f}", file=sys.stderr)
        if not args.no_memory:
            for n in run:
                mem[(key, n)] = memory(key, n)
    text = report(results, mem, args, cmd, (load0, os.getloadavg()[0]))
    print(text)
    if not args.no_write:
        out = Path(args.out) if args.out else ROOT / "bench" / "train.md"
        out.write_text(text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
