"""LSTM language-model benchmark: training tokens/s of archdsl's NumPy engine against PyTorch's
fused nn.LSTM and an nn.LSTMCell loop, and inference latency on ONNX Runtime, in the same run.

The workload is issue 5's: specs/lstm_lm.arch at its defaults, i.e. Embedding(64, 32) ->
LSTM(32 -> 128) -> Linear(128 -> 64) at every step, sequences of 64 tokens, batch 32
(2,048 tokens per step), softmax cross-entropy against the next tokens, Adam(lr=1e-3).

Training engines, all starting from the same initial weights (archdsl's, copied into torch: the
LSTM parameters have PyTorch's names, shapes and gate order) and fed the same batches:
  * archdsl      what `archdsl train` runs per step: the spec's IR on NumpyExecutor (training
                 mode), archdsl.train.losses.cross_entropy, backward, Adam
                 (archdsl.train.optim), zero_grad; the LSTM is the fused primitive of
                 archdsl/autodiff/recurrent.py (one input matmul, one recurrent matmul per step,
                 hand-written BPTT)
  * archdsl-cell the same with the spec's LstmCellLM: the LSTM written from its gate equations
                 (std/cells.arch LSTMCell) and run by Scan, its step graph's ops once per step on
                 the autodiff engine (the input projection hoisted out of the loop); same weights
  * torch        nn.Embedding -> nn.LSTM(batch_first=True) -> nn.Linear, F.cross_entropy,
                 torch.optim.Adam: PyTorch's fused CPU LSTM
  * torch-cell   the same with an nn.LSTMCell called once per time step from Python
A step = forward + loss + backward + optimizer update + reading the loss as a Python float.
Before timing, every engine runs one step on the same batch and the losses are compared.

Timing: --warmup steps each, then --reps repetitions; in each repetition every engine runs
--steps steps in turn (the order rotates), so machine load hits all engines alike. Reported: the
median over repetitions of the time per step, as wall-clock time and as the thread's CPU time
(time.thread_time: every engine computes in the calling thread with one BLAS/intra-op thread, so
CPU time is what the step costs without the waits a busy machine adds), tokens/s, and the ratios
archdsl / peer (of tokens/s: above 1 means archdsl is faster).

Inference latency (median of --runs after 10 warm-ups, round-robin, --threads intra-op threads):
  * the whole sequence, batch 32 x 64 tokens and batch 1 x 64: ONNX Runtime running the exported
    spec (the native ONNX LSTM op), archdsl's NumPy engine, torch (no_grad)
  * one sampling step, batch 1 x 1 token with the recurrent state carried: ONNX Runtime running
    the step model of archdsl/sample/lm.py (state inputs and outputs), the NumPy engine on the
    same step IR, torch nn.LSTM with (h, c) passed in

    python bench/bench_lstm.py                       # 1 thread everywhere; prints Markdown tables
    python bench/bench_lstm.py --reps 11 --steps 5 --json lstm.json

Not a test: it asserts nothing beyond the loss cross-check. Results: bench/lstm.md.
"""
from __future__ import annotations

import argparse
import os
import sys


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS threads for NumPy, torch.set_num_threads and ORT intra-op threads (default 1)")
    p.add_argument("--reps", type=int, default=9, help="timed repetitions (median; default 9)")
    p.add_argument("--steps", type=int, default=3, help="training steps per engine per repetition (default 3)")
    p.add_argument("--warmup", type=int, default=3, help="untimed training steps per engine (default 3)")
    p.add_argument("--runs", type=int, default=50, help="timed inference runs (median; default 50)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--no-inference", action="store_true", help="training only")
    p.add_argument("--json", help="also write the raw numbers to this JSON file")
    return p.parse_args(argv)


ARGS = _args() if __name__ == "__main__" else None
if ARGS is not None:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import archdsl  # noqa: E402
from archdsl.autodiff import backward, clear_tape  # noqa: E402
from archdsl.train.losses import cross_entropy  # noqa: E402
from archdsl.train.optim import Adam  # noqa: E402

VOCAB, EMBED, HIDDEN, SEQ, BATCH = 64, 32, 128, 64, 32
TOKENS = SEQ * BATCH
LR = 1e-3


def batches(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, VOCAB, (BATCH, SEQ)), rng.integers(0, VOCAB, (BATCH, SEQ))) for _ in range(n)]


# -- training engines ---------------------------------------------------------------------------

# LstmCellLM's parameter for each of LstmLM's: the same values give the same model
CELL_NAMES = {"lstm_1.weight_ih_l0": "lstmcell_1.ih.weight", "lstm_1.weight_hh_l0": "lstmcell_1.hh.weight",
              "lstm_1.bias_ih_l0": "lstmcell_1.ih.bias", "lstm_1.bias_hh_l0": "lstmcell_1.hh.bias"}


