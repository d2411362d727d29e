"""Kernel benchmark: the NumPy engine's building blocks against the alternatives it chooses
between (issue 21), each measured in one process, interleaved, medians.

  * GEMM shapes: NumPy's OpenBLAS, ONNX Runtime's MLAS (archdsl.autodiff.ortkernels) and, if
    installed, PyTorch's MKL, in GFLOP/s: the thin products of a recurrent step (which
    ortkernels sends to MLAS), a Linear layer's products and a convolution's weight gradient.
  * Transposing copies: np.ascontiguousarray against archdsl.autodiff._arrays.contiguous
    (blocked), on the transposes the LSTM and the weight transposes make.
  * Masked selects: np.where(x > 0, x, a x) (and its gradient) against the branch-free
    LeakyReLU archdsl uses.
  * Recurrent layers: LSTM, GRU and Elman RNN forward + backward (hidden 512, batch 32, 64 steps,
    input 256), with the MLAS step products and without (NumPy only), and torch's nn.LSTM /
    nn.GRU / nn.RNN on the same sizes.
  * Convolution weight gradients: ResNet-18's 3x3 stride-1 shapes at batch 64 by the shifted-slice
    GEMMs and by Winograd F(3x3, 2x2) (archdsl.autodiff.convkernels), and torch's.
  * Compiled kernels (archdsl.autodiff.jitkernels, with numba): batch norm, layer norm and ReLU
    forward + backward and an Adam update, against the NumPy path they replace (at one thread)
    and torch's (one thread); the kernels also at two threads (a launch split in two).

One BLAS thread, torch.set_num_threads(1). Not a test: it asserts nothing but that the
alternatives compute the same values.

    python bench/bench_kernels.py                 # writes bench/kernels.md
    python bench/bench_kernels.py --reps 31 --no-write
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from archdsl.autodiff import _arrays, ortkernels  # noqa: E402
from benchlib import cpu_model, write_results  # noqa: E402

GEMMS = [   # (M, K, N, what)
    (2048, 512, 32, "LSTM step, hidden 512, batch 32: [4H, H] x [H, N]"),
    (512, 2048, 32, "its backward: [H, 4H] x [4H, N]"),
    (2048, 769, 32, "LSTM step with the input folded in (input 256)"),
    (32, 512, 1536, "GRU step as written: [N, H] x [H, 3H]"),
    (1536, 512, 32, "the same, transposed (what ortkernels runs)"),
    (2048, 256, 1024, "Linear 256 -> 1024 over 2,048 tokens"),
    (2048, 1024, 256, "Linear 1024 -> 256 over 2,048 tokens"),
    (2048, 2048, 768, "LSTM weight gradient [4H, T*N] x [T*N, C + H]"),
    (64, 4356, 64, "3x3 conv weight gradient, one tap, 4 images of 32x32 (64 ch)"),
    (64, 65536, 576, "the same conv's weight gradient by im2col, 64 images"),
]


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=15, help="timed repetitions (median; default 15)")
    p.add_argument("--out", default=str(ROOT / "bench" / "kernels.md"))
    p.add_argument("--no-write", action="store_true")
    return p.parse_args(argv)


def timed(fns: dict, reps: int) -> dict:
    """name -> median seconds, the functions run in turn (rotating order) after a warm-up."""
    for f in fns.values():
        f()
    names = list(fns)
    out = {n: [] for n in names}
    for r in range(reps):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            fns[n]()
            out[n].append(time.perf_counter() - t)
    return {n: statistics.median(v) for n, v in out.items()}


def gemm_rows(reps, torch):
    rows = ["| product [M, K] x [K, N] | what | OpenBLAS | MLAS | MKL (torch) | MLAS ÷ OpenBLAS |",
            "|---|---|---:|---:|---:|---:|"]
    r = np.random.default_rng(0)
    for M, K, N, what in GEMMS:
        a = r.standard_normal((M, K)).astype(np.float32)
        b = r.standard_normal((K, N)).astype(np.float32)
        out = np.empty((M, N), np.float32)
        fns = {"numpy": lambda: np.matmul(a, b, out=out), "mlas": lambda: ortkernels.mlas_matmul(a, b, out)}
        if torch is not None:
            ta, tb, to = (torch.from_numpy(v) for v in (a, b, out))
            fns["torch"] = lambda: torch.matmul(ta, tb, out=to)
        np.testing.assert_allclose(ortkernels.mlas_matmul(a, b), a @ b, rtol=1e-3, atol=1e-3 * np.sqrt(K))
        t = timed(fns, reps)
        gf = {n: 2 * M * K * N / v / 1e9 for n, v in t.items()}
        rows.append(f"| {M} × {K} × {N} | {what} | {gf['numpy']:.0f} | {gf['mlas']:.0f} | "
                    + (f"{gf['torch']:.0f}" if "torch" in gf else "—") + f" | {gf['mlas'] / gf['numpy']:.2f}× |")
    return rows


def copy_rows(reps):
    r = np.random.default_rng(0)
    cases = [("[2048, 512] -> [512, 2048]", r.standard_normal((2048, 512)).astype(np.float32).T),
             ("[2048, 1024] -> [1024, 2048]", r.standard_normal((2048, 1024)).astype(np.float32).T),
             ("[64, 2048, 32] -> [2048, 64, 32]", r.standard_normal((64, 2048, 32)).astype(np.float32).transpose(1, 0, 2)),
             ("[64, 512, 32] -> [64, 32, 512]", r.standard_normal((64, 512, 32)).astype(np.float32).transpose(0, 2, 1))]
    rows = ["| transpose (float32) | np.ascontiguousarray | blocked (`_arrays.contiguous`) | speed-up |",
            "|---|---:|---:|---:|"]
    for name, v in cases:
        np.testing.assert_array_equal(_arrays.contiguous(v), v)
        t = timed({"np": lambda: np.ascontiguousarray(v), "ours": lambda: _arrays.contiguous(v)}, reps)
        rows.append(f"| {name} | {t['np'] * 1e3:.2f} ms | {t['ours'] * 1e3:.2f} ms | {t['np'] / t['ours']:.1f}× |")
    return rows


def select_rows(reps):
    from archdsl.autodiff.elementwise import leaky_relu
    import archdsl.autodiff as ad
    r = np.random.default_rng(0)
    x = r.standard_normal((512, 128)).astype(np.float32)
    g = r.standard_normal((512, 128)).astype(np.float32)
    a = 0.2

    def where_both():
        np.where(x > 0, x, x * a)
        np.where(x > 0, g, g * a)

    def ours():
        t = ad.tensor(x, requires_grad=True)
        ad.backward(leaky_relu(t, a), g)
    t0 = ad.tensor(x, requires_grad=True)
    ad.backward(leaky_relu(t0, a), g)
    np.testing.assert_array_equal(t0.grad, np.where(x > 0, g, g * a))
    t = timed({"where": where_both, "ours": ours}, reps * 10)
    return ["| LeakyReLU(0.2) forward + gradient, [512, 128] float32, mixed signs | np.where | branch-free (archdsl) | speed-up |",
            "|---|---:|---:|---:|",
            f"| | {t['where'] * 1e6:.0f} µs | {t['ours'] * 1e6:.0f} µs | {t['where'] / t['ours']:.1f}× |"]


def recurrent_rows(reps, torch, N=32, T=64, C=256, H=512):
    import archdsl.autodiff as ad
    from archdsl.autodiff import recurrent as R
    r = np.random.default_rng(0)
    rows = [f"| layer (hidden {H}, batch {N}, {T} steps, input {C}) | archdsl | archdsl, NumPy only | torch | archdsl ÷ torch |",
            "|---|---:|---:|---:|---:|"]
    for name, gates, fn, tmod in (("LSTM", 4, R.lstm_layer, "LSTM"), ("GRU", 3, R.gru_layer, "GRU"),
                                  ("Elman RNN (tanh)", 1, R.rnn_layer, "RNN")):
        a = [r.standard_normal(s).astype(np.float32) * 0.05 for s in [(N, T, C), (gates * H, C), (gates * H, H), (gates * H,), (gates * H,)]]
        extra = (None,) * (5 if name == "LSTM" else 1)     # initial states (and peepholes)

        def step():
            args = [ad.tensor(v, requires_grad=True) for v in a]
            outs = fn(*args, *extra)
            ad.backward(outs[0].sum())

        def numpy_only():
            before = ortkernels.state.get("ok")
            ortkernels.state["ok"] = False
            try:
                step()
            finally:
                ortkernels.state["ok"] = before
        fns = {"ours": step, "numpy": numpy_only}
        if torch is not None:
            m = getattr(torch.nn, tmod)(C, H, batch_first=True)
            xt = torch.from_numpy(a[0]).requires_grad_()

            def tstep():
                y = m(xt)[0]
                y.sum().backward()
            fns["torch"] = tstep
        t = timed(fns, reps)
        rows.append(f"| {name} forward + backward | {t['ours'] * 1e3:.1f} ms | {t['numpy'] * 1e3:.1f} ms | "
                    + (f"{t['torch'] * 1e3:.1f} ms | {t['torch'] / t['ours']:.2f}× |" if "torch" in t else "— | — |"))
    return rows


def conv_weight_grad_rows(reps, torch, N=64, shapes=((64, 32), (128, 16), (256, 8))):
    """The weight gradient of ResNet-18's 3x3 stride-1 convolutions (C -> C channels on H x H maps,
    padding 1, batch N) by convkernels' two kernels for them: the shifted-slice GEMMs and Winograd
    F(3x3, 2x2) (compiled transforms), and torch's (oneDNN)."""
    from archdsl.autodiff import convkernels as K
    from archdsl.autodiff.allocator import reused_memory
    if K._winograd_kernels() is None:
        return ["numba is not installed (`pip install 'archdsl[fast]'`): no Winograd kernel to compare."]
    rows = [f"| 3x3 convolution, stride 1, batch {N} | shifted GEMMs | Winograd F(3x3, 2x2) | torch | "
            "Winograd ÷ shifted | Winograd ÷ torch |", "|---|---:|---:|---:|---:|---:|"]
    r = np.random.default_rng(0)
    pads = ((1, 1), (1, 1))
    for C, H in shapes:
        x = r.standard_normal((N, C, H, H)).astype(np.float32)
        g = r.standard_normal((N, C, H, H)).astype(np.float32)
        args = (x, g, (C, C, 3, 3), (1, 1), (1, 1), pads, 1)

        def kernel(on: bool):
            def run():
                K.WINOGRAD = on
                try:
                    return K.conv_weight_grad(*args)
                finally:
                    K.WINOGRAD = True
            return run
        fns = {"shifted": kernel(False), "winograd": kernel(True)}
        np.testing.assert_allclose(fns["winograd"](), fns["shifted"](), rtol=1e-3, atol=1e-3)
        if torch is not None:
            tx, tg = torch.from_numpy(x), torch.from_numpy(g)
            fns["torch"] = lambda: torch.nn.grad.conv2d_weight(tx, (C, C, 3, 3), tg, 1, 1)
        with reused_memory():
            t = timed(fns, reps)
        tt = f"{t['torch'] * 1e3:.1f} ms" if "torch" in t else "—"
        vs = f"{t['torch'] / t['winograd']:.2f}×" if "torch" in t else "—"
        rows.append(f"| {C} -> {C} channels, {H}x{H} | {t['shifted'] * 1e3:.1f} ms | {t['winograd'] * 1e3:.1f} ms | "
                    f"{tt} | {t['shifted'] / t['winograd']:.2f}× | {vs} |")
    return rows


