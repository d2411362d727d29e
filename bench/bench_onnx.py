"""ONNX export benchmark: archdsl vs torch.onnx.export, measured in the same run.

For each model (default lenet5, alexnet, resnet18, resnet50):
  * export time to a file (median of --repeats after one untimed warm-up): archdsl's
    CompiledModel.to_onnx(path) with weights in hand, vs torch.onnx.export of the equivalent
    module (bench/torch_models.py) loaded with the *same* weights, with the TorchScript exporter
    (dynamo=False) and, unless --no-dynamo, the dynamo exporter;
  * node counts of each file;
  * ONNX Runtime CPU latency at batch 1 and 8 (median of --runs after --warmup runs; sessions
    are timed round-robin, one run each in turn, so machine noise hits all files alike), and
    the largest output difference between the files (they compute the same function).
Then native vs decomposed lowerings on ONNX Runtime: LayerNorm at opset 17 (LayerNormalization)
vs 13 (ReduceMean/Sub/Pow/... decomposition), GELU at opset 20 (Gelu) vs 17 (Erf decomposition),
on [64, 128, 768], with ORT's default optimisations (ORT_ENABLE_ALL, which may fuse a
decomposition back) and with ORT_ENABLE_BASIC (no fusions: the graph as exported).

    python bench/bench_onnx.py                       # everything (~10 min on 2 cores)
    python bench/bench_onnx.py --models lenet5 resnet18 --no-dynamo
    python bench/bench_onnx.py --json results.json   # raw numbers too

Not a test: it asserts nothing; it prints Markdown tables for bench/README.md.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import archdsl  # noqa: E402
from archdsl.backends.onnx.export import to_onnx  # noqa: E402
from benchlib import machine  # noqa: E402

MODELS = ("lenet5", "alexnet", "resnet18", "resnet50")


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def session(path: str, threads: int, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = level
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def latencies(sessions: dict[str, ort.InferenceSession], feeds: dict[str, dict], runs: int, warmup: int) -> dict:
    """Median seconds per run of each session, timed round-robin."""
    outs = {k: s.get_outputs()[0].name for k, s in sessions.items()}
    for _ in range(warmup):
        for k, s in sessions.items():
            s.run([outs[k]], feeds[k])
    times = {k: [] for k in sessions}
    for _ in range(runs):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run([outs[k]], feeds[k])
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def node_count(path: str) -> int:
    return len(onnx.load(path, load_external_data=False).graph.node)


@contextlib.contextmanager
def quiet():
    """torch's exporters print progress and warnings; keep the tables readable."""
    for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield


