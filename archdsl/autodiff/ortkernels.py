"""ONNX Runtime's CPU kernels (MLAS, a dependency already) called on NumPy arrays, where they beat
NumPy's own (issue 21): one cached session per (kind, shapes, threads) holding one node, with the
arrays bound in place (IOBinding: no copies). convkernels.py runs large convolutions through it,
and `matmul` the GEMMs whose shape OpenBLAS handles poorly.

Why the GEMMs: a recurrent layer's step multiplies a large weight by a thin state, [4H, H] x
[H, N] with N the batch. On this project's 2-core Xeon (one thread, float32; bench/kernels.md,
written by bench/bench_kernels.py) OpenBLAS 0.3.31 reaches 90-93 GFLOP/s on 2048x512x32,
512x2048x32 and 2048x769x32, MLAS 115-124 and MKL (torch) 119-131; on square-ish GEMMs OpenBLAS
is as fast as MLAS or faster (141-148 against 128-134), so only thin products come here.

Sessions take their scratch from one arena of the ONNX Runtime environment, their threads follow
the BLAS thread count (threadpoolctl), without spinning. float32 only: float64 (gradient checks)
stays on NumPy. ARCHDSL_KERNELS=numpy turns every kernel here off (ARCHDSL_CONV=numpy, the
convolutions only).
"""
from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict

import numpy as np

__all__ = ["enabled", "blas_threads", "brief_blas_spin", "workers", "parallel", "row_parts", "run", "matmul", "mlas_matmul", "thin", "thin_matmul"]

_CACHE_SIZE = 96
# A product [M, K] x [K, N] goes to MLAS when it is tall and thin, N <= THIN_N < TALL_M <= M
# (MLAS is fast on that shape only: on its transpose, [N, K] x [K, M], it is as slow as
# OpenBLAS), with at least MIN_MACS multiply-accumulates (below that a session run's overhead,
# ~12 us, outweighs the gain), and only with one BLAS thread: with more, OpenBLAS's spinning
# threads split such a product well, while ONNX Runtime's pool (not spinning: it would compete
# with NumPy's work between calls) wakes its workers on every call (LSTM LM of
# bench/bench_midsize.py at 2 threads: 178 ms per step on OpenBLAS, 203-223 ms on MLAS).
THIN_N = 64
TALL_M = 256
MIN_MACS = 1 << 21
MIN_MACS_WIDE = 1 << 24

state: dict = {}
sessions: OrderedDict = OrderedDict()
_building = threading.Lock()
_local = threading.local()       # per thread: its IOBinding of each session (a binding is not shared)
# a forked child has none of the parent's threads: it starts a pool of its own when it needs one
# (the parent's pool object would queue work for threads that do not exist there)
os.register_at_fork(after_in_child=lambda: state.pop("pool", None))


def enabled(kind: str = "") -> bool:
    """Whether ONNX Runtime kernels may run (onnxruntime importable, not turned off by the
    environment); kind "conv" also honours ARCHDSL_CONV."""
    if "ok" not in state:
        ok = os.environ.get("ARCHDSL_KERNELS", "") != "numpy"
        if ok:
            try:
                import onnx  # noqa: F401  (both build and run the sessions)
                import onnxruntime  # noqa: F401
            except ImportError:
                ok = False
        state["ok"] = ok
    if kind == "conv" and os.environ.get("ARCHDSL_CONV", "") == "numpy":
        return False
    return state["ok"]


def blas_threads() -> int:
    """The BLAS thread count now (threadpool_limits may change it): ONNX Runtime's follows it."""
    if "blas" not in state:
        ctl = None
        try:
            from threadpoolctl import ThreadpoolController
            libs = ThreadpoolController().select(user_api="blas").lib_controllers
            # NumPy's own BLAS: others may be loaded too (numba imports SciPy, which brings
            # a second OpenBLAS), and only NumPy's runs the engine's products
            home = os.path.realpath(os.path.dirname(os.path.dirname(np.__file__)))
            mine = [c for c in libs if os.path.realpath(c.filepath).startswith(
                (os.path.join(home, "numpy") + os.sep, os.path.join(home, "numpy.libs") + os.sep))]
            ctl = (mine or libs or [None])[0]
        except Exception:       # threadpoolctl missing or a BLAS it cannot drive: one thread
            ctl = None
        state["blas"] = ctl
    ctl = state["blas"]
    return max(1, int(ctl.num_threads)) if ctl is not None else 1


