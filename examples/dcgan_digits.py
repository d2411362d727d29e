"""Train specs/dcgan_digits.arch on scikit-learn's 8x8 digits and judge its digits with a
classifier that archdsl trained on the real ones.

    python examples/dcgan_digits.py --out out/dcgan [--grid docs/dcgan_digits.png]

Steps: the 1,797 digit images with pixels scaled from 0..16 to [-1, 1] (the generator ends in
Tanh), as OUT/digits_real.npz; the alternating GAN loop on the NumPy engine with the spec's gan
section (OUT/run/); the digits classifier of specs/digits_cnn.arch trained by archdsl on the
fixed 80/20 split of examples/train_digits.py (plain cross-entropy: label smoothing would cap
its confidence near 0.91, and the judge here needs confidences above 0.9 to mean something);
1,000 generated digits (noise seed 0), mapped to [0, 1] and classified; an 8x8 image grid of 64
generated digits (OUT/dcgan_digits.png, and --grid PATH); the generator on ONNX Runtime vs the
NumPy engine for the same noise.

A class counts as generated when at least 1% of the 1,000 digits are assigned to it with
confidence > 0.9. Exits 1 unless at least 8 of the 10 classes do, and both runtimes give the
same samples (1e-4).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "dcgan_digits.arch"
CLASSIFIER = ROOT / "specs" / "digits_cnn.arch"
sys.path.insert(0, str(ROOT / "examples"))      # for train_digits and _common, run as a script or loaded by path
import _common  # noqa: E402


def real_digits() -> np.ndarray:
    """All 1,797 digits as float32 [N, 1, 8, 8] in [-1, 1]."""
    from sklearn.datasets import load_digits
    return (load_digits().images / 8.0 - 1.0).astype(np.float32)[:, None]


def train_classifier(out: Path, threads: int = 1, quiet: bool = True):
    """DigitsCNN trained by archdsl on the train split (pixels in [0, 1]); returns (executor, test accuracy)."""
    import archdsl
    from archdsl.train import config_for, train
    from train_digits import digits_split
    xtr, ytr, xte, yte = digits_split(0)
    spec = archdsl.compile(CLASSIFIER)
    model = spec.model("DigitsCNN")
    cfg = config_for(spec, "DigitsCNN")
    cfg.loss["kwargs"]["label_smoothing"] = 0.0
    res = train(model, {"image": xtr, "label": ytr}, cfg, run_dir=out / "classifier", overwrite=True, quiet=quiet,
                threads=threads, log=(lambda s: None) if quiet else None)
    acc = float((res.executor.run({"image": xte})["logits"].argmax(1) == yte).mean())
    return res.executor, acc


def judge(classifier, samples: np.ndarray, threshold: float = 0.9, share: float = 0.01) -> dict:
    """Classify generated digits ([-1, 1]): per-class counts of confident (> threshold) answers."""
    logits = classifier.run({"image": (samples + 1.0) / 2.0})["logits"].astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    conf, cls = p.max(1), p.argmax(1)
    counts = np.bincount(cls[conf > threshold], minlength=10)
    classes = int((counts >= share * len(samples)).sum())
    return {"confident_counts": counts.tolist(), "classes": classes, "confident": float((conf > threshold).mean()),
            "ok": classes >= 8}


def main(argv=None) -> dict:
    ap = _common.parser(__doc__)
    _common.add_flags(ap, "epochs", "seed")
    ap.add_argument("--grid", default=None, help="also write the image grid here (e.g. docs/dcgan_digits.png)")
    _common.add_flags(ap, "threads", "quiet", threads=_common.THREADS_SMALL_NET, quiet="no progress bar or epoch lines")
    args = ap.parse_args(argv)

    import archdsl
    from archdsl.gan import train_gan
    from archdsl.gan.image import image_grid, write_png
    from archdsl.train.run import blas_threads

    out = _common.output_dir(args.out)
    real = real_digits()
    np.savez(out / "digits_real.npz", image=real)
    print(f"digits: {len(real):,} real 8x8 images in [-1, 1]")

    pair = archdsl.compile(SPEC).gan()
    result, train_s = _common.timed(train_gan, pair, out / "digits_real.npz", run_dir=out / "run", overwrite=True, quiet=args.quiet,
                                    threads=args.threads, epochs=args.epochs, seed=args.seed,
                                    log=(lambda s: None) if args.quiet else None)
    print(f"trained the GAN in {train_s:.1f}s: {result.steps} steps of batch {result.config.batch} "
          f"({result.epochs_done} epochs)")

    t1 = time.perf_counter()
    with blas_threads(args.threads):
        clf, acc = train_classifier(out, args.threads)
    print(f"trained the judge (specs/digits_cnn.arch) in {time.perf_counter() - t1:.1f}s: "
          f"{100 * acc:.2f}% test accuracy on real digits")

    onnx_path = out / "generator.onnx"
    samples, _, info, diff = _common.generator_on_both(pair, result.generator_weights, onnx_path, 1000, args.threads)
    with blas_threads(args.threads):
        rep = judge(clf, samples)
        real_rep = judge(clf, real)
    grid = image_grid(samples[:64], cols=8, scale=5)
    write_png(out / "dcgan_digits.png", grid)
    if args.grid:
        write_png(args.grid, grid)
    print(f"1,000 generated digits: {rep['classes']} of 10 classes get >= 1% of them with confidence > 0.9; "
          f"confident per class {rep['confident_counts']}; {100 * rep['confident']:.1f}% confident overall "
          f"(real digits: {100 * real_rep['confident']:.1f}%)")
    print(f"ONNX Runtime ({info['device']}) vs NumPy engine, same noise: max |difference| {diff:.2e}")
    print(f"wrote {out / 'dcgan_digits.png'}{', ' + args.grid if args.grid else ''}, {onnx_path}")
    report = {**rep, "classifier_accuracy": acc, "real_confident": real_rep["confident"], "train_seconds": train_s,
              "steps": result.steps, "onnx_max_diff": diff}
    return _common.finish(report, rep["ok"] and diff <= 1e-4,
                          ">= 8 classes with confident generated digits and ONNX == NumPy within 1e-4")


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
