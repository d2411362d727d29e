"""GAN training throughput: archdsl's NumPy engine vs PyTorch on gan_ring, measured in the same run.

Workload: specs/gan_ring.arch (MLP generator 16-128-128-2, MLP discriminator 2-128-128-1 with
LeakyReLU), batch 256 real + 256 generated points of the 8-Gaussian ring, one discriminator
update + one generator update per step, Adam for both, the spec's objective.

Engines, starting from the same initial weights:
  * archdsl      the real `archdsl train` loop: archdsl.gan.train_gan on the NumPy engine (data
                 order, noise, both updates, the running means the progress bar shows). Its D
                 has no BatchNorm, so real and generated points go through D in one pass of 512
                 rows (archdsl/gan/loop.py explains why that is the same loss and gradients).
  * torch        PyTorch CPU written as its DCGAN example does: fake = G(z); D(real) and
                 D(fake.detach()) as two passes, D step; D(fake), G step.
  * torch-joint  the same with one D pass over cat([real, fake.detach()]): the archdsl
                 arrangement, for a like-for-like comparison.

tests/test_gan_train.py::test_one_step_matches_pytorch checks that one step of archdsl and of
the torch loop give the same weights (all three objectives).

Timing: after warm-up steps, `--reps` repetitions; in each, every engine runs a block of steps
in turn (archdsl's blocks are timed inside its own loop, the torch blocks run between them from
its per-step callback; the torch order rotates), so machine load hits all engines alike.
Reported: the median over repetitions of steps/s, and archdsl / torch ratios. Same thread count
for all: BLAS threads (threadpoolctl) for NumPy, torch.set_num_threads for torch.

    python bench/bench_gan.py                   # 1 thread, writes bench/gan.md's results block
    python bench/bench_gan.py --threads 2 --reps 9 --no-write

Not a test: it asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1, help="BLAS / torch threads (default 1)")
    p.add_argument("--reps", type=int, default=7, help="timed repetitions (median; default 7)")
    p.add_argument("--block", type=int, default=100, help="steps per engine per repetition (default 100)")
    p.add_argument("--warmup", type=int, default=30, help="untimed steps per engine (default 30)")
    p.add_argument("--out", default=str(ROOT / "bench" / "gan.md"), help="Markdown file whose results block is replaced")
    p.add_argument("--no-write", action="store_true", help="print only")
    return p.parse_args(argv)


def torch_engine(pair, joint: bool, threads: int, real: np.ndarray, seed: int):
    import torch
    from archdsl.passes.init import initialize
    torch.set_num_threads(threads)
    cfg = pair.config

    def mlp(ir, w):
        layers = []
        for n in ir.nodes:
            if n.kind == "Linear":
                wt = w[n.params["weight"]]
                lin = torch.nn.Linear(wt.shape[1], wt.shape[0])
                with torch.no_grad():
                    lin.weight.copy_(torch.from_numpy(wt))
                    lin.bias.copy_(torch.from_numpy(w[n.params["bias"]]))
                layers.append(lin)
            elif n.kind == "ReLU":
                layers.append(torch.nn.ReLU())
            elif n.kind == "LeakyReLU":
                layers.append(torch.nn.LeakyReLU(n.attrs["negative_slope"]))
            else:
                raise SystemExit(f"bench_gan: no torch equivalent written for {n.kind}")
        return torch.nn.Sequential(*layers)

    G = mlp(pair.generator.ir, initialize(pair.generator.ir, cfg.seed))
    D = mlp(pair.discriminator.ir, initialize(pair.discriminator.ir, cfg.seed + 1))

    def adam(params, o):
        return torch.optim.Adam(params, lr=o["lr"], betas=tuple(o.get("betas", (0.9, 0.999))))
    og, od = adam(G.parameters(), cfg.g_optimizer), adam(D.parameters(), cfg.d_optimizer)
    B, k = cfg.batch, pair.noise_shape[0]
    data = torch.from_numpy(real)
    gen = torch.Generator().manual_seed(seed)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    ls = cfg.objective == "least_squares"
    P = cfg.pack                                 # PacGAN: D judges groups of P samples

    def pack(t):
        return t.reshape(t.shape[0] // P, P * t.shape[1])
    ones, zeros = torch.ones(B // P, 1), torch.zeros(B // P, 1)
    targets = torch.cat([ones, zeros])
    state = {"i": 0, "perm": torch.randperm(len(data), generator=gen)}

    def d_loss(sr, sf):
        if ls:
            return 0.5 * (((sr - 1) ** 2).mean() + (sf ** 2).mean())
        return bce(sr, ones) + bce(sf, zeros)

    def g_loss(s):
        if ls:
            return 0.5 * ((s - 1) ** 2).mean()
        if cfg.objective == "minimax":
            return -bce(s, zeros)
        return bce(s, ones)

    def step():
        i = state["i"]
        if (i + 1) * B > len(data):
            state["i"], i, state["perm"] = 0, 0, torch.randperm(len(data), generator=gen)
        x = data[state["perm"][i * B:(i + 1) * B]]
        state["i"] += 1
        z = torch.randn(B, k, generator=gen)
        fake = G(z)
        if joint:
            s = D(torch.cat([pack(x), pack(fake.detach())]))
            ld = (0.5 * ((s - targets) ** 2).mean() * 2 if ls else bce(s, targets) * 2)
        else:
            ld = d_loss(D(pack(x)), D(pack(fake.detach())))
        od.zero_grad()
        ld.backward()
        od.step()
        lg = g_loss(D(pack(fake)))
        og.zero_grad()
        lg.backward()
        og.step()
        return ld.item(), lg.item()
    return step


def main(argv=None) -> dict:
    args = _args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import archdsl
    from archdsl.gan import train_gan
    from gan_ring import ring_data

    pair = archdsl.compile(ROOT / "specs" / "gan_ring.arch").gan()
    cfg = pair.config
    real = ring_data()
    engines = {}
    try:
        import torch
        engines = {"torch": torch_engine(pair, False, args.threads, real, 0),
                   "torch-joint": torch_engine(pair, True, args.threads, real, 0)}
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
        print("torch is not installed: archdsl's figures only (pip install torch==2.13.0)", file=sys.stderr)
    rates = {"archdsl": [], **{k: [] for k in engines}}
    W, K = args.warmup, args.block
    mark = {"t": None, "rep": 0}

    def run_torch(n_steps, rep):
        names = list(engines)
        names = names[rep % len(names):] + names[:rep % len(names)]
        for name in names:
            t = time.perf_counter()
            for _ in range(n_steps):
                engines[name]()
            if rep >= 0:
                rates[name].append(n_steps / (time.perf_counter() - t))

    def on_step(trainer, step, rec):
        now = time.perf_counter()
        if step == W:
            run_torch(W, -1)                   # warm-up of the peers
            mark["t"] = time.perf_counter()
        elif step > W and (step - W) % K == 0:
            rates["archdsl"].append(K / (now - mark["t"]))
            run_torch(K, mark["rep"])
            mark["rep"] += 1
            mark["t"] = time.perf_counter()

    total = W + args.reps * K
    t0 = time.perf_counter()
    train_gan(pair, real, steps=total, quiet=True, log=lambda s: None, threads=args.threads, on_step=on_step)
    wall = time.perf_counter() - t0
    med = {k: statistics.median(v) for k, v in rates.items() if v}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = [f"| engine | steps/s (median of {args.reps}) | ms/step | archdsl / engine |", "|---|---:|---:|---:|"]
    for k, v in med.items():
        ratio = med["archdsl"] / v
        rows.append(f"| {k} | {v:,.1f} | {1000 / v:.2f} | {ratio:.2f}x |")
    info = (f"gan_ring, batch {cfg.batch}, 1 D + 1 G update per step, objective {cfg.objective}; "
            f"{args.threads} thread{'s' if args.threads != 1 else ''}; numpy {np.__version__}"
            + (f", torch {torch_version}" if torch_version else "")
            + f"; Python {platform.python_version()}; {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores; load average {load:.1f} at the end; {wall:.0f}s in all")
    text = info + "\n\n" + "\n".join(rows) + "\n"
    print(text)
    if not args.no_write:
        out = Path(args.out)
        begin, end = "<!-- bench_gan results -->", "<!-- /bench_gan results -->"
        doc = out.read_text() if out.exists() else f"# GAN training throughput\n\n{begin}\n{end}\n"
        if begin not in doc:
            doc += f"\n{begin}\n{end}\n"
        head, rest = doc.split(begin, 1)
        tail = rest.split(end, 1)[1]
        out.write_text(f"{head}{begin}\n{text}{end}{tail}")
        print(f"wrote {out}")
    return {"median_steps_per_s": med, "rates": rates, "info": info}


if __name__ == "__main__":
    res = main()
    print(json.dumps(res["median_steps_per_s"]))
