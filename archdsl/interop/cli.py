"""`archdsl import-weights` and `archdsl export-weights`: another framework's checkpoint into
archdsl (a checkpoint .npz or an ONNX file), and an archdsl checkpoint back out (.safetensors, or
a Hugging Face folder)."""
from __future__ import annotations

import sys
from pathlib import Path

from ..cliargs import positive_float
from ..errors import ArchError


def _model(args):
    """The model the command reads or writes weights for (a gan spec: its generator)."""
    from ..api import compile, parse_set
    from ..targets import resolve
    return resolve(compile(Path(args.file)), args.model, parse_set(args.set)).export_model()


def cmd_import(args) -> int:
    from ..train.checkpoint import save_checkpoint
    from .sources import describe
    from .verify import verify
    from .weights import import_weights

    out = Path(args.output)
    if out.suffix.lower() not in (".npz", ".onnx"):
        raise ArchError(f"cannot write '{out}': expected an archdsl checkpoint (.npz) or an ONNX file (.onnx)")
    model = _model(args)
    imp = import_weights(args.source, model.ir, mapping=args.map)
    print(describe(imp.source))
    print(imp.describe())
    if imp.unused:
        print(f"unused in the checkpoint ({len(imp.unused)}): {', '.join(imp.unused[:8])}"
              f"{' ...' if len(imp.unused) > 8 else ''}", file=sys.stderr)
    proto = model.to_onnx(None, opset=args.opset, weights=imp.weights) if out.suffix.lower() == ".onnx" else None
    if args.verify:
        report = verify(model.ir, imp.weights, imp.section, source_tensors=imp.source.tensors,
                        config=imp.source.config, onnx_model=proto, tolerance=args.tolerance)
        print(report.describe())
        report.check()                      # a failed check writes nothing
    if proto is not None:
        from ..backends.onnx.export import save
        save(proto, out)
    else:
        save_checkpoint(out, imp.weights, meta={"kind": "weights", "model": model.name, "spec": str(args.file),
                                                "source": str(args.source), "mapping": imp.section.label})
    print(f"wrote {out}: model {model.name}, {model.param_count:,} parameters")
    return 0


def cmd_export(args) -> int:
    from ..train.checkpoint import load_weights
    from .mapping import IDENTITY
    from .verify import load_source, source_module, verify
    from .weights import export_weights, save_exported

    model = _model(args)
    weights = load_weights(args.weights, model.ir)
    tensors, section = export_weights(weights, model.ir, mapping=args.map)
    if args.verify:                         # the source framework loads the tensors strictly
        module = load_source(source_module(section, model.ir), tensors, strict=True)
        report = verify(model.ir, weights, section, module=module, tolerance=args.tolerance)
        print(report.describe())
        report.check()
    wrote = save_exported(tensors, section, model.ir, args.output)
    how = "names as they are" if section is IDENTITY else f"mapping {section.label}"
    print(f"wrote {', '.join(map(str, wrote))}: model {model.name}, {len(tensors)} tensors through the {how}")
    return 0


def _common(p) -> None:
    p.add_argument("file", help="the .arch spec of the model")
    p.add_argument("--model", "-m", help="which model of the file (default: the only/last one)")
    p.add_argument("--set", action="append", default=[], metavar="K=V",
                   help="override a model parameter (to match the checkpoint's configuration)")
    p.add_argument("--map", metavar="FILE", help="the mapping file (default: the spec's NAME.map beside it)")
    p.add_argument("--verify", action="store_true",
                   help="run the source model (PyTorch) and the archdsl model on one random input and "
                        "fail when their outputs differ")
    p.add_argument("--tolerance", type=positive_float, default=1e-4,
                   help="largest difference --verify accepts, relative to outputs above 1 (default 1e-4)")


def add_commands(sub) -> None:
    p = sub.add_parser("import-weights", help="read another framework's weights into an archdsl checkpoint or ONNX file",
                       description="Read a .safetensors, PyTorch (.pt/.pth/.bin) or ONNX file, or a Hugging "
                                   "Face model folder, into the spec's parameter names through the mapping "
                                   "beside the spec (specs/NAME.map).")
    _common(p)
    p.add_argument("source", help="a .safetensors, .pt/.pth/.bin or .onnx file, or a Hugging Face model folder")
    p.add_argument("-o", "--output", required=True,
                   help="weights.npz (an archdsl checkpoint for --weights/--init) or model.onnx")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset for a .onnx output (default 17)")
    p.set_defaults(fn=cmd_import)

    p = sub.add_parser("export-weights", help="write an archdsl checkpoint for another framework (.safetensors)",
                       description="Write a checkpoint's weights under the source framework's names (the "
                                   "mapping run backwards): a .safetensors file, or a folder with "
                                   "model.safetensors and config.json for Hugging Face's from_pretrained.")
    _common(p)
    p.add_argument("--weights", "-w", required=True, metavar="CKPT", help="an archdsl checkpoint or run directory")
    p.add_argument("-o", "--output", required=True, help="model.safetensors, or a folder")
    p.set_defaults(fn=cmd_export)