# OpenBLAS's idle threads spin for 2^28 TSC cycles (0.1 s at 2.6 GHz) after each threaded call
# before they sleep, and spinning they take a core from whatever runs next: the engine's own
# parallel work (a recurrent layer's batch parts, convolution weight gradients, compiled
# kernels' parts) and ONNX Runtime's convolution threads. 2^18 cycles (0.1 ms) still bridges
# the gap between one GEMM and the next (bench/bench_midsize.py at two threads: LSTM LM 158 ->
# 121 ms a step, encoder 240 -> 226, MLP and ResNet unchanged).
BLAS_SPIN_EXPONENT = 18


@contextlib.contextmanager
def brief_blas_spin(exponent: int = BLAS_SPIN_EXPONENT):
    """Within the block, OpenBLAS's idle threads spin 2^exponent cycles before they sleep; after
    it, its default again. OpenBLAS reads OPENBLAS_THREAD_TIMEOUT when it starts its threads,
    so the variable is set, re-read (openblas_read_env) and the threads stopped
    (blas_thread_shutdown_; the next threaded call starts them anew), in and out of the block.
    Nothing happens where NumPy's BLAS is not a pthreads OpenBLAS with those entry points, where
    the user set the variable, or off the main thread (no BLAS call may be in flight)."""
    blas_threads()
    ctl = state.get("blas")
    lib = getattr(ctl, "dynlib", None)
    key = "OPENBLAS_THREAD_TIMEOUT"
    if (lib is None or getattr(ctl, "internal_api", "") != "openblas" or key in os.environ
            or getattr(ctl, "threading_layer", "") != "pthreads"
            or threading.current_thread() is not threading.main_thread()):
        yield
        return
    try:
        restart = [lib.openblas_read_env, lib.blas_thread_shutdown_]
    except AttributeError:
        yield
        return

    def use(value):
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
        for fn in restart:
            fn()
    use(str(int(exponent)))
    try:
        yield
    finally:
        use(None)


def workers(n: int):
    """A kept thread pool of n workers for splitting NumPy work (its copies, ufuncs and GEMMs
    release the GIL) between the BLAS threads' cores."""
    pool = state.get("pool")
    if pool is None or pool._max_workers != n:
        from concurrent.futures import ThreadPoolExecutor
        if pool is not None:
            pool.shutdown()
        pool = state["pool"] = ThreadPoolExecutor(n, thread_name_prefix="archdsl-kernels")
    return pool


def parallel(n: int, fn) -> list:
    """[fn(0), ..., fn(n-1)] on n worker threads, each with a one-thread BLAS (and one-thread
    sessions here): splitting independent work between the cores beats letting each of its
    modest GEMMs split itself, whose threads meet per call and leave the elementwise work
    between the calls on one core."""
    ctl = state.get("blas")
    if n <= 1 or ctl is None:
        return [fn(i) for i in range(n)]
    before = ctl.num_threads
    ctl.set_num_threads(1)
    try:
        return list(workers(n).map(fn, range(n)))
    finally:
        ctl.set_num_threads(before)