def compiled(reps, torch):
    """compiled_rows with glibc's allocator as a training run sets it (freed memory kept for the
    next step): otherwise every fresh 16 MB output is a new mapping, page-faulted on first touch."""
    from archdsl.autodiff.allocator import reused_memory
    with reused_memory():
        return compiled_rows(reps, torch)


def compiled_rows(reps, torch, bn=(64, 64, 32, 32), ln=(2048, 256), params=11_200_000):
    """The compiled kernels (jitkernels, numba) against the NumPy path they replace and torch,
    forward + backward (an update for Adam), one BLAS thread and two."""
    from archdsl import autodiff as ad
    from archdsl.autodiff import jit
    from archdsl.autodiff import normalization as norm
    from archdsl.train import optim
    mod = jit.kernels()
    if mod is None:
        return ["numba is not installed (`pip install 'archdsl[fast]'`): nothing to compare."]
    ctl = ortkernels.state.get("blas")
    r = np.random.default_rng(0)
    x4 = r.standard_normal(bn).astype(np.float32)
    u4 = r.standard_normal(bn).astype(np.float32)
    c4 = r.standard_normal(bn[1]).astype(np.float32)
    x2 = r.standard_normal(ln).astype(np.float32)
    u2 = r.standard_normal(ln).astype(np.float32)
    c2 = r.standard_normal(ln[1]).astype(np.float32)

    def bn_step():
        ts = [ad.tensor(a, requires_grad=True) for a in (x4, c4, c4)]
        y = norm.batch_norm(*ts, None, None, True)
        ad.backward(y, u4)
        return y.data, ts[0].grad

    def ln_step():
        ts = [ad.tensor(a, requires_grad=True) for a in (x2, c2, c2)]
        y = norm.layer_norm(*ts)
        ad.backward(y, u2)
        return y.data, ts[0].grad

    def relu_step():
        t = ad.tensor(x4, requires_grad=True)
        y = ad.relu(t)
        ad.backward(y, u4)
        return y.data, t.grad

    def adam_state():
        p = ad.Tensor(np.zeros(params, np.float32), requires_grad=True)
        return p, optim.Adam({"p": p}, lr=1e-3)
    grad = r.standard_normal(params).astype(np.float32)
    adams = {}

    def adam_step(key):
        if key not in adams:
            adams[key] = adam_state()
        p, opt = adams[key]
        p.grad = grad
        opt.step()
        return (p.data,)

    def variant(fn, kernels: bool, threads: int):
        def run():
            jit.state["mod"] = mod if kernels else None
            if ctl is not None:
                ctl.set_num_threads(threads)
            try:
                return fn()
            finally:
                jit.state["mod"] = mod
                if ctl is not None:
                    ctl.set_num_threads(1)
        return run
    cases = [("batch norm, training", f"{list(bn)}", bn_step), ("layer norm", f"{list(ln)}", ln_step),
             ("ReLU", f"{list(bn)}", relu_step)]
    if torch is not None:
        F = torch.nn.functional
        tx4, tu4, tc4 = (torch.from_numpy(a) for a in (x4, u4, c4))
        tx2, tu2, tc2 = (torch.from_numpy(a) for a in (x2, u2, c2))

        def t_bn():
            x, g, b = (a.clone().requires_grad_() for a in (tx4, tc4, tc4))
            F.batch_norm(x, None, None, g, b, training=True).backward(tu4)

        def t_ln():
            x, g, b = (a.clone().requires_grad_() for a in (tx2, tc2, tc2))
            F.layer_norm(x, (ln[1],), g, b).backward(tu2)

        def t_relu():
            x = tx4.clone().requires_grad_()
            F.relu(x).backward(tu4)
        tp = torch.zeros(params, requires_grad=True)
        topt = torch.optim.Adam([tp], lr=1e-3)
        tgrad = torch.from_numpy(grad)

        def t_adam():
            tp.grad = tgrad
            topt.step()
        peers = [t_bn, t_ln, t_relu, t_adam]
    rows = ["| kernel (float32, forward + backward) | shape | NumPy path | compiled, 1 thread | compiled, 2 threads "
            "| torch, 1 thread | compiled ÷ NumPy (1 thread) |", "|---|---|---:|---:|---:|---:|---:|"]
    for i, (name, shape, fn) in enumerate(cases + [("Adam update", f"{params:,} parameters", None)]):
        if fn is None:
            fns = {"numpy": variant(lambda: adam_step("numpy"), False, 1),
                   "jit1": variant(lambda: adam_step("jit1"), True, 1),
                   "jit2": variant(lambda: adam_step("jit2"), True, 2)}
        else:
            fns = {"numpy": variant(fn, False, 1), "jit1": variant(fn, True, 1), "jit2": variant(fn, True, 2)}
        ref, got = fns["numpy"](), fns["jit2"]()
        for a, b in zip(ref, got):      # the same values (Adam and ReLU: the same bits)
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * float(np.abs(a).max() or 1))
        if torch is not None:
            fns["torch"] = peers[i]
        t = timed(fns, reps)
        rows.append(f"| {name} | {shape} | {t['numpy'] * 1e3:.2f} ms | {t['jit1'] * 1e3:.2f} ms | "
                    f"{t['jit2'] * 1e3:.2f} ms | " + (f"{t['torch'] * 1e3:.2f} ms" if "torch" in t else "—")
                    + f" | {t['numpy'] / t['jit1']:.2f}× |")
    return rows