def archdsl_engine(weights, model_name: str = "LstmLM"):
    from archdsl.autodiff.allocator import keep_freed_memory
    keep_freed_memory()                # as archdsl train does (process-wide: torch gets it too)
    model = archdsl.compile(ROOT / "specs" / "lstm_lm.arch").model(model_name)
    if model_name == "LstmCellLM":
        weights = {CELL_NAMES.get(k, k): v for k, v in weights.items()}
    ex = model.executor(weights)
    opt = Adam(ex.trainable(), lr=LR)

    def step(x, y):
        out = ex.forward({"tokens": x}, training=True)["logits"]
        loss = cross_entropy(out, y)
        backward(loss)
        opt.step()
        opt.zero_grad()
        clear_tape()
        return float(loss.data)
    return step


def torch_engine(weights, cell: bool):
    import torch
    from torch import nn

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(VOCAB, EMBED)
            self.rnn = nn.LSTMCell(EMBED, HIDDEN) if cell else nn.LSTM(EMBED, HIDDEN, batch_first=True)
            self.fc = nn.Linear(HIDDEN, VOCAB)

        def forward(self, x):
            e = self.emb(x)
            if cell:
                h = e.new_zeros(x.shape[0], HIDDEN)
                c = e.new_zeros(x.shape[0], HIDDEN)
                ys = []
                for t in range(x.shape[1]):
                    h, c = self.rnn(e[:, t], (h, c))
                    ys.append(h)
                y = torch.stack(ys, 1)
            else:
                y, _ = self.rnn(e)
            return self.fc(y)

    m = LM()
    with torch.no_grad():
        m.emb.weight.copy_(torch.from_numpy(weights["embedding_1.weight"]))
        for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(m.rnn, k if cell else f"{k}_l0").copy_(torch.from_numpy(weights[f"lstm_1.{k}_l0"]))
        m.fc.weight.copy_(torch.from_numpy(weights["linear_1.weight"]))
        m.fc.bias.copy_(torch.from_numpy(weights["linear_1.bias"]))
    opt = torch.optim.Adam(m.parameters(), lr=LR)

    def step(x, y):
        xt = torch.from_numpy(x)
        yt = torch.from_numpy(y).reshape(-1)
        out = m(xt)
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, VOCAB), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.item())
    return step, m


