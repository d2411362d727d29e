"""Command-line entry points for specs with a gan section.

    archdsl train SPEC --data real.npz -o run/      -> train_command   (from archdsl/train/cli.py)
    archdsl sample SPEC --weights CKPT -o out.png   -> sampling.sample_command (from archdsl/sample/cli.py)
    archdsl summary SPEC   /   archdsl render SPEC -o gan.svg
                                                    -> summary_command / render_command: both models
    archdsl export SPEC --weights run/checkpoint.npz -o gen.onnx
                                                    -> export_weights reads either model of a GAN
                                                       checkpoint (the generator by default)
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ArchError


def wants_gan(spec, model: str | None) -> bool:
    """Does `archdsl train SPEC [--model M]` mean the GAN? Yes when the spec has a gan section and
    M is unset (and no train section exists), names a gan section, or names a model of a gan
    section that has no train section of its own."""
    gans = spec.sections.get("gan", [])
    if not gans:
        return False
    trained = {s.name for s in spec.sections.get("train", [])}
    if model is None:
        return not trained
    if any(s.name == model for s in gans):
        return True
    from .config import config_from_section
    members = set()
    for s in gans:
        cfg = config_from_section(spec.ns, s)
        members |= {cfg.generator, cfg.discriminator}
    return model in members and model not in trained


def train_command(args, spec=None) -> int:
    """`archdsl train` for a gan spec (args from archdsl/train/cli.py)."""
    import archdsl
    from .loop import train_gan
    spec = spec if spec is not None else archdsl.compile(Path(args.file))
    for flag, attr in (("--val-split", "val_split"), ("--freeze", "freeze"), ("--init", "init")):
        if getattr(args, attr, None):
            raise ArchError(f"{flag} is not supported for a gan (it applies to supervised training)")
    if getattr(args, "set", None):
        raise ArchError("--set is not supported for a gan; give the models' arguments in the gan section",
                        hint="e.g. generator = Generator(z=32)")
    pair = spec.gan(getattr(args, "model", None))
    overrides = dict(epochs=args.epochs, steps=getattr(args, "steps", None), batch=args.batch, lr=args.lr,
                     seed=args.seed)
    result = train_gan(pair, args.data, run_dir=args.output, resume=args.resume, quiet=args.quiet,
                       threads=args.threads, overwrite=getattr(args, "overwrite", False), **overrides)
    if result.interrupted:
        return 130
    last = result.last
    from .loop import _fmt
    print(f"trained gan {pair.name} ({pair.generator.name} vs {pair.discriminator.name}): {result.steps} steps, "
          f"{result.epochs_done} epoch{'s' if result.epochs_done != 1 else ''} in {result.seconds:.1f}s"
          + (f"; last epoch {_fmt(last)}" if last else ""))
    run = Path(args.output)
    if result.checkpoint is not None:
        print(f"wrote {run / 'checkpoint.npz'}, {run / 'generator.npz'}, {run / 'discriminator.npz'}, "
              f"{run / 'metrics.jsonl'}")
        print(f"sample with: archdsl sample {args.file} --weights {run / 'checkpoint.npz'} -n 64 -o samples.png")
        print(f"export with: archdsl export {args.file} --weights {run / 'generator.npz'} -o "
              f"{pair.generator.name.lower()}.onnx")
    return 0


def _pair(args, spec=None):
    """The pair `args` names; `spec`: the file already compiled (used unless --set asks for
    another compilation)."""
    import archdsl
    from ..api import parse_set
    if getattr(args, "set", None):
        spec = archdsl.compile(Path(args.file), **parse_set(args.set))
    elif spec is None:
        spec = archdsl.compile(Path(args.file))
    return spec.gan(getattr(args, "model", None))


def summary_command(args, spec=None) -> int:
    """`archdsl summary` of a gan spec: the pair's settings, both layer tables, the pair totals."""
    from ..cli import _dims
    pair = _pair(args, spec)
    dims = _dims(getattr(args, "dim", []), [pair.generator.ir, pair.discriminator.ir])
    batch = getattr(args, "batch", 1)
    if getattr(args, "json", False):
        print(json.dumps(pair.summary_json(dims, batch), indent=2))
    else:
        print(pair.summary(dims, batch))
    return 0


def render_command(args, spec=None) -> int:
    """`archdsl render` of a gan spec: both models side by side, the generated-sample edge between."""
    pair = _pair(args, spec)
    out = pair.render(args.output, rankdir=getattr(args, "rankdir", "TB"), collapse=getattr(args, "collapse", False))
    print(f"wrote {out}")
    return 0


def is_gan_spec(spec, model: str | None) -> bool:
    """For summary/render/sample dispatch: no --model (or --model naming a gan section) and a gan
    section in the file."""
    gans = spec.sections.get("gan", [])
    return bool(gans) and (model is None or any(s.name == model for s in gans))


def export_weights(path, model_ir):
    """Weights for `archdsl export --weights PATH`: the model's member of a GAN checkpoint, or an
    ordinary checkpoint / plain weights file (as archdsl.train.checkpoint.load_weights)."""
    from .checkpoint import load_member
    return load_member(path, model_ir)


def gan_dispatch(args, command: str, spec=None) -> int | None:
    """For archdsl/cli.py: run `summary` or `render` for a gan spec (no --model, or --model naming
    a gan section) and return the exit code; None when the spec is not a gan spec (the caller
    goes on as for any spec). `spec`: the file already compiled, so it is compiled once."""
    import archdsl
    spec = spec if spec is not None else archdsl.compile(Path(args.file))
    if not is_gan_spec(spec, getattr(args, "model", None)):
        return None
    return {"summary": summary_command, "render": render_command}[command](args, spec)
