#!/usr/bin/env python3
"""The GPU check: every model of every shipped spec on ONNX Runtime's CUDA provider.

    python tools/gpu_check.py                        # on a machine with a GPU and onnxruntime-gpu
    python tools/gpu_check.py --specs resnet50 bert  # some specs only
    python tools/gpu_check.py --device cpu --specs lenet5 --runs 3   # the smoke mode (no GPU)
    python tools/gpu_check.py --json results.json --markdown table.md

It installs nothing: it runs the archdsl of this checkout (or the installed one) with the
onnxruntime it finds (`make gpu` swaps in onnxruntime-gpu), and PyTorch where it is installed.
For each model it exports, as archdsl's own commands would:

  opset 17     the default export (`archdsl export`), run with precision fp32 (TF32 off)
  opset 17 tf32  the same file, the CUDA provider allowed TF32 matrix products
  newest       `archdsl export --target cuda`: the newest opset whose op versions all have
               CUDA kernels (archdsl/backends/onnx/cuda_kernels.py), fp32
  fp16         `archdsl export --target cuda --precision fp16`

and prints, per file: the nodes archdsl predicts a CUDA session would leave to the CPU
(placement.cuda_fallbacks) and the nodes ONNX Runtime really ran on the CPU (from its profile);
whether a session with CUDAExecutionProvider alone and `session.disable_cpu_ep_fallback = 1`
loads the file at all; the largest relative error against the NumPy engine (max |ours - numpy| /
max |numpy| over the outputs, random weights and inputs, batch 2); and the median latency at
batch 1 and 8 (archdsl bench: inputs and outputs kept on the GPU). Where PyTorch is installed and
the spec has a weight mapping (specs/*.map) whose source library is importable (transformers;
torchvision, or the torchvision-style modules of tests/), the same weights run in PyTorch eager on
the same device: its error against the NumPy engine and its latency.

`--device cpu` runs everything on the CPU provider instead (no placement columns): the check is
known to work before anyone has a GPU (tests/test_gpu_check.py runs it on a small spec).
Sequence models get T = --seq (default 128); the error runs use T = min(--seq, 16).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if (ROOT / "archdsl").is_dir():
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

import archdsl  # noqa: E402
from archdsl.backends.onnx import deploy, placement  # noqa: E402
from archdsl.backends.onnx.precision import FP16_TOLERANCE  # noqa: E402
from archdsl.benchmark import bench  # noqa: E402
from archdsl.errors import ArchError  # noqa: E402
from archdsl.ir.types import is_static  # noqa: E402
from archdsl.runtime import Session  # noqa: E402

VARIANTS = (("opset 17", dict(target=None, opset=17), "fp32"),
            ("opset 17 tf32", dict(target=None, opset=17), "tf32"),
            ("newest", dict(target="cuda"), "fp32"),
            ("fp16", dict(target="cuda", precision="fp16"), "fp32"))
TOLERANCE = {"fp32": 1e-4, "tf32": 1e-2, "fp16": FP16_TOLERANCE}


def model_inputs(ir, n: int, t: int, seed: int = 0) -> dict:
    """Random inputs: normal floats, integer ids below the smallest embedding table (else 5),
    boolean masks keeping the first position, lengths in 1..T."""
    rng = np.random.default_rng(seed)
    tables = [nd.attrs["num_embeddings"] for nd in ir.nodes if "num_embeddings" in nd.attrs]
    high = min(tables) if tables else 5
    out = {}
    for v in ir.inputs:
        shape = tuple(int(d) if is_static(d) else (n if str(d) == "N" else t) for d in v.type.shape)
        if v.type.is_float:
            out[v.name] = rng.standard_normal(shape).astype(v.type.np_dtype)
        elif v.type.dtype == "bool":
            keep = rng.random(shape) < 0.8
            keep[..., 0] = True
            out[v.name] = keep
        elif len(shape) == 1:         # lengths
            out[v.name] = rng.integers(1, t + 1, shape).astype(v.type.np_dtype)
        else:
            out[v.name] = rng.integers(0, high, shape).astype(v.type.np_dtype)
    return out


def rel_error(got: dict, ref: dict) -> float:
    worst = 0.0
    for k, b in ref.items():
        a = np.asarray(got[k], dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        scale = max(float(np.abs(b).max()), 1e-12) if b.size else 1.0
        worst = max(worst, float(np.abs(a - b).max()) / scale if b.size else 0.0)
    return worst


def profiled_cpu_nodes(proto, feeds: dict, device: str) -> list[str] | None:
    """Nodes ONNX Runtime ran on the CPU in a CUDA session that may fall back (its profile)."""
    if device != "cuda":
        return None
    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(d, "profile")
        sess = ort.InferenceSession(proto.SerializeToString(), so,
                                    providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
                                    provider_options=[{"use_tf32": "0"}, {}])
        sess.run(None, feeds)
        with open(sess.end_profiling()) as fh:
            events = json.load(fh)
    names = []
    for e in events:
        args = e.get("args") or {}
        if e.get("cat") == "Node" and args.get("provider") == "CPUExecutionProvider":
            name = e.get("name", "").removesuffix("_kernel_time")
            if name not in names:
                names.append(f"{name} ({args.get('op_name', '?')})")
    return names


def strict_loads(proto, device: str) -> str:
    """'ok' if CUDAExecutionProvider alone, CPU fallback disabled, loads the file; else why not."""
    if device != "cuda":
        return "n/a"
    try:
        Session(proto, device="cuda", cpu_fallback=False)
        return "ok"
    except ArchError as e:
        return "FAILS: " + str(e).splitlines()[0][:200]


def timing(sess, batches, dims, runs, warmup) -> dict:
    rows = bench(sess, batches, dims, runs=runs, warmup=warmup)
    return {r.batch: r.p50_ms for r in rows}


# -- PyTorch eager ----------------------------------------------------------------------------------

def torch_for(cm, weights):
    """(module, section) running `cm` in PyTorch with archdsl's weights, or (None, why)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None, "torch not installed"
    from archdsl.interop.verify import load_source, source_module
    from archdsl.interop.weights import export_weights
    try:
        tensors, section = export_weights(weights, cm.ir)
    except ArchError as e:
        return None, f"no weight mapping ({str(e).splitlines()[0][:80]})"
    if not section.source:
        return None, "no weight mapping"
    if section.source.startswith("torchvision."):
        try:
            import torchvision.models  # noqa: F401
        except ImportError:          # the torchvision-style modules of tests/ stand in
            sys.path.insert(0, str(ROOT / "tests"))
            try:
                import torchvision_style as tv
            except ImportError:
                return None, "torchvision not installed"
            sys.modules.setdefault("torchvision", type(sys)("torchvision"))
            sys.modules["torchvision.models"] = tv.models
    try:
        module = source_module(section, cm.ir)
        load_source(module, tensors, section)
    except ArchError as e:
        return None, str(e).splitlines()[0][:80]
    return module, section


