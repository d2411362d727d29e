"""Shared checks: the two executors agree, and NumPy gradients match finite differences; and the
examples, loaded as modules."""
from __future__ import annotations

import argparse
import os
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from archdsl.autodiff import Tensor, backward
from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.backends.onnx.export import max_opset, to_onnx
from archdsl.ir.types import resolve_dim
from archdsl.passes.init import initialize

OPSETS = (17, max_opset())
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_archdsl(*args, timeout=300, env_extra=None):
    """`python -m archdsl ARGS` in a subprocess from the repository root, BLAS on one thread;
    the completed process (a traceback on stderr fails the test: it is an archdsl bug)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    p = subprocess.run([sys.executable, "-m", "archdsl", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, cwd=EXAMPLES.parent, env=env)
    assert "Traceback" not in p.stderr, p.stderr
    return p


def toy_workdir(path: Path, spec: str) -> Path:
    """A folder for the CLI tests: the spec as net.arch, and the small classification data they
    train on as data.npz (x [200, 8], label = argmax of x's first three columns)."""
    (path / "net.arch").write_text(spec)
    x = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    np.savez(path / "data.npz", x=x, label=x[:, :3].argmax(1))
    return path


def example(name: str):
    """examples/NAME.py loaded as a module, with examples/ on sys.path (where the examples find
    _common and each other, as when they are run as scripts)."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def random_inputs(model, seed: int = 0, dims: dict | None = None, high: int = 5) -> dict[str, np.ndarray]:
    """Random inputs for the model's input types; symbolic dims from `dims` (default N=2, T=5)."""
    dims = {"N": 2, "T": 5, "S": 4, **(dims or {})}
    rng = np.random.default_rng(seed)
    out = {}
    for v in model.inputs:
        shape = tuple(resolve_dim(d, dims) if resolve_dim(d, dims) is not None else 3 for d in v.type.shape)
        if v.type.is_float:
            out[v.name] = rng.standard_normal(shape).astype(np.float32)
        elif v.type.dtype == "bool":
            out[v.name] = rng.random(shape) < 0.5
        else:
            out[v.name] = rng.integers(0, high, shape).astype(v.type.np_dtype)
    return out


def ort_run(proto: onnx.ModelProto, inputs: dict) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, inputs)))


def check_parity(model, inputs: dict, weights=None, opsets=OPSETS, atol=1e-4, rtol=1e-4, seed=0, provider=None):
    """Export at each opset (with `provider`'s lowerings, if given), full_check it, run on ORT's
    CPU provider, compare with the NumPy engine."""
    weights = weights if weights is not None else initialize(model, seed)
    ref = NumpyExecutor(model, weights).run(inputs)
    for opset in opsets:
        proto = to_onnx(model, weights, opset=opset, provider=provider)
        onnx.checker.check_model(proto, full_check=True)
        got = ort_run(proto, inputs)
        for v in model.outputs:
            np.testing.assert_allclose(got[v.name], ref[v.name], atol=atol, rtol=rtol,
                                       err_msg=f"{model.name} output {v.name} at opset {opset}")
    return ref


