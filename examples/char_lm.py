"""Train a character language model (specs/lstm_lm.arch or elman_lm.arch) with `archdsl train`
on text that ships with Python: the docstrings of 59 standard-library modules. Report its
perplexity against the unigram baseline, then sample from it with carried state on the NumPy
engine and on ONNX Runtime (`archdsl sample`).

    python examples/char_lm.py --out out/char_lm                 # LSTM, ~330k characters
    python examples/char_lm.py --out out/elman --spec elman_lm   # the Elman RNN

The corpus (no download): for each module of MODULES in order, its docstring and those of its
public classes, functions and methods (sorted by name; `inspect.cleandoc`), tabs as 4 spaces,
characters outside printable ASCII dropped. The exact text depends on the Python version (the
figures below are for CPython 3.11); its size and SHA-256 are printed. Every 10th docstring is
held out as the test text; the rest, cut into non-overlapping windows of --seq + 1 characters,
is the training data OUT/chars_train.npz: `tokens` [M, seq] and `next` [M, seq] (the same
windows shifted by one: the loss target of the spec's train section) and `vocab` (the
characters, id order). `archdsl train` keeps 10% of the windows for validation (its
val_split); `archdsl sample` finds the vocabulary through the checkpoint, which names its data.

Figures: validation perplexity (exp of the loop's val_loss, nats per character) and test
perplexity (the held-out docstrings, windows of --seq, NumPy engine and ONNX Runtime), each
against the unigram baseline (character frequencies of the training text, add-one smoothed,
on the same characters). Exits 1 unless the test perplexity is below 60% of the unigram's.

    archdsl train specs/lstm_lm.arch --data OUT/chars_train.npz -o OUT/run --set vocab=V
    archdsl sample specs/lstm_lm.arch --weights OUT/run/best.npz --prompt "Return the " \\
        --length 300 --temperature 0.7 [--device cpu]
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import inspect
import io
import math
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

MODULES = ("abc argparse base64 bisect calendar collections contextlib copy csv dataclasses datetime "
           "decimal difflib enum fractions functools glob gzip hashlib heapq hmac html inspect io "
           "ipaddress itertools json logging math operator os pathlib pickle pprint queue random re "
           "secrets shlex shutil socket statistics string struct subprocess tarfile tempfile textwrap "
           "threading time timeit typing unittest urllib.parse uuid warnings weakref zipfile zlib").split()
PRINTABLE = set(chr(c) for c in range(32, 127)) | {"\n"}


def _clean(doc: str) -> str:
    doc = inspect.cleandoc(doc).replace("\t", "    ")
    doc = "".join(c for c in doc if c in PRINTABLE)
    return re.sub(r"\n{3,}", "\n\n", doc).strip()


def docstrings(modules=MODULES) -> list[str]:
    """The docstrings of `modules`, in a fixed order (see the module docstring)."""
    out = []
    with warnings.catch_warnings():          # (typing.io and typing.re warn when touched)
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in modules:
            out.extend(_module_docs(name))
    return out


def _module_docs(name: str) -> list[str]:
    mod = importlib.import_module(name)
    docs = [mod.__doc__]
    for attr in sorted(dir(mod)):
        if attr.startswith("_"):
            continue
        obj = getattr(mod, attr)
        if getattr(obj, "__module__", None) != mod.__name__:
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj):
            docs.append(obj.__doc__)
        if inspect.isclass(obj):
            for meth in sorted(vars(obj)):
                f = vars(obj)[meth]
                if not meth.startswith("_") and inspect.isfunction(f):
                    docs.append(f.__doc__)
    return [d for d in (_clean(x) for x in docs if isinstance(x, str)) if d]


def corpus(limit: int | None = None) -> tuple[str, str]:
    """(training text, test text): every 10th docstring is test text; `limit` caps the total
    characters (docstrings are taken in order until it is reached)."""
    docs = docstrings()
    if limit is not None:
        kept, total = [], 0
        for d in docs:
            if total >= limit:
                break
            kept.append(d)
            total += len(d) + 2
        docs = kept
    train = "\n\n".join(d for i, d in enumerate(docs) if i % 10 != 9) + "\n"
    test = "\n\n".join(d for i, d in enumerate(docs) if i % 10 == 9) + "\n"
    return train, test


def windows(ids: np.ndarray, seq: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows of seq + 1 ids -> (inputs [M, seq], next-token targets [M, seq])."""
    m = (len(ids) - 1) // seq
    x = ids[: m * seq].reshape(m, seq)
    y = ids[1: m * seq + 1].reshape(m, seq)
    return x.astype(np.int64), y.astype(np.int64)


