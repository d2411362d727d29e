"""archdsl/autodiff/jit.py and jitkernels.py: the compiled (numba) kernels give what the NumPy
path gives. Batch norm, whose reductions accumulate differently, within float rounding and
through the op contract (ONNX Runtime parity, float64 gradients against finite differences);
ReLU and the Adam/AdamW update bit for bit; the same bits at one and two threads, and from
worker threads launching at once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

pytest.importorskip("numba")      # the dev extras install it (the `fast` extra)

from archdsl import autodiff as ad  # noqa: E402
from archdsl.autodiff import jit, jitkernels, normalization  # noqa: E402
from archdsl.ir.build import single_op_model  # noqa: E402
from archdsl.ir.types import Sym, TensorType  # noqa: E402
from archdsl.train import optim  # noqa: E402
from harness import check_grads, check_parity, random_inputs  # noqa: E402

N = Sym.named("N")
KERNELS = ("bn_stats", "bn_apply", "bn_grad_sums", "bn_grad_input", "ln_forward", "ln_backward", "relu", "relu_grad",
           "adam")


@pytest.fixture
def compiled(monkeypatch):
    """Every eligible array through the compiled kernels, however small; returns the names of
    the kernels launched (a spy around each)."""
    assert jit.kernels() is jitkernels
    monkeypatch.setattr(jit, "MIN_ELEMENTS", 0)
    monkeypatch.setattr(normalization, "MIN_POSITIONS", 1)
    launched = []
    for name in KERNELS:
        real = getattr(jitkernels, name)

        def spy(*args, _real=real, _name=name):
            launched.append(_name)
            return _real(*args)
        monkeypatch.setattr(jitkernels, name, spy)
    return launched


@pytest.fixture
def numpy_only(monkeypatch):
    """A switch to the NumPy path within a test: numpy_only(True) turns the kernels off."""
    mod = jit.kernels()

    def switch(off: bool):
        monkeypatch.setitem(jit.state, "mod", None if off else mod)
    return switch


# -- batch norm -------------------------------------------------------------------------------------

BN_CASES = [("BatchNorm", (N, 3, 7)), ("BatchNorm", (N, 3, 4, 5)), ("BatchNorm2d", (N, 2, 3, 3))]


@pytest.mark.parametrize("name,shape", BN_CASES, ids=[f"{n}-{len(s)}d" for n, s in BN_CASES])
def test_batchnorm_op_contract_on_kernels(name, shape, compiled):
    m = single_op_model(name, [TensorType("f32", shape)], eps=1e-3)
    x = random_inputs(m, dims={"N": 3}, seed=2)
    rng = np.random.default_rng(0)
    from archdsl.passes.init import initialize
    w = {k: (rng.uniform(0.5, 2.0, a.shape) if k.endswith("running_var") else rng.standard_normal(a.shape))
         .astype(np.float32) for k, a in initialize(m).items()}
    check_parity(m, x, weights=w)
    assert {"bn_apply"} <= set(compiled)
    compiled.clear()
    check_grads(m, x, weights=w)                      # running statistics
    check_grads(m, x, weights=w, training=True)       # batch statistics
    assert {"bn_stats", "bn_apply", "bn_grad_sums", "bn_grad_input"} <= set(compiled)


def _bn_run(x, gam, bet, u, training=True):
    rm, rv = np.zeros(x.shape[1], x.dtype), np.ones(x.shape[1], x.dtype)
    xt, gt, bt = (ad.tensor(a, requires_grad=True) for a in (x, gam, bet))
    y = normalization.batch_norm(xt, gt, bt, rm, rv, training)
    ad.backward(y, u)
    return y.data, xt.grad, gt.grad, bt.grad, rm, rv


def _bn_data(shape, seed=0):
    r = np.random.default_rng(seed)
    C = shape[1]
    x = (r.standard_normal(shape) * 3 + 5).astype(np.float32)     # an offset mean: cancellation
    return (x, r.standard_normal(C).astype(np.float32), r.standard_normal(C).astype(np.float32),
            r.standard_normal(shape).astype(np.float32))


@pytest.mark.parametrize("shape", [(16, 24, 13, 11),      # the channels in one block of the sums
                                   (2, 37, 64, 128)])     # 4 channels a block, the last one short
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_kernels_match_numpy_path(training, shape, numpy_only):
    x, gam, bet, u = _bn_data(shape)
    assert x.size >= jit.MIN_ELEMENTS
    numpy_only(True)
    ref = _bn_run(x, gam, bet, u, training)
    numpy_only(False)
    got = _bn_run(x, gam, bet, u, training)
    for name, a, e in zip(("y", "dx", "dgamma", "dbeta", "running_mean", "running_var"), got, ref):
        assert a.dtype == e.dtype == np.float32, name
        np.testing.assert_allclose(a, e, rtol=2e-5, atol=2e-5 * np.abs(e).max(), err_msg=name)


def test_kernels_same_bits_at_any_thread_count(monkeypatch):
    """At two threads a launch is split between the caller and a worker (parts by channel or
    row, each part's sums in one thread): the same bits as one thread gives."""
    monkeypatch.setattr(jit, "SPLIT_FLOATS", 1024)
    threads = set()
    real = jitkernels.bn_grad_sums

    def spy(*args):
        threads.add(threading.get_ident())
        return real(*args)
    monkeypatch.setattr(jitkernels, "bn_grad_sums", spy)
    data = _bn_data((2, 37, 64, 128), seed=3)      # blocks of 4 channels; the parts 18 and 19 wide
    runs = []
    for n in (1, 2):
        with threadpool_limits(n, user_api="blas"):
            threads.clear()
            runs.append(_bn_run(*data))
            assert len(threads) == n
            xt = ad.tensor(data[0], requires_grad=True)
            y = ad.relu(xt)
            ad.backward(y, data[3])
            runs[-1] += (y.data, xt.grad, _adam_run(optim.AdamW, {}, True, steps=3)[0])
            r = np.random.default_rng(5)
            runs[-1] += _ln_run(*(r.standard_normal(s_).astype(np.float32) for s_ in ((700, 64), 64, 64, (700, 64))))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_split_runs_every_part_once(monkeypatch):
    monkeypatch.setattr(jit, "SPLIT_FLOATS", 10)
    for threads in (1, 2):
        with threadpool_limits(threads, user_api="blas"):
            for n, size in [(0, 1), (1, 100), (7, 3), (1000, 1), (5, 1000)]:
                seen = []
                jit.split(n, lambda lo, hi: seen.append((lo, hi)), size)
                covered = sorted(i for lo, hi in seen for i in range(lo, hi))
                assert covered == list(range(n))
                assert len(seen) <= threads


def test_kernels_from_worker_threads_at_once():
    """Worker threads of ortkernels.parallel may launch kernels at once (they run them whole,
    unsplit): each result is the one a lone launch gives."""
    jk = jit.kernels()
    cases = [_bn_data((8, 32, 12, 12), seed=s)[0].reshape(8, 32, -1) for s in range(6)]

    def launch(x):
        mean, var = np.empty(32), np.empty(32)
        jit.split(32, lambda lo, hi: jk.bn_stats(x, mean, var, lo, hi), 8 * 144)
        out = np.empty_like(x)
        jk.bn_apply(x, mean.astype(np.float32), (1 / np.sqrt(var + 1e-5)).astype(np.float32),
                    np.zeros(32, np.float32), out, 0, 8 * 32)
        return mean, var, out
    alone = [launch(x) for x in cases]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(launch, cases * 3))
    for i, got in enumerate(together):
        for a, b in zip(got, alone[i % len(cases)]):
            np.testing.assert_array_equal(a, b)


