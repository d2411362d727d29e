"""Train the conditional DCGAN of specs/cgan_digits.arch on scikit-learn's 8x8 digits and check
that each class comes out as asked.

    python examples/cgan_digits.py --out out/cgan [--grid docs/cgan_digits.png]

Steps, the `archdsl` commands run in this process (printed as they run): the 1,797 digits with
pixels scaled to [-1, 1] and their labels as OUT/digits_labelled.npz (arrays `image`, `label`);
`archdsl train` (OUT/run/); the digits classifier of specs/digits_cnn.arch trained by archdsl on
the fixed 80/20 split of examples/train_digits.py; for each class, 1,000 digits generated with
that label (noise seed = the class) and the share the classifier assigns to it (its accuracy on
them) and assigns to it with confidence > 0.9; `archdsl sample` of a grid with a row per class
(OUT/cgan_digits.png, and --grid PATH) and of 10 digits per class on the NumPy engine and on ONNX
Runtime (the exported conditional generator: the same digits within 1e-4).

Exits 1 unless the classifier's accuracy on every class's generated digits reaches --min-accuracy
(default 0.9) and both runtimes give the same digits.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "cgan_digits.arch"
sys.path.insert(0, str(Path(__file__).resolve().parent))   # for _common, run as a script or loaded by path
import _common  # noqa: E402

PER_CLASS = 1000


def per_class(classifier, pair, weights) -> list[dict]:
    """For each class: PER_CLASS digits generated with its label; the classifier's accuracy on
    them, and the share it gives that class with confidence > 0.9."""
    from archdsl.gan import generate
    rows = []
    for k in range(10):
        samples, _ = generate(pair, weights, PER_CLASS, seed=k, conditions={"label": np.full(PER_CLASS, k, np.int64)})
        logits = classifier.run({"image": (samples + 1.0) / 2.0})["logits"].astype(np.float64)
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        hit = p.argmax(1) == k
        rows.append({"class": k, "accuracy": float(hit.mean()), "confident": float((hit & (p.max(1) > 0.9)).mean())})
    return rows


def main(argv=None) -> dict:
    ap = _common.parser(__doc__)
    _common.add_flags(ap, "epochs", "seed", "threads", "quiet", threads=_common.THREADS_SMALL_NET,
                      quiet="no progress bar or epoch lines")
    ap.add_argument("--grid", default=None, help="also write the grid (a row per class) here")
    ap.add_argument("--min-accuracy", type=float, default=0.9, help="the accuracy every class must reach")
    args = ap.parse_args(argv)

    import archdsl
    from archdsl.gan.checkpoint import load_member
    from archdsl.train.run import blas_threads
    from dcgan_digits import real_digits, train_classifier
    from sklearn.datasets import load_digits

    out = _common.output_dir(args.out)
    real, labels = real_digits(), load_digits().target.astype(np.int64)
    _common.save_npz(out / "digits_labelled.npz", image=real, label=labels)
    print(f"digits: {len(real):,} labelled 8x8 images in [-1, 1]")

    def cli(*cmd):
        _common.archdsl(*cmd, quiet=args.quiet)

    run = out / "run"
    cli("train", SPEC, "--data", out / "digits_labelled.npz", "-o", run, "--threads", args.threads,
        *(["--epochs", args.epochs] if args.epochs else []), *(["--seed", args.seed] if args.seed is not None else []),
        *(["--quiet"] if args.quiet else []))
    ck = run / "checkpoint.npz"
    pair = archdsl.compile(SPEC).gan()
    weights = load_member(ck, pair.generator.ir, role="generator")
    with blas_threads(args.threads):
        clf, acc = train_classifier(out, args.threads)
        rows = per_class(clf, pair, weights)
    print(f"the judge (specs/digits_cnn.arch, {100 * acc:.2f}% on held-out real digits), on {PER_CLASS:,} generated "
          "digits of each class:")
    print("| class | " + " | ".join(str(r["class"]) for r in rows) + " |")
    print("|---" * (len(rows) + 1) + "|")
    print("| accuracy | " + " | ".join(f"{100 * r['accuracy']:.1f}%" for r in rows) + " |")
    print("| with confidence > 0.9 | " + " | ".join(f"{100 * r['confident']:.1f}%" for r in rows) + " |")

    cli("sample", SPEC, "--weights", ck, "-n", 10, "-o", out / "cgan_digits.png")
    if args.grid:
        Path(args.grid).write_bytes((out / "cgan_digits.png").read_bytes())
    cli("export", SPEC, "--weights", run / "generator.npz", "-o", out / "generator.onnx")
    every = ",".join(map(str, range(10)))        # an .onnx file does not list the classes as a checkpoint does
    cli("sample", SPEC, "--weights", ck, "--class", every, "-n", 10, "-o", out / "numpy.npy")
    cli("sample", SPEC, "--weights", out / "generator.onnx", "--class", every, "-n", 10, "-o", out / "onnx.npy",
        "--device", "cpu")
    diff = float(np.abs(np.load(out / "numpy.npy") - np.load(out / "onnx.npy")).max())
    print(f"ONNX Runtime (the exported conditional generator) vs NumPy engine, same noise and labels: "
          f"max |difference| {diff:.2e}")
    worst = min(r["accuracy"] for r in rows)
    report = {"per_class": rows, "worst_accuracy": worst, "classifier_accuracy": acc, "onnx_max_diff": diff}
    return _common.finish(report, worst >= args.min_accuracy and diff <= 1e-4,
                          f"every class's generated digits classified as asked >= {args.min_accuracy:.0%} of the "
                          "time and ONNX == NumPy within 1e-4")


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
