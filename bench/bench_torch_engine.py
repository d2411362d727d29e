"""The PyTorch engine's overhead: archdsl's torch modules against a hand-written PyTorch twin.

For three shipped specs (the digits MLP and CNN, GPTSmall from specs/gpt.arch) one training step
(forward, cross-entropy, backward, Adam) is timed on three modules holding the same weights and
fed the same batches:

    twin       the network written by hand as a plain torch module (nn.Linear, nn.Conv2d,
               F.scaled_dot_product_attention, ...)
    engine     archdsl's TorchModel, what `archdsl train --engine torch` steps (inputs and
               outputs by name, one torch_forward per layer)
    exported   the module `archdsl export --format torch` writes, imported from its source

The three run interleaved (one block of steps of each in turn, the order rotated every round),
so machine load hits them alike; each figure is the median over rounds of a block's time per
step, and each ratio is the median of the per-round ratios to the twin in the same round. The
issue's target is an overhead of at most 10% (ratio <= 1.10). Nothing is asserted.

    .venv/bin/python bench/bench_torch_engine.py [--rounds 15] [--steps 20] [--threads 1] [--write]

--write puts the table into bench/README.md (between the torch-engine results markers).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchlib import machine, write_results     # (python puts the bench folder on sys.path)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch                                    # noqa: E402
import torch.nn as nn                           # noqa: E402
import torch.nn.functional as F                 # noqa: E402

import archdsl                                  # noqa: E402
from archdsl.backends.torch.export import module_source   # noqa: E402
from archdsl.backends.torch.module import TorchModel      # noqa: E402
from archdsl.passes.init import initialize      # noqa: E402


def _copy(mod: nn.Module, weights: dict, name: str) -> None:
    with torch.no_grad():
        mod.weight.copy_(torch.from_numpy(weights[f"{name}.weight"]))
        if mod.bias is not None:
            mod.bias.copy_(torch.from_numpy(weights[f"{name}.bias"]))


def twin_mlp(w: dict) -> nn.Module:
    net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    for i, name in ((0, "linear_1"), (2, "linear_2"), (4, "linear_3")):
        _copy(net[i], w, name)
    return net


def twin_cnn(w: dict) -> nn.Module:
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    for i, name in ((0, "conv2d_1"), (3, "conv2d_2"), (7, "linear_1"), (9, "linear_2")):
        _copy(net[i], w, name)
    return net


def twin_gpt(w: dict) -> nn.Module:
    from bench_transformer import torch_gpt     # the GPTSmall twin bench_transformer.py times
    return torch_gpt(w)


def workloads(batch_mlp: int, batch_cnn: int, batch_gpt: int, seq: int):
    """(name, IR, twin, batches) of each spec, with the same seeded weights and data."""
    rng = np.random.default_rng(0)
    out = []
    for name, path, model, twin, make in (
            ("digits MLP", "digits_mlp.arch", None, twin_mlp,
             lambda: (rng.random((batch_mlp, 64), dtype=np.float32), rng.integers(0, 10, batch_mlp))),
            ("digits CNN", "digits_cnn.arch", None, twin_cnn,
             lambda: (rng.random((batch_cnn, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, batch_cnn))),
            ("GPTSmall", "gpt.arch", "GPTSmall", twin_gpt,
             lambda: (rng.integers(0, 64, (batch_gpt, seq)), rng.integers(0, 64, (batch_gpt, seq))))):
        ir = archdsl.compile(ROOT / "specs" / path).model(model).ir
        w = initialize(ir, 0)
        out.append((name, ir, w, twin(w), [make() for _ in range(8)]))
    return out


class Runner:
    """One module with its own Adam, stepping through the batches."""

    def __init__(self, module: nn.Module, call):
        self.module, self.call = module, call
        self.opt = torch.optim.Adam(module.parameters(), lr=1e-3)
        module.train()

    def step(self, x, y) -> float:
        self.opt.zero_grad(set_to_none=True)
        out = self.call(self.module, x)
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        loss.backward()
        self.opt.step()
        return loss.item()


def exported_module(ir, weights: dict, tmp: Path) -> nn.Module:
    """The module `export --format torch` writes, imported from its file, with the weights."""
    import importlib.util
    path = tmp / f"m_{ir.name.lower()}.py"
    path.write_text(module_source(ir))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cls = next(v for v in vars(mod).values() if isinstance(v, type) and issubclass(v, nn.Module)
               and v.__module__ == path.stem)
    m = cls()
    m.load_state_dict({k: torch.from_numpy(np.asarray(v).copy()) for k, v in weights.items()})
    return m


def measure(name, ir, weights, twin, batches, rounds: int, steps: int, tmp: Path) -> dict:
    in_name, out_name = ir.inputs[0].name, ir.outputs[0].name
    tb = [(torch.from_numpy(x), torch.from_numpy(np.asarray(y))) for x, y in batches]
    runners = {
        "twin": Runner(twin, lambda m, x: m(x)),
        "engine": Runner(TorchModel(ir, weights), lambda m, x: m({in_name: x})[out_name]),
        "exported": Runner(exported_module(ir, weights, tmp), lambda m, x: m(x)),
    }
    first = {k: r.step(*tb[0]) for k, r in runners.items()}      # warm-up, and the same first loss
    times = {k: [] for k in runners}
    order = list(runners)
    for r in range(rounds):
        for k in order[r % 3:] + order[:r % 3]:
            run = runners[k]
            t0 = time.perf_counter()
            for i in range(steps):
                run.step(*tb[i % len(tb)])
            times[k].append((time.perf_counter() - t0) / steps)
    res = {"name": name, "params": sum(int(np.prod(v.shape)) for v in weights.values()), "first_loss": first}
    for k in runners:
        res[k] = statistics.median(times[k])
        if k != "twin":
            res[k + "_ratio"] = statistics.median(a / b for a, b in zip(times[k], times["twin"]))
    return res


def report(results: list, args, mach: str) -> str:
    lines = [f"Machine: {mach}; torch {torch.__version__}, {args.threads} thread(s); "
             f"{args.rounds} rounds of {args.steps} steps each, medians.", "",
             "| spec | params | batch | twin ms/step | engine ms/step | engine / twin | exported ms/step | exported / twin |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['params']:,} | {r['batch']} | {r['twin'] * 1e3:.3f} | {r['engine'] * 1e3:.3f} | "
                     f"{r['engine_ratio']:.3f} | {r['exported'] * 1e3:.3f} | {r['exported_ratio']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write", action="store_true", help="record the table in bench/README.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = []
    batches = {"digits MLP": 64, "digits CNN": 32, "GPTSmall": "16x64"}
    with tempfile.TemporaryDirectory() as tmp:
        for name, ir, w, twin, data in workloads(64, 32, 16, 64):
            r = measure(name, ir, w, twin, data, args.rounds, args.steps, Path(tmp))
            r["batch"] = batches[name]
            print(f"{name}: first losses {', '.join(f'{k} {v:.6f}' for k, v in r['first_loss'].items())}; "
                  f"twin {r['twin'] * 1e3:.3f} ms, engine {r['engine'] * 1e3:.3f} ms ({r['engine_ratio']:.3f}x), "
                  f"exported {r['exported'] * 1e3:.3f} ms ({r['exported_ratio']:.3f}x)", flush=True)
            results.append(r)
    mach = machine()
    text = report(results, args, mach)
    print(text)
    if args.write:
        write_results(Path(__file__).with_name("README.md"), "torch-engine", text,
                      "Benchmarks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
