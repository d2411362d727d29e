"""Train specs/sentiment_lstm.arch (many-to-one LSTM classifier) on a synthetic task where only
long-range context decides the label, and show accuracy far above chance.

    python examples/sentiment_longrange.py --out out/sentiment

Every sequence is a "review" left-padded with 0 to --max-len tokens (as the spec expects): its
FIRST token is the verdict, 1 (negative) or 2 (positive), and every later token is a distractor
drawn uniformly from --distractors ids (3, 4, ...) whatever the label. Nothing near the end of a
review says anything about its label: the LSTM must keep the verdict in its cell state across
every distractor, and only its final state feeds the classifier. Labels are balanced (chance
50%); a bag of words, or anything that reads only the last k tokens, is at chance.

Training reviews have --min-len..--max-len tokens (short ones included: an LSTM started from
PyTorch's initialisation does not find a signal 50+ steps back from long sequences alone, the
gradient through 50 forget gates of ~0.5 vanishes). The held-out test reviews (seed 1) are all
long, --test-min-len..--max-len tokens, so the verdict is at least --test-min-len - 1 steps back
from the prediction; accuracy is also shown per distance band. As a control, the same model is
trained on the same reviews with shuffled labels (which no token decides): it stays at chance.

Training follows the spec's `train` section (Adam 3e-3, batch 64, clip 1.0); accuracy is measured
with the NumPy engine and with ONNX Runtime. Exits 1 unless the test accuracy is at least 90%.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "sentiment_lstm.arch"
NEG, POS = 1, 2
sys.path.insert(0, str(Path(__file__).resolve().parent))   # for _common, run as a script or loaded by path
import _common  # noqa: E402


def make_data(n: int, seed: int, min_len: int, max_len: int, distractors: int) -> tuple[np.ndarray, np.ndarray]:
    """tokens [n, max_len] (left-padded with 0; the first real token is the verdict, the rest drawn
    from the `distractors` ids 3, 4, ...), labels [n]."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2).astype(np.int64)          # balanced
    lens = rng.integers(min_len, max_len + 1, n)
    tokens = np.zeros((n, max_len), np.int64)
    noise = rng.integers(3, 3 + distractors, (n, max_len))
    for i in range(n):
        row = tokens[i, max_len - lens[i]:]
        row[0] = POS if labels[i] else NEG
        row[1:] = noise[i, : lens[i] - 1]
    return tokens, labels


def main(argv=None) -> dict:
    ap = _common.parser(__doc__)
    ap.add_argument("--train", type=int, default=6000, help="training sequences (default 6000)")
    ap.add_argument("--test", type=int, default=1000, help="held-out sequences (default 1000)")
    ap.add_argument("--min-len", type=int, default=5, help="shortest training review (default 5)")
    ap.add_argument("--max-len", type=int, default=100, help="longest review = padded length (default 100)")
    ap.add_argument("--test-min-len", type=int, default=60, help="shortest test review (default 60)")
    ap.add_argument("--distractors", type=int, default=20, help="distinct distractor tokens (default 20)")
    ap.add_argument("--vocab", type=int, default=None, help="override the model's vocabulary (default: the spec's)")
    _common.add_flags(ap, "hidden", "epochs")
    ap.add_argument("--no-control", action="store_true", help="skip the shuffled-label control run")
    _common.add_flags(ap, "batch", "lr", "threads", "quiet")
    args = ap.parse_args(argv)

    import archdsl
    from archdsl.runtime import Session
    from archdsl.train import train

    out = _common.output_dir(args.out)
    overrides = {k: v for k, v in (("vocab", args.vocab), ("hidden", args.hidden)) if v}
    model = archdsl.compile(SPEC).model("SentimentLSTM", **overrides)
    V = model.ir.args["vocab"]
    if not 3 + args.distractors <= V:
        raise SystemExit(f"--distractors {args.distractors} needs a vocabulary of at least {3 + args.distractors}")
    x, y = make_data(args.train, 0, args.min_len, args.max_len, args.distractors)
    xt, yt = make_data(args.test, 1, args.test_min_len, args.max_len, args.distractors)
    _common.save_npz(out / "longrange_train.npz", tokens=x, label=y)
    print(f"data: {len(x):,} training reviews of {args.min_len}-{args.max_len} tokens, {len(xt):,} held-out "
          f"reviews of {args.test_min_len}-{args.max_len}; the label is the first token, then "
          f"{args.distractors} kinds of random distractors")

    result, train_s = _common.timed(train, model, out / "longrange_train.npz", run_dir=out / "run", overwrite=True, quiet=args.quiet,
                                    threads=args.threads, epochs=args.epochs, batch=args.batch, lr=args.lr)
    np_logits = result.executor.run({"tokens": xt})["logits"]
    np_acc = float((np_logits.argmax(1) == yt).mean())
    onnx_path = out / "sentiment_lstm.onnx"
    model.to_onnx(onnx_path, weights=result.weights)
    ort_logits = Session(onnx_path, device="cpu").run({"tokens": xt})["logits"]
    ort_acc = float((ort_logits.argmax(1) == yt).mean())
    print(f"trained in {train_s:.0f}s ({result.steps} steps)")
    print(f"held-out accuracy: NumPy {100 * np_acc:.2f}%, ONNX Runtime {100 * ort_acc:.2f}% (chance 50%)")
    dist = (xt != 0).sum(axis=1) - 1                      # distractors between the verdict and the end
    edges = np.linspace(args.test_min_len - 1, args.max_len, 4).astype(int)    # [lo, hi) bands
    bands = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (dist >= lo) & (dist < hi)
        hi = hi - 1
        if sel.any():
            acc = float((np_logits.argmax(1)[sel] == yt[sel]).mean())
            bands.append((int(lo), int(hi), int(sel.sum()), acc))
    print("  by distance from the verdict to the prediction: "
          + ", ".join(f"{lo}-{hi} steps {100 * a:.1f}% (n={n})" for lo, hi, n, a in bands))
    report = {"accuracy": np_acc, "onnx_accuracy": ort_acc, "train_seconds": train_s,
              "max_logit_diff": float(np.abs(np_logits - ort_logits).max()),
              "history": [h.get("val_accuracy") for h in result.history], "bands": bands,
              "min_distance": int(dist.min())}

    if not args.no_control:
        # the same model and data, but labels that no token decides: it can only guess
        yc = np.random.default_rng(2).permutation(y)
        _common.save_npz(out / "control_train.npz", tokens=x, label=yc)
        ctrl = train(model, out / "control_train.npz", quiet=True, threads=args.threads, epochs=args.epochs,
                     batch=args.batch, lr=args.lr, log=lambda s: None)
        c_acc = float((ctrl.executor.run({"tokens": xt})["logits"].argmax(1) == yt).mean())
        report["control_accuracy"] = c_acc
        print(f"control (labels shuffled, so no token decides them): held-out accuracy {100 * c_acc:.2f}%")
    return _common.finish(report, np_acc >= 0.9 and np_acc == ort_acc, ">= 90% held-out accuracy on both runtimes")


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
