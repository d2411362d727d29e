"""Train a small BERT (specs/bert.arch, model BertSmall) with the masked-LM objective on a
synthetic language with structure, and measure the masked-token accuracy on held-out text.

    python examples/bert_mlm.py --out out/bert

The language: examples are sentence pairs "[CLS] A [SEP] B [SEP]"; A is active, B restates it
in the passive:
    A -> Det(n1) [Adj] Noun1(n1) Verb(n1) Det(n2) [Adj] Noun2(n2) [Prep Det(n3) Place(n3)]
    B -> the Noun2(n2) is|are(n2) Verb-ed by the Noun1(n1)
    "a big dog eats some apples near a park [SEP] the apples are eaten by the dog"
with
  * number agreement: a + singular, some + plural; the verb agrees with the subject (eats /
    eat), is / are with B's subject;
  * selectional restrictions: subjects are animals or people; each verb takes one kind of
    object (eats: food, visits: places, feeds: animals, meets: people; only people feed);
    "fresh" goes with food, "happy" with animals and people; prepositions take places;
  * the paraphrase: B repeats A's nouns (swapped) and its verb as a participle, so a masked
    noun or verb in one sentence can be read off the other: bidirectional attention at work.
What stays unpredictable: which noun of a kind starts a pair, numbers, adjectives, the
preposition and its place. Tokens: 0 [PAD], 1 [CLS], 2 [SEP], 3 [MASK], then the words
(vocab 64, the rest unused).

Masking as BERT: 15% of the word tokens of each example (at least one) are selected; of those
80% become [MASK], 10% a random word and 10% stay unchanged; the label is the original token at
the selected positions and -100 (ignore_index) elsewhere, so the loss and the accuracy count only
the selected positions. Each training sentence pair appears --copies times with fresh masks.
Padding: keep = false at [PAD] (the attention's key padding mask).

Steps: training and held-out pairs (different seeds) written as OUT/mlm_train.npz and
OUT/mlm_test.npz; training with the spec's `train BertSmall` section on the NumPy engine
(OUT/run/); held-out masked-token accuracy (NumPy and ONNX Runtime) next to chance: uniform over
the words, and the best constant answer (the most frequent word among the held-out targets).
Exits 1 unless the accuracy is at least 3x the best constant answer and ONNX Runtime agrees.

The CLI trains the same model:

    archdsl train specs/bert.arch --model BertSmall --data OUT/mlm_train.npz -o OUT/run
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "bert.arch"

PAD, CLS, SEP, MASK = 0, 1, 2, 3
IGNORE = -100
MAX_T = 24
sys.path.insert(0, str(Path(__file__).resolve().parent))   # for _common, run as a script or loaded by path
import _common  # noqa: E402

KINDS = {"animal": ("dog", "cat", "bird", "horse"), "person": ("child", "teacher", "farmer", "doctor"),
         "food": ("apple", "cake", "egg", "pie"), "place": ("house", "garden", "park", "river")}
# verb: (singular, plural, participle, object kind)
VERBS = {"eat": ("eats", "eat", "eaten", "food"), "visit": ("visits", "visit", "visited", "place"),
         "feed": ("feeds", "feed", "fed", "animal"), "meet": ("meets", "meet", "met", "person")}
ADJ = {"big": None, "small": None, "old": None, "red": None, "fresh": ("food",), "happy": ("animal", "person")}
PREP = ("in", "near")
FUNCTION = ("a", "some", "the", "is", "are", "by")


def _vocab() -> list[str]:
    words = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", *FUNCTION]
    for nouns in KINDS.values():
        for n in nouns:
            words += [n, n + "s"]
    for forms in VERBS.values():
        words += list(forms[:3])
    words += list(ADJ) + list(PREP)
    return words


VOCAB = _vocab()
ID = {w: i for i, w in enumerate(VOCAB)}
FIRST_WORD = 4                                       # tokens >= 4 are words
N_WORDS = len(VOCAB) - FIRST_WORD


def _noun(noun: str, plural: bool) -> str:
    return noun + "s" if plural else noun


def _indefinite(rng, kind: str, noun: str, plural: bool) -> list[str]:
    words = ["some" if plural else "a"]
    if rng.random() < 0.4:
        words.append(str(rng.choice([a for a, ok in ADJ.items() if ok is None or kind in ok])))
    return words + [_noun(noun, plural)]


def sentence_pair(rng) -> tuple[list[str], list[str]]:
    """(A, B) as words: an active sentence and its passive restatement."""
    skind = str(rng.choice(["animal", "person"]))
    verbs = [v for v in VERBS if v != "feed" or skind == "person"]
    sing, plur, part, okind = VERBS[str(rng.choice(verbs))]
    subj, obj = str(rng.choice(KINDS[skind])), str(rng.choice(KINDS[okind]))
    n1, n2 = rng.random() < 0.5, rng.random() < 0.5
    a = _indefinite(rng, skind, subj, n1) + [plur if n1 else sing] + _indefinite(rng, okind, obj, n2)
    if rng.random() < 0.5:
        n3 = rng.random() < 0.5
        a += [str(rng.choice(PREP))] + _indefinite(rng, "place", str(rng.choice(KINDS["place"])), n3)
    b = ["the", _noun(obj, n2), "are" if n2 else "is", part, "by", "the", _noun(subj, n1)]
    return a, b


def sentence_pairs(n: int, seed: int = 0):
    """(tokens, segment_ids) int64 [n, MAX_T]: [CLS] A [SEP] B [SEP], padded with [PAD]."""
    rng = np.random.default_rng(seed)
    tokens = np.full((n, MAX_T), PAD, np.int64)
    segments = np.zeros((n, MAX_T), np.int64)
    for i in range(n):
        a, b = sentence_pair(rng)
        ids = [CLS] + [ID[w] for w in a] + [SEP]
        la = len(ids)
        ids += [ID[w] for w in b] + [SEP]
        tokens[i, :len(ids)] = ids
        segments[i, la:len(ids)] = 1
    return tokens, segments


def mask_tokens(tokens: np.ndarray, rng: np.random.Generator, rate: float = 0.15):
    """BERT's masking: (inputs, labels). Of the word tokens, `rate` (at least one per example)
    are selected: 80% -> [MASK], 10% -> a random word, 10% unchanged; labels are the original
    tokens there and IGNORE elsewhere."""
    words = tokens >= FIRST_WORD
    score = np.where(words, rng.random(tokens.shape), np.inf)
    k = np.maximum(1, np.round(rate * words.sum(axis=1))).astype(int)
    ranks = score.argsort(axis=1).argsort(axis=1)
    sel = (ranks < k[:, None]) & words
    labels = np.where(sel, tokens, IGNORE)
    u = rng.random(tokens.shape)
    inputs = tokens.copy()
    inputs[sel & (u < 0.8)] = MASK
    rand = sel & (u >= 0.8) & (u < 0.9)
    inputs[rand] = rng.integers(FIRST_WORD, len(VOCAB), int(rand.sum()))
    return inputs, labels


def mlm_arrays(n: int, seed: int, copies: int = 1) -> dict:
    tokens, segments = sentence_pairs(n, seed)
    rng = np.random.default_rng([seed, 1])
    parts = [mask_tokens(tokens, rng) for _ in range(copies)]
    inputs = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    seg = np.tile(segments, (copies, 1))
    keep = np.tile(tokens != PAD, (copies, 1))
    return {"tokens": inputs, "segment_ids": seg, "keep": keep, "labels": labels}


def masked_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    sel = labels != IGNORE
    return float((logits.argmax(axis=-1)[sel] == labels[sel]).mean())


def main(argv=None) -> dict:
    ap = _common.parser(__doc__)
    ap.add_argument("--train-size", type=int, default=6000, help="training sentence pairs (default 6000)")
    ap.add_argument("--copies", type=int, default=2, help="masked copies of each training pair (default 2)")
    ap.add_argument("--test-size", type=int, default=2000, help="held-out sentence pairs (default 2000)")
    _common.add_flags(ap, "epochs")
    ap.add_argument("--dropout", type=float, default=None, help="override BertSmall's dropout (0.1)")
    _common.add_flags(ap, "batch", "threads")
    ap.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime")
    _common.add_flags(ap, "quiet")
    args = ap.parse_args(argv)

    import archdsl
    from archdsl.train import train

    out = _common.output_dir(args.out)
    tr = mlm_arrays(args.train_size, seed=0, copies=args.copies)
    te = mlm_arrays(args.test_size, seed=1)
    _common.save_npz(out / "mlm_train.npz", **tr)
    _common.save_npz(out / "mlm_test.npz", **te)
    sel = te["labels"] != IGNORE
    counts = np.bincount(te["labels"][sel], minlength=len(VOCAB))
    majority = float(counts.max() / sel.sum())
    uniform = 1.0 / N_WORDS
    print(f"masked LM: {args.train_size} training pairs x {args.copies} maskings, {args.test_size} held-out "
          f"pairs ({int(sel.sum())} masked targets); {N_WORDS} words")

    spec = archdsl.compile(SPEC)
    model = spec.model("BertSmall", **({} if args.dropout is None else {"dropout": args.dropout}))
    result, train_s = _common.timed(train, model, out / "mlm_train.npz", run_dir=out / "run", overwrite=True, quiet=args.quiet,
                                    threads=args.threads, epochs=args.epochs, batch=args.batch)
    feeds = {k: te[k] for k in ("tokens", "segment_ids", "keep")}
    np_logits = result.executor.run(feeds)["mlm_logits"]
    acc = masked_accuracy(np_logits, te["labels"])
    mask_pos = sel & (te["tokens"] == MASK)
    acc_mask = float((np_logits.argmax(-1)[mask_pos] == te["labels"][mask_pos]).mean())
    print(f"trained in {train_s:.1f}s ({result.steps} steps)")
    print(f"held-out masked-token accuracy: {100 * acc:.2f}% ({100 * acc_mask:.2f}% at [MASK] inputs); "
          f"chance: {100 * uniform:.2f}% (uniform over the words), {100 * majority:.2f}% (always the "
          f"most frequent target, '{VOCAB[int(counts.argmax())]}')")
    report = {"accuracy": acc, "accuracy_at_mask": acc_mask, "chance_uniform": uniform,
              "chance_majority": majority, "train_seconds": train_s, "steps": result.steps}

    ok = acc >= 3 * majority
    if not args.no_onnx:
        sess = _common.onnx_session(model, result.weights, out / "bert_small.onnx")
        ort_logits = sess.run(["mlm_logits"], feeds)[0]
        oacc = masked_accuracy(ort_logits, te["labels"])
        same = float((ort_logits.argmax(-1)[sel] == np_logits.argmax(-1)[sel]).mean())
        print(f"ONNX Runtime: masked-token accuracy {100 * oacc:.2f}% ({100 * same:.2f}% identical predictions, "
              f"max |logit difference| {float(np.abs(ort_logits - np_logits).max()):.2e})")
        report.update(onnx_accuracy=oacc, onnx_same=same)
        ok = ok and same >= 0.999
    return _common.finish(report, ok, "a masked-token accuracy of at least 3x the best constant answer, "
                                      "with the same predictions on ONNX Runtime")


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
