"""Mid-size training benchmark: archdsl's NumPy engine against a PyTorch twin of each network,
where arithmetic, memory traffic and page faults decide (issue 21).

Workloads (float32, Adam(lr=1e-3), cross-entropy; random data made once from a fixed seed):
  * mlp      MLP 784-1024-1024-10 (ReLU), batch 256
  * encoder  encoder LM: Embedding(256, 256) + learned positions, 4 post-norm
             TransformerEncoderBlock(d 256, 4 heads, FFN 1024, ReLU, no dropout), Linear(256);
             T 128, batch 16; cross-entropy at every position
  * lstm     LSTM LM (specs/lstm_lm.arch): Embedding(256, 256) -> LSTM(512) -> Linear(256);
             T 64, batch 32
  * resnet   CIFAR ResNet-18: 3x3 stem conv (no max pool), the four BasicBlock stages
             (64, 128, 256, 512), global average pool, Linear(10); 3x32x32, batch 64;
             BatchNorm in training mode
Each network is written in the .arch language (below) and compiled; its twin is a plain torch
module loaded with archdsl's initial weights. Both engines read the same batches; before timing,
both run one step on the same batch from the same weights and their losses are compared.

A step = forward + loss (timed separately as "forward") + backward + Adam update + the loss read
back as a Python float: for archdsl what `archdsl train` runs per step (NumpyExecutor in training
mode, archdsl.train.losses, backward, archdsl.train.optim, zero_grad, inside the same
`training_run` surroundings as a training Run); for torch the usual loop.

Timing: for each thread count (BLAS threads for archdsl via threadpoolctl, torch.set_num_threads
for torch), warm-up steps, then --reps repetitions; in each repetition both engines run --steps
steps in turn, the order alternating, so machine load hits both alike (at several threads with a
pause before each block, so that neither starts while the other's idle threads still spin).
Reported: medians over
repetitions of ms per step by wall clock and by process CPU time, and archdsl ÷ torch (of
throughput: above 1 means archdsl is faster).

Memory and page faults, each engine alone in a fresh subprocess at the first thread count (so
neither hides in the other's peak, and torch runs with the process as it comes): the peak RSS
growth (VmHWM reset just before building the model, read after --mem-steps steps, minus the RSS
before building), and the minor/major page faults per steady-state step (getrusage, over the
steps after those).

    python bench/bench_midsize.py                            # writes bench/midsize.md
    python bench/bench_midsize.py --reps 7 --threads 1 2 --workloads resnet lstm
    python bench/bench_midsize.py --quick --no-write         # tiny sizes: a smoke run

Not a test: it asserts nothing beyond the loss cross-check.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import archdsl  # noqa: E402
from archdsl.autodiff import backward  # noqa: E402
from archdsl.backends.numpy.executor import NumpyExecutor  # noqa: E402
from archdsl.train.loop import build_optimizer  # noqa: E402
from archdsl.train.run import training_run  # noqa: E402
from archdsl.train.losses import cross_entropy  # noqa: E402
from benchlib import cpu_model, peak_rss_kib, reset_peak_rss  # noqa: E402

WORKLOADS = ("mlp", "encoder", "lstm", "resnet")
LR = 1e-3

SOURCE = '''
import "std/transformer.arch"

model MLP(inp: int = 784, hidden: int = 1024, classes: int = 10) {
  input image: f32[N, inp]
  output logits = image -> Linear(hidden) -> ReLU -> Linear(hidden) -> ReLU -> Linear(classes)
}

model EncoderLM(vocab: int = 256, ctx: int = 128, d: int = 256, layers: int = 4, heads: int = 4,
                ffn: int = 1024) {
  input tokens: i64[N, T]
  h = tokens -> Embedding(vocab, d) -> PositionalEmbedding(ctx, d)
  h = h -> repeat layers { TransformerEncoderBlock(d, heads, ffn, dropout=0.0) }
  output logits = h -> Linear(vocab)
}

model LstmLM(vocab: int = 256, embed: int = 256, hidden: int = 512) {
  input tokens: i64[N, T]
  output logits = tokens -> Embedding(vocab, embed) -> LSTM(hidden) -> Linear(vocab)
}

block Basic(out: int, stride: int = 1) {
  input x
  y = x -> Conv2d(out, 3, stride=stride, padding=1, bias=false) -> BatchNorm -> ReLU
        -> Conv2d(out, 3, padding=1, bias=false) -> BatchNorm
  skip = x if stride == 1 and channels(x) == out
         else x -> Conv2d(out, 1, stride=stride, bias=false) -> BatchNorm
  output (y + skip) -> ReLU
}

model ResNet18Cifar(width: int = 64, size: int = 32, classes: int = 10) {
  input image: f32[N, 3, size, size]
  x = image -> Conv2d(width, 3, padding=1, bias=false) -> BatchNorm -> ReLU
  x = x -> Basic(width) -> Basic(width) -> Basic(2 * width, stride=2) -> Basic(2 * width)
        -> Basic(4 * width, stride=2) -> Basic(4 * width) -> Basic(8 * width, stride=2)
        -> Basic(8 * width)
  output logits = x -> GlobalAvgPool -> Flatten -> Linear(classes)
}
'''

# name -> (model, title, overrides, batch, quick overrides, quick batch)
CONFIG = {
    "mlp": ("MLP", "MLP 784-1024-1024-10, batch 256", {}, 256,
            {"inp": 32, "hidden": 16}, 4),
    "encoder": ("EncoderLM", "encoder LM, d 256, 4 layers, T 128, batch 16", {}, 16,
                {"vocab": 16, "ctx": 8, "d": 16, "layers": 1, "heads": 2, "ffn": 32}, 2),
    "lstm": ("LstmLM", "LSTM LM, hidden 512, embedding 256, T 64, batch 32", {}, 32,
             {"vocab": 16, "embed": 8, "hidden": 8}, 2),
    "resnet": ("ResNet18Cifar", "CIFAR ResNet-18 (3×32×32), batch 64", {}, 64,
               {"width": 4, "size": 8}, 2),
}
SEQ = {"encoder": 128, "lstm": 64}
QUICK_SEQ = {"encoder": 8, "lstm": 6}


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2],
                   help="thread counts to measure at (default 1 2)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions (median; default 5)")
    p.add_argument("--steps", type=int, default=2, help="steps per engine per repetition (default 2)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per engine and thread count")
    p.add_argument("--mem-steps", type=int, default=6,
                   help="steps before the peak RSS is read; as many again count page faults")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repetition: a smoke run")
    p.add_argument("--no-torch", action="store_true", help="archdsl alone")
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--out", default=str(ROOT / "bench" / "midsize.md"), help="Markdown report")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--json", help="also write the raw numbers here")
    p.add_argument("--_mem", nargs=3, metavar=("WORKLOAD", "ENGINE", "THREADS"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.quick:
        a.reps, a.steps, a.warmup, a.mem_steps = 1, 1, 1, 1
    return a


def _optional_torch(want: bool):
    if not want:
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch


# -- workloads -------------------------------------------------------------------------------------

class Workload:
    """One network: the compiled model, its initial weights, and a few batches (inputs, targets)."""

    def __init__(self, key: str, quick: bool):
        name, self.title, over, batch, qover, qbatch = CONFIG[key]
        self.key, self.quick = key, quick
        self.over = qover if quick else over
        self.batch = qbatch if quick else batch
        self.model = archdsl.compile(SOURCE).model(name, **self.over)
        self.ir = self.model.ir
        self.weights = self.model.init_weights(seed=0)
        self.input = self.ir.inputs[0].name
        p = {**self.model_defaults(name), **self.over}
        self.p = p
        rng = np.random.default_rng(0)
        self.batches = []
        for _ in range(4):
            if key == "mlp":
                x = rng.random((self.batch, p["inp"]), dtype=np.float32)
                y = rng.integers(0, p["classes"], self.batch)
            elif key == "resnet":
                x = rng.standard_normal((self.batch, 3, p["size"], p["size"])).astype(np.float32)
                y = rng.integers(0, p["classes"], self.batch)
            else:
                t = (QUICK_SEQ if quick else SEQ)[key]
                x = rng.integers(0, p["vocab"], (self.batch, t))
                y = rng.integers(0, p["vocab"], (self.batch, t))
            self.batches.append((x, y))
        if quick:
            self.title = f"{self.title} (quick: {', '.join(f'{k} {v}' for k, v in self.over.items())}, batch {self.batch})"

    @staticmethod
    def model_defaults(name):
        return {"MLP": {"inp": 784, "hidden": 1024, "classes": 10},
                "EncoderLM": {"vocab": 256, "ctx": 128, "d": 256, "layers": 4, "heads": 4, "ffn": 1024},
                "LstmLM": {"vocab": 256, "embed": 256, "hidden": 512},
                "ResNet18Cifar": {"width": 64, "size": 32, "classes": 10}}[name]


# -- engines ---------------------------------------------------------------------------------------

class ArchdslEngine:
    """One training step as `archdsl train` runs it, inside Trainer.fit's surroundings."""

    def __init__(self, w: Workload):
        self.run = training_run(_Bare())          # allocator, tape, NumPy error state
        self.run.__enter__()
        self.ex = NumpyExecutor(w.ir, {k: v.copy() for k, v in w.weights.items()}, seed=0)
        self.opt = build_optimizer({"name": "Adam", "lr": LR}, self.ex.trainable())
        self.iname = w.input
        self.oname = w.ir.outputs[0].name

    def step(self, x, y):
        """(loss, seconds to the loss)"""
        t0 = time.perf_counter()
        loss = cross_entropy(self.ex.forward({self.iname: x}, training=True)[self.oname], y)
        t1 = time.perf_counter()
        lv = float(loss.data)
        backward(loss)
        self.opt.step()
        self.opt.zero_grad()
        return lv, t1 - t0

    def close(self):
        self.run.__exit__(None, None, None)