def check_grads(model, inputs: dict, weights=None, seed=0, n_coords=6, eps=1e-6, rtol=1e-5, atol=1e-7,
                training=False):
    """Reverse-mode gradients of a random projection of the outputs vs central differences in
    float64, for every parameter and every float input (a few random coordinates each)."""
    weights = weights if weights is not None else initialize(model, seed)
    weights = {k: v.astype(np.float64) for k, v in weights.items()}
    rng = np.random.default_rng(seed + 1)
    x64 = {k: (v.astype(np.float64) if np.issubdtype(v.dtype, np.floating) else v) for k, v in inputs.items()}
    probe = None

    def loss_of(params: dict, xs: dict, record: bool):
        nonlocal probe
        ex = NumpyExecutor(model, params, dtype=np.float64)
        feed = {k: (Tensor(v, requires_grad=True) if record and np.issubdtype(v.dtype, np.floating) else v)
                for k, v in xs.items()}
        outs = ex.forward(feed, training=training)
        if probe is None:
            probe = {k: rng.standard_normal(t.shape) for k, t in outs.items()}
        total = None
        for k, t in outs.items():
            term = (t * probe[k]).sum()
            total = term if total is None else total + term
        return total, ex, feed

    loss, ex, feed = loss_of(weights, x64, True)
    backward(loss)
    checked = 0
    targets = [("param", n, ex.params[n]) for n in ex.params if ex.params[n].requires_grad]
    targets += [("input", n, feed[n]) for n in feed if isinstance(feed[n], Tensor)]
    for kind, name, t in targets:
        g = t.grad if t.grad is not None else np.zeros_like(t.data)
        base = weights[name] if kind == "param" else x64[name]
        flat_idx = rng.choice(base.size, size=min(n_coords, base.size), replace=False)
        for fi in flat_idx:
            idx = np.unravel_index(fi, base.shape)
            vals = []
            for sgn in (1, -1):
                w2 = dict(weights); x2 = dict(x64)
                arr = base.copy(); arr[idx] += sgn * eps
                if kind == "param":
                    w2[name] = arr
                else:
                    x2[name] = arr
                vals.append(float(loss_of(w2, x2, False)[0].data))
            num = (vals[0] - vals[1]) / (2 * eps)
            ana = float(g[idx])
            assert abs(num - ana) <= atol + rtol * max(1.0, abs(num), abs(ana)), \
                f"{model.name}: d/d {kind} {name}{list(idx)}: analytic {ana:.8g} vs numeric {num:.8g}"
            checked += 1
    assert checked > 0
    return checked


def check_torch(model, inputs: dict, fn, weights=None, seed=0, atol=1e-7, rtol=1e-6, training=False) -> dict:
    """The NumPy engine against PyTorch in float64, same weights and inputs: every output, and the
    gradients of a random projection of the outputs for every float input and every parameter.

    fn(torch, xs, ps) -> a torch tensor or a tuple of them (the model's outputs in order), where
    xs are the model inputs and ps the parameters by local name ('weight'), as float64 torch
    tensors (float ones require grad). Returns our outputs (name -> array)."""
    import torch
    weights = weights if weights is not None else initialize(model, seed)
    ex = NumpyExecutor(model, {k: v.astype(np.float64) for k, v in weights.items()}, dtype=np.float64)
    feed = {k: (Tensor(v.astype(np.float64), requires_grad=True) if np.issubdtype(v.dtype, np.floating) else v)
            for k, v in inputs.items()}
    outs = ex.forward(feed, training=training)
    tx = {k: (torch.tensor(v.data, requires_grad=True) if isinstance(v, Tensor) else torch.tensor(v))
          for k, v in feed.items()}
    local = {name.rsplit(".", 1)[-1]: name for name in model.parameters}
    tp = {k: torch.tensor(ex.params[n].data.copy(), requires_grad=ex.params[n].requires_grad)
          for k, n in local.items()}
    theirs = fn(torch, tx, tp)
    theirs = list(theirs) if isinstance(theirs, (tuple, list)) else [theirs]
    assert len(theirs) == len(model.outputs)
    rng = np.random.default_rng(seed + 11)
    ours_total, theirs_total = None, None
    for v, b in zip(model.outputs, theirs):
        a = outs[v.name]
        np.testing.assert_allclose(a.data, b.detach().numpy(), atol=atol, rtol=rtol, err_msg=f"output {v.name}")
        if not np.issubdtype(a.data.dtype, np.floating):
            continue
        probe = rng.standard_normal(a.shape)
        ours_total = (a * probe).sum() if ours_total is None else ours_total + (a * probe).sum()
        t = (b * torch.tensor(probe)).sum()
        theirs_total = t if theirs_total is None else theirs_total + t
    backward(ours_total)
    theirs_total.backward()
    for k, n in local.items():
        if tp[k].requires_grad:
            np.testing.assert_allclose(ex.params[n].grad, tp[k].grad.numpy(), atol=atol, rtol=rtol,
                                       err_msg=f"gradient of {n}")
    for k, t in feed.items():
        if isinstance(t, Tensor):
            np.testing.assert_allclose(t.grad, tx[k].grad.numpy(), atol=atol, rtol=rtol,
                                       err_msg=f"gradient of input {k}")
    return {k: t.data for k, t in outs.items()}


