"""Train specs/show_attend_tell.arch ("Show, Attend and Tell": an LSTM captioner attending over
the CNN's feature map inside its recurrence) to caption images of three handwritten digits with
the digits as words, and draw where it looks for each word.

    python examples/show_attend_tell.py --out out/sat [--png]

Data (scikit-learn's 8x8 digits, which ship with the package): the 1,797 digits are split 80/20
(seed 0) and each composed image is drawn from one side only, so held-out captions are of
digits never seen in training. An image is an 8 x 32 canvas holding three digits left to right
at random horizontal offsets (the 8 free columns split at random into four gaps); its caption
is the three digits as words, "seven one four". Tokens: the words zero..nine (0-9), <bos> (10)
and <eos> (11); the decoder reads <bos> w1 w2 w3 and predicts w1 w2 w3 <eos>.

Steps: training (`archdsl train`'s loop, the spec's train section) on the NumPy engine; greedy
captioning of the held-out images (<bos> fed in, the argmax appended, no teacher forcing) with
the NumPy engine and with ONNX Runtime on the exported model; word and whole-caption accuracy;
the attention of one held-out image, one 4 x 16 map per word (the feature map's positions),
printed as text and, with --png, drawn under the image as docs/show_attend_tell.png. Exits 1
unless the held-out word accuracy is at least 95%, ONNX Runtime captions as the NumPy engine,
and each word's attention peaks on the columns of its own digit for most words.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "show_attend_tell.arch"
sys.path.insert(0, str(Path(__file__).resolve().parent))   # for _common, run as a script or loaded by path
import _common  # noqa: E402
from attention_reverse import write_png  # noqa: E402

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "<bos>", "<eos>"]
BOS, EOS = 10, 11
DIGITS, HEIGHT, WIDTH = 3, 8, 32
POOL = 2                        # the feature map is the image pooled 2x2: a 4 x 16 grid


def digit_pools(seed: int = 0):
    """scikit-learn's digits (scaled to [0, 1]) split 80/20: ((train images, labels), (test ...))."""
    from sklearn.datasets import load_digits
    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(images))
    cut = int(0.8 * len(images))
    tr, te = order[:cut], order[cut:]
    return (images[tr], d.target[tr]), (images[te], d.target[te])


def compose(pool, n: int, seed: int):
    """n captioned images from one pool: {"image", "words", "next"} and the digits' columns."""
    images, labels = pool
    rng = np.random.default_rng(seed)
    img = np.zeros((n, 1, HEIGHT, WIDTH), np.float32)
    words = np.empty((n, DIGITS + 1), np.int64)
    nxt = np.empty((n, DIGITS + 1), np.int64)
    starts = np.empty((n, DIGITS), np.int64)
    free = WIDTH - 8 * DIGITS
    for i in range(n):
        cuts = np.sort(rng.integers(0, free + 1, DIGITS))          # gaps: cuts[0], cuts[1]-cuts[0], ...
        pick = rng.integers(0, len(images), DIGITS)
        for k in range(DIGITS):
            x0 = 8 * k + int(cuts[k])
            img[i, 0, :, x0:x0 + 8] = images[pick[k]]
            starts[i, k] = x0
        caption = labels[pick]
        words[i] = [BOS, *caption]
        nxt[i] = [*caption, EOS]
    return {"image": img, "words": words, "next": nxt}, starts


def greedy_captions(run, images: np.ndarray):
    """Greedy decoding: `run(image, words) -> (logits [N, T, V], attention [N, T, L])`.
    Returns (words [N, DIGITS + 1], attention of the last run [N, DIGITS + 1, L])."""
    words = np.full((len(images), 1), BOS, np.int64)
    att = None
    for _ in range(DIGITS + 1):
        logits, att = run(images, words)
        words = np.concatenate([words, logits[:, -1].argmax(axis=-1)[:, None]], axis=1)
    return words[:, 1:], att


def scores(pred: np.ndarray, nxt: np.ndarray) -> dict:
    ok = pred == nxt
    return {"word_accuracy": float(ok[:, :DIGITS].mean()), "caption_accuracy": float(ok.all(axis=1).mean())}


