"""`archdsl sample`: text from a trained language model, or samples from a trained GAN.

    archdsl sample specs/lstm_lm.arch --weights run/best.npz --prompt "def " --length 300 \\
        --temperature 0.8 [--top-k 10] [--seed 0] [--device numpy|cpu|cuda|auto] [--precision fp32|tf32|fp16]
    archdsl sample specs/lstm_lm.arch --weights run/best.npz --device cpu --save-onnx lm_step.onnx ...
    archdsl sample specs/lstm_lm.arch --onnx lm_step.onnx --prompt "def " --length 300
    archdsl sample specs/ring_gan.arch --weights run/checkpoint.npz -n 64 -o samples.png   # a GAN
    archdsl sample specs/cgan_digits.arch --weights run/checkpoint.npz --class 3 -n 64 -o 3.png
    archdsl sample specs/vae_digits.arch --weights run/checkpoint.npz -n 64 -o prior.png  # a VAE

Language models run on the NumPy engine (--device numpy, the default) or on ONNX Runtime
(--device cpu / cuda / auto: the model is exported on the fly, or --onnx FILE is run).
Recurrent LMs step with carried state, others re-run a window (archdsl/sample/lm.py); on CUDA
the state and the logits stay on the GPU and each token is picked there (lm.DevicePicker).
The vocabulary comes from --vocab, a vocab.json beside the checkpoint, the array `vocab` of
the training data the checkpoint names, or an ONNX file's metadata (see lm.py). When the
model has a parameter `vocab` that --set does not give, it is set to the vocabulary's size.

The target (archdsl/targets.py) decides: a model samples here (`sample_lm`), a gan section's pair
in archdsl.gan.sampling.sample_command, which reads -n, -o, --weights, --onnx, --device, --seed
and --class, a VAE in archdsl/vae.py (the same, and --reconstruct).
"""
from __future__ import annotations

from pathlib import Path

from ..cliargs import nonneg_int, output_file, positive_int, temperature


def cmd_sample(args) -> int:
    from ..api import compile, parse_set
    from ..targets import resolve
    _refuse_overwriting(args)
    args.overrides = parse_set(args.set)
    return resolve(compile(Path(args.file)), args.model, args.overrides).sample(args)


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
    p.add_argument("--precision", choices=["fp32", "tf32", "fp16"], default=None,
                   help="what ONNX Runtime may do on the GPU: fp32 (default: float32 throughout, TF32 off), "
                        "tf32 (TF32 matrix products), fp16 (the model converted to float16)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the sampling (default 0)")
    p.add_argument("-n", type=positive_int, default=None, dest="n",
                   help="how many samples (language models: continuations, generated as one batch; "
                        "default 1)")
    p.add_argument("-o", "--output", metavar="OUT", type=output_file,
                   help="write the samples to OUT (text for a language model; .npy/.png for a GAN)")
    gen = p.add_argument_group("generative models (GANs, VAEs)")
    gen.add_argument("--class", dest="classes", metavar="K",
                     help="a conditional GAN: the classes to generate, -n of each: 3, 0,4,7 or all (default: all)")
    gen.add_argument("--reconstruct", metavar="FILE",
                     help="a VAE: reconstruct the inputs in FILE (.npy, or .npz with the model's input arrays) "
                          "instead of decoding samples of the prior")
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
