"""`archdsl sample` for a language model: continue a prompt a token at a time (the command's
options as argparse gives them; archdsl/sample/cli.py defines them, archdsl/targets.py calls
here for a model)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..errors import ArchError


def sample_lm(args, spec, overrides: dict) -> int:
    from ..train.checkpoint import load_weights
    from .lm import Runner, Vocab, generate, lm_io

    if args.prompt is None:
        raise ArchError("sampling a language model needs --prompt TEXT (the text to continue)")
    device = args.device or ("auto" if args.onnx else "numpy")
    if args.onnx and device == "numpy":
        raise ArchError("--onnx runs the file on ONNX Runtime; use --device cpu, cuda or auto")
    if args.onnx and args.save_onnx:
        raise ArchError("--save-onnx writes the model exported from the spec and --weights; "
                        "with --onnx there is nothing to export")
    precision = getattr(args, "precision", None) or "fp32"
    if device == "numpy" and precision != "fp32":
        raise ArchError(f"--precision {precision} applies to ONNX Runtime; the NumPy engine computes in float32",
                        hint="add --device cuda (or cpu, auto)")
    if not args.onnx and not args.weights:
        raise ArchError("sampling needs trained weights: --weights CKPT (a checkpoint or run directory)",
                        hint="train first: archdsl train SPEC --data DATA.npz -o run/, then --weights run/best.npz")
    vocab = Vocab.find(args.vocab, args.weights, args.onnx)
    t0 = time.perf_counter()
    if args.onnx:
        runner = Runner(None, engine="onnx", device=device, window=args.window,
                        mode="window" if args.window else "auto", onnx_file=args.onnx, precision=precision)
        name = Path(args.onnx).name
    else:
        name_arg = args.model
        model_name = name_arg or spec.model().name
        params = {p.name for p in spec.ns.models[model_name].params} if model_name in spec.ns.models else set()
        if "vocab" in params and "vocab" not in overrides:
            overrides = {**overrides, "vocab": len(vocab)}
        model = spec.model(name_arg, **overrides)
        lm_io(model.ir)                     # is it a language model at all? (before the weights)
        weights = load_weights(args.weights, model.ir)
        engine = "numpy" if device == "numpy" else "onnx"
        runner = Runner(model.ir, weights, engine=engine, device=device, window=args.window,
                        mode="window" if args.window else "auto", opset=args.opset, precision=precision)
        name = model.name
        if args.save_onnx:
            path = runner.save_onnx(args.save_onnx, weights, vocab, opset=args.opset)
            print(f"wrote {path} ({'step model with carried state' if runner.mode == 'state' else 'model'}, "
                  f"vocabulary in its metadata)", file=sys.stderr)
    n = args.n or 1
    _check_memory(runner, n, len(args.prompt), args.length)
    texts = generate(runner, vocab, args.prompt, args.length, args.temperature, args.top_k or None,
                     args.seed, n=n)
    secs = time.perf_counter() - t0
    how = ("carried state" if runner.mode == "state"
           else f"window of {runner.window}" if runner.window else "re-running the whole text")
    where = "the NumPy engine" if runner.device == "numpy" else f"ONNX Runtime ({runner.device}" + (
        f", {precision}" if precision != "fp32" else "") + (", on-device state and picking" if runner.on_device
                                                          else "") + ")"
    unit = "characters" if vocab.chars else "tokens"
    print(f"sampled {name} on {where}, {how}: {n} x {args.length} {unit}, temperature "
          f"{args.temperature:g}, top-k {args.top_k or '-'}, seed {args.seed} ({secs:.2f}s)", file=sys.stderr)
    sep = "" if vocab.chars else " "
    out = "\n\n".join(args.prompt + (sep if args.prompt and t and not vocab.chars else "") + t for t in texts)
    if args.output:
        from ..fileio import atomic_write
        atomic_write(args.output, out + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(out)
    return 0


TEXT_BYTES_PER_TOKEN = 16       # a token's id (int64) and its share of the decoded text


def _check_memory(runner, n: int, prompt: int, length: int) -> None:
    """`-n` continuations of `--length` tokens: the ids and text of n x (prompt + length) tokens and
    the model run at batch n (one step with carried state, else the window or the whole text)."""
    from ..passes.limits import check_generation
    steps = 1 if getattr(runner, "mode", None) == "state" else min(getattr(runner, "window", None)
                                                                  or prompt + length, prompt + length)
    dims = {s: steps for s in runner.ir.symbols() if s != "N"} if runner.ir is not None else None
    check_generation(runner.ir, n, dims, TEXT_BYTES_PER_TOKEN * n * (prompt + length),
                     f"sampling {n:,} x {length:,} tokens", "ask for fewer samples (-n) or fewer tokens (--length)")
