"""Train specs/seq2seq_attention.arch (LSTM encoder-decoder with additive attention) to reverse
digit sequences, decode held-out sequences greedily, and show the attention weights.

    python examples/attention_reverse.py --out out/reverse

Task: a source of 5-10 random digits, the target the same digits reversed, then <eos>.
Tokens: digits 0-9, 10 = <pad>, 11 = <bos>, 12 = <eos>. Sources are left-padded to 10 tokens
(so the encoder's last state follows the last digit), decoder inputs are <bos> + the reversed
digits (teacher forcing), and decoder targets are the reversed digits + <eos>, padded with -1
(ignore_index: padding costs nothing). Output step t of a length-L source then copies padded
source position S-1-t (S = 10): the attention should be the anti-diagonal.

Steps: training and held-out sets (different seeds) written as OUT/reverse_train.npz and
OUT/reverse_test.npz; training with the spec's `train` section on the NumPy engine (OUT/run/);
greedy decoding of the held-out set (<bos> fed in, the argmax appended, up to L + 1 steps, no
teacher forcing) with the NumPy engine and the same decoding on ONNX Runtime of the exported
model; the attention weights of one example printed as text (and written as
docs/attention_reverse.png with --png). Exits 1 unless the held-out greedy token accuracy is
at least 98% and the attention argmax of most output steps is the mirrored source position.

The CLI trains the same model:

    archdsl train specs/seq2seq_attention.arch --data OUT/reverse_train.npz -o OUT/run
"""
from __future__ import annotations

import sys
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "seq2seq_attention.arch"

PAD, BOS, EOS, IGNORE = 10, 11, 12, -1
MAX_LEN = 10
TOKENS = [str(d) for d in range(10)] + ["<pad>", "<bos>", "<eos>"]
sys.path.insert(0, str(Path(__file__).resolve().parent))   # for _common, run as a script or loaded by path
import _common  # noqa: E402


