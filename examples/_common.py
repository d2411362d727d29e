"""Helpers the examples share: their command-line flags, writing data, timing a run, running the
`archdsl` CLI in-process, comparing the NumPy engine with ONNX Runtime, and the final verdict.

Every example puts this folder on sys.path before `import _common`, so that this works when it is
run as `python examples/NAME.py` and when a test loads it from its file path.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

# The flags several examples take, with one wording; add_flags adds them in the order asked.
FLAGS = {
    "epochs": dict(type=int, default=None, help="override the spec's epochs"),
    "batch": dict(type=int, default=None, help="override the spec's batch size"),
    "lr": dict(type=float, default=None, help="override the spec's learning rate"),
    "hidden": dict(type=int, default=None, help="override the model's hidden size"),
    "seed": dict(type=int, default=None, help="override the spec's seed"),
    "limit": dict(type=int, default=None, help="use only about this many characters"),
    "threads": dict(type=int, default=1, help="BLAS threads (default 1)"),
    "quiet": dict(action="store_true", help="no progress bar"),
}
THREADS_SMALL_NET = "BLAS threads (default 1: fastest for this size)"     # --threads' help for small networks


def parser(doc: str) -> argparse.ArgumentParser:
    """The example's parser, described by the first line of its docstring, with --out DIR."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", required=True, help="output directory")
    return ap


def add_flags(ap: argparse.ArgumentParser, *names: str, **helps: str) -> None:
    """Add the FLAGS `names` (in this order); `helps` replaces a flag's help text."""
    for name in names:
        kw = dict(FLAGS[name])
        if name in helps:
            kw["help"] = helps[name]
        ap.add_argument(f"--{name}", **kw)


def output_dir(path) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def save_npz(path: Path, **arrays) -> None:
    """np.savez, written atomically (a run interrupted while writing leaves no half file)."""
    from archdsl.fileio import atomic_path
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def timed(fn, *args, **kwargs):
    """(fn(*args, **kwargs), seconds it took)."""
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0


def finish(report: dict, ok: bool, expected: str) -> dict:
    """Set report["ok"]; when it failed, say on stderr what was expected."""
    report["ok"] = ok
    if not ok:
        print(f"FAILED: expected {expected}", file=sys.stderr)
    return report


# -- ONNX Runtime next to the NumPy engine ---------------------------------------------------------

def onnx_session(model, weights, path: Path):
    """Export `model` with `weights` to `path` and open it on ONNX Runtime's CPU provider."""
    import onnxruntime as ort
    model.to_onnx(path, weights=weights)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def generator_on_both(pair, weights, onnx_path: Path, n: int, threads: int):
    """n samples of a GAN's generator from the same noise (seed 0) on the NumPy engine and on ONNX
    Runtime (the generator exported to onnx_path): (numpy samples, ORT samples, ORT info, max |diff|)."""
    from archdsl.gan import generate
    from archdsl.train.run import blas_threads
    pair.generator.to_onnx(onnx_path, weights=weights)
    with blas_threads(threads):
        np_samples, _ = generate(pair, weights, n=n, seed=0, device="numpy")
    ort_samples, info = generate(pair, None, n=n, seed=0, device="cpu", onnx=str(onnx_path))
    return np_samples, ort_samples, info, float(np.abs(np_samples - ort_samples).max())


# -- the archdsl CLI, in this process ------------------------------------------------------------

def run_cli(argv: list[str], capture: bool = True) -> tuple[int, str, str]:
    """Run `archdsl ARGV` in this process; (exit code, stdout, stderr), or with capture=False
    let it print as it goes (and return empty strings)."""
    from archdsl import cli
    out, err = io.StringIO(), io.StringIO()
    with (contextlib.redirect_stdout(out) if capture else contextlib.nullcontext()), \
            (contextlib.redirect_stderr(err) if capture else contextlib.nullcontext()):
        ap = cli.build_parser()
        if not _has_command(ap, argv[0]):        # `archdsl sample` before it is wired into cli.py
            from archdsl.sample.cli import add_commands
            add_commands(next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction)))
        args = ap.parse_args(argv)
        from archdsl.errors import ArchError
        try:
            code = args.fn(args)
        except ArchError as e:
            print(e.format(), file=sys.stderr)
            code = 1
    return code, out.getvalue(), err.getvalue()


def archdsl(*cmd, quiet: bool = False) -> None:
    """Show `$ archdsl CMD` and run it in this process: with quiet, only its "trained ..." and
    "wrote ..." lines are printed. Exits (with its stderr) when it fails."""
    cmd = [str(c) for c in cmd]
    show_command(cmd, flush=True)
    code, stdout, stderr = run_cli(cmd, capture=quiet)
    if code:
        sys.stderr.write(stderr)
        raise SystemExit(f"archdsl {cmd[0]} failed")
    for line in stdout.splitlines():
        if line.startswith(("trained", "wrote")):
            print(line)


def _has_command(ap, name: str) -> bool:
    return any(isinstance(a, argparse._SubParsersAction) and name in a.choices for a in ap._actions)


def _inside_repo(arg: str) -> bool:
    # a path test, not a text prefix: /repo_other/x starts with "/repo" but is not inside it
    return arg.startswith(str(ROOT)) and Path(arg).is_relative_to(ROOT)


def show_command(cmd: list[str], flush: bool = False) -> None:
    """Print `$ archdsl CMD`, with paths inside the repository relative to its root."""
    shown = [str(Path(c).relative_to(ROOT)) if _inside_repo(c) else c for c in cmd]
    print("$ archdsl " + " ".join(shown), flush=flush)


def sample_on_both(spec: Path, ckpt: Path, length: int, sets=(), onnx_extra=()) -> tuple[dict, str | None]:
    """`archdsl sample` of a trained language model from the prompt "Return the ", on the NumPy
    engine and on ONNX Runtime (`onnx_extra`: more flags for that run), each shown as it runs.
    ({device: text}, None), or (what was sampled, the failing run's stderr)."""
    samples = {}
    prompt = "Return the "
    for device in ("numpy", "cpu"):
        cmd = ["sample", str(spec), "--weights", str(ckpt), "--prompt", prompt, "--length",
               str(length), "--temperature", "0.7", "--seed", "1", "--device", device]
        for s in sets:
            cmd += ["--set", s]
        if device == "cpu":
            cmd += list(onnx_extra)
        code, stdout, stderr = run_cli(cmd)
        if code != 0:
            sys.stderr.write(stderr)
            return samples, stderr
        samples[device] = stdout.rstrip("\n")
        print(f"\n$ archdsl sample {spec.relative_to(ROOT)} --weights {ckpt} --prompt {prompt!r} "
              f"--length {length} --temperature 0.7 --seed 1 --device {device}")
        print(stderr.strip().splitlines()[-1])
        print(samples[device])
    same = samples["numpy"] == samples["cpu"]
    print(f"\nthe NumPy engine and ONNX Runtime sampled {'the same' if same else 'different'} text")
    return samples, None