class _Bare:
    """What training_run reads from a run: no thread limit (the bench sets it), no stop asked."""
    threads = None
    stop_requested = False


class TorchEngine:
    def __init__(self, w: Workload, torch):
        import torch_models
        self.torch = torch
        self.net = torch_models.midsize(w.key, w.p, w.weights).train()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=LR)
        self.tb = {id(x): (torch.from_numpy(x), torch.from_numpy(y)) for x, y in w.batches}

    def step(self, x, y):
        tx, ty = self.tb[id(x)]
        t0 = time.perf_counter()
        out = self.net(tx)
        loss = self.torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), ty.reshape(-1))
        t1 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item(), t1 - t0

    def close(self):
        pass


def make(engine: str, w: Workload, torch):
    return ArchdslEngine(w) if engine == "archdsl" else TorchEngine(w, torch)


def set_threads(n: int, torch) -> None:
    from threadpoolctl import threadpool_limits
    threadpool_limits(n, user_api="blas")
    if torch is not None:
        torch.set_num_threads(n)


# -- timing ----------------------------------------------------------------------------------------

def _faults():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_minflt, r.ru_majflt


# Seconds between one engine's block and the next at several threads: an idle OpenBLAS thread
# spins for about 2^28 cycles (~0.1 s) after its last GEMM, and torch's OpenMP threads for a
# while too; without a pause the next engine's first steps share the cores with them (a torch MLP
# step measured 52 ms or 102 ms in consecutive runs, depending on which engine ran before it).
SETTLE = 0.3
MIN_BLOCK = 0.25