def reversal_data(n: int, min_len: int = 5, max_len: int = MAX_LEN, seed: int = 0):
    """(arrays, lengths): src [n, max_len] (left-padded), tgt_in and tgt_out [n, max_len + 1]."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, max_len + 1, n)
    src = np.full((n, max_len), PAD, np.int64)
    tgt_in = np.full((n, max_len + 1), PAD, np.int64)
    tgt_out = np.full((n, max_len + 1), IGNORE, np.int64)
    for i, ln in enumerate(lengths):
        digits = rng.integers(0, 10, ln)
        src[i, max_len - ln:] = digits
        rev = digits[::-1]
        tgt_in[i, 0] = BOS
        tgt_in[i, 1:ln + 1] = rev
        tgt_out[i, :ln] = rev
        tgt_out[i, ln] = EOS
    return {"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out}, lengths


def greedy_decode(run, src: np.ndarray, steps: int):
    """Greedy decoding: `run(src, tgt_in) -> (logits [N, T, V], attention [N, T, S])`.
    Returns (tokens [N, steps], attention [N, steps, S]) of the last run."""
    n = len(src)
    tgt = np.full((n, 1), BOS, np.int64)
    for _ in range(steps):
        logits, att = run(src, tgt)
        nxt = logits[:, -1].argmax(axis=-1)
        tgt = np.concatenate([tgt, nxt[:, None]], axis=1)
    return tgt[:, 1:], att


def scores(pred: np.ndarray, tgt_out: np.ndarray, lengths: np.ndarray) -> dict:
    """Token accuracy over the digits (positions < L), <eos> placed right, exact sequences."""
    n = len(pred)
    pos = np.arange(pred.shape[1])[None, :]
    digit = pos < lengths[:, None]
    ok = (pred == np.where(tgt_out == IGNORE, -99, tgt_out))
    token_acc = float(ok[digit].mean())
    eos_ok = pred[np.arange(n), lengths] == EOS
    exact = (ok | ~digit).all(axis=1) & eos_ok
    return {"token_accuracy": token_acc, "eos_accuracy": float(eos_ok.mean()), "sequence_accuracy": float(exact.mean())}


def antidiagonal_fraction(att: np.ndarray, lengths: np.ndarray, s: int = MAX_LEN) -> float:
    """Fraction of output digit steps t whose attention argmax is source position S-1-t."""
    hits = total = 0
    for a, ln in zip(att, lengths):
        t = np.arange(ln)
        hits += int((a[t].argmax(axis=-1) == s - 1 - t).sum())
        total += int(ln)
    return hits / total


def attention_text(att: np.ndarray, src: np.ndarray, out: np.ndarray, steps: int) -> str:
    """The [steps, S] attention matrix as text: one row per output token, shades by weight."""
    shades = " .:-=+*#%@"
    head = "         " + " ".join(f"{TOKENS[t]:>5}" for t in src)
    rows = [head]
    for t in range(steps):
        cells = " ".join(f"{att[t, j]:5.2f}" for j in range(len(src)))
        bar = "".join(shades[min(9, int(att[t, j] * 10))] for j in range(len(src)))
        rows.append(f"{TOKENS[out[t]]:>5} -> {cells}   |{bar}|")
    return "\n".join(rows)


def write_png(path: Path, img: np.ndarray, scale: int = 24) -> None:
    """A grayscale PNG (uint8 [H, W], black = 0) with numpy and zlib only, upscaled by `scale`."""
    img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1).astype(np.uint8)
    h, w = img.shape
    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        c = tag + data
        return len(data).to_bytes(4, "big") + c + (zlib.crc32(c) & 0xFFFFFFFF).to_bytes(4, "big")
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0]))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)


def main(argv=None) -> dict:
    ap = _common.parser(__doc__)
    ap.add_argument("--train-size", type=int, default=8000, help="training sequences (default 8000)")
    ap.add_argument("--test-size", type=int, default=1000, help="held-out sequences (default 1000)")
    ap.add_argument("--min-len", type=int, default=5)
    _common.add_flags(ap, "epochs", "batch", "threads")
    ap.add_argument("--png", nargs="?", const=str(ROOT / "docs" / "attention_reverse.png"), default=None,
                    help="write the attention matrix as a PNG (default path docs/attention_reverse.png)")
    ap.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime decoding")
    _common.add_flags(ap, "quiet")
    args = ap.parse_args(argv)

    import archdsl
    from archdsl.train import train

    out = _common.output_dir(args.out)
    tr, _ = reversal_data(args.train_size, args.min_len, seed=0)
    te, te_len = reversal_data(args.test_size, args.min_len, seed=1)
    _common.save_npz(out / "reverse_train.npz", **tr)
    _common.save_npz(out / "reverse_test.npz", **te)
    print(f"digit reversal: {args.train_size} training and {args.test_size} held-out sequences of "
          f"{args.min_len}-{MAX_LEN} digits")

    spec = archdsl.compile(SPEC)
    model = spec.model("Seq2SeqAttention")
    result, train_s = _common.timed(train, model, out / "reverse_train.npz", run_dir=out / "run", overwrite=True, quiet=args.quiet,
                                    threads=args.threads, epochs=args.epochs, batch=args.batch)
    ex = result.executor

    def run_np(src, tgt):
        o = ex.run({"src": src, "tgt_in": tgt})
        return o["logits"], o["attention"]

    steps = MAX_LEN + 1
    pred, att = greedy_decode(run_np, te["src"], steps)
    sc = scores(pred, te["tgt_out"], te_len)
    diag = antidiagonal_fraction(att, te_len)
    print(f"trained in {train_s:.1f}s ({result.steps} steps)")
    print(f"held-out greedy decoding (NumPy): token accuracy {100 * sc['token_accuracy']:.2f}%, "
          f"<eos> placed right {100 * sc['eos_accuracy']:.2f}%, whole sequences {100 * sc['sequence_accuracy']:.2f}%")
    print(f"attention argmax on the mirrored source position S-1-t: {100 * diag:.2f}% of output digits")
    report = {**sc, "antidiagonal": diag, "train_seconds": train_s, "steps": result.steps}

    if not args.no_onnx:
        sess = _common.onnx_session(model, result.weights, out / "seq2seq_attention.onnx")

        def run_ort(src, tgt):
            return sess.run(["logits", "attention"], {"src": src, "tgt_in": tgt})
        opred, _ = greedy_decode(run_ort, te["src"], steps)
        osc = scores(opred, te["tgt_out"], te_len)
        same = float((opred == pred).mean())
        print(f"held-out greedy decoding (ONNX Runtime): token accuracy {100 * osc['token_accuracy']:.2f}% "
              f"({100 * same:.2f}% of tokens identical to NumPy's)")
        report.update(onnx_token_accuracy=osc["token_accuracy"], onnx_same_tokens=same)

    i = int(np.argmax(te_len))        # a longest example: the full 10 x 10 anti-diagonal
    ln = int(te_len[i])
    print(f"\nattention weights of held-out example {i} (rows: output tokens, columns: source tokens):")
    print(attention_text(att[i], te["src"][i], pred[i], ln + 1))
    if args.png:
        a = att[i, :ln + 1]
        write_png(Path(args.png), (255 * (1.0 - a / max(a.max(), 1e-9))).round())
        print(f"wrote {args.png} (dark = high weight; rows: output steps, columns: source positions)")

    ok = sc["token_accuracy"] >= 0.98 and diag >= 0.9
    if not args.no_onnx:
        ok = ok and report["onnx_same_tokens"] >= 0.999
    return _common.finish(report, ok, ">= 98% held-out token accuracy, an anti-diagonal attention and "
                                      "ONNX Runtime decoding as NumPy's")


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
