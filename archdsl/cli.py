"""The `archdsl` command line. User mistakes print as compiler diagnostics and exit 1; a Python
traceback from here is an archdsl bug."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import ArchError


def diagnostic(err: ArchError) -> str:
    """The error as archdsl prints it, with a highlighted excerpt on a terminal."""
    from .authoring.highlight import excerpt_style
    return err.format(excerpt_style(sys.stderr))


def _add_model_args(p, set_help=True):
    p.add_argument("file", help="an .arch spec")
    p.add_argument("--model", "-m", help="which model of the file (default: the only/last one)")
    p.add_argument("--set", action="append", default=[], metavar="K=V",
                   help="override a model parameter, e.g. --set classes=10")


def _target(args, training: bool = False):
    """What the command acts on: the file compiled once, then one rule (archdsl/targets.py)."""
    from .api import compile, parse_set
    from .targets import resolve
    spec = compile(Path(args.file))
    return resolve(spec, args.model, parse_set(getattr(args, "set", [])), training=training)


def cmd_check(args) -> int:
    from .api import compile
    failed = 0
    for f in args.files:
        try:
            spec = compile(Path(f))
        except ArchError as e:
            failed += 1
            print(diagnostic(e), file=sys.stderr)
            continue
        for m in spec.models():
            ins = ", ".join(f"{v.name}: {v.type}" for v in m.ir.inputs)
            outs = ", ".join(f"{v.name}: {v.type}" for v in m.ir.outputs)
            print(f"{f}: model {m.name}({ins}) -> ({outs})  ok")
        for kind, secs in spec.sections.items():
            for s in secs:
                print(f"{f}: {kind} {s.name}  ok")
    return 1 if failed else 0


def cmd_summary(args) -> int:
    from .cliargs import dims
    target = _target(args)
    d = dims(args.dim, [m.ir for m in target.models()])
    if args.json:
        print(json.dumps(target.summary_json(d, args.batch), indent=2))
    else:
        print(target.summary(d, args.batch, explain=args.explain), end="")
    return 0


def cmd_render(args) -> int:
    from .fileio import announce, refuse_overwriting_inputs
    target = _target(args)
    refuse_overwriting_inputs(args.output, target.spec.ns.files)
    out = target.render(args.output, rankdir=args.rankdir, collapse=args.collapse, unroll=args.unroll,
                        receptive_field=args.receptive_field)
    announce(out, f"wrote {out}")
    return 0


def cmd_export(args) -> int:
    from .fileio import announce, refuse_overwriting_inputs
    fmt = args.format or ("torch" if Path(args.output).suffix == ".py" else "onnx")
    if fmt == "torch":
        for flag, given in (("--opset", args.opset is not None), ("--target", args.target is not None),
                            ("--precision", args.precision != "fp32"), ("--half-io", args.half_io)):
            if given:
                raise ArchError(f"{flag} applies to ONNX; --format torch writes PyTorch source")
    target = _target(args)
    # the model, and its external data (ONNX) or its weights beside it (PyTorch)
    extra = str(Path(args.output).with_suffix(".pt")) if fmt == "torch" else args.output + ".data"
    for out in (args.output, extra):
        refuse_overwriting_inputs(out, [*target.spec.ns.files, args.weights])
    if fmt == "torch":
        files, model = target.export_torch(args.output, seed=args.seed, weights=args.weights,
                                           role="discriminator" if args.discriminator else None)
        announce(args.output, f"wrote {', '.join(map(str, files))}: model {model.name} as a PyTorch module, "
                              f"{model.param_count:,} parameters"
                              f"{' (trained weights from ' + args.weights + ')' if args.weights else ''}")
        return 0
    result, model = target.export(args.output, opset=args.opset, seed=args.seed, weights=args.weights,
                                  role="discriminator" if args.discriminator else None,
                                  target=args.target, precision=args.precision, half_io=args.half_io)
    for w in result.warnings():
        print(f"warning: {w}", file=sys.stderr)
    how = ""
    if args.target is not None:
        how = f" for {args.target}" + ("" if args.opset is not None else
                                       " (the newest opset it runs)" if args.target == "cpu" else
                                       " (the newest opset whose op versions all have CUDA kernels)")
    prec = "" if result.precision == "fp32" else f", {result.precision}" + (" throughout" if args.half_io else
                                                                           " (float32 inputs and outputs)")
    announce(args.output, f"wrote {args.output}: model {model.name}, opset {result.opset}{how}{prec}, "
                          f"{len(result.proto.graph.node)} nodes, {model.param_count:,} parameters"
                          f"{' (trained weights from ' + args.weights + ')' if args.weights else f' (seed {args.seed})'}")
    return 0


def cmd_run(args) -> int:
    import numpy as np

    from .runtime import Session, load_inputs
    if args.output:
        from .fileio import refuse_overwriting_inputs
        inputs = [spec.partition("=")[2] for spec in args.input]
        refuse_overwriting_inputs(args.output, [args.model_file, args.model_file + ".data", *inputs,
                                                *(i.rpartition(":")[0] for i in inputs if ":" in i)])
    sess = Session(args.model_file, device=args.device, precision=args.precision)
    feeds = load_inputs(args.input)
    outs = sess.run(feeds)
    print(f"ran {args.model_file} on {sess.device} ({', '.join(sess.providers)}), {sess.precision}")
    for name, arr in outs.items():
        flat = np.asarray(arr).ravel()
        preview = np.array2string(flat[:6], precision=4, separator=", ")
        print(f"  {name}: {arr.dtype}{list(arr.shape)}  {preview}{' ...' if flat.size > 6 else ''}")
    if args.output:
        from .fileio import announce, atomic_path
        with atomic_path(args.output) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **outs)
        announce(args.output, f"wrote {args.output}")
    return 0


def cmd_bench(args) -> int:
    from .benchmark import bench, format_bench
    from .cliargs import dims
    from .runtime import Session
    sess = Session(args.model_file, device=args.device, precision=args.precision)
    rows = bench(sess, args.batch, dims(args.dim), runs=args.runs, warmup=args.warmup,
                 copy_outputs=args.copy_outputs)
    print(format_bench(sess, rows, args.copy_outputs, args.warmup))
    return 0


def cmd_doctor(args) -> int:
    from .doctor import format_doctor
    print(format_doctor())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .cliargs import output_file, positive_int
    from .version import __version__
    ap = argparse.ArgumentParser(prog="archdsl", description="A compiler for neural-network architectures.")
    ap.add_argument("--version", action="version", version=f"archdsl {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("check", help="parse and shape-check specs")
    p.add_argument("files", nargs="+")
    p.set_defaults(fn=cmd_check)

    p = sub.add_parser("summary", help="layer table with parameters, MACs and memory")
    _add_model_args(p)
    p.add_argument("--batch", type=positive_int, default=1,
                   help="batch size for MACs and activation memory (default 1)")
    p.add_argument("--dim", action="append", default=[], metavar="SYM=V", help="value of a symbolic dim, e.g. T=128")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--explain", action="store_true", help="show each layer's shape and parameter arithmetic")
    p.set_defaults(fn=cmd_summary)

    p = sub.add_parser("render", help="draw the network with graphviz")
    _add_model_args(p)
    p.add_argument("-o", "--output", required=True, type=output_file, help="OUT.svg, .png, .pdf or .dot")
    p.add_argument("--rankdir", default="TB", choices=["TB", "LR", "BT", "RL"])
    p.add_argument("--collapse", action="store_true", help="draw each block instance as one box")
    p.add_argument("--unroll", type=int, metavar="K", help="draw a recurrent model unrolled over K time steps")
    p.add_argument("--receptive-field", metavar="LAYER",
                   help="annotate each layer with its receptive field and highlight LAYER's")
    p.set_defaults(fn=cmd_render)

    p = sub.add_parser("export", help="lower to an ONNX file, or write a PyTorch module")
    _add_model_args(p)
    p.add_argument("-o", "--output", required=True, type=output_file,
                   help="model.onnx, or model.py with --format torch")
    p.add_argument("--format", choices=["onnx", "torch"],
                   help="onnx, or torch: standalone PyTorch source (default: torch for a .py output)")
    p.add_argument("--opset", type=int, default=None,
                   help="ONNX opset (default 17; with --target, the newest the target runs)")
    p.add_argument("--target", choices=["cpu", "cuda"], default=None,
                   help="the execution provider the file is for: its lowerings and an opset whose op versions "
                        "it implements (cuda: warns about nodes a CUDA session would leave to the CPU)")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32",
                   help="weights and compute in float16 or bfloat16 (bf16: --target cuda only); "
                        "inputs and outputs stay float32 unless --half-io")
    p.add_argument("--half-io", action="store_true", dest="half_io",
                   help="with --precision fp16/bf16: half-precision inputs and outputs too")
    p.add_argument("--weights", help="a training checkpoint (.npz) to export instead of seeded weights")
    p.add_argument("--seed", type=int, default=0, help="seed for the initial weights (default 0)")
    p.add_argument("--discriminator", action="store_true",
                   help="for a spec with a gan section: export the discriminator instead of the generator")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("run", help="run an ONNX file on ONNX Runtime")
    p.add_argument("model_file", help="model.onnx")
    p.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy")
    p.add_argument("-o", "--output", type=output_file, help="write the outputs to an .npz")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "fp16"],
                   help="fp32: float32 throughout, TF32 off (default); tf32: TF32 matrix products on the GPU; "
                        "fp16: the model converted to float16 on load")
    p.set_defaults(fn=cmd_run)

    from .cliargs import nonneg_int, positive_int
    p = sub.add_parser("bench", help="latency (p50/p90) and throughput of an ONNX file on ONNX Runtime")
    p.add_argument("model_file", help="model.onnx")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch", type=positive_int, nargs="+", default=[1, 8], metavar="B",
                   help="batch sizes (default: 1 8)")
    p.add_argument("--dim", action="append", default=[], metavar="SYM=V",
                   help="size of another symbolic dim, e.g. --dim T=128")
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "fp16"])
    p.add_argument("--runs", type=positive_int, default=50, help="timed runs per batch size (default 50)")
    p.add_argument("--warmup", type=nonneg_int, default=5, help="untimed runs first (default 5)")
    p.add_argument("--copy-outputs", action="store_true", dest="copy_outputs",
                   help="on a GPU: copy every output back to the host in each run (default: keep them there)")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("doctor", help="report the installation: versions, providers, graphviz")
    p.set_defaults(fn=cmd_doctor)

    # Later pipeline stages register their own subcommands.
    from .authoring import cli as authoring_cli
    from .interop import cli as interop_cli
    from .lsp import cli as lsp_cli
    from .sample import cli as sample_cli
    from .train import cli as train_cli
    for stage in (train_cli, sample_cli, interop_cli, authoring_cli, lsp_cli):
        stage.add_commands(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    # Everything, imports included, runs inside the handlers: a Ctrl-C while NumPy or ONNX load
    # ends the command like any other Ctrl-C (exit 130), never with a traceback.
    try:
        ap = build_parser()
        args = ap.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)      # what `train --nproc` runs again
        if not getattr(args, "fn", None):
            ap.print_help()
            return 2
        return args.fn(args)
    except ArchError as e:
        print(diagnostic(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
