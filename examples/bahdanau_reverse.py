"""Train specs/seq2seq_bahdanau.arch (Bahdanau attention inside the recurrence: the context
c_i, computed from s_{i-1}, feeds the step that makes s_i) to reverse digit sequences, decode
held-out sequences greedily, and show the attention weights; next to it, the Luong-style
specs/seq2seq_attention.arch on the same data.

    python examples/bahdanau_reverse.py --out out/bahdanau [--png] [--no-luong]

The task, the data, greedy decoding and the scores are examples/attention_reverse.py's: sources
of 5-10 random digits, left-padded to 10; targets the digits reversed, then <eos>; output step t
copies padded source position S-1-t, so the attention should be the anti-diagonal. The decoder
is a user-defined cell (`cell BahdanauDecoder` in the spec) run by `Scan`; ONNX Runtime decodes
the same held-out set with the exported model (one ONNX `Scan` node holding the cell's step).

Exits 1 unless the held-out greedy token accuracy is at least 98%, the attention argmax of most
output digits is the mirrored source position, and ONNX Runtime decodes as the NumPy engine.

The CLI trains the same model:

    archdsl train specs/seq2seq_bahdanau.arch --data OUT/reverse_train.npz -o OUT/run
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "seq2seq_bahdanau.arch"
LUONG = ROOT / "specs" / "seq2seq_attention.arch"
sys.path.insert(0, str(Path(__file__).resolve().parent))   # for _common, run as a script or loaded by path
import _common  # noqa: E402
import attention_reverse as task  # noqa: E402


def evaluate(model, result, test, lengths, out: Path, name: str, onnx: bool) -> dict:
    """Greedy decoding of the held-out set on the NumPy engine (and ONNX Runtime): the scores."""
    ex = result.executor

    def run_np(src, tgt):
        o = ex.run({"src": src, "tgt_in": tgt})
        return o["logits"], o["attention"]

    steps = task.MAX_LEN + 1
    pred, att = task.greedy_decode(run_np, test["src"], steps)
    sc = task.scores(pred, test["tgt_out"], lengths)
    report = {**sc, "antidiagonal": task.antidiagonal_fraction(att, lengths), "steps": result.steps,
              "params": model.param_count, "pred": pred, "att": att}
    if onnx:
        sess = _common.onnx_session(model, result.weights, out / f"{name}.onnx")

        def run_ort(src, tgt):
            return sess.run(["logits", "attention"], {"src": src, "tgt_in": tgt})
        opred, _ = task.greedy_decode(run_ort, test["src"], steps)
        report.update(onnx_token_accuracy=task.scores(opred, test["tgt_out"], lengths)["token_accuracy"],
                      onnx_same_tokens=float((opred == pred).mean()))
    return report


def show(name: str, r: dict, seconds: float) -> None:
    print(f"{name}: {r['params']:,} parameters, trained in {seconds:.1f}s ({r['steps']} steps); held-out greedy "
          f"decoding: token accuracy {100 * r['token_accuracy']:.2f}%, whole sequences "
          f"{100 * r['sequence_accuracy']:.2f}%, attention argmax on the mirrored source position "
          f"{100 * r['antidiagonal']:.2f}%"
          + (f"; ONNX Runtime: {100 * r['onnx_token_accuracy']:.2f}% ({100 * r['onnx_same_tokens']:.2f}% of tokens "
             "identical to NumPy's)" if "onnx_same_tokens" in r else ""))


def main(argv=None) -> dict:
    ap = _common.parser(__doc__)
    ap.add_argument("--train-size", type=int, default=8000, help="training sequences (default 8000)")
    ap.add_argument("--test-size", type=int, default=1000, help="held-out sequences (default 1000)")
    ap.add_argument("--min-len", type=int, default=5)
    _common.add_flags(ap, "epochs", "batch", "threads")
    ap.add_argument("--png", nargs="?", const=str(ROOT / "docs" / "bahdanau_reverse.png"), default=None,
                    help="write the attention matrix as a PNG (default path docs/bahdanau_reverse.png)")
    ap.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime decoding")
    ap.add_argument("--no-luong", action="store_true", help="skip the Luong-style model")
    _common.add_flags(ap, "quiet")
    args = ap.parse_args(argv)

    import archdsl
    from archdsl.train import train

    out = _common.output_dir(args.out)
    tr, _ = task.reversal_data(args.train_size, args.min_len, seed=0)
    te, te_len = task.reversal_data(args.test_size, args.min_len, seed=1)
    _common.save_npz(out / "reverse_train.npz", **tr)
    print(f"digit reversal: {args.train_size} training and {args.test_size} held-out sequences of "
          f"{args.min_len}-{task.MAX_LEN} digits")

    runs = [("Bahdanau", SPEC)] + ([] if args.no_luong else [("Luong", LUONG)])
    reports = {}
    for name, spec in runs:
        model = archdsl.compile(spec).model()
        result, seconds = _common.timed(train, model, out / "reverse_train.npz", run_dir=out / f"run_{name.lower()}",
                                        quiet=args.quiet, threads=args.threads, epochs=args.epochs, batch=args.batch)
        r = evaluate(model, result, te, te_len, out, name.lower(), not args.no_onnx)
        r["train_seconds"] = seconds
        show(f"{name} ({spec.name})", r, seconds)
        reports[name] = r

    b = reports["Bahdanau"]
    i = int(np.argmax(te_len))        # a longest example: the full 10 x 10 anti-diagonal
    ln = int(te_len[i])
    print(f"\nBahdanau attention of held-out example {i} (rows: output tokens, columns: source tokens):")
    print(task.attention_text(b["att"][i], te["src"][i], b["pred"][i], ln + 1))
    if args.png:
        a = b["att"][i, :ln + 1]
        task.write_png(Path(args.png), (255 * (1.0 - a / max(a.max(), 1e-9))).round())
        print(f"wrote {args.png} (dark = high weight; rows: output steps, columns: source positions)")

    report = {k: v for k, v in b.items() if k not in ("pred", "att")}
    report["luong"] = {k: v for k, v in reports.get("Luong", {}).items() if k not in ("pred", "att")}
    ok = b["token_accuracy"] >= 0.98 and b["antidiagonal"] >= 0.9
    if not args.no_onnx:
        ok = ok and b["onnx_same_tokens"] >= 0.999
    return _common.finish(report, ok, ">= 98% held-out token accuracy, an anti-diagonal attention and "
                                      "ONNX Runtime decoding as NumPy's")


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
