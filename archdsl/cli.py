"""The `archdsl` command line. User mistakes print as compiler diagnostics and exit 1; a Python
traceback from here is an archdsl bug."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import ArchError


def use_color(stream) -> bool:
    from .authoring.highlight import use_color as _use_color
    return _use_color(stream)


def _add_model_args(p, set_help=True):
    p.add_argument("file", help="an .arch spec")
    p.add_argument("--model", "-m", help="which model of the file (default: the only/last one)")
    p.add_argument("--set", action="append", default=[], metavar="K=V",
                   help="override a model parameter, e.g. --set classes=10")


def _model(args, spec=None):
    from .api import compile, parse_set
    overrides = parse_set(args.set)
    spec = spec if spec is not None else compile(Path(args.file))
    name = args.model
    if name is None or any(s.name == name for s in spec.sections.get("gan", [])):
        # a gan spec exports its generator (or, with --discriminator, its discriminator)
        from .gan.cli import is_gan_spec
        if is_gan_spec(spec, name):
            pair = spec.gan(name)
            member = pair.discriminator if getattr(args, "discriminator", False) else pair.generator
            name = member.name
    if getattr(args, "discriminator", False) and name == args.model:
        raise ArchError(f"--discriminator needs a spec with a gan section ({args.file} has none"
                        f"{'' if args.model is None else ' named ' + args.model})",
                        hint="name the model to export with --model")
    model = spec.model(name, **overrides)
    return spec, model


def cmd_check(args) -> int:
    from .api import compile
    failed = 0
    for f in args.files:
        try:
            spec = compile(Path(f))
        except ArchError as e:
            failed += 1
            print(e.format(color=use_color(sys.stderr)), file=sys.stderr)
            continue
        for m in spec.models():
            ins = ", ".join(f"{v.name}: {v.type}" for v in m.ir.inputs)
            outs = ", ".join(f"{v.name}: {v.type}" for v in m.ir.outputs)
            print(f"{f}: model {m.name}({ins}) -> ({outs})  ok")
        for kind, secs in spec.sections.items():
            for s in secs:
                print(f"{f}: {kind} {s.name}  ok")
    return 1 if failed else 0


def _dims(items, models=()) -> dict:
    """`--dim SYM=V` values; each must be a positive int and a symbol of one of `models` (IR
    Models): a misspelt one would otherwise be ignored without a word."""
    from .api import parse_set
    from .errors import did_you_mean
    d = parse_set(items)
    for k, v in d.items():
        if not isinstance(v, int) or v <= 0:
            raise ArchError(f"--dim {k}= needs a positive int, got {v!r}")
    if models:
        known = sorted(set().union(*(symbols(m) for m in models)))
        for k in d:
            if k not in known:
                what = " and ".join(m.name for m in models)
                raise ArchError(f"--dim {k}: model {what} has no symbolic dim '{k}'",
                                hint=did_you_mean(k, known) or (f"its symbolic dims: {', '.join(known)}" if known
                                                                else "its shapes are all fixed"))
    return d


def symbols(ir) -> set[str]:
    """The named symbolic dims (N, T, ...) of a model's inputs and outputs."""
    from .ir.types import Sym
    out = set()
    for v in [*ir.inputs, *ir.outputs]:
        for d in v.type.shape:
            if isinstance(d, Sym):
                out.update(k for k in d.terms if k.isidentifier())
    return out


def _say(path, text: str) -> None:
    """A status line about a file written ("wrote x.onnx ..."): to stderr when the file is our own
    stdout (`-o /dev/stdout`), so it does not mix with the data."""
    from .fileio import writes_stdout
    print(text, file=sys.stderr if writes_stdout(path) else sys.stdout)