def check_engines(model, inputs: dict, weights=None, seed=0, training=False, grad=True, atol=1e-5, rtol=1e-5,
                  grad_tol=1e-7) -> dict:
    """The PyTorch engine against the NumPy engine on the same weights and inputs: every output in
    float32 within atol/rtol, the buffers a training forward updates (BatchNorm's running
    statistics), and (grad) in float64 the gradients of a random projection of the float outputs
    for every trainable parameter and float input. Training mode draws the NumPy engine's masks and
    noise on both (NumpyRandom). Returns the NumPy outputs."""
    import torch

    from archdsl.backends.torch.module import TorchModel
    weights = weights if weights is not None else initialize(model, seed)
    for dtype, tdtype in ((np.float32, torch.float32), (np.float64, torch.float64)):
        if dtype == np.float64 and not grad:
            break
        w = {k: v.astype(dtype) for k, v in weights.items()}
        xs = {k: (v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v) for k, v in inputs.items()}
        ex = NumpyExecutor(model, w, dtype=dtype)
        ex.ctx.rng = np.random.default_rng(seed + 5)
        net = TorchModel(model, w, dtype=tdtype)
        net.use_numpy_random(np.random.default_rng(seed + 5))
        feed = {k: (Tensor(v, requires_grad=True) if np.issubdtype(v.dtype, np.floating) else v) for k, v in xs.items()}
        tx = {k: torch.tensor(v, requires_grad=np.issubdtype(v.dtype, np.floating)) for k, v in xs.items()}
        ours = ex.forward(feed, training=training)
        theirs = net(tx, training=training)
        for v in model.outputs:
            a, b = ours[v.name].data, theirs[v.name].detach().numpy()
            assert a.shape == b.shape and a.dtype == b.dtype, (v.name, a.shape, b.shape, a.dtype, b.dtype)
            tol = dict(atol=atol, rtol=rtol) if dtype == np.float32 else dict(atol=grad_tol, rtol=grad_tol)
            np.testing.assert_allclose(b, a, err_msg=f"{model.name} output {v.name} ({np.dtype(dtype).name})", **tol)
        for n, t in net.tensors().items():
            np.testing.assert_allclose(t.detach().numpy(), ex.params[n].data, atol=atol, rtol=rtol,
                                       err_msg=f"{model.name} buffer/parameter {n} after the forward")
        if dtype == np.float32:
            continue
        rng = np.random.default_rng(seed + 11)
        total_np, total_t = None, None
        for v in model.outputs:
            a = ours[v.name]
            if not np.issubdtype(a.data.dtype, np.floating):
                continue
            probe = rng.standard_normal(a.shape)
            total_np = (a * probe).sum() if total_np is None else total_np + (a * probe).sum()
            term = (theirs[v.name] * torch.tensor(probe)).sum()
            total_t = term if total_t is None else total_t + term
        if total_np is None:
            continue
        backward(total_np)
        total_t.backward()
        for n, t in net.tensors().items():
            if t.requires_grad:
                g = t.grad.numpy() if t.grad is not None else np.zeros(t.shape)
                mine = ex.params[n].grad if ex.params[n].grad is not None else np.zeros(t.shape)
                np.testing.assert_allclose(g, mine, atol=grad_tol, rtol=grad_tol * 10, err_msg=f"gradient of {n}")
        for k, t in feed.items():
            if isinstance(t, Tensor):
                g = tx[k].grad.numpy() if tx[k].grad is not None else np.zeros(t.shape)
                mine = t.grad if t.grad is not None else np.zeros(t.shape)
                np.testing.assert_allclose(g, mine, atol=grad_tol, rtol=grad_tol * 10, err_msg=f"gradient of input {k}")
    return {k: t.data for k, t in ours.items()}


