"""Data-parallel training with torch.distributed: several processes, one model replica each,
gradients averaged by DistributedDataParallel (gloo on CPUs, NCCL on GPUs).

    archdsl train SPEC --engine torch --nproc 4 -d data.npz -o run/          # one machine
    torchrun --nnodes 2 --node-rank R --nproc-per-node 4 \\
        --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m archdsl train SPEC --engine torch --device cuda -d data.npz -o run/  # several

`--nproc N` starts N processes on this machine, each running the same command, with the
environment torchrun would give them (RANK, WORLD_SIZE, LOCAL_RANK); they meet through a file
store in a temporary directory (ARCHDSL_DIST_INIT), so no port is picked and raced for; each
joins the group (`join`). When one fails the others are stopped. Every process reads the same data and draws the same
shuffled order from the run's seed; each takes its share of every global batch (the `batch` of
the train section), so a step's update is the one a single process makes on the whole batch
(the loss is rescaled by the share's size: see `TorchTrainer._distributed_step`). Only rank 0 writes the
run directory (checkpoints, metrics.jsonl) and prints; a resumed run reads the checkpoint in
every process. BatchNorm normalises each process's share with its own statistics (as
DistributedDataParallel without SyncBatchNorm does).
"""
from __future__ import annotations

import gc
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import ArchError
from .lazy import require_torch


@dataclass
class Group:
    """This process's place in a distributed run."""
    rank: int
    world: int
    local_rank: int
    device: object

    def share(self, idx: np.ndarray) -> np.ndarray:
        """This process's rows of a global batch (contiguous, sizes differing by at most one)."""
        return np.array_split(idx, self.world)[self.rank]

    def all_sum(self, values: list[float]) -> list[float]:
        """The sums over every process of a few numbers (one all_reduce)."""
        torch = require_torch()
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def wrap(self, module, find_unused: bool):
        torch = require_torch()
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)


def in_group() -> bool:
    """Is this process one of several started by torchrun?"""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device: str | None) -> Group | None:
    """Join the process group torchrun set up (None when this is a single process)."""
    if not in_group():
        return None
    torch = require_torch()
    dist = torch.distributed
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = (device or "cpu").startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise ArchError("--device cuda: PyTorch sees no CUDA device in this process")
        dev = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        # --nproc: a file rendezvous (launch), no port to race for; torchrun: its env:// store
        dist.init_process_group(backend="nccl" if cuda else "gloo",
                                init_method=os.environ.get("ARCHDSL_DIST_INIT", "env://"), rank=rank, world_size=world)
    return Group(rank, world, local, dev)


def leave(group: Group | None) -> None:
    """Leave the process group: what still holds it is freed first, then the group itself.
    A run's DistributedDataParallel wrapper (whose reducer holds the group) is held by its
    trainer, which sits in a reference cycle with its run: the trainer drops it when the run ends
    (TorchTrainer.fit), and anything else in a cycle is collected here, while the interpreter is
    whole. Left to the interpreter's exit, gloo's threads may still need the GIL when Python no
    longer hands it out, and the process aborts ("terminate called without an active
    exception", exit code -6; seen once in a full test run)."""
    if group is not None:
        torch = require_torch()
        gc.collect()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def launch(nproc: int, argv: list[str]) -> int:
    """Run `archdsl <argv>` in `nproc` processes on this machine; the first failure's exit code
    (the others are stopped then), else 0."""
    require_torch("--nproc")
    import tempfile
    with tempfile.TemporaryDirectory(prefix="archdsl-nproc-") as rendezvous:
        base = {**os.environ, "ARCHDSL_DIST_INIT": Path(rendezvous, "store").as_uri(), "WORLD_SIZE": str(nproc),
                "LOCAL_WORLD_SIZE": str(nproc)}
        base.setdefault("OMP_NUM_THREADS", "1")          # as torchrun: N processes share the cores
        procs = [subprocess.Popen([sys.executable, "-m", "archdsl", *argv],
                                  env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(nproc)]
        return _wait_all(procs)


def _wait_all(procs: list) -> int:
    """The first failure's exit code (the others are stopped then), else 0; 130 on Ctrl-C."""
    code = 0
    try:
        while procs:
            for p in list(procs):
                try:
                    rc = p.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    continue
                procs.remove(p)
                if rc and not code:
                    code = rc
                    for q in procs:
                        q.terminate()
    except KeyboardInterrupt:          # every process got the Ctrl-C too: let them save and stop
        for p in procs:
            p.wait()
        return 130
    return code


def without_nproc(argv: list[str]) -> list[str]:
    """The command line without its --nproc option (what each process runs)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        out.append(a)
    return out