def torch_exporters(mod, example, path: str, dynamo: bool):
    import torch
    if dynamo:
        def run():
            with quiet():
                torch.onnx.export(mod, (example,), path, dynamo=True, input_names=["image"],
                                  output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("N")},))
    else:
        def run():
            with quiet():
                torch.onnx.export(mod, (example,), path, dynamo=False, opset_version=17,
                                  input_names=["image"], output_names=["logits"],
                                  dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
    return run


def bench_model(name: str, args, tmp: Path) -> dict:
    res: dict = {"model": name}
    cm = archdsl.compile(ROOT / "specs" / f"{name}.arch").model()
    t = time.perf_counter()
    weights = cm.init_weights(0)
    res["init_s"] = time.perf_counter() - t
    files = {"archdsl": str(tmp / f"{name}.archdsl.onnx")}
    res["export_s"] = {"archdsl": median_time(lambda: cm.to_onnx(files["archdsl"], opset=17, weights=weights),
                                              args.repeats)}
    res["to_onnx_s"] = median_time(lambda: to_onnx(cm.ir, weights, opset=17), args.repeats)

    if args.torch:
        import torch
        from torch_models import MODELS as TORCH_MODELS
        from torch_models import load_archdsl_weights
        torch.set_num_threads(args.threads)
        ctor, shape = TORCH_MODELS[name]
        mod = load_archdsl_weights(ctor(), weights, list(cm.ir.parameters))
        example = torch.randn(1, *shape)
        files["torch-ts"] = str(tmp / f"{name}.torch-ts.onnx")
        res["export_s"]["torch-ts"] = median_time(torch_exporters(mod, example, files["torch-ts"], False),
                                                  args.repeats)
        if args.dynamo:
            files["torch-dynamo"] = str(tmp / f"{name}.torch-dynamo.onnx")
            try:
                res["export_s"]["torch-dynamo"] = median_time(
                    torch_exporters(mod, example, files["torch-dynamo"], True), args.dynamo_repeats)
            except Exception as e:      # the dynamo exporter is still moving; report, go on
                res["dynamo_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                files.pop("torch-dynamo")
    res["nodes"] = {k: node_count(p) for k, p in files.items()}
    res["opset"] = {k: onnx.load(p, load_external_data=False).opset_import[0].version for k, p in files.items()}
    res["latency_ms"] = {}
    res["max_abs_diff"] = {}
    sessions = {k: session(p, args.threads) for k, p in files.items()}
    in_name = {k: s.get_inputs()[0].name for k, s in sessions.items()}
    shape = tuple(int(d) for d in cm.ir.inputs[0].type.shape[1:])
    for batch in args.batches:
        x = np.random.default_rng(batch).standard_normal((batch, *shape)).astype(np.float32)
        feeds = {k: {in_name[k]: x} for k in sessions}
        lat = latencies(sessions, feeds, args.runs, args.warmup)
        res["latency_ms"][batch] = {k: v * 1e3 for k, v in lat.items()}
        ref = sessions["archdsl"].run(None, feeds["archdsl"])[0]
        res["max_abs_diff"][batch] = {k: float(np.abs(s.run(None, feeds[k])[0] - ref).max())
                                      for k, s in sessions.items() if k != "archdsl"}
    return res


NATIVE_SPECS = {
    "LayerNorm": ("model M { input x: f32[N, T, 768]\n  output y = x -> LayerNorm }", 17, 13),
    "GELU": ("model M { input x: f32[N, T, 768]\n  output y = x -> GELU }", 20, 17),
    "GELU(tanh)": ("model M { input x: f32[N, T, 768]\n  output y = x -> GELU(approximate='tanh') }", 20, 17),
}


def bench_native(args, tmp: Path) -> list[dict]:
    rows = []
    x = np.random.default_rng(0).standard_normal((64, 128, 768)).astype(np.float32)
    for op, (text, native, decomposed) in NATIVE_SPECS.items():
        cm = archdsl.compile(text).model()
        w = cm.init_weights(0)
        paths = {}
        for kind, opset in (("native", native), ("decomposed", decomposed)):
            paths[kind] = str(tmp / f"{op}.{opset}.onnx")
            cm.to_onnx(paths[kind], opset=opset, weights=w)
        for level_name, level in (("ALL", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                                  ("BASIC", ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)):
            sessions = {k: session(p, args.threads, level) for k, p in paths.items()}
            lat = latencies(sessions, {k: {"x": x} for k in sessions}, args.runs, args.warmup)
            a, b = (sessions[k].run(None, {"x": x})[0] for k in ("native", "decomposed"))
            rows.append({"op": op, "opt": level_name, "native_opset": native, "decomposed_opset": decomposed,
                         "nodes": {k: node_count(p) for k, p in paths.items()},
                         "native_ms": lat["native"] * 1e3, "decomposed_ms": lat["decomposed"] * 1e3,
                         "max_abs_diff": float(np.abs(a - b).max())})
    return rows


def versions() -> dict:
    v = {"python": platform.python_version(), "numpy": np.__version__, "onnx": onnx.__version__,
         "onnxruntime": ort.__version__, "archdsl": archdsl.__version__}
    try:
        import torch
        v["torch"] = torch.__version__
    except ImportError:
        pass
    try:
        import onnxscript
        v["onnxscript"] = onnxscript.__version__
    except ImportError:
        pass
    return v


def fmt_ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def report(results: list[dict], native: list[dict], args) -> str:
    out = []
    torch_keys = [k for k in ("torch-ts", "torch-dynamo") if any(k in r["nodes"] for r in results)]
    out.append("### Export time (to a file, median) and node count\n")
    head = ["model", "archdsl export", "archdsl to_onnx (in memory)"]
    for k in torch_keys:
        head += [f"{k} export", f"speed-up vs {k}"]
    head += ["nodes archdsl"] + [f"nodes {k}" for k in torch_keys] + ["opsets (archdsl/" + "/".join(torch_keys) + ")"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for r in results:
        e = r["export_s"]
        row = [r["model"], f"{e['archdsl'] * 1e3:.1f} ms", f"{r['to_onnx_s'] * 1e3:.1f} ms"]
        for k in torch_keys:
            row += [f"{e[k] * 1e3:.0f} ms" if k in e else "failed", fmt_ratio(e[k], e["archdsl"]) if k in e else "-"]
        row += [str(r["nodes"]["archdsl"])] + [str(r["nodes"].get(k, "-")) for k in torch_keys]
        row += ["/".join(str(r["opset"].get(k, "-")) for k in ["archdsl"] + torch_keys)]
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    out.append(f"### ONNX Runtime CPU latency (median of {args.runs}, {args.threads} threads)\n")
    head = ["model", "batch", "archdsl"]
    for k in torch_keys:
        head += [k, f"archdsl / {k}"]
    head += ["max abs diff vs archdsl"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for r in results:
        for batch, lat in r["latency_ms"].items():
            row = [r["model"], str(batch), f"{lat['archdsl']:.2f} ms"]
            for k in torch_keys:
                row += [f"{lat[k]:.2f} ms", fmt_ratio(lat["archdsl"], lat[k])] if k in lat else ["-", "-"]
            row += [", ".join(f"{k}: {v:.1e}" for k, v in r["max_abs_diff"][batch].items()) or "-"]
            out.append("| " + " | ".join(row) + " |")
    errs = [f"- {r['model']}: dynamo exporter failed: {r['dynamo_error']}" for r in results if "dynamo_error" in r]
    if errs:
        out += [""] + errs
    if native:
        out.append("")
        out.append(f"### Native vs decomposed lowering on ONNX Runtime ([64, 128, 768] f32, median of {args.runs})\n")
        out.append("| op | ORT optimisation | native (opset) | decomposed (opset) | nodes native/decomposed "
                   "| decomposed / native | max abs diff |")
        out.append("|---|---|---|---|---|---|---|")
        for r in native:
            out.append(f"| {r['op']} | {r['opt']} | {r['native_ms']:.2f} ms ({r['native_opset']}) "
                       f"| {r['decomposed_ms']:.2f} ms ({r['decomposed_opset']}) "
                       f"| {r['nodes']['native']}/{r['nodes']['decomposed']} "
                       f"| {fmt_ratio(r['decomposed_ms'], r['native_ms'])} | {r['max_abs_diff']:.1e} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--repeats", type=int, default=5, help="export timings per exporter (median; default 5)")
    ap.add_argument("--dynamo-repeats", type=int, default=3, help="dynamo export timings (slow; default 3)")
    ap.add_argument("--runs", type=int, default=30, help="timed ORT runs per file and batch (default 30)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--no-torch", dest="torch", action="store_false", help="archdsl figures only")
    ap.add_argument("--no-dynamo", dest="dynamo", action="store_false", help="skip torch's dynamo exporter")
    ap.add_argument("--no-native", dest="native", action="store_false", help="skip LayerNorm/GELU")
    ap.add_argument("--json", help="also write the raw numbers here")
    args = ap.parse_args(argv)
    if args.torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch is not installed: archdsl figures only (pip install torch)", file=sys.stderr)
            args.torch = False
    print(f"machine: {machine()}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    print(f"command: python bench/bench_onnx.py {' '.join(argv if argv is not None else sys.argv[1:])}\n")
    results, native = [], []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in args.models:
            t = time.perf_counter()
            results.append(bench_model(name, args, tmp))
            print(f"[{name} done in {time.perf_counter() - t:.0f} s]", file=sys.stderr, flush=True)
        if args.native:
            native = bench_native(args, tmp)
    text = report(results, native, args)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "versions": versions(), "models": results, "native": native},
                      f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