def _numba_version() -> str:
    try:
        import numba
    except ImportError:
        return ""
    return f", numba {numba.__version__}"


def main(argv=None):
    args = _args(argv)
    from threadpoolctl import threadpool_limits
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        torch = None
    load0 = os.getloadavg()[0]
    with threadpool_limits(1, user_api="blas"):
        ortkernels.blas_threads()
        sections = [("GEMM throughput (GFLOP/s, one thread)", gemm_rows(args.reps, torch)),
                    ("Transposing copies", copy_rows(args.reps)),
                    ("Masked selects", select_rows(args.reps)),
                    ("Recurrent layers", recurrent_rows(max(5, args.reps // 3), torch)),
                    ("Convolution weight gradients (one thread)", conv_weight_grad_rows(max(5, args.reps // 3), torch)),
                    ("Compiled kernels (numba)", compiled(args.reps, torch))]
    load1 = os.getloadavg()[0]
    head = [f"- Command: `python bench/bench_kernels.py{' --reps ' + str(args.reps) if args.reps != 15 else ''}`",
            f"- Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
            f"load average {load0:.2f} before, {load1:.2f} after",
            f"- Versions: Python {platform.python_version()}, NumPy {np.__version__}"
            + (f", torch {torch.__version__}" if torch is not None else "") + _numba_version()
            + "; one BLAS thread (the compiled kernels also at two), torch.set_num_threads(1); medians of "
            "interleaved repetitions"]
    text = "\n".join(head) + "\n"
    for title, rows in sections:
        text += f"\n## {title}\n\n" + "\n".join(rows) + "\n"
    print(text)
    if not args.no_write:
        write_results(Path(args.out), "kernels", text, "Kernels: the NumPy engine's building blocks")


if __name__ == "__main__":
    main()