def on_own_digit(att: np.ndarray, starts: np.ndarray) -> float:
    """Fraction of (image, word) whose attention, summed over each digit's columns of the
    feature map, is largest on the word's own digit."""
    grid = att[:, :DIGITS].reshape(len(att), DIGITS, HEIGHT // POOL, WIDTH // POOL).sum(axis=2)    # [n, words, cols]
    hits = 0
    for i in range(len(att)):
        mass = np.stack([grid[i, :, s // POOL:(s + 8) // POOL].sum(axis=-1) for s in starts[i]], axis=-1)
        hits += int((mass.argmax(axis=-1) == np.arange(DIGITS)).sum())
    return hits / (len(att) * DIGITS)


def attention_text(att: np.ndarray, words) -> str:
    """One 4 x 16 map per word as text (shades by weight)."""
    shades = " .:-=+*#%@"
    rows = []
    for t, w in enumerate(words):
        m = att[t].reshape(HEIGHT // POOL, WIDTH // POOL)
        m = m / max(m.max(), 1e-9)
        rows.append(f"{WORDS[w]}:")
        rows += ["  |" + "".join(shades[min(9, int(v * 10))] for v in row) + "|" for row in m]
    return "\n".join(rows)


def picture(image: np.ndarray, att: np.ndarray, n_words: int) -> np.ndarray:
    """The image, then under it each word's attention upsampled to the image's size (dark = high),
    separated by white rows: a grayscale [rows, WIDTH] array for write_png."""
    parts = [1.0 - image[0]]
    for t in range(n_words):
        m = att[t].reshape(HEIGHT // POOL, WIDTH // POOL)
        m = np.kron(m / max(m.max(), 1e-9), np.ones((POOL, POOL)))
        parts += [np.ones((1, WIDTH)), 1.0 - m]
    return (255 * np.clip(np.concatenate(parts), 0, 1)).round()


def main(argv=None) -> dict:
    ap = _common.parser(__doc__)
    ap.add_argument("--train-size", type=int, default=6000, help="training images (default 6000)")
    ap.add_argument("--test-size", type=int, default=1000, help="held-out images (default 1000)")
    _common.add_flags(ap, "epochs", "batch", "threads")
    ap.add_argument("--png", nargs="?", const=str(ROOT / "docs" / "show_attend_tell.png"), default=None,
                    help="write the image and its per-word attention maps (default docs/show_attend_tell.png)")
    ap.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime captioning")
    _common.add_flags(ap, "quiet")
    args = ap.parse_args(argv)

    import archdsl
    from archdsl.train import train

    out = _common.output_dir(args.out)
    train_pool, test_pool = digit_pools()
    tr, _ = compose(train_pool, args.train_size, seed=0)
    te, te_starts = compose(test_pool, args.test_size, seed=1)
    _common.save_npz(out / "captions_train.npz", **tr)
    print(f"captions: {args.train_size} training and {args.test_size} held-out images of {DIGITS} digits "
          f"({len(train_pool[0])} and {len(test_pool[0])} distinct digits)")

    model = archdsl.compile(SPEC).model()
    result, seconds = _common.timed(train, model, out / "captions_train.npz", run_dir=out / "run",
                                    quiet=args.quiet, threads=args.threads, epochs=args.epochs, batch=args.batch)
    ex = result.executor

    def run_np(image, words):
        o = ex.run({"image": image, "words": words})
        return o["logits"], o["attention"]
    pred, att = greedy_captions(run_np, te["image"])
    sc = scores(pred, te["next"])
    own = on_own_digit(att, te_starts)
    print(f"{model.param_count:,} parameters, trained in {seconds:.1f}s ({result.steps} steps)")
    print(f"held-out greedy captions (NumPy): word accuracy {100 * sc['word_accuracy']:.2f}%, whole captions "
          f"{100 * sc['caption_accuracy']:.2f}%; attention mostly on the word's own digit for "
          f"{100 * own:.2f}% of words")
    report = {**sc, "own_digit": own, "train_seconds": seconds, "steps": result.steps, "params": model.param_count}

    if not args.no_onnx:
        sess = _common.onnx_session(model, result.weights, out / "show_attend_tell.onnx")

        def run_ort(image, words):
            return sess.run(["logits", "attention"], {"image": image, "words": words})
        opred, _ = greedy_captions(run_ort, te["image"])
        same = float((opred == pred).mean())
        print(f"held-out greedy captions (ONNX Runtime): word accuracy "
              f"{100 * scores(opred, te['next'])['word_accuracy']:.2f}% ({100 * same:.2f}% of words identical to "
              f"NumPy's)")
        report["onnx_same_words"] = same

    i = 0
    print(f"\nheld-out image {i}, captioned \"{' '.join(WORDS[w] for w in pred[i][:DIGITS])}\" "
          f"(truth \"{' '.join(WORDS[w] for w in te['next'][i][:DIGITS])}\"); attention per word over the 4 x 16 "
          "feature map:")
    print(attention_text(att[i], pred[i][:DIGITS]))
    if args.png:
        write_png(Path(args.png), picture(te["image"][i], att[i], DIGITS), scale=12)
        print(f"wrote {args.png} (the image, then one attention map per word; dark = high weight)")

    ok = sc["word_accuracy"] >= 0.95 and own >= 0.9
    if not args.no_onnx:
        ok = ok and report["onnx_same_words"] >= 0.999
    return _common.finish(report, ok, ">= 95% held-out word accuracy, attention on each word's digit and ONNX "
                                      "Runtime captioning as NumPy's")


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
