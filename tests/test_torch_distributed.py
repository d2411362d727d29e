"""`archdsl train --engine torch --nproc 2`: two processes on this machine (gloo, loopback only)
train with DistributedDataParallel and end where one process training on the same global batches
ends (within float rounding: the gradients are summed in another order); the run directory is
written once (by the first process); a distributed run resumes from its checkpoint, on two
processes or one. The global batch (15) does not split evenly, so unequal shares are covered."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from archdsl.train.checkpoint import read_checkpoint
from harness import run_archdsl

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent

SPEC = """
model Net(classes: int = 3) {
  input x: f32[N, 8]
  h = x -> Linear(32, name="fc1") -> Tanh -> Linear(16, name="fc2") -> ReLU
  output logits = h -> Linear(classes, name="head")
}

train Net {
  loss      = cross_entropy(logits, label)
  optimizer = SGD(lr=0.1, momentum=0.9)
  clip_norm = 5.0
  batch     = 15
  epochs    = 2
  metrics   = [accuracy]
  seed      = 0
}
"""


def run(*args, timeout=600):
    p = run_archdsl(*args, timeout=timeout)
    assert p.returncode == 0, p.stderr
    return p


def _same(a_dir: Path, b_dir: Path):
    a, b = read_checkpoint(a_dir / "checkpoint.npz"), read_checkpoint(b_dir / "checkpoint.npz")
    assert a.meta["step"] == b.meta["step"]
    for k, v in a.weights.items():
        np.testing.assert_allclose(b.weights[k], v, atol=1e-5, rtol=1e-5, err_msg=k)
    ha = [json.loads(line) for line in (a_dir / "metrics.jsonl").read_text().splitlines()]
    hb = [json.loads(line) for line in (b_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in ha] == [h["epoch"] for h in hb]
    for x, y in zip(ha, hb):
        np.testing.assert_allclose([x["loss"], x["accuracy"]], [y["loss"], y["accuracy"]], rtol=1e-5)


def test_two_processes_train_like_one(tmp_path):
    (tmp_path / "net.arch").write_text(SPEC)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, label=x[:, :3].argmax(1))
    common = ["train", tmp_path / "net.arch", "-d", tmp_path / "data.npz", "--engine", "torch", "--quiet"]

    p = run(*common, "--nproc", "2", "-o", tmp_path / "ddp")
    assert p.stdout.count("trained Net") == 1 and p.stdout.count("epoch 2/2") == 1, p.stdout
    assert "2 processes (gloo, DistributedDataParallel)" in p.stdout, p.stdout
    assert sorted(f.name for f in (tmp_path / "ddp").iterdir()) == ["checkpoint.npz", "metrics.jsonl"]
    run(*common, "-o", tmp_path / "one")
    _same(tmp_path / "one", tmp_path / "ddp")

    # resumed on two processes, and on one: both where a 3-epoch single run ends
    run(*common, "--epochs", "3", "-o", tmp_path / "one3")
    p = run(*common, "--nproc", "2", "--resume", tmp_path / "ddp/checkpoint.npz", "--epochs", "3", "-o", tmp_path / "ddp")
    assert p.stdout.count("resuming Net") == 1, p.stdout
    _same(tmp_path / "one3", tmp_path / "ddp")
    run(*common, "--resume", tmp_path / "one/checkpoint.npz", "--epochs", "3", "-o", tmp_path / "one")
    _same(tmp_path / "one3", tmp_path / "one")


def test_leave_frees_the_wrapper_before_the_group(tmp_path, monkeypatch):
    """A run's DistributedDataParallel wrapper, held only by a reference cycle (as a trainer and
    its run hold it), is freed when the process leaves the group and before the group goes: left
    to the interpreter's exit, gloo's threads can abort the process (a full test run saw a child
    exit with -6 once). The cyclic collector is off for the test, so only `leave` can free it."""
    import gc
    import weakref

    torch = pytest.importorskip("torch")
    from archdsl.backends.torch import distributed

    dist = torch.distributed
    dist.init_process_group("gloo", init_method=(tmp_path / "store").as_uri(), rank=0, world_size=1)
    group = distributed.Group(0, 1, 0, torch.device("cpu"))
    seen = []
    destroy = dist.destroy_process_group

    def spy(*a, **kw):
        seen.append(alive() is None)
        return destroy(*a, **kw)
    monkeypatch.setattr(dist, "destroy_process_group", spy)
    gc.disable()
    try:
        ddp = group.wrap(torch.nn.Linear(4, 2), find_unused=False)
        ddp(torch.ones(3, 4)).sum().backward()          # the reducer has run an allreduce
        cycle: dict = {"ddp": ddp}
        cycle["self"] = cycle
        alive = weakref.ref(ddp)
        del ddp, cycle
        assert alive() is not None                      # only the collector can free it
        distributed.leave(group)
    finally:
        gc.enable()
        if dist.is_initialized():
            destroy()
    assert seen == [True] and alive() is None
    assert not dist.is_initialized()
