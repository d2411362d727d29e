"""Compiled kernels (numba), where NumPy's one-pass-per-ufunc work is the cost (issue 21): a
batch norm's statistics, output and gradient each in one pass over the data, a layer norm's
forward and backward, ReLU and the Adam update in one, instead of six to ten NumPy passes. The
kernels themselves are in jitkernels.py, by theme; this module decides whether they run, and
splits a launch between threads.

numba is optional (the `fast` extra; the dev extras install it). Without it, with
ARCHDSL_JIT=numpy, or with ARCHDSL_KERNELS=numpy (every non-NumPy kernel off), `kernels()` is
None and callers take their NumPy path, which the tests run too. Kernels compile on first use
and are cached on disk (numba's cache), so a process pays the compile once per machine.

Threads: a large launch is split into one part per BLAS thread (`--threads`,
threadpool_limits), the first run by the caller and the others by ortkernels' worker threads,
which sleep between launches; the kernels hold no GIL. numba's own threading layers are not
used: GNU OpenMP's idle threads spin ~4 ms of CPU after every launch, and share one pool with
PyTorch's where both are loaded (the MLP of bench_midsize at 2 threads took 50 ms a step so,
against 28 ms on NumPy alone); workqueue aborts on launches from two threads at once.
"""
from __future__ import annotations

import importlib
import os
import threading

import numpy as np

from .ortkernels import blas_threads, workers

__all__ = ["kernels", "for_array", "preload", "split", "MIN_ELEMENTS", "SPLIT_FLOATS"]

# Below this many elements a NumPy pass costs a few microseconds and a kernel launch as much:
# the NumPy path is kept there.
MIN_ELEMENTS = 1 << 15
# A launch is split between threads in parts that move at least this many floats (reads plus
# writes): handing a part to a sleeping worker and taking its end back costs ~0.2 ms on this
# project's machine (a KVM guest), what moving ~2M floats takes. ReLU forward over 4M elements
# (8M floats moved): 1.19 ms on one thread, 0.90 ms on two; over 1M elements: 0.30 against 0.38.
SPLIT_FLOATS = 1 << 21

state: dict = {}
_MAIN = threading.main_thread().ident


def kernels():
    """The jitkernels module when compiled kernels may run, else None."""
    mod = state.get("mod", False)
    if mod is False:
        mod = state["mod"] = _load()
    return mod


def for_array(a):
    """The kernels for a pass over `a`, or None for NumPy's: float32 or float64, C-contiguous,
    at least MIN_ELEMENTS values (the conditions every caller shares)."""
    if a.size < MIN_ELEMENTS or a.dtype not in (np.float32, np.float64) or not a.flags.c_contiguous:
        return None
    return kernels()


def preload() -> None:
    """Load numba, LLVM and a cached kernel now rather than at the first launch (about 120 MiB
    of RSS, once per process): benchmarks count it with the libraries, as torch's import."""
    mod = kernels()
    if mod is not None:
        a = np.zeros(1, np.float32)
        mod.relu(a, a, 0, 1)


def _load():
    if os.environ.get("ARCHDSL_JIT", "") == "numpy" or os.environ.get("ARCHDSL_KERNELS", "") == "numpy":
        return None
    try:
        importlib.import_module("numba")     # (jitkernels may be imported already)
    except ImportError:
        return None
    from . import jitkernels
    return jitkernels


def split(n: int, launch, floats: int) -> None:
    """launch(lo, hi) over the range [0, n) of units that each move `floats` floats: in one
    part, or on the caller's thread and BLAS threads - 1 workers when each part moves
    SPLIT_FLOATS (only from the main thread: a worker of ortkernels.parallel has one core of
    its own)."""
    k = 1
    if n * floats >= 2 * SPLIT_FLOATS and threading.get_ident() == _MAIN:
        k = min(blas_threads(), n, n * floats // SPLIT_FLOATS)
    if k <= 1:
        launch(0, n)
        return
    bounds = [n * i // k for i in range(k + 1)]
    pool = workers(blas_threads())
    parts = [pool.submit(launch, bounds[i], bounds[i + 1]) for i in range(1, k)]
    launch(0, bounds[1])
    for p in parts:
        p.result()