def time_workload(w: Workload, engines: dict, args, torch) -> dict:
    """Per thread count and engine: medians of wall/CPU/forward ms per step and faults per step."""
    out = {}
    names = list(engines)
    k = 0
    nb = len(w.batches)
    for th in args.threads:
        set_threads(th, torch)
        slowest = 0.0
        for n in names:
            for i in range(args.warmup):
                t0 = time.perf_counter()
                engines[n].step(*w.batches[i % nb])
                last = time.perf_counter() - t0
            if args.warmup:
                slowest = max(slowest, last)
        # blocks of at least MIN_BLOCK seconds: a block of two 20 ms steps is at the mercy of
        # a single wake-up or preemption (the MLP at 2 threads ranged 19.8-29.3 ms a step so)
        steps = args.steps if args.quick or not slowest else max(args.steps, math.ceil(MIN_BLOCK / slowest))
        rows = {n: {"wall": [], "cpu": [], "fwd": [], "minflt": [], "majflt": []} for n in names}
        for r in range(args.reps):
            for n in (names if r % 2 == 0 else names[::-1]):
                e = engines[n]
                if th > 1:
                    time.sleep(SETTLE)      # the other engine's helper threads stop spinning
                f0 = _faults()
                c0, t0 = time.process_time(), time.perf_counter()
                fwd = 0.0
                for i in range(steps):
                    fwd += e.step(*w.batches[(k + i) % nb])[1]
                t1, c1 = time.perf_counter(), time.process_time()
                f1 = _faults()
                s = steps
                rows[n]["wall"].append(1e3 * (t1 - t0) / s)
                rows[n]["cpu"].append(1e3 * (c1 - c0) / s)
                rows[n]["fwd"].append(1e3 * fwd / s)
                rows[n]["minflt"].append((f1[0] - f0[0]) / s)
                rows[n]["majflt"].append((f1[1] - f0[1]) / s)
            k += steps
        out[th] = {n: {m: statistics.median(v) for m, v in d.items()} | {"wall_all": d["wall"]}
                   for n, d in rows.items()}
        out[th]["steps"] = steps
        out[th]["load"] = os.getloadavg()[0]
        print(f"  {th} thread(s): " + ", ".join(f"{n} {out[th][n]['wall']:,.1f} ms/step" for n in names)
              + f" (load {out[th]['load']:.2f})", flush=True)
    return out