def torch_run(module, section, feeds: dict, device: str, runs: int, warmup: int, batches, ir, t: int):
    import torch
    dev = torch.device("cuda" if device == "cuda" else "cpu")
    module = module.to(dev)

    def call(f):
        args, kwargs = [], {}
        for p in section.inputs:
            x = torch.from_numpy(np.ascontiguousarray(f[p.name])).to(dev)
            if x.dtype == torch.bool:
                x = x.long()
            if p.key:
                kwargs[p.key] = x
            else:
                args.append(x)
        return args, kwargs

    def outputs(out):
        res, positional = {}, 0
        for p in section.outputs:
            if p.key:
                r = out[p.key] if isinstance(out, dict) else getattr(out, p.key)
            elif isinstance(out, torch.Tensor):
                r = out
            else:
                r = out[positional]
                positional += 1
            res[p.name] = r.detach().float().cpu().numpy()
        return res

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    prev_tf32 = torch.backends.cuda.matmul.allow_tf32 if dev.type == "cuda" else None
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False           # fp32, as archdsl's default
        torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            a, k = call(feeds)
            got = outputs(module(*a, **k))
            lat = {}
            for b in batches:
                a, k = call(model_inputs(ir, b, t, seed=1))
                for _ in range(warmup):
                    module(*a, **k)
                sync()
                times = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    module(*a, **k)
                    sync()
                    times.append(time.perf_counter() - t0)
                lat[b] = float(np.median(times) * 1000)
    finally:
        if prev_tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32 = prev_tf32
    return got, lat


# -- the check ----------------------------------------------------------------------------------------

def check_model(path: Path, name: str, args) -> list[dict]:
    spec = archdsl.compile(path)
    cm = spec.model(name)
    weights = cm.init_weights(0)
    seq_syms = [s for s in cm.ir.symbols() if s != "N"]
    t_err = min(args.seq, 16)
    feeds = model_inputs(cm.ir, 2, t_err, seed=0)
    ref = cm.executor(weights).run(feeds)
    dims = {s: args.seq for s in seq_syms}
    rows = []
    exports = {}
    for label, how, precision in VARIANTS:
        row = {"spec": path.stem, "model": name, "variant": label, "opset": None,
               "precision": how.get("precision", "fp32") if precision == "fp32" else precision}
        try:                         # one failing file must not stop the check: it is reported
            key = tuple(sorted(how.items()))
            if key not in exports:
                exports[key] = deploy.export(cm.ir, weights, **how)
            result = exports[key]
            proto = result.proto
            row["opset"] = result.opset
            row["predicted_cpu_nodes"] = [str(f) for f in placement.cuda_fallbacks(proto)]
            row["measured_cpu_nodes"] = profiled_cpu_nodes(proto, feeds, args.device)
            row["strict"] = strict_loads(proto, args.device)
            sess = Session(proto, device=args.device, precision=precision)
            row["max_rel_error"] = rel_error(sess.run(feeds), ref)
            row["tolerance"] = TOLERANCE[row["precision"]]
            row["p50_ms"] = timing(sess, args.batch, dims, args.runs, args.warmup)
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        rows.append(row)
    if not args.no_torch:
        row = {"spec": path.stem, "model": name, "variant": "PyTorch eager", "opset": None, "precision": "fp32"}
        try:
            module, section = torch_for(cm, weights)
            if module is None:
                row["skipped"] = section
            else:
                got, lat = torch_run(module, section, feeds, args.device, args.runs, args.warmup, args.batch,
                                     cm.ir, args.seq)
                row["max_rel_error"] = rel_error(got, {k: ref[k] for k in got})
                row["tolerance"] = 1e-4
                row["p50_ms"] = lat
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        rows.append(row)
    return rows


