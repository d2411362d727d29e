"""Teach specs/seq2seq.arch (an LSTM encoder-decoder, no attention) to reverse digit strings of
length 5-10, with teacher forcing in training and greedy decoding, step by step with the
decoder's state carried, on held-out strings.

    python examples/seq2seq_reverse.py --out out/reverse

Tokens: 0 pad, 1 <bos>, 2 <eos>, 3..12 the digits 0..9 (the spec's vocabularies of 16).
Sources are left-padded to 10 (the encoder's last step is the last digit); the decoder reads
`tgt_in` = <bos> y_1 ... y_L and learns `tgt_out` = y_1 ... y_L <eos> (padding ignored by the
loss: the spec's train section). --train strings (seed 0) train; --test other strings (seed 1,
none of them in the training set) are decoded greedily: the encoder and the first decoder step
run once (the "prefill" graph of archdsl/sample/lm.py), then every step feeds the previous
prediction and the carried (h, c) to the decoder's step graph (the encoder is not in it), until
<eos> or 11 steps. Token accuracy: the fraction of target digits predicted at their position
(a missing or extra digit counts against); sequence accuracy: the whole reversal exact,
<eos> included. Exits 1 below 95% token accuracy.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "seq2seq.arch"
PAD, BOS, EOS, DIGIT0 = 0, 1, 2, 3
MAX_LEN = 10
sys.path.insert(0, str(Path(__file__).resolve().parent))   # for _common, run as a script or loaded by path
import _common  # noqa: E402


def make_strings(n: int, seed: int, lo: int = 5, hi: int = MAX_LEN, exclude: set | None = None) -> list[tuple]:
    """n distinct digit tuples of lengths lo..hi (none of them in `exclude`)."""
    rng = np.random.default_rng(seed)
    seen = set(exclude or ())
    out = []
    while len(out) < n:
        t = tuple(rng.integers(0, 10, rng.integers(lo, hi + 1)).tolist())
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def encode(strings: list[tuple], max_len: int = MAX_LEN) -> dict[str, np.ndarray]:
    """src [M, max_len] (left-padded), tgt_in and tgt_out [M, max_len + 1] (right-padded)."""
    m = len(strings)
    src = np.full((m, max_len), PAD, np.int64)
    tin = np.full((m, max_len + 1), PAD, np.int64)
    tout = np.full((m, max_len + 1), PAD, np.int64)
    for i, s in enumerate(strings):
        d = np.array(s, np.int64) + DIGIT0
        src[i, max_len - len(d):] = d
        r = d[::-1]
        tin[i, 0] = BOS
        tin[i, 1:len(r) + 1] = r
        tout[i, :len(r)] = r
        tout[i, len(r)] = EOS
    return {"src": src, "tgt_in": tin, "tgt_out": tout}


def greedy_decode(runner, src: np.ndarray, steps: int = MAX_LEN + 1) -> np.ndarray:
    """Predicted target ids [M, steps], step by step (argmax), with the decoder's state carried."""
    logits = runner.start(np.full((len(src), 1), BOS, np.int64), context={"src": src})
    out = np.empty((len(src), steps), np.int64)
    for t in range(steps):
        tok = logits.argmax(axis=-1)
        out[:, t] = tok
        if t + 1 < steps:
            logits = runner.step(tok)
    return out


def score(pred: np.ndarray, strings: list[tuple]) -> tuple[float, float]:
    """(token accuracy, sequence accuracy) of greedy predictions against the reversed strings."""
    right = total = exact = 0
    for p, s in zip(pred, strings):
        want = [d + DIGIT0 for d in reversed(s)]
        stop = np.flatnonzero(p == EOS)
        got = list(p[:stop[0]]) if len(stop) else list(p)
        right += sum(1 for a, b in zip(got, want) if a == b)
        total += max(len(want), len(got))                  # extra digits count as errors too
        exact += got == want and len(stop) > 0
    return right / total, exact / len(strings)


def main(argv=None) -> dict:
    ap = _common.parser(__doc__)
    ap.add_argument("--train", type=int, default=20000, help="training strings (default 20000)")
    ap.add_argument("--test", type=int, default=1000, help="held-out test strings (default 1000)")
    _common.add_flags(ap, "epochs", "hidden", "batch", "lr", "threads", "quiet")
    args = ap.parse_args(argv)

    import archdsl
    from archdsl.sample.lm import Runner
    from archdsl.train import train

    out = _common.output_dir(args.out)
    train_strings = make_strings(args.train, seed=0)
    test_strings = make_strings(args.test, seed=1, exclude=set(train_strings))
    data = encode(train_strings)
    _common.save_npz(out / "reverse_train.npz", **data)
    print(f"data: {len(train_strings):,} training and {len(test_strings):,} held-out digit strings of "
          f"length 5-{MAX_LEN} (disjoint)")

    overrides = {"hidden": args.hidden} if args.hidden else {}
    model = archdsl.compile(SPEC).model("Seq2Seq", **overrides)
    result, train_s = _common.timed(train, model, out / "reverse_train.npz", run_dir=out / "run", overwrite=True, quiet=args.quiet,
                                    threads=args.threads, epochs=args.epochs, batch=args.batch, lr=args.lr)
    last = result.last
    print(f"trained in {train_s:.0f}s ({result.steps} steps); teacher-forced validation token accuracy "
          f"{100 * last['val_accuracy']:.2f}%")

    test = encode(test_strings)
    report = {"train_seconds": train_s, "teacher_forced_val_accuracy": last["val_accuracy"]}
    for engine in ("numpy", "onnx"):
        runner = Runner(model.ir, result.weights, engine=engine, device="cpu", token_input="tgt_in")
        t0 = time.perf_counter()
        pred = greedy_decode(runner, test["src"])
        secs = time.perf_counter() - t0
        tok, seq = score(pred, test_strings)
        report[f"{engine}_token_accuracy"], report[f"{engine}_sequence_accuracy"] = tok, seq
        report[f"{engine}_pred"] = pred
        where = "the NumPy engine" if engine == "numpy" else "ONNX Runtime"
        print(f"greedy decoding on {where} ({runner.mode} mode, {secs:.2f}s): token accuracy "
              f"{100 * tok:.2f}%, sequence accuracy {100 * seq:.2f}% on {len(test_strings):,} held-out strings")
    report["same_predictions"] = bool((report["numpy_pred"] == report["onnx_pred"]).all())
    for s, p in list(zip(test_strings, report["numpy_pred"]))[:5]:
        stop = np.flatnonzero(p == EOS)
        got = "".join(str(d - DIGIT0) if DIGIT0 <= d < DIGIT0 + 10 else "?" for d in (p[:stop[0]] if len(stop) else p))
        print(f"  {''.join(map(str, s)):>10} -> {got}")
    report["token_accuracy"] = report["numpy_token_accuracy"]
    del report["numpy_pred"], report["onnx_pred"]
    return _common.finish(report, report["token_accuracy"] >= 0.95 and report["same_predictions"],
                          ">= 95% token accuracy and the same predictions on both runtimes")


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