# -- layer norm -------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(N, 8), (N, 3, 6), (N, 2, 3, 5)], ids=["2d", "3d", "4d"])
def test_layernorm_op_contract_on_kernels(shape, compiled):
    m = single_op_model("LayerNorm", [TensorType("f32", shape)])
    x = random_inputs(m, seed=3)
    rng = np.random.default_rng(0)
    from archdsl.passes.init import initialize
    w = {k: rng.standard_normal(a.shape).astype(np.float32) for k, a in initialize(m).items()}
    check_parity(m, x, weights=w)
    check_parity(m, x, weights=w, opsets=(13,))        # the ReduceMean/Sqrt/Div decomposition
    check_grads(m, x, weights=w)
    assert {"ln_forward", "ln_backward"} <= set(compiled)


def _ln_run(x, gam, bet, u):
    ts = [ad.tensor(a, requires_grad=True) if a is not None else None for a in (x, gam, bet)]
    y = normalization.layer_norm(*ts)
    ad.backward(y, u)
    return (y.data,) + tuple(t.grad for t in ts if t is not None)


@pytest.mark.parametrize("affine", [True, False])
def test_layernorm_kernels_match_numpy_path(affine, numpy_only):
    r = np.random.default_rng(4)
    x = (r.standard_normal((8, 100, 96)) * 3 + 5).astype(np.float32)
    u = r.standard_normal(x.shape).astype(np.float32)
    gam, bet = ((r.standard_normal(96).astype(np.float32), r.standard_normal(96).astype(np.float32))
                if affine else (None, None))
    numpy_only(True)
    ref = _ln_run(x, gam, bet, u)
    numpy_only(False)
    got = _ln_run(x, gam, bet, u)
    for a, e in zip(got, ref):
        assert a.dtype == e.dtype == np.float32
        np.testing.assert_allclose(a, e, rtol=2e-5, atol=2e-5 * np.abs(e).max())


# -- ReLU ---------------------------------------------------------------------------------------------

