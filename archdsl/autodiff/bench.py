"""Micro-benchmarks: ``python -m archdsl.autodiff.bench``.

Run with OPENBLAS_NUM_THREADS=1 (small GEMMs).  Reports per-primitive overhead on tiny tensors and a 64-128-64-10 MLP
forward+backward step at batch 64 against the same step hand-written in numpy.
"""

from __future__ import annotations

import time

import numpy as np

from . import functional as F
from .tensor import backward, clear_tape, no_grad, tensor


def _best(fn, number, repeat=15):
    # best-of-N thread CPU time: robust to other processes on a shared machine
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        for _ in range(number):
            fn()
        best = min(best, (time.thread_time() - t0) / number)
    return best * 1e6


def overhead():
    a = tensor(np.ones((2, 2), np.float32), requires_grad=True)
    b = tensor(np.ones((2, 2), np.float32), requires_grad=True)
    ad_, bd = a.data, b.data
    res = {}
    res["numpy a+b 2x2"] = _best(lambda: ad_ + bd, 20000)

    def add_grad():
        for _ in range(100):
            F.add(a, b)
        clear_tape()
    res["add 2x2 (grad, recorded)"] = _best(add_grad, 200) / 100
    res["a + b operator 2x2 (grad)"] = _best(lambda: (a + b, clear_tape()), 20000)
    with no_grad():
        res["add 2x2 (no_grad)"] = _best(lambda: F.add(a, b), 20000)
    c = tensor(np.ones((2, 2), np.float32))
    res["add 2x2 (constants)"] = _best(lambda: F.add(c, c), 20000)

    def fwd_bwd():
        backward(F.add(a, b))
    res["add fwd+bwd 2x2 (incl. backward call)"] = _best(fwd_bwd, 5000)
    return res


def mlp(batch=64, sizes=(64, 128, 64, 10), seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    Y = rng.integers(0, sizes[-1], batch)
    Ws = [(rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32) for i, o in zip(sizes[:-1], sizes[1:])]
    Bs = [np.zeros(o, np.float32) for o in sizes[1:]]
    params = [tensor(p, requires_grad=True) for wb in zip(Ws, Bs) for p in wb]

    def step_ad():
        h = X
        n = len(Ws)
        for i in range(n):
            h = F.linear(h, params[2 * i], params[2 * i + 1])
            if i < n - 1:
                h = F.relu(h)
        loss = F.softmax_cross_entropy(h, Y)
        backward(loss)
        for p in params:
            p.grad = None
        return loss

    def step_np():
        acts = [X]
        h = X
        n = len(Ws)
        for i in range(n):
            h = h @ Ws[i].T
            h += Bs[i]
            if i < n - 1:
                h = np.maximum(h, 0)
            acts.append(h)
        m = h.max(axis=1, keepdims=True)
        e = np.exp(h - m)
        s = e.sum(axis=1, keepdims=True)
        loss = np.mean(np.log(s)[:, 0] + m[:, 0] - h[np.arange(batch), Y])
        g = e / s
        g[np.arange(batch), Y] -= 1.0
        g *= 1.0 / batch
        grads = []
        for i in range(n - 1, -1, -1):
            grads.append((g.T @ acts[i], g.sum(axis=0)))
            if i:
                g = (g @ Ws[i]) * (acts[i] > 0)
        return loss, grads

    # same numbers
    l_ad = step_ad()
    l_np, _ = step_np()
    assert abs(float(l_ad.data) - float(l_np)) < 1e-4
    return {"autodiff MLP step": _best(step_ad, 300), "raw numpy MLP step": _best(step_np, 300)}


def main():
    for k, v in {**overhead(), **mlp()}.items():
        print(f"{k:40s} {v:8.2f} us")


if __name__ == "__main__":
    main()