# -- memory (subprocess) ---------------------------------------------------------------------------

def memory_child(key: str, engine: str, threads: int, args) -> None:
    torch = _optional_torch(engine == "torch")
    if engine == "archdsl":
        # the compiled kernels' libraries (numba, LLVM: ~120 MiB once per process) are loaded
        # before the baseline, as torch's import is: the figure is what training adds
        from archdsl.autodiff import jit
        jit.preload()
    w = Workload(key, args.quick)
    set_threads(threads, torch)
    nb = len(w.batches)
    rss0 = reset_peak_rss()
    e = make(engine, w, torch)
    n = max(1, args.mem_steps)
    for i in range(n):
        e.step(*w.batches[i % nb])
    peak = peak_rss_kib()
    per_step = []
    for i in range(n, 2 * n):
        f0 = _faults()
        e.step(*w.batches[i % nb])
        f1 = _faults()
        per_step.append((f1[0] - f0[0], f1[1] - f0[1]))
    # the median step is the steady one; the mean also counts a one-off (a heap extended once)
    print(json.dumps({"rss_growth_kib": peak - rss0,
                      "minflt": statistics.median(f[0] for f in per_step),
                      "majflt": statistics.median(f[1] for f in per_step),
                      "minflt_mean": sum(f[0] for f in per_step) / n, "minflt_max": max(f[0] for f in per_step)}))


def memory(key: str, engine: str, threads: int, args) -> dict | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_mem", key, engine, str(threads),
           "--mem-steps", str(args.mem_steps)] + (["--quick"] if args.quick else [])
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as e:
        err = getattr(e, "stderr", "") or ""
        print(f"memory {key}/{engine}: {e}\n{err[-2000:]}", file=sys.stderr)
        return None


