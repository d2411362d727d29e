"""Compiled, multithreaded kernels (numba), where NumPy's one-pass-per-ufunc work is the cost
(issue 21): a batch norm's statistics, output and gradient each in one pass over the data, on
every BLAS thread, instead of six to ten single-threaded NumPy passes. The kernels themselves
are in jitkernels.py, by theme; this module decides whether they run.

numba is optional (the `fast` extra; the dev extras install it). Without it, with
ARCHDSL_JIT=numpy, or with ARCHDSL_KERNELS=numpy (every non-NumPy kernel off), `kernels()` is
None and callers take their NumPy path, which the tests run too. Kernels compile on first use
and are cached on disk (numba's cache), so a process pays the compile once per machine.

Threads follow the BLAS thread count (`--threads`, threadpool_limits), as ONNX Runtime's do.
numba's threading layer is chosen thread-safe first (tbb, then GNU OpenMP): worker threads of
ortkernels.parallel may launch kernels at once. Where only the workqueue layer exists, a lock
keeps launches one at a time (that layer aborts the process on concurrent launches).
"""
from __future__ import annotations

import os
import threading

from .ortkernels import blas_threads

__all__ = ["kernels", "threads", "MIN_ELEMENTS"]

# Below this many elements a NumPy pass costs a few microseconds and a kernel launch (thread
# wake-up, argument unboxing) as much: the NumPy path is kept there.
MIN_ELEMENTS = 1 << 15

state: dict = {}
_launch = threading.Lock()
_MAIN = threading.main_thread().ident


def kernels():
    """The jitkernels module when compiled kernels may run, else None."""
    mod = state.get("mod", False)
    if mod is False:
        mod = state["mod"] = _load()
    return mod


def _load():
    if os.environ.get("ARCHDSL_JIT", "") == "numpy" or os.environ.get("ARCHDSL_KERNELS", "") == "numpy":
        return None
    try:
        import numba
    except ImportError:
        return None
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "threadsafe"
    from . import jitkernels
    # GNU OpenMP's idle threads spin for ~4 ms of CPU after each launch by default: on a core
    # that ONNX Runtime's or OpenBLAS's threads need next (ResNet-18 at 2 threads: 1,771 against
    # 1,673 ms a step). Passive waiting is read when the library loads, which warm() does; the
    # variable is set for that moment only, unless the user has set it.
    scoped = "OMP_WAIT_POLICY" not in os.environ
    if scoped:
        os.environ["OMP_WAIT_POLICY"] = "passive"
    try:
        try:
            jitkernels.warm()               # selects the threading layer (compiles a tiny kernel)
        except Exception:                   # no thread-safe layer: the always-present workqueue
            numba.config.THREADING_LAYER = "workqueue"
            jitkernels.warm()
    finally:
        if scoped:
            del os.environ["OMP_WAIT_POLICY"]
    state["numba"] = numba
    state["locked"] = numba.threading_layer() == "workqueue"
    state["pool"] = numba.config.NUMBA_NUM_THREADS
    state["set"] = None
    return jitkernels


class threads:
    """Context for a kernel launch: numba's thread count set to the BLAS thread count (at most
    numba's pool; one on a worker thread of ortkernels.parallel, whose core is its own), and
    the launch serialised where the threading layer needs it."""
    __slots__ = ("lock",)

    def __enter__(self):
        numba = state["numba"]
        if threading.get_ident() == _MAIN:
            want = min(blas_threads(), state["pool"])
            if state["set"] != want:      # numba's count is per thread: the main thread's, cached
                numba.set_num_threads(want)
                state["set"] = want
        else:
            numba.set_num_threads(1)
        self.lock = _launch if state["locked"] else None
        if self.lock is not None:
            self.lock.acquire()
        return self

    def __exit__(self, *exc):
        if self.lock is not None:
            self.lock.release()
        return False