def unigram_logprobs(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    counts = np.bincount(ids, minlength=vocab_size).astype(np.float64) + 1.0   # add-one
    return np.log(counts / counts.sum())


def save_npz(path: Path, **arrays) -> None:
    from archdsl.fileio import atomic_path
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean -log softmax(logits)[y] in nats (float64)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return float(-np.take_along_axis(logp, y[..., None], axis=-1).mean())


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


def _has_command(ap, name: str) -> bool:
    return any(isinstance(a, argparse._SubParsersAction) and name in a.choices for a in ap._actions)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--spec", default="lstm_lm", choices=["lstm_lm", "elman_lm"])
    ap.add_argument("--epochs", type=int, default=None, help="override the spec's epochs")
    ap.add_argument("--seq", type=int, default=64, help="training window length (default 64)")
    ap.add_argument("--hidden", type=int, default=None, help="override the model's hidden size")
    ap.add_argument("--limit", type=int, default=None, help="use only about this many characters")
    ap.add_argument("--lr", type=float, default=None, help="override the spec's learning rate")
    ap.add_argument("--batch", type=int, default=None, help="override the spec's batch size")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    ap.add_argument("--sample-length", type=int, default=300)
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)

    import archdsl
    from archdsl.train.checkpoint import load_weights

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec_path = ROOT / "specs" / f"{args.spec}.arch"

    # -- the data ----------------------------------------------------------------------------
    train_text, test_text = corpus(args.limit)
    chars = sorted(set(train_text))
    index = {c: i for i, c in enumerate(chars)}
    test_text = "".join(c for c in test_text if c in index)      # (a character seen only in test)
    train_ids = np.array([index[c] for c in train_text], np.int64)
    test_ids = np.array([index[c] for c in test_text], np.int64)
    V = len(chars)
    x, y = windows(train_ids, args.seq)
    xt, yt = windows(test_ids, args.seq)
    save_npz(out / "chars_train.npz", tokens=x, next=y, vocab=np.array(chars))
    digest = hashlib.sha256((train_text + test_text).encode()).hexdigest()[:12]
    print(f"corpus: docstrings of {len(MODULES)} standard-library modules (Python "
          f"{sys.version_info.major}.{sys.version_info.minor}), {len(train_text):,} training + "
          f"{len(test_text):,} test characters, {V} distinct (sha256 {digest})")
    print(f"data: {len(x):,} training windows of {args.seq} (validation: 10% of them), "
          f"{len(xt):,} test windows")

    # -- archdsl train ------------------------------------------------------------------------
    run = out / "run"
    cmd = ["train", str(spec_path), "--data", str(out / "chars_train.npz"), "-o", str(run),
           "--set", f"vocab={V}", "--threads", str(args.threads)]
    if args.hidden:
        cmd += ["--set", f"hidden={args.hidden}"]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    if args.lr:
        cmd += ["--lr", str(args.lr)]
    if args.batch:
        cmd += ["--batch", str(args.batch)]
    if args.quiet:
        cmd += ["--quiet"]
    print("$ archdsl " + " ".join(cmd[:1] + [str(Path(c).relative_to(ROOT)) if c.startswith(str(ROOT)) else c
                                           for c in cmd[1:]]))
    t0 = time.perf_counter()
    code, _, _ = run_cli(cmd, capture=False)
    train_s = time.perf_counter() - t0
    if code != 0:
        return {"ok": False, "error": f"archdsl train exited with {code}"}
    import json
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val_loss = min(h["val_loss"] for h in history)
    ckpt = run / "best.npz"

    # -- perplexities ------------------------------------------------------------------------
    overrides = {"vocab": V, **({"hidden": args.hidden} if args.hidden else {})}
    model = archdsl.compile(spec_path).model(**overrides)
    weights = load_weights(ckpt, model.ir)
    ex = model.executor(weights)
    from archdsl.train.data import Dataset, split
    _, val = split(Dataset({"tokens": x, "next": y}), 0.1, 0)      # the loop's split (seed 0)
    # the unigram estimated on the training windows only (not the held-out validation windows)
    train_part, _ = split(Dataset({"tokens": x, "next": y}), 0.1, 0)
    logp = unigram_logprobs(train_part.arrays["next"].ravel(), V)
    uni_val = math.exp(-logp[val.arrays["next"]].mean())
    uni_test = math.exp(-logp[yt].mean())
    np_test = math.exp(cross_entropy(np.concatenate([ex.run({"tokens": xt[i:i + 256]})["logits"]
                                                     for i in range(0, len(xt), 256)]), yt))
    onnx_path = out / f"{args.spec}.onnx"
    model.to_onnx(onnx_path, weights=weights)
    from archdsl.runtime import Session
    sess = Session(onnx_path, device="cpu")
    ort_logits = np.concatenate([sess.run({"tokens": xt[i:i + 256]})["logits"] for i in range(0, len(xt), 256)])
    ort_test = math.exp(cross_entropy(ort_logits, yt))
    val_ppl = math.exp(val_loss)
    print(f"trained in {train_s:.0f}s")
    print(f"validation perplexity {val_ppl:.2f} vs unigram {uni_val:.2f} "
          f"({val_ppl / uni_val:.0%} of the baseline; {val_loss / math.log(2):.3f} bits/char)")
    print(f"test perplexity (held-out docstrings): NumPy {np_test:.3f}, ONNX Runtime {ort_test:.3f} "
          f"vs unigram {uni_test:.2f}")

    # -- archdsl sample ------------------------------------------------------------------------
    samples = {}
    prompt = "Return the "
    for device in ("numpy", "cpu"):
        cmd = ["sample", str(spec_path), "--weights", str(ckpt), "--prompt", prompt, "--length",
               str(args.sample_length), "--temperature", "0.7", "--seed", "1", "--device", device]
        if args.hidden:
            cmd += ["--set", f"hidden={args.hidden}"]
        if device == "cpu":
            cmd += ["--save-onnx", str(out / f"{args.spec}_step.onnx")]
        code, stdout, stderr = run_cli(cmd)
        if code != 0:
            sys.stderr.write(stderr)
            return {"ok": False, "error": stderr}
        samples[device] = stdout.rstrip("\n")
        print(f"\n$ archdsl sample {spec_path.relative_to(ROOT)} --weights {ckpt} --prompt {prompt!r} "
              f"--length {args.sample_length} --temperature 0.7 --seed 1 --device {device}")
        print(stderr.strip().splitlines()[-1])
        print(samples[device])
    same = samples["numpy"] == samples["cpu"]
    print(f"\nthe NumPy engine and ONNX Runtime sampled {'the same' if same else 'different'} text")
    report = {"vocab": V, "train_chars": len(train_text), "test_chars": len(test_text),
              "val_perplexity": val_ppl, "unigram_val_perplexity": uni_val,
              "test_perplexity": np_test, "onnx_test_perplexity": ort_test,
              "unigram_test_perplexity": uni_test, "train_seconds": train_s,
              "epochs": len(history), "samples": samples, "same_samples": same}
    report["ok"] = bool(np_test < 0.6 * uni_test and abs(np_test - ort_test) < 1e-3 * np_test)
    if not report["ok"]:
        print("FAILED: expected the test perplexity below 60% of the unigram baseline, and ONNX Runtime "
              "to agree with the NumPy engine", file=sys.stderr)
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
