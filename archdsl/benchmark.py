"""`archdsl bench MODEL.onnx`: the latency and throughput a deploying user asks for first.

    archdsl bench model.onnx --device cuda --batch 1 8 [--dim T=128] [--precision fp32|tf32|fp16]
                             [--runs 50] [--warmup 5] [--copy-outputs]

For each batch size: `warmup` untimed runs, then `runs` timed ones; prints the median (p50) and
90th-percentile (p90) latency and the throughput at the median (batch / p50, samples per
second). Inputs are random normal floats, ones for integer inputs (a valid token id or length),
true for boolean masks; the batch is each input's first dim when it is symbolic, and other
symbolic dims come from --dim. On CUDA the inputs are copied to the GPU once and the outputs
stay there (IOBinding), as a server keeps them: the figures are the model's own time;
--copy-outputs adds copying every output back to the host, as a plain `run` does. Timings are
measured, not asserted anywhere (bench/README.md): they depend on the machine and its load.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .errors import ArchError


@dataclass
class BenchRow:
    batch: int
    p50_ms: float
    p90_ms: float
    runs: int

    @property
    def throughput(self) -> float:
        """Samples per second at the median latency."""
        return self.batch / (self.p50_ms / 1000.0) if self.p50_ms > 0 else float("inf")


def bench_inputs(sess, batch: int, dims: dict, seed: int = 0) -> dict:
    """Feeds for every input of `sess` at this batch size (module docstring)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for info in sess.inputs:
        if info.shape is None:
            raise ArchError(f"input '{info.name}' has no known rank", hint="bench runs models with shaped inputs")
        shape = []
        for i, d in enumerate(info.shape):
            if isinstance(d, int) and d >= 0:
                shape.append(d)
            elif isinstance(d, str) and d in dims:
                shape.append(int(dims[d]))
            elif i == 0:
                shape.append(batch)
            else:
                what = f"'{d}'" if isinstance(d, str) else "an unnamed dynamic dim"
                raise ArchError(f"input '{info.name}' {info.type_str} has {what} at position {i}: give its size",
                                hint=f"e.g. --dim {d if isinstance(d, str) else 'NAME'}=128")
        dtype = info.dtype
        if dtype is None:
            raise ArchError(f"input '{info.name}' has type {info.type}, which NumPy cannot make")
        if dtype.kind == "f":
            feeds[info.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[info.name] = np.ones(shape, bool)
        else:
            feeds[info.name] = np.ones(shape, dtype)
    return feeds


def bench(sess, batches, dims: dict | None = None, runs: int = 50, warmup: int = 5,
          copy_outputs: bool = False) -> list[BenchRow]:
    """Time `sess` (a runtime.Session) at each batch size."""
    if runs < 1 or warmup < 0:
        raise ArchError(f"bench needs runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    rows = []
    on_device = sess.device != "cpu" and not copy_outputs
    for batch in batches:
        if batch < 1:
            raise ArchError(f"batch sizes must be positive, got {batch}")
        feeds = bench_inputs(sess, batch, dims or {})
        sess.check(feeds)                          # a mistake is reported before any timing
        if on_device:                              # inputs copied once; outputs stay on the device
            feeds = {k: sess.to_device(v, k) for k, v in feeds.items()}
        for _ in range(warmup):
            sess.run(feeds, on_device=on_device)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            sess.run(feeds, on_device=on_device)
            times.append(time.perf_counter() - t0)
        ms = np.asarray(times) * 1000.0
        rows.append(BenchRow(batch, float(np.percentile(ms, 50)), float(np.percentile(ms, 90)), runs))
    return rows


def format_bench(sess, rows: list[BenchRow], copy_outputs: bool, warmup: int) -> str:
    where = "inputs and outputs on the device (IOBinding)" if sess.device != "cpu" and not copy_outputs else \
        "outputs copied to the host every run" if sess.device != "cpu" else "host memory"
    lines = [f"bench {sess.name} on {sess.device} ({', '.join(sess.providers)}), {sess.precision}, {where}; "
             f"{rows[0].runs if rows else 0} runs after {warmup} warm-up",
             f"{'batch':>7} {'p50 ms':>10} {'p90 ms':>10} {'samples/s':>12}"]
    for r in rows:
        lines.append(f"{r.batch:>7} {r.p50_ms:>10.3f} {r.p90_ms:>10.3f} {r.throughput:>12.1f}")
    return "\n".join(lines)