def time_training(engines: dict, data, args) -> dict:
    """name -> {"wall": [s per step per rep], "cpu": [...]}; engines run in rotating order."""
    names = list(engines)
    for name in names:                       # warm-up
        for i in range(args.warmup):
            engines[name](*data[i % len(data)])
    out = {n: {"wall": [], "cpu": []} for n in names}
    k = 0
    for rep in range(args.reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            w0, c0 = time.perf_counter(), time.thread_time()
            for _ in range(args.steps):
                engines[name](*data[k % len(data)])
                k += 1
            out[name]["wall"].append((time.perf_counter() - w0) / args.steps)
            out[name]["cpu"].append((time.thread_time() - c0) / args.steps)
    return out


# -- inference ----------------------------------------------------------------------------------

def ort_session(proto, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def round_robin(fns: dict, runs: int, warmup: int = 10) -> dict:
    for _ in range(warmup):
        for f in fns.values():
            f()
    times = {k: [] for k in fns}
    for _ in range(runs):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def inference(weights, torch_model, args) -> list[dict]:
    from archdsl.backends.numpy.executor import NumpyExecutor
    from archdsl.backends.onnx.export import to_onnx
    from archdsl.sample.lm import stateful
    model = archdsl.compile(ROOT / "specs" / "lstm_lm.arch").model()
    full = ort_session(to_onnx(model.ir, weights), args.threads)
    step_ir, slots = stateful(model.ir)
    step = ort_session(to_onnx(step_ir, weights), args.threads)
    ex_full = NumpyExecutor(model.ir, weights)
    ex_step = NumpyExecutor(step_ir, weights)
    rng = np.random.default_rng(1)
    rows = []
    for n, t in ((BATCH, SEQ), (1, SEQ), (1, 1)):
        x = rng.integers(0, VOCAB, (n, t))
        if t == 1:
            states = {s.input: rng.standard_normal((1, n, HIDDEN)).astype(np.float32) * 0.1 for s in slots}
            feeds = {"tokens": x, **states}
            fns = {"onnxruntime": lambda: step.run(None, feeds),
                   "archdsl-numpy": lambda: ex_step.run(feeds)}
            ref = step.run(["logits"], feeds)[0]
            np.testing.assert_allclose(ex_step.run(feeds)["logits"], ref, atol=1e-4)
        else:
            fns = {"onnxruntime": lambda: full.run(["logits"], {"tokens": x}),
                   "archdsl-numpy": lambda: ex_full.run({"tokens": x})}
            ref = full.run(["logits"], {"tokens": x})[0]
            np.testing.assert_allclose(ex_full.run({"tokens": x})["logits"], ref, atol=1e-4)
        if torch_model is not None:
            import torch
            tx = torch.from_numpy(x)
            if t == 1:
                h0 = torch.from_numpy(feeds[slots[0].input])
                c0 = torch.from_numpy(feeds[slots[1].input])

                def tstep():
                    with torch.no_grad():
                        y, _ = torch_model.rnn(torch_model.emb(tx), (h0, c0))
                        return torch_model.fc(y)
                fns["torch"] = tstep
            else:
                def tfull():
                    with torch.no_grad():
                        return torch_model(tx)
                fns["torch"] = tfull
        med = round_robin(fns, args.runs)
        rows.append({"batch": n, "tokens": t, **{k: v for k, v in med.items()}})
    return rows


# -- report ---------------------------------------------------------------------------------------

def versions() -> str:
    import onnxruntime as ort
    parts = [f"Python {platform.python_version()}", f"NumPy {np.__version__}", f"onnxruntime {ort.__version__}"]
    try:
        import torch
        parts.append(f"torch {torch.__version__}")
    except ImportError:
        pass
    parts.append(f"archdsl {archdsl.__version__}")
    return ", ".join(parts)


def main(args) -> dict:
    import threadpoolctl
    threadpoolctl.threadpool_limits(args.threads, user_api="blas")
    model = archdsl.compile(ROOT / "specs" / "lstm_lm.arch").model()
    weights = model.init_weights(0)
    data = batches(8)
    engines = {"archdsl": archdsl_engine(weights), "archdsl-cell": archdsl_engine(weights, "LstmCellLM")}
    torch_model = None
    have_torch = not args.no_torch
    if have_torch:
        try:
            import torch
        except ImportError:
            have_torch = False
            print("torch is not installed: archdsl alone (pip install torch==2.13.0 for the ratios)")
    if have_torch:
        torch.set_num_threads(args.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        engines["torch"], torch_model = torch_engine(weights, cell=False)
        engines["torch-cell"], _ = torch_engine(weights, cell=True)
        torch_model = torch_engine(weights, cell=False)[1]    # fresh, untrained copy for inference
    # the first step from the same weights on the same batch: the same loss
    losses = {k: f(*data[0]) for k, f in engines.items()}
    if max(losses.values()) - min(losses.values()) > 1e-4:
        raise SystemExit(f"the engines disagree on the first loss: {losses}")
    print("first-step loss, same weights and batch: " + ", ".join(f"{k} {v:.6f}" for k, v in losses.items()))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}; {versions()}; "
          f"{args.threads} thread(s)")
    res = time_training(engines, data, args)
    med = {k: {m: statistics.median(v[m]) for m in ("wall", "cpu")} for k, v in res.items()}

    print(f"\n### Training: LSTM LM, vocab {VOCAB}, embedding {EMBED}, hidden {HIDDEN}, seq {SEQ}, "
          f"batch {BATCH} ({TOKENS:,} tokens/step); median of {args.reps} x {args.steps} steps\n")
    print("| engine | ms/step (wall) | tokens/s (wall) | ms/step (CPU) | tokens/s (CPU) |")
    print("|---|---|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {1e3 * v['wall']:.1f} | {TOKENS / v['wall']:,.0f} | {1e3 * v['cpu']:.1f} | "
              f"{TOKENS / v['cpu']:,.0f} |")
    print("\n| ratio (tokens/s / peer tokens/s) | wall | CPU | target |")
    print("|---|---|---|---|")
    pairs = [("archdsl-cell", "archdsl", ">= 0.5 (within 2x of the fused op)")]
    if have_torch:
        pairs += [("archdsl", "torch", ">= 0.5"), ("archdsl", "torch-cell", "> 1")]
    for ours, peer, target in pairs:
        print(f"| {ours} / {peer} | {med[peer]['wall'] / med[ours]['wall']:.2f}x | "
              f"{med[peer]['cpu'] / med[ours]['cpu']:.2f}x | {target} |")
    report = {"training": res, "median": med, "threads": args.threads, "versions": versions(),
              "loadavg": os.getloadavg()}
    if not args.no_inference:
        rows = inference(weights, torch_model, args)
        report["inference"] = rows
        cols = ["onnxruntime", "archdsl-numpy"] + (["torch"] if torch_model is not None else [])
        print(f"\n### Inference latency (median of {args.runs}, round-robin, {args.threads} thread(s))\n")
        print("| input | " + " | ".join(cols) + " | ORT speed-up vs NumPy engine |"
              + (" ORT speed-up vs torch |" if torch_model is not None else ""))
        print("|---" * (len(cols) + 2 + (torch_model is not None)) + "|")
        for r in rows:
            what = (f"{r['batch']} x {r['tokens']} tokens" if r["tokens"] > 1
                    else "1 token, state carried (sampling step)")
            line = f"| {what} | " + " | ".join(f"{1e3 * r[c]:.3f} ms" for c in cols)
            line += f" | {r['archdsl-numpy'] / r['onnxruntime']:.2f}x |"
            if torch_model is not None:
                line += f" {r['torch'] / r['onnxruntime']:.2f}x |"
            print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float))
        print(f"\nwrote {args.json}")
    return report


if __name__ == "__main__":
    main(ARGS)
