"""Train specs/digits_cnn.arch on scikit-learn's 8x8 digits, export it to ONNX with the trained
weights, and check that ONNX Runtime gets the same test accuracy as the NumPy engine.

    python examples/train_digits.py --out out/digits

Steps: a fixed, stratified 80/20 split (seed 0) of the 1,797 images, pixels scaled to [0, 1]
(written as OUT/digits_train.npz and OUT/digits_test.npz); training with the spec's `train`
section on the NumPy engine (OUT/run/: checkpoint.npz, metrics.jsonl); test accuracy with the
NumPy engine; export to OUT/digits_cnn.onnx with the trained weights; test accuracy on ONNX
Runtime. Exits 1 unless the accuracy is at least 97% and both runtimes predict the same classes.

The CLI does the same:

    archdsl train specs/digits_cnn.arch --data OUT/digits_train.npz -o OUT/run
    archdsl export specs/digits_cnn.arch --weights OUT/run/checkpoint.npz -o OUT/digits_cnn.onnx

Needs scikit-learn (pip install 'archdsl[examples]').
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "digits_cnn.arch"
sys.path.insert(0, str(Path(__file__).resolve().parent))   # for _common, run as a script or loaded by path
import _common  # noqa: E402


def digits_split(seed: int = 0):
    """(x_train, y_train, x_test, y_test): images [N, 1, 8, 8] in [0, 1], int64 labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    return xtr, ytr, xte, yte


def main(argv=None) -> dict:
    ap = _common.parser(__doc__)
    _common.add_flags(ap, "epochs", "threads", "quiet", threads=_common.THREADS_SMALL_NET)
    args = ap.parse_args(argv)

    import archdsl
    from archdsl.train import train

    out = _common.output_dir(args.out)
    xtr, ytr, xte, yte = digits_split(0)
    _common.save_npz(out / "digits_train.npz", image=xtr, label=ytr)
    _common.save_npz(out / "digits_test.npz", image=xte, label=yte)
    print(f"digits: {len(xtr)} training and {len(xte)} test images (fixed stratified 80/20 split, seed 0)")

    spec = archdsl.compile(SPEC)
    model = spec.model("DigitsCNN")
    result, train_s = _common.timed(train, model, out / "digits_train.npz", run_dir=out / "run", overwrite=True, quiet=args.quiet,
                                    threads=args.threads, epochs=args.epochs)

    np_logits = result.executor.run({"image": xte})["logits"]
    np_pred = np_logits.argmax(axis=1)
    np_acc = float((np_pred == yte).mean())

    onnx_path = out / "digits_cnn.onnx"
    sess = _common.onnx_session(model, result.weights, onnx_path)
    ort_logits = sess.run(["logits"], {"image": xte})[0]
    ort_pred = ort_logits.argmax(axis=1)
    ort_acc = float((ort_pred == yte).mean())
    max_diff = float(np.abs(ort_logits - np_logits).max())

    print(f"trained in {train_s:.1f}s ({result.steps} steps)")
    print(f"test accuracy: NumPy {100 * np_acc:.2f}%, ONNX Runtime {100 * ort_acc:.2f}% "
          f"({int((ort_pred == np_pred).sum())}/{len(yte)} identical predictions, "
          f"max |logit difference| {max_diff:.2e})")
    print(f"wrote {onnx_path}")
    report = {"numpy_accuracy": np_acc, "onnx_accuracy": ort_acc, "same_predictions": bool((ort_pred == np_pred).all()),
              "max_logit_diff": max_diff, "train_seconds": train_s, "steps": result.steps, "onnx": str(onnx_path)}
    return _common.finish(report, np_acc >= 0.97 and report["same_predictions"] and ort_acc == np_acc,
                          ">= 97% test accuracy and identical predictions on both runtimes")


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