def cmd_summary(args) -> int:
    from .api import compile
    from .gan.cli import gan_dispatch
    spec = compile(Path(args.file))                  # once, for the gan check and the model
    rc = gan_dispatch(args, "summary", spec)
    if rc is not None:
        return rc
    spec, model = _model(args, spec)
    dims = _dims(args.dim, [model.ir])
    report = model.cost(dims=dims, batch=args.batch)
    if args.json:
        from .summary import summary_json
        print(json.dumps(summary_json(report, model.ir), indent=2))
    elif args.explain:
        from .authoring.explain import explain_model
        print(explain_model(model, dims=dims, batch=args.batch), end="")
    else:
        from .summary import format_summary
        print(format_summary(report, model.ir))
    return 0


def cmd_render(args) -> int:
    from .api import compile
    from .gan.cli import gan_dispatch
    spec = compile(Path(args.file))                  # once, for the gan check and the model
    rc = gan_dispatch(args, "render", spec)
    if rc is not None:
        return rc
    spec, model = _model(args, spec)
    from .fileio import refuse_overwriting_inputs
    refuse_overwriting_inputs(args.output, spec.ns.files)
    if args.unroll is not None or args.receptive_field:
        from .authoring.cli import render_special
        out = render_special(model, args.output, unroll=args.unroll, receptive_field=args.receptive_field,
                             rankdir=args.rankdir)
    else:
        out = model.render(args.output, rankdir=args.rankdir, collapse=args.collapse)
    _say(out, f"wrote {out}")
    return 0


def cmd_export(args) -> int:
    from .backends.onnx.export import DEFAULT_OPSET
    from .fileio import refuse_overwriting_inputs
    spec, model = _model(args)
    for out in (args.output, args.output + ".data"):       # the model, and its external data
        refuse_overwriting_inputs(out, [*spec.ns.files, args.weights])
    weights = None
    if args.weights:
        from .gan.cli import export_weights      # a GAN checkpoint or an ordinary one
        weights = export_weights(args.weights, model.ir)
    graph = model.save_onnx(args.output, opset=args.opset, seed=args.seed, weights=weights)
    _say(args.output, f"wrote {args.output}: model {model.name}, opset "
                      f"{DEFAULT_OPSET if args.opset is None else args.opset}, {len(graph.graph.node)} nodes, "
                      f"{model.param_count:,} parameters"
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
    sess = Session(args.model_file, device=args.device)
    feeds = load_inputs(args.input)
    outs = sess.run(feeds)
    print(f"ran {args.model_file} on {sess.device} ({', '.join(sess.providers)})")
    for name, arr in outs.items():
        flat = np.asarray(arr).ravel()
        preview = np.array2string(flat[:6], precision=4, separator=", ")
        print(f"  {name}: {arr.dtype}{list(arr.shape)}  {preview}{' ...' if flat.size > 6 else ''}")
    if args.output:
        from .fileio import atomic_path
        with atomic_path(args.output) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **outs)
        _say(args.output, f"wrote {args.output}")
    return 0


def cmd_doctor(args) -> int:
    from .doctor import format_doctor
    print(format_doctor())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .cliargs import output_file, positive_int
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

    p = sub.add_parser("export", help="lower to an ONNX file")
    _add_model_args(p)
    p.add_argument("-o", "--output", required=True, type=output_file, help="model.onnx")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
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
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("doctor", help="report the installation: versions, providers, graphviz")
    p.set_defaults(fn=cmd_doctor)

    # Later pipeline stages register their own subcommands.
    from .authoring import cli as authoring_cli
    from .sample import cli as sample_cli
    from .train import cli as train_cli
    for stage in (train_cli, sample_cli, authoring_cli):
        stage.add_commands(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    # Everything, imports included, runs inside the handlers: a Ctrl-C while NumPy or ONNX load
    # ends the command like any other Ctrl-C (exit 130), never with a traceback.
    try:
        ap = build_parser()
        args = ap.parse_args(argv)
        if not getattr(args, "fn", None):
            ap.print_help()
            return 2
        return args.fn(args)
    except ArchError as e:
        print(e.format(color=use_color(sys.stderr)), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
