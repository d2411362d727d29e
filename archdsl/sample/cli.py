"""`archdsl sample`: text from a trained language model, or samples from a trained GAN.

    archdsl sample specs/lstm_lm.arch --weights run/best.npz --prompt "def " --length 300 \\
        --temperature 0.8 [--top-k 10] [--seed 0] [--device numpy|cpu|cuda|auto]
    archdsl sample specs/lstm_lm.arch --weights run/best.npz --device cpu --save-onnx lm_step.onnx ...
    archdsl sample specs/lstm_lm.arch --onnx lm_step.onnx --prompt "def " --length 300
    archdsl sample specs/ring_gan.arch --weights run/checkpoint.npz -n 64 -o samples.png   # a GAN

Language models run on the NumPy engine (--device numpy, the default) or on ONNX Runtime
(--device cpu / cuda / auto: the model is exported on the fly, or --onnx FILE is run).
Recurrent LMs step with carried state, others re-run a window (archdsl/sample/lm.py).
The vocabulary comes from --vocab, a vocab.json beside the checkpoint, the array `vocab` of
the training data the checkpoint names, or an ONNX file's metadata (see lm.py). When the
model has a parameter `vocab` that --set does not give, it is set to the vocabulary's size.

A spec with a `gan` section is handed to archdsl.gan.sampling.sample_command(args), which
reads -n, -o, --weights, --device, --seed and --model.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..cliargs import nonneg_int, output_file, positive_int, temperature
from ..errors import ArchError


def cmd_sample(args) -> int:
    from ..api import compile, parse_set

    _refuse_overwriting(args)
    spec = compile(Path(args.file))
    gans = spec.sections.get("gan", [])
    if gans and (args.model is None or any(s.name == args.model for s in gans)):
        try:
            from ..gan.sampling import sample_command
        except ImportError:
            raise ArchError(f"{args.file} defines a GAN, and GAN sampling is not available in this "
                            "archdsl (archdsl.gan.sampling is missing)") from None
        return sample_command(args)
    return sample_lm(args, spec, parse_set(args.set))


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
    if not args.onnx and not args.weights:
        raise ArchError("sampling needs trained weights: --weights CKPT (a checkpoint or run directory)",
                        hint="train first: archdsl train SPEC --data DATA.npz -o run/, then --weights run/best.npz")
    vocab = Vocab.find(args.vocab, args.weights, args.onnx)
    t0 = time.perf_counter()
    if args.onnx:
        runner = Runner(None, engine="onnx", device=device, window=args.window,
                        mode="window" if args.window else "auto", onnx_file=args.onnx)
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
                        mode="window" if args.window else "auto", opset=args.opset)
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
    where = "the NumPy engine" if runner.device == "numpy" else f"ONNX Runtime ({runner.device})"
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
    from ..cli import symbols
    from ..passes.limits import check_generation
    steps = 1 if getattr(runner, "mode", None) == "state" else min(getattr(runner, "window", None)
                                                                  or prompt + length, prompt + length)
    dims = {s: steps for s in symbols(runner.ir) if s != "N"} if runner.ir is not None else None
    check_generation(runner.ir, n, dims, TEXT_BYTES_PER_TOKEN * n * (prompt + length),
                     f"sampling {n:,} x {length:,} tokens", "ask for fewer samples (-n) or fewer tokens (--length)")


def _refuse_overwriting(args) -> None:
    """-o and --save-onnx never replace a file the command reads."""
    from ..fileio import refuse_overwriting_inputs
    reads = [args.file, args.weights, args.vocab, args.onnx]
    for flag, out in (("-o", args.output), ("--save-onnx", getattr(args, "save_onnx", None))):
        if out:
            refuse_overwriting_inputs(out, reads, flag=flag)


def add_commands(sub) -> None:
    p = sub.add_parser("sample", help="generate text from a trained language model (or samples from a GAN)",
                       description="Continue a prompt with a trained language model, a token at a time "
                                   "(recurrent models carry their state from step to step), on the NumPy "
                                   "engine or ONNX Runtime; or draw samples from a trained GAN.")
    p.add_argument("file", help="the .arch spec of the model")
    p.add_argument("--model", "-m", help="which model of the file (default: the only/last one)")
    p.add_argument("--set", action="append", default=[], metavar="K=V", help="override a model parameter")
    p.add_argument("--weights", "-w", metavar="CKPT", help="trained weights: a checkpoint .npz or a run directory")
    p.add_argument("--device", choices=["numpy", "cpu", "cuda", "auto"], default=None,
                   help="numpy: the NumPy engine (default); cpu, cuda, auto: ONNX Runtime "
                        "(default with --onnx: auto)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the sampling (default 0)")
    p.add_argument("-n", type=positive_int, default=None, dest="n",
                   help="how many samples (language models: continuations, generated as one batch; "
                        "default 1)")
    p.add_argument("-o", "--output", metavar="OUT", type=output_file,
                   help="write the samples to OUT (text for a language model; .npy/.png for a GAN)")
    lm = p.add_argument_group("language models")
    lm.add_argument("--prompt", "-p", help="the text to continue")
    lm.add_argument("--length", "-l", type=positive_int, default=200,
                    help="tokens (characters) to generate (default 200)")
    lm.add_argument("--temperature", "-t", type=temperature, default=1.0,
                    help="softmax temperature; 0 = greedy (default 1)")
    lm.add_argument("--top-k", "-k", type=nonneg_int, default=None, dest="top_k",
                    help="sample only among the k most likely tokens (default: all)")
    lm.add_argument("--vocab", metavar="FILE", help="the vocabulary: .json list of tokens or .npz with an array 'vocab'")
    lm.add_argument("--onnx", metavar="FILE", help="run this ONNX file (from --save-onnx or archdsl export) "
                                                   "on ONNX Runtime instead of exporting the spec")
    lm.add_argument("--save-onnx", metavar="FILE", dest="save_onnx", type=output_file,
                    help="also write the model that is run (the step model, with the vocabulary) as ONNX")
    lm.add_argument("--opset", type=int, default=None, help="ONNX opset when exporting (default 17)")
    lm.add_argument("--window", type=positive_int, default=None, metavar="W",
                    help="re-run the model on the last W tokens for every new one instead of carrying state "
                         "(default for non-recurrent models: their context length)")
    p.set_defaults(fn=cmd_sample)