def run_exported(source: str, weights: dict, args: list, training: bool = False) -> list:
    """Run the text of an exported PyTorch module (export --format torch) with only torch and
    math importable: its class, the archdsl weights loaded by name, called on `args` (arrays);
    its outputs as arrays."""
    import builtins

    import torch
    real_import = builtins.__import__

    def no_archdsl(name, *a, **kw):
        if name.split(".")[0] == "archdsl":
            raise ImportError("an exported module must not import archdsl")
        return real_import(name, *a, **kw)
    ns = {"__name__": "exported"}
    builtins.__import__ = no_archdsl
    try:
        exec(compile(source, "exported.py", "exec"), ns)
    finally:
        builtins.__import__ = real_import
    cls = next(v for k, v in ns.items() if isinstance(v, type) and issubclass(v, torch.nn.Module)
               and v.__module__ == "exported")
    model = cls()
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
    model.train(training)
    with torch.no_grad():
        out = model(*[torch.from_numpy(np.asarray(a)) for a in args])
    return [t.detach().numpy() for t in (out if isinstance(out, tuple) else (out,))]


def run_authoring(capsys, *argv):
    """Run an authoring subcommand (`archdsl fmt`, `show`, ...) in this process, as the CLI would:
    (exit code, stdout, stderr), an ArchError printed and exit code 1."""
    from archdsl.authoring.cli import add_commands
    from archdsl.errors import ArchError
    ap = argparse.ArgumentParser(prog="archdsl")
    add_commands(ap.add_subparsers())
    args = ap.parse_args([str(a) for a in argv])
    try:
        rc = args.fn(args)
    except ArchError as err:
        print(err.format(), file=sys.stderr)
        rc = 1
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_recurrent_matches_torch(ours, theirs, ex, torch_module, op: str, inputs, seed: int = 0, atol=1e-10):
    """Outputs `ours` (archdsl Tensors) and `theirs` (torch tensors) of the same recurrent layer
    agree, and so do the gradients of a random projection of them: every parameter's (archdsl
    names them `{op}.{torch name}`) and each (archdsl Tensor, torch tensor) pair of `inputs`."""
    import torch
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.data, b.detach().numpy(), atol=atol)
    rng = np.random.default_rng(seed)
    probes = [rng.standard_normal(b.shape) for b in theirs]
    backward(sum((a * p).sum() for a, p in zip(ours, probes)))
    sum((b * torch.tensor(p)).sum() for b, p in zip(theirs, probes)).backward()
    for k, p in torch_module.named_parameters():
        np.testing.assert_allclose(ex.params[f"{op.lower()}.{k}"].grad, p.grad.numpy(), atol=atol, err_msg=k)
    for i, (a, b) in enumerate(inputs):
        np.testing.assert_allclose(a.grad, b.grad.numpy(), atol=atol, err_msg=f"input {i}")


# -- bounded work, counted (never timed) ----------------------------------------------------------
class Counter:
    """Counts calls of a wrapped function: how much work a limit let through."""
    def __init__(self):
        self.calls = 0


def count_calls(monkeypatch, owner, attr: str) -> Counter:
    """Wrap owner.attr (a function or method) so each call is counted; returns the counter."""
    counter, fn = Counter(), getattr(owner, attr)

    def counted(*a, **kw):
        counter.calls += 1
        return fn(*a, **kw)
    monkeypatch.setattr(owner, attr, counted)
    return counter


def forbid_parsing(monkeypatch):
    """Fail the test if Lark is asked to parse: input must be refused before the parser runs."""
    from archdsl.syntax import parser as P

    class NoParse:
        def parse(self, *a, **kw):
            raise AssertionError("the Lark parser ran; the input should have been refused before it")
    monkeypatch.setattr(P, "_parser", lambda: NoParse())


def opens_without_blocking(monkeypatch, path) -> list:
    """Record the flags of every os.open of `path`; a FIFO opened without O_NONBLOCK would wait
    for a writer forever. Returns the list the flags are appended to."""
    seen, real, target = [], os.open, os.path.realpath(path)

    def spy(p, flags, *a, **kw):
        if os.path.realpath(p) == target:
            seen.append(flags)
            assert flags & os.O_NONBLOCK, f"{p} opened without O_NONBLOCK: a FIFO blocks"
        return real(p, flags, *a, **kw)
    monkeypatch.setattr(os, "open", spy)
    return seen
