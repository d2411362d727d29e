"""Transformer benchmark: training throughput of archdsl's NumPy engine on the small GPT, and
ONNX Runtime inference latency of the exported model at opset 17 vs the newest opset, with
PyTorch (CPU) measured in the same run as the reference.

Workload: specs/gpt.arch GPTSmall (vocab 64, context 64, d 64, 4 heads, FFN 256, 2 pre-norm
layers with causal self-attention and the tanh GELU, output tied to the token embedding,
108,288 parameters), sequences of 64 tokens, batch 32 (2,048 tokens per step), float32.

Training (tokens/s; one step = forward in training mode + mean cross-entropy over every position
+ backward + Adam(lr=1e-3) update + reading the loss as a Python float):
  * archdsl  what `archdsl train` runs per step: the compiled spec's IR on NumpyExecutor, the
             loss from archdsl.train.losses, backward, Adam from archdsl.train.optim, zero_grad;
  * torch    the same network as a torch.nn.Module (nanoGPT style: one packed QKV Linear,
             F.scaled_dot_product_attention(is_causal=True), nn.GELU("tanh"), tied lm_head),
             loaded with the same initial weights, F.cross_entropy, torch.optim.Adam.
  Both start from the same weights and read the same batches; their first losses are compared
  before timing. Timing: warm-up steps, then --reps repetitions; in each, every engine runs a
  block of steps in turn (the order alternates), so load from elsewhere hits both alike.
  Reported: medians over repetitions of tokens/s by wall clock and by process CPU time (CPU
  time is steadier on a shared machine: it does not count time spent waiting for a core), the
  minor page faults per step, and archdsl / torch.

  Each allocator setting runs in its own subprocess (mallopt is process-wide):
    default  glibc's malloc as it comes: arrays over the mmap threshold come from mmap, and
             freed memory at the top of the heap is given back, so every step touches fresh
             pages and pays a page fault per 4 KiB (expensive in VMs);
    tuned    what `archdsl train` does (archdsl/autodiff/allocator.py: glibc mallopt of the
             mmap threshold, trim threshold and top pad) before anything is imported: freed
             memory stays in the heap and the next step reuses it without faults. Applies to
             both engines (same process).

Inference (ONNX Runtime CPU, median latency of --runs runs, sessions timed round-robin):
GPTSmall exported by archdsl at opset 17 (attention as MatMul/Softmax) and at the newest opset
the installed onnxruntime runs (native `Attention`, opset >= 23), batch 1 and 32 of 64 tokens,
ORT_ENABLE_ALL, --threads intra-op threads; torch eager inference (no_grad, eval) and the NumPy
engine's inference on the same inputs, as ratios; the largest logit difference to the NumPy
engine.

    python bench/bench_transformer.py                    # writes bench/transformer.md (~5 min)
    python bench/bench_transformer.py --reps 5 --no-write
    python bench/bench_transformer.py --allocators default --no-onnx

Not a test: it asserts nothing beyond the loss cross-check.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from benchlib import machine     # (python puts the bench folder on sys.path)

ROOT = Path(__file__).resolve().parent.parent
BATCH, SEQ = 32, 64
TOKENS = BATCH * SEQ


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1, help="BLAS / torch / ORT threads (default 1)")
    p.add_argument("--reps", type=int, default=9, help="timed repetitions (median; default 9)")
    p.add_argument("--steps", type=int, default=8, help="steps per engine per repetition (default 8)")
    p.add_argument("--allocators", nargs="+", default=["default", "tuned"], choices=["default", "tuned"])
    p.add_argument("--runs", type=int, default=50, help="timed ORT runs per file and batch (default 50)")
    p.add_argument("--no-torch", dest="torch", action="store_false", help="archdsl figures only")
    p.add_argument("--no-train", dest="train", action="store_false", help="skip the training benchmark")
    p.add_argument("--no-onnx", dest="onnx", action="store_false", help="skip the inference benchmark")
    p.add_argument("--out", default=str(ROOT / "bench" / "transformer.md"), help="Markdown report")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--json", help="also write the raw numbers here")
    p.add_argument("--_train", metavar="ALLOCATOR", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def tune_malloc() -> bool:
    """What `archdsl train` does: keep freed memory in the heap (glibc only)."""
    sys.path.insert(0, str(ROOT))
    from archdsl.autodiff.allocator import keep_freed_memory
    return keep_freed_memory()


def _limit_threads(n: int) -> None:
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = str(n)


# =================================================================================================
# The models
# =================================================================================================

def archdsl_model():
    import archdsl
    return archdsl.compile(ROOT / "specs" / "gpt.arch").model("GPTSmall")


def torch_gpt(weights: dict, layers: int = 2, d: int = 64, heads: int = 4, ffn: int = 256, vocab: int = 64,
              ctx: int = 64):
    """GPTSmall as a torch module, with archdsl's weights (name by name)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(d)
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.ln2 = nn.LayerNorm(d)
            self.fc1 = nn.Linear(d, ffn)
            self.fc2 = nn.Linear(ffn, d)
            self.act = nn.GELU(approximate="tanh")

        def forward(self, x):
            n, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
            q, k, v = (z.view(n, t, heads, d // heads).transpose(1, 2) for z in (q, k, v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(a.transpose(1, 2).reshape(n, t, d))
            return x + self.fc2(self.act(self.fc1(self.ln2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(vocab, d)
            self.wpe = nn.Embedding(ctx, d)
            self.blocks = nn.ModuleList([Block() for _ in range(layers)])
            self.ln_f = nn.LayerNorm(d)

        def forward(self, tokens):
            t = tokens.shape[1]
            h = self.wte(tokens) + self.wpe.weight[:t]
            for b in self.blocks:
                h = b(h)
            return self.ln_f(h) @ self.wte.weight.T

    m = GPT()
    T = lambda a: torch.from_numpy(a.copy())  # noqa: E731
    with torch.no_grad():
        m.wte.weight.copy_(T(weights["wte.weight"]))
        m.wpe.weight.copy_(T(weights["wpe.weight"]))
        m.ln_f.weight.copy_(T(weights["ln_f.weight"]))
        m.ln_f.bias.copy_(T(weights["ln_f.bias"]))
        for i, b in enumerate(m.blocks):
            p = f"repeat_1.{i}.gptblock_1."
            a = p + "multiheadattention_1."
            b.ln1.weight.copy_(T(weights[p + "layernorm_1.weight"]))
            b.ln1.bias.copy_(T(weights[p + "layernorm_1.bias"]))
            b.ln2.weight.copy_(T(weights[p + "layernorm_2.weight"]))
            b.ln2.bias.copy_(T(weights[p + "layernorm_2.bias"]))
            b.qkv.weight.copy_(torch.cat([T(weights[a + f"{c}_weight"]) for c in "qkv"]))
            b.qkv.bias.copy_(torch.cat([T(weights[a + f"{c}_bias"]) for c in "qkv"]))
            b.proj.weight.copy_(T(weights[a + "out_weight"]))
            b.proj.bias.copy_(T(weights[a + "out_bias"]))
            for j, lin in ((1, b.fc1), (2, b.fc2)):
                lin.weight.copy_(T(weights[p + f"feedforward_1.linear_{j}.weight"]))
                lin.bias.copy_(T(weights[p + f"feedforward_1.linear_{j}.bias"]))
    return m


# =================================================================================================
# Training throughput (runs in a subprocess per allocator setting)
# =================================================================================================

def _train_child(allocator: str, args) -> dict:
    tuned = tune_malloc() if allocator == "tuned" else False
    _limit_threads(args.threads)
    import resource
    import statistics
    import time

    import numpy as np
    from threadpoolctl import threadpool_limits

    from archdsl.autodiff import backward
    from archdsl.backends.numpy.executor import NumpyExecutor
    from archdsl.train.loop import build_optimizer
    from archdsl.train.losses import cross_entropy

    threadpool_limits(args.threads)
    model = archdsl_model()
    ir = model.ir
    weights = model.init_weights(0)
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 64, (BATCH, SEQ)), rng.integers(0, 64, (BATCH, SEQ))) for _ in range(8)]

    ex = NumpyExecutor(ir, {k: v.copy() for k, v in weights.items()}, seed=0)
    opt = build_optimizer({"name": "Adam", "lr": 1e-3}, ex.trainable())

    def a_step(i):
        x, y = batches[i % len(batches)]
        out = ex.forward({"tokens": x}, training=True)["logits"]
        loss = cross_entropy(out, y)
        backward(loss)
        opt.step()
        opt.zero_grad()
        return float(loss.data)

    engines = {"archdsl": a_step}
    if args.torch:
        import torch
        import torch.nn.functional as F
        torch.set_num_threads(args.threads)
        tm = torch_gpt(weights).train()
        topt = torch.optim.Adam(tm.parameters(), lr=1e-3)
        tb = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]

        def t_step(i):
            x, y = tb[i % len(tb)]
            logits = tm(x)
            loss = F.cross_entropy(logits.reshape(-1, 64), y.reshape(-1))
            topt.zero_grad(set_to_none=True)
            loss.backward()
            topt.step()
            return loss.item()
        engines["torch"] = t_step

    check = {k: [f(i) for i in range(2)] for k, f in engines.items()}   # also the warm-up
    if "torch" in check:
        for a, b in zip(check["archdsl"], check["torch"]):
            if abs(a - b) > 1e-4 * max(1.0, abs(b)):
                raise SystemExit(f"loss mismatch: archdsl {check['archdsl']} vs torch {check['torch']}")
    for f in engines.values():
        for i in range(2, 4):
            f(i)

    wall = {k: [] for k in engines}
    cpu = {k: [] for k in engines}
    faults = {k: [] for k in engines}
    names = list(engines)
    for r in range(args.reps):
        for k in (names if r % 2 == 0 else names[::-1]):
            f = engines[k]
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            c0, w0 = time.process_time(), time.perf_counter()
            for i in range(args.steps):
                f(i)
            w1, c1 = time.perf_counter(), time.process_time()
            f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            wall[k].append(TOKENS * args.steps / (w1 - w0))
            cpu[k].append(TOKENS * args.steps / (c1 - c0))
            faults[k].append((f1 - f0) / args.steps)
    med = statistics.median
    return {"allocator": allocator, "tuned": tuned, "first_losses": check,
            "engines": {k: {"tokens_per_s_wall": med(wall[k]), "tokens_per_s_cpu": med(cpu[k]),
                            "faults_per_step": med(faults[k]), "wall_all": wall[k], "cpu_all": cpu[k]}
                        for k in engines}}


def train_bench(args) -> list[dict]:
    out = []
    for alloc in args.allocators:
        cmd = [sys.executable, __file__, "--_train", alloc, "--threads", str(args.threads), "--reps", str(args.reps),
               "--steps", str(args.steps)] + ([] if args.torch else ["--no-torch"])
        print(f"training benchmark, allocator {alloc} ...", flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if r.returncode != 0:
            raise SystemExit(f"training benchmark ({alloc}) failed:\n{r.stderr}")
        out.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return out


# =================================================================================================
# Inference latency
# =================================================================================================

def onnx_bench(args, tmp: Path) -> dict:
    import statistics
    import time

    import numpy as np
    import onnx
    import onnxruntime as ort
    from threadpoolctl import threadpool_limits

    from archdsl.backends.onnx.export import max_opset

    threadpool_limits(args.threads)
    model = archdsl_model()
    weights = model.init_weights(0)
    newest = max_opset()
    paths = {}
    for opset in (17, newest):
        p = tmp / f"gpt_small_opset{opset}.onnx"
        model.to_onnx(p, opset=opset, weights=weights)
        paths[opset] = p
    ops = {o: sorted({n.op_type for n in onnx.load(str(p)).graph.node}) for o, p in paths.items()}

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    sessions = {f"ort-opset{o}": ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
                for o, p in paths.items()}
    ex = model.executor(weights)
    fns = {k: (lambda s: (lambda x: s.run(["logits"], {"tokens": x})[0]))(s) for k, s in sessions.items()}
    fns["numpy"] = lambda x: ex.run({"tokens": x})["logits"]
    if args.torch:
        import torch
        torch.set_num_threads(args.threads)
        tm = torch_gpt(weights).eval()

        def t_run(x):
            with torch.inference_mode():
                return tm(torch.from_numpy(x)).numpy()
        fns["torch"] = t_run

    rng = np.random.default_rng(1)
    rows = []
    for batch in (1, BATCH):
        x = rng.integers(0, 64, (batch, SEQ))
        ref = fns["numpy"](x)
        diffs = {k: float(np.abs(f(x) - ref).max()) for k, f in fns.items() if k != "numpy"}
        for f in fns.values():
            for _ in range(5):
                f(x)
        times = {k: [] for k in fns}
        cpu = {k: [] for k in fns}
        for _ in range(args.runs):
            for k, f in fns.items():
                c, t = time.process_time(), time.perf_counter()
                f(x)
                times[k].append(time.perf_counter() - t)
                cpu[k].append(time.process_time() - c)
        rows.append({"batch": batch, "ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
                     "cpu_ms": {k: 1e3 * statistics.median(v) for k, v in cpu.items()},
                     "max_abs_diff": diffs})
    return {"newest_opset": newest, "ops": {str(k): v for k, v in ops.items()}, "rows": rows}


# =================================================================================================
# Report
# =================================================================================================


def versions() -> str:
    import platform

    import numpy as np
    import onnxruntime as ort

    import archdsl
    v = {"python": platform.python_version(), "numpy": np.__version__, "onnxruntime": ort.__version__,
         "archdsl": archdsl.__version__}
    try:
        import torch
        v["torch"] = torch.__version__
    except ImportError:
        pass
    return ", ".join(f"{k} {x}" for k, x in v.items())


def report(train: list[dict], inf: dict | None, args, mach: str) -> str:
    L = [f"Machine: {mach}; {versions()}; {args.threads} thread(s) for BLAS, torch and ONNX Runtime.", ""]
    if train:
        L += [f"### Training throughput, GPTSmall, batch {BATCH} x {SEQ} tokens (median of {args.reps} "
              f"repetitions of {args.steps} steps)", "",
              "| allocator | engine | tokens/s (wall) | tokens/s (CPU time) | page faults / step "
              "| archdsl / torch (wall) | archdsl / torch (CPU) |",
              "|---|---|---|---|---|---|---|"]
        for r in train:
            e = r["engines"]
            for k, v in e.items():
                ratio_w = ratio_c = "-"
                if k == "archdsl" and "torch" in e:
                    ratio_w = f"**{v['tokens_per_s_wall'] / e['torch']['tokens_per_s_wall']:.2f}x**"
                    ratio_c = f"**{v['tokens_per_s_cpu'] / e['torch']['tokens_per_s_cpu']:.2f}x**"
                L.append(f"| {r['allocator']} | {k} | {v['tokens_per_s_wall']:,.0f} | {v['tokens_per_s_cpu']:,.0f} "
                         f"| {v['faults_per_step']:,.0f} | {ratio_w} | {ratio_c} |")
        fl = train[0]["first_losses"]
        L += ["", "First two losses (same weights, same batches): "
              + "; ".join(f"{k} {', '.join(f'{x:.6f}' for x in v)}" for k, v in fl.items()), ""]
    if inf:
        n = inf["newest_opset"]
        L += [f"### Inference latency, GPTSmall, {SEQ} tokens (median of {args.runs} runs; ms wall / ms CPU time)", "",
              f"| batch | ORT opset 17 (MatMul/Softmax) | ORT opset {n} (native Attention) | opset 17 / opset {n} "
              "| torch eager | NumPy engine | ORT opset 17 / torch | ORT opset {0} / torch | NumPy / torch |".format(n),
              "|---|---|---|---|---|---|---|---|---|"]
        for r in inf["rows"]:
            ms, cp = r["ms"], r["cpu_ms"]
            k17, kn = "ort-opset17", f"ort-opset{n}"

            def cell(k):
                return f"{ms[k]:.3f} / {cp[k]:.3f}" if k in ms else "-"

            def ratio(k):
                if "torch" not in ms:
                    return "-"
                return f"{ms[k] / ms['torch']:.2f}x / {cp[k] / cp['torch']:.2f}x"
            L.append(f"| {r['batch']} | {cell(k17)} | {cell(kn)} | {ms[k17] / ms[kn]:.2f}x / {cp[k17] / cp[kn]:.2f}x "
                     f"| {cell('torch')} | {cell('numpy')} | {ratio(k17)} | {ratio(kn)} | {ratio('numpy')} |")
        L += ["", "Latency ratios: below 1x = faster than torch eager."]
        L += ["", "Largest |logit difference| to the NumPy engine: "
              + "; ".join(f"batch {r['batch']}: " + ", ".join(f"{k} {v:.1e}" for k, v in r["max_abs_diff"].items())
                          for r in inf["rows"]),
              "", f"Operators: opset 17: {', '.join(inf['ops']['17'])}; opset {n}: {', '.join(inf['ops'][str(n)])}.", ""]
    return "\n".join(L)


def main(argv=None) -> int:
    args = _args(argv)
    if args._train:
        print(json.dumps(_train_child(args._train, args)))
        return 0
    _limit_threads(args.threads)
    if args.torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch is not installed: archdsl figures only (pip install torch)", file=sys.stderr)
            args.torch = False
    mach = machine()
    print(f"machine: {mach}")
    train = train_bench(args) if args.train else []
    inf = None
    if args.onnx:
        import tempfile
        print("inference benchmark ...", flush=True)
        with tempfile.TemporaryDirectory() as d:
            inf = onnx_bench(args, Path(d))
    text = report(train, inf, args, mach)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"train": train, "inference": inf}, indent=1))
    if not args.no_write:
        out = Path(args.out)
        head = out.read_text().split("<!-- results -->")[0] if out.exists() else ""
        if "<!-- results -->" not in (out.read_text() if out.exists() else ""):
            head = "# Transformer benchmark\n\nWritten by `python bench/bench_transformer.py`.\n\n"
        out.write_text(head + "<!-- results -->\n" + text + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