def test_relu_kernels_bitwise(compiled, numpy_only):
    r = np.random.default_rng(0)
    x = r.standard_normal(70001).astype(np.float32)      # not a multiple of the block
    x[:6] = [np.nan, np.inf, -np.inf, 0.0, 1e-42, -1e-42]
    g = r.standard_normal(x.size).astype(np.float32)
    g[10] = np.inf

    def run():
        xt = ad.tensor(x, requires_grad=True)
        y = ad.relu(xt)
        with np.errstate(invalid="ignore"):        # inf * 0 where the unit is off: NaN, as NumPy
            ad.backward(y, g)
        return y.data, xt.grad
    numpy_only(True)
    ref = run()
    numpy_only(False)
    got = run()
    assert compiled == ["relu", "relu_grad"]
    for a, e in zip(got, ref):
        np.testing.assert_array_equal(a, e)


def test_relu_op_contract_on_kernels(compiled):
    m = single_op_model("ReLU", [TensorType("f32", (N, 5, 6))])
    x = random_inputs(m, dims={"N": 4}, seed=1)
    check_parity(m, x)
    check_grads(m, x)
    assert {"relu", "relu_grad"} <= set(compiled)


# -- Adam ---------------------------------------------------------------------------------------------

def _adam_run(cls, kw, tiled: bool, steps=40):
    r = np.random.default_rng(1)
    if tiled:       # parameters that are consecutive views of one buffer (NumpyExecutor's layout)
        flat = r.standard_normal(90000).astype(np.float32)
        params = {"a": ad.Tensor(flat[:30000].reshape(300, 100), requires_grad=True),
                  "b": ad.Tensor(flat[30000:], requires_grad=True)}
    else:
        params = {"a": ad.tensor(r.standard_normal((300, 100)).astype(np.float32), requires_grad=True),
                  "b": ad.tensor(r.standard_normal(60000).astype(np.float32), requires_grad=True)}
    opt = cls(params, lr=1e-2, **kw)
    assert (opt._pspan is not None) == tiled
    for s in range(steps):
        for p in params.values():
            p.grad = r.standard_normal(p.data.shape).astype(np.float32)
        # a unit that gets a tiny gradient once, then none: its first moment decays into the
        # subnormal range, which the flush every FLUSH_EVERY steps clears
        params["b"].grad[:500] = np.float32(1e-37) if s == 0 else np.float32(0)
        opt.step()
    return [p.data.copy() for p in params.values()] + [opt._sflat["m"].copy(), opt._sflat["v"].copy()]


@pytest.mark.parametrize("tiled", [True, False], ids=["tiled", "separate"])
@pytest.mark.parametrize("cls,kw", [(optim.Adam, {}), (optim.Adam, {"weight_decay": 0.01}), (optim.AdamW, {})],
                         ids=["adam", "adam-l2", "adamw"])
def test_adam_kernel_bitwise(cls, kw, tiled, compiled, numpy_only):
    numpy_only(True)
    ref = _adam_run(cls, kw, tiled)
    numpy_only(False)
    got = _adam_run(cls, kw, tiled)
    assert compiled.count("adam") == 40
    for a, e in zip(got, ref):
        np.testing.assert_array_equal(a, e)
    assert np.all(np.isfinite(ref[0]))
    if not (cls is optim.Adam and kw):               # (L2 decay keeps those moments alive)
        assert np.all(ref[-2][-60000:][:500] == 0)   # flushed


# -- turning them off ---------------------------------------------------------------------------------

@pytest.mark.parametrize("var", ["ARCHDSL_JIT", "ARCHDSL_KERNELS"])
def test_environment_turns_kernels_off(var):
    env = {**os.environ, var: "numpy"}
    out = subprocess.run([sys.executable, "-c", "from archdsl.autodiff import jit; print(jit.kernels())"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"


def test_without_numba_the_numpy_path_runs(monkeypatch):
    """`pip install archdsl` without the `fast` extra: no kernels, and the engine still trains."""
    monkeypatch.setitem(sys.modules, "numba", None)         # import numba raises ImportError
    monkeypatch.setattr(jit, "state", {})
    assert jit.kernels() is None
    x, gam, bet, u = _bn_data((4, 8, 64, 64))
    y, gx, *_ = _bn_run(x, gam, bet, u)
    assert np.isfinite(gx).all() and abs(float(y.mean()) - float(bet.mean())) < 1e-3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_split_launches_in_a_forked_child(monkeypatch):
    """A child forked after the worker pool started gets a pool of its own (the parent's threads
    do not exist there): a split launch completes instead of waiting forever."""
    monkeypatch.setattr(jit, "SPLIT_FLOATS", 10)
    with threadpool_limits(2, user_api="blas"):
        jit.split(100, lambda lo, hi: None, 1)             # the parent's pool is running
        pid = os.fork()
        if pid == 0:                                        # the child: exit code 0 on success
            try:
                signal.alarm(60)                            # a hang ends the child, not the test
                seen = []
                jit.split(100, lambda lo, hi: seen.append((lo, hi)), 1)
                os._exit(0 if sorted(seen) == [(0, 50), (50, 100)] else 1)
            finally:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