def cases(args) -> list[tuple[Path, str]]:
    specs = sorted((ROOT / "specs").glob("*.arch"))
    if args.specs:
        known = {p.stem: p for p in specs}
        missing = [s for s in args.specs if s not in known]
        if missing:
            sys.exit(f"gpu_check: no spec {', '.join(missing)} in {ROOT / 'specs'}")
        specs = [known[s] for s in args.specs]
    out = []
    for p in specs:
        for name in archdsl.compile(p).model_names:
            if not args.models or name in args.models:
                out.append((p, name))
    return out


def fmt_ms(d, b) -> str:
    v = (d or {}).get(b)
    return "-" if v is None else f"{v:.3f}"


def markdown(rows: list[dict], batches) -> str:
    head = ("| model | file | opset | CPU nodes (predicted) | CPU nodes (measured) | CUDA alone, no fallback "
            "| max rel. error vs NumPy | " + " | ".join(f"p50 ms batch {b}" for b in batches) + " |")
    lines = [head, "|" + "---|" * (7 + len(batches))]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['spec']}.{r['model']} | {r['variant']} | - | - | - | - | {r['skipped']} |"
                         + " - |" * len(batches))
            continue
        pred = r.get("predicted_cpu_nodes")
        meas = r.get("measured_cpu_nodes")
        err = r.get("max_rel_error")
        flag = "" if err is None or err <= r.get("tolerance", 1) else " (over tolerance)"
        lines.append(
            f"| {r['spec']}.{r['model']} | {r['variant']} | {r['opset'] or '-'} "
            f"| {'-' if pred is None else len(pred)} | {'n/a' if meas is None else len(meas)} "
            f"| {r.get('strict', '-')} | {'-' if err is None else f'{err:.1e}'}{flag}"
            + ("" if "error" not in r else f" ({r['error']})") + " | "
            + " | ".join(fmt_ms(r.get("p50_ms"), b) for b in batches) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--specs", nargs="*", help="spec names (file stems), default: all")
    ap.add_argument("--models", nargs="*", help="model names, default: all")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seq", type=int, default=128, help="length of symbolic sequence dims (default 128)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-torch", action="store_true", dest="no_torch")
    ap.add_argument("--json", help="write every row as JSON")
    ap.add_argument("--markdown", help="write the table as Markdown")
    args = ap.parse_args(argv)
    if args.device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        print("gpu_check: this onnxruntime has no CUDAExecutionProvider (make gpu installs onnxruntime-gpu); "
              "--device cpu runs the smoke mode", file=sys.stderr)
        return 2
    gpu = ""
    if args.device == "cuda":
        try:
            import subprocess
            gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30).stdout.strip()
        except Exception:
            gpu = "unknown GPU"
    print(f"# gpu_check on {args.device}{' (' + gpu + ')' if gpu else ''}, {time.strftime('%Y-%m-%d')}, "
          f"onnxruntime {ort.__version__}, archdsl {archdsl.__version__}", flush=True)
    rows = []
    for path, name in cases(args):
        t0 = time.perf_counter()
        got = check_model(path, name, args)
        rows.extend(got)
        print(markdown(got, args.batch).split("\n", 2)[2], flush=True)
        for r in got:
            for key in ("predicted_cpu_nodes", "measured_cpu_nodes"):
                if r.get(key):
                    print(f"    {r['variant']}, {key.replace('_', ' ')}: " + "; ".join(r[key][:8]), flush=True)
        print(f"    ({time.perf_counter() - t0:.1f}s)", flush=True)
    table = markdown(rows, args.batch)
    print("\n" + table)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": args.device, "gpu": gpu, "rows": rows}, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    bad = [r for r in rows if "error" in r or (r.get("max_rel_error") or 0) > r.get("tolerance", 1)
           or str(r.get("strict", "")).startswith("FAILS")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