def row_parts(rows: int, n: int) -> list:
    """rows split into n consecutive slices of near-equal size, for `parallel`'s n workers."""
    return [slice(rows * i // n, rows * (i + 1) // n) for i in range(n)]


def session(key, build):
    """The cached session for `key` (its last item the thread count; built by build() ->
    (nodes, inputs[, output names], default ["Y"])), with an IOBinding of the calling thread's
    own (worker threads of `parallel` may run one session at once)."""
    with _building:         # the cache is least recently used first; workers may share it
        hit = sessions.get(key)
        if hit is None:
            hit = _build(key, build)
        else:
            sessions.move_to_end(key)
    if threading.current_thread() is threading.main_thread():
        return hit
    binds = getattr(_local, "binds", None)
    if binds is None:
        binds = _local.binds = {}
    sess = hit[0]
    mine = binds.get(id(sess))
    if mine is None or mine[0] is not sess:
        mine = binds[id(sess)] = (sess, sess.io_binding())
    return mine


def _build(key, build):
    import onnxruntime as ort
    from onnx import TensorProto, helper
    nodes, inputs, *outputs = build()
    graph = helper.make_graph(nodes, "k", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                               for n in (outputs[0] if outputs else ["Y"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft.nchwc", 1)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads = key[-1]
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if _shared_arena():
        so.add_session_config_entry("session.use_env_allocators", "1")
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    hit = (sess, sess.io_binding())
    sessions[key] = hit
    while len(sessions) > _CACHE_SIZE:
        sessions.popitem(last=False)
    return hit


def _shared_arena() -> bool:
    """All sessions take their scratch (NCHWc copies of inputs and outputs) from one arena of the
    ONNX Runtime environment: it grows to the largest call's needs once and is reused from then
    on, instead of an arena per session or a malloc per call interleaving with NumPy's arrays."""
    if "arena" not in state:
        import onnxruntime as ort
        try:
            ort.create_and_register_allocator(
                ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT),
                ort.OrtArenaCfg(0, 1, -1, -1))       # no cap, grow by what is asked, defaults
            state["arena"] = True
        except Exception:       # registered already (by another user of the process), or refused
            state["arena"] = False
    return state["arena"]


def run(key, build, feeds, out_shape, out=None):
    """Run the session for `key` on C-contiguous float32 `feeds`, into `out` (C-contiguous
    float32 of out_shape) or a fresh NumPy array."""
    from onnxruntime import OrtValue
    sess, io = session(key, build)
    if out is None:
        out = np.empty(out_shape, np.float32)
    # OrtValues wrap the arrays without copying; unlike bind_cpu_input, whose reference to the
    # array outlives clear_binding_inputs (every session would keep its last input alive),
    # they are released with the binding
    for name, arr in feeds.items():
        io.bind_ortvalue_input(name, OrtValue.ortvalue_from_numpy(arr))
    io.bind_output("Y", "cpu", 0, np.float32, out_shape, out.ctypes.data)
    try:
        sess.run_with_iobinding(io)
    finally:
        io.clear_binding_inputs()
        io.clear_binding_outputs()
    return out


def thin(M: int, K: int, N: int, dtype) -> bool:
    """Whether a float `dtype` product [M, K] x [K, N] of C-contiguous operands runs on MLAS:
    float32, tall and thin (see THIN_N), large enough to pay for a session run, one BLAS thread."""
    return (dtype == np.float32 and N <= THIN_N and M >= TALL_M and M * K * N >= MIN_MACS
            and enabled() and blas_threads() == 1)


def thin_matmul(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether matmul(a, b) would run on MLAS: 2-D C-contiguous operands of a `thin` product."""
    if a.dtype != b.dtype or a.ndim != 2 or b.ndim != 2:
        return False
    return a.flags.c_contiguous and b.flags.c_contiguous and thin(a.shape[0], a.shape[1], b.shape[1], a.dtype)


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a @ b (into out when given), on MLAS when thin_matmul(a, b); a wide product [M, K] x
    [K, N] (M <= THIN_N) whose b is a transposed view (b.T C-contiguous) runs transposed,
    (b.T @ a.T).T, when that is thin and at least MIN_MACS_WIDE (the two small transposing
    copies must pay: a GRU step [32, 512] x [512, 1536], 0.67 ms on OpenBLAS, 0.47 ms so);
    everything else on NumPy."""
    if a.ndim == 2 and b.ndim == 2 and (out is None or (out.flags.c_contiguous and out.dtype == np.float32)):
        if thin_matmul(a, b):
            return mlas_matmul(a, b, out)
        M, K = a.shape
        N = b.shape[1]
        if (M <= THIN_N and M * K * N >= MIN_MACS_WIDE and a.dtype == b.dtype and b.T.flags.c_contiguous
                and thin(N, K, M, a.dtype)):
            yt = mlas_matmul(b.T, np.ascontiguousarray(a.T), None)
            if out is None:
                return np.ascontiguousarray(yt.T)
            out[...] = yt.T
            return out
    return np.matmul(a, b, out=out)


def mlas_matmul(a, b, out=None):
    """a @ b on MLAS, whatever the shape: C-contiguous 2-D float32 operands (and out)."""
    M, K = a.shape
    N = b.shape[1]

    def build():
        from onnx import helper
        return [helper.make_node("MatMul", ["A", "B"], ["Y"])], [("A", [M, K]), ("B", [K, N])]
    return run(("matmul", M, K, N, blas_threads()), build, {"A": a, "B": b}, (M, N), out)