# -- report ----------------------------------------------------------------------------------------

def versions(torch) -> str:
    import onnxruntime
    from threadpoolctl import threadpool_info
    parts = [f"Python {platform.python_version()}", f"NumPy {np.__version__}",
             f"onnxruntime {onnxruntime.__version__}", f"archdsl {archdsl.__version__}"]
    if torch is not None:
        parts.append(f"torch {torch.__version__}")
    from archdsl.autodiff import jit
    if jit.kernels() is not None:
        import numba
        parts.append(f"numba {numba.__version__} (compiled kernels on)")
    else:
        parts.append("compiled kernels off (NumPy passes)")
    blas = [f"{i.get('internal_api')} {i.get('version')}" for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(parts) + f"; NumPy's BLAS: {'; '.join(blas) or '?'}"


def _mib(kib):
    return "—" if kib is None else f"{kib / 1024:,.0f} MiB"


def _faults_cell(m):
    if not m:
        return "—"
    maj = f" (+{m['majflt']:,.0f} major)" if m.get("majflt") else ""
    mean = m.get("minflt_mean", m["minflt"])
    once = (f" (mean {mean:,.0f}: one step {m['minflt_max']:,.0f})"
            if mean >= FAULTS_OK > m["minflt"] else "")
    return f"{m['minflt']:,.0f}{maj}{once}"


def report(results: dict, mem: dict, args, cmd: str, load: tuple, torch) -> str:
    L = ["# Mid-size training: archdsl's NumPy engine vs PyTorch", "",
         "Written by `bench/bench_midsize.py` (not a test; rerun it to refresh this file).", "",
         f"- Command: `{cmd}`",
         f"- Machine: {platform.system()} {platform.machine()}, {cpu_model()}, {os.cpu_count()} logical CPUs; "
         f"load average {load[0]:.2f} before, {load[1]:.2f} after the run (per thread count below)",
         f"- Versions: {versions(torch)}",
         f"- Timing: per workload and thread count, {args.warmup} warm-up steps, then {args.reps} "
         f"repetitions of a block of steps per engine (at least {args.steps} and at least {MIN_BLOCK} s "
         "by the warm-up's pace: Details gives the count), the order alternating; medians. "
         "ms/step by wall clock (CPU: process CPU time, all threads); forward = up to the loss",
         f"- Memory: each engine alone in a fresh subprocess at {args.threads[0]} thread(s): peak RSS "
         f"growth = VmHWM (reset before building the model) after {args.mem_steps} steps minus the RSS "
         f"before building, with each engine's libraries loaded before that (torch imported; numba, "
         f"LLVM and a compiled kernel loaded, about 120 MiB once per process, against torch's import "
         f"at about 190 MiB); page faults = getrusage minor (major) faults of the median step of the next "
         f"{args.mem_steps} (the steady step; where the mean is far above it, one step's one-off is named)", ""]
    L += ["## Summary", "",
          "| workload | threads | archdsl ms/step | torch ms/step | archdsl ÷ torch | by CPU time | "
          "peak RSS growth archdsl / torch | page faults per step archdsl / torch | load |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, res in results.items():
        w = res["workload"]
        ma, mt = mem.get((key, "archdsl")), mem.get((key, "torch"))
        for th, r in res["timing"].items():
            a, t = r.get("archdsl"), r.get("torch")
            ratio = f"**{t['wall'] / a['wall']:.2f}×**" if a and t else "—"
            cratio = f"{t['cpu'] / a['cpu']:.2f}×" if a and t else "—"
            L.append(f"| {w.title} | {th} | {a['wall']:,.1f} | {t['wall'] if t else float('nan'):,.1f} | "
                     f"{ratio} | {cratio} | "
                     f"{_mib(ma and ma['rss_growth_kib'])} / {_mib(mt and mt['rss_growth_kib'])} | "
                     f"{_faults_cell(ma)} / {_faults_cell(mt)} | {r['load']:.2f} |")
    L.append("")
    L += ["## Details", "",
          "| workload | threads | engine | ms/step (wall) | min–max | forward ms | ms/step (CPU) | "
          "page faults per step (this process) | first-step loss | steps per block |",
          "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, res in results.items():
        w = res["workload"]
        for th, r in res["timing"].items():
            for n in res["engines"]:
                e = r[n]
                L.append(f"| {w.title} | {th} | {n} | {e['wall']:,.1f} | {min(e['wall_all']):,.1f}–"
                         f"{max(e['wall_all']):,.1f} | {e['fwd']:,.1f} | {e['cpu']:,.1f} | "
                         f"{e['minflt']:,.0f} | {res['first_loss'][n]:.6f} | {r.get('steps', '—')} |")
    L.append("")
    L += targets(results, mem)
    L += NOTES
    return "\n".join(L) + "\n"


# a steady-state step counts as fault-free below this many minor faults: what Python's own
# small-object arenas (mapped and unmapped by pymalloc, not by the engine) cost a step
FAULTS_OK = 100


def targets(results: dict, mem: dict) -> list[str]:
    """Issue 21's targets, from this run's figures."""
    out = ["## Targets (issue 21; ratios from this run)", "",
           "| workload | archdsl ÷ torch ≥ 0.9× | peak RSS growth ≤ torch's | page faults per steady step "
           f"≈ 0 (< {FAULTS_OK}) |", "|---|---|---|---|"]
    for key, res in results.items():
        r = res["timing"]
        cells = []
        ok = all("torch" in r[th] for th in r)
        if ok:
            rat = {th: r[th]["torch"]["wall"] / r[th]["archdsl"]["wall"] for th in r}
            cells.append(("met" if all(v >= 0.9 for v in rat.values()) else "not met") + " ("
                         + ", ".join(f"{v:.2f}× at {th}" for th, v in rat.items()) + ")")
        else:
            cells.append("—")
        ma, mt = mem.get((key, "archdsl")), mem.get((key, "torch"))
        if ma and mt:
            cells.append(f"{'met' if ma['rss_growth_kib'] <= mt['rss_growth_kib'] else 'not met'} "
                         f"({_mib(ma['rss_growth_kib'])} vs {_mib(mt['rss_growth_kib'])})")
        else:
            cells.append("—")
        cells.append(f"{'met' if ma and ma['minflt'] < FAULTS_OK else 'not met' if ma else '—'}"
                     + (f" ({ma['minflt']:,.0f})" if ma else ""))
        out.append(f"| {res['workload'].title} | " + " | ".join(cells) + " |")
    out.append("")
    return out


NOTES = [
    "## How the engine gets there (issue 21)", "",
    "- **Memory reused, not re-faulted.** During a training run (`training_run`, what Trainer.fit "
    "and this bench use) glibc gives no array a mapping of its own and never trims the heap "
    "(`archdsl/autodiff/allocator.py`): every step finds the previous step's memory in malloc's free "
    "lists, whatever the step's size; at the end of the run the memory is returned, and mappings "
    "and trimming come back at the thresholds glibc's dynamic rule settles at (32 and 64 MiB). ONNX Runtime's scratch comes from one shared arena, so it does not fragment the heap.",
    "- **Peak memory.** The backward drops each tape entry once processed (its saved arrays and its "
    "output go with it); the executor releases a value's array after its last consumer when no "
    "backward closure holds it (a BatchNorm output once the ReLU after it has run); BatchNorm "
    "recomputes x - mean in its backward instead of keeping it; large convolutions keep no im2col "
    "matrix.",
    "- **Convolutions** (`archdsl/autodiff/convkernels.py`): large float32 2-D convolutions run on "
    "ONNX Runtime's MLAS kernels through one cached single-node session per shape: the NCHWc direct "
    "convolution for the forward and the stride-1 input gradient, ConvTranspose for strided input "
    "gradients. The weight gradient is NumPy GEMMs a few images at a time: for 3x3 kernels of stride "
    "1, Winograd F(3x3, 2x2), compiled transforms and 16 GEMMs instead of 36 multiplies per 2x2 tile "
    "(ResNet-18's, one thread: 1.3-1.4x the shifted GEMMs, [bench/kernels.md](kernels.md)); for other "
    "stride-1 kernels, one GEMM per "
    "kernel tap on a shifted slice of the padded image (no im2col); for strided 1x1 kernels one GEMM "
    "on the subsampled image; for a 3-channel stem an im2col matrix built by whole-row copies (17 -> "
    "7 ms); otherwise im2col + GEMM; with n threads the images are split between n workers with a "
    "one-thread BLAS each, at least one block of images per thread. Maps of fewer than 64 positions "
    "(the 4x4 stage) take im2col + GEMM for the forward and input gradient too, split by images "
    "between the workers at two threads. Small convolutions (the digits CNN) stay on the NumPy "
    "kernels.",
    "- **Compiled kernels** (`archdsl/autodiff/jit.py` and `jitkernels.py`; numba, the `fast` extra): "
    "batch norm's statistics, output and gradient, layer norm forward and backward, ReLU forward and "
    "backward, and the Adam/AdamW update each run as one compiled pass over memory (two for batch "
    "norm's centred sums, which read blocks of channels image by image so that short rows far apart "
    "still stream: ResNet-18's backward sums 51 -> 34 ms a step) instead of "
    "one NumPy pass per arithmetic operation. A launch that moves 4M floats or more is split between "
    "the calling thread and one of the engine's worker threads, which sleep between launches (numba's "
    "OpenMP layer spun ~4 ms of CPU after every launch and shared its pool with PyTorch's). ReLU and "
    "Adam give the NumPy path's results bit for bit, the norms within rounding (float64 sums). "
    "Without numba, or with ARCHDSL_JIT=numpy, the NumPy passes run.",
    "- **Optimizer** (`archdsl/train/optim.py`): the update runs over all parameters at once in one "
    "flat buffer: one compiled pass, or without numba NumPy's formula in chunks of 32K elements that "
    "stay in L2 cache through Adam's ten-odd passes (ResNet-18's 11M parameters: 45 -> 30 ms a step, "
    "the same results bit for bit).",
    "- **LSTM** (`archdsl/autodiff/recurrent.py`): the recurrence runs transposed ([4H, K] x [K, N] "
    "per step, each gate a contiguous block of rows). At one BLAS thread each step's product runs "
    "on MLAS (`archdsl/autodiff/ortkernels.py`): on these tall thin products it is 1.2-1.4x as fast "
    "as OpenBLAS ([bench/kernels.md](kernels.md)), so the input is folded into the step's product "
    "instead of projected in a separate GEMM. Both weight gradients come from one GEMM, and the "
    "remaining transposes are copied in blocks (a [2048, 512] transpose: 7 ms by NumPy, 1 ms in "
    "blocks).",
    "- **Two threads: work split by rows, OpenBLAS spinning briefly.** With n BLAS threads a "
    "recurrent layer (LSTM, GRU, RNN) runs its batch in n parts, each on a worker with a one-thread "
    "BLAS (so each part's steps run on MLAS), forward and backward; the rows are independent, so the "
    "parts never meet inside the sequence, and their weight gradients are summed. The attention core "
    "(scores, softmax, weighted values and their gradients) is split the same way. Neither paid "
    "before, because of OpenBLAS: after every threaded call its idle threads spin 2^28 TSC cycles "
    "(0.1 s) before they sleep, and that spinning thread took a core from the parts (LSTM backward "
    "parts 62-118 ms in place against 62 ms alone). A training run now sets OPENBLAS_THREAD_TIMEOUT "
    "to 18 (0.1 ms) and restarts OpenBLAS's threads (`ortkernels.brief_blas_spin`; the default "
    "comes back when the run ends), which alone took the LSTM LM's 2-thread step from 158 to 121 "
    "ms and the encoder's from 240 to 226, with the MLP and the ResNet unchanged.",
    "- What is left at one thread is GEMM speed, OpenBLAS against MKL (85-140 against 105-160 GFLOP/s "
    "on this workload's shapes, [bench/kernels.md](kernels.md): the encoder is 70% GEMMs), and the "
    "elementwise work that still takes one NumPy pass per operation (residual additions, the "
    "LSTM's gates: their exp and tanh stay on NumPy's vectorised kernels, which numba's scalar "
    "libm calls would not match). At two threads the GEMMs split well on OpenBLAS's own threads; "
    "the elementwise work between them stays on one core where torch runs it on both. GEMMs split "
    "by rows between our own workers can at best match OpenBLAS's two threads (each half a "
    "one-thread GEMM, plus the hand-off), and an LSTM's steps split by hidden units need a meeting "
    "per step (62 ms against 56 on one thread), so neither is done. The ResNet's convolutions are "
    "compute-bound on both engines: MLAS's direct convolution for the forward and input "
    "gradients (142-193 GFLOP/s at one thread; 1.8x at two), Winograd for the 3x3 weight gradients "
    "(0.91-1.03x oneDNN's); at two threads torch scales 1.85-1.95x and archdsl 1.6x, the rest being "
    "elementwise passes that move more memory than they compute.",
    "- torch runs with the allocator as it comes (a separate process for the memory figures); in "
    "the timing process it shares archdsl's allocator settings.",
    "",
]


def main():
    args = _args()
    if args._mem:
        key, engine, th = args._mem
        memory_child(key, engine, int(th), args)
        return
    torch = _optional_torch(not args.no_torch)
    if torch is None and not args.no_torch:
        print("torch is not installed: archdsl alone (pip install torch==2.13.0 for the ratios)")
    engines_wanted = ["archdsl"] + (["torch"] if torch is not None else [])
    cmd = "python bench/bench_midsize.py" + "".join(f" {a}" for a in sys.argv[1:])
    load0 = os.getloadavg()[0]
    print(f"load average {load0:.2f} at the start", flush=True)
    results, mem = {}, {}
    for key in args.workloads:
        w = Workload(key, args.quick)
        print(f"{w.title}:", flush=True)
        set_threads(args.threads[0], torch)
        engines = {n: make(n, w, torch) for n in engines_wanted}
        first = {n: e.step(*w.batches[0])[0] for n, e in engines.items()}
        if "torch" in first and abs(first["torch"] - first["archdsl"]) > 1e-4 * max(1.0, abs(first["torch"])):
            raise SystemExit(f"{key}: first-step losses differ: {first}")
        print("  first-step loss: " + ", ".join(f"{n} {v:.6f}" for n, v in first.items()), flush=True)
        timing = time_workload(w, engines, args, torch)
        for e in engines.values():
            e.close()
        del engines
        results[key] = {"workload": w, "engines": engines_wanted, "first_loss": first, "timing": timing}
        if not args.no_memory:
            for n in engines_wanted:
                mem[(key, n)] = memory(key, n, args.threads[0], args)
                print(f"  memory {n}: {mem[(key, n)]}", flush=True)
    text = report(results, mem, args, cmd, (load0, os.getloadavg()[0]), torch)
    print(text)
    if not args.no_write:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    if args.json:
        raw = {k: {"first_loss": r["first_loss"], "timing": {str(t): v for t, v in r["timing"].items()},
                   "memory": {n: mem.get((k, n)) for n in r["engines"]}} for k, r in results.items()}
        Path(args.json).write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    main()
