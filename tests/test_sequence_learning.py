"""Real results of the recurrent networks, at test size (the examples run them full size):

- a character LSTM LM trained with `archdsl train` on Python's docstrings reaches a held-out
  perplexity far below the unigram baseline, and `archdsl sample` continues a prompt with carried
  state, the same text on the NumPy engine and ONNX Runtime (examples/char_lm.py);
- the seq2seq encoder-decoder learns to reverse digit strings of length 5-10: >= 95% token
  accuracy on held-out strings, decoded greedily step by step (examples/seq2seq_reverse.py);
- the many-to-one sentiment LSTM classifies by a token 29-39 steps back, far above chance, while
  the same model on shuffled labels stays at chance (examples/sentiment_longrange.py).
"""

from harness import example


def test_char_lm_beats_the_unigram_baseline_and_samples_on_both_engines(tmp_path):
    r = example("char_lm").main(["--out", str(tmp_path), "--limit", "100000", "--hidden", "64",
                                 "--epochs", "4", "--batch", "16", "--sample-length", "60", "--quiet"])
    assert r["test_perplexity"] < 0.6 * r["unigram_test_perplexity"], r
    assert r["val_perplexity"] < 0.6 * r["unigram_val_perplexity"], r
    assert r["unigram_test_perplexity"] > 15                   # (a real baseline for English text)
    assert abs(r["onnx_test_perplexity"] - r["test_perplexity"]) < 1e-3 * r["test_perplexity"]
    assert r["same_samples"], r["samples"]
    text = r["samples"]["numpy"]
    assert text.startswith("Return the ") and len(text) == len("Return the ") + 60
    assert r["ok"]
    for f in ("chars_train.npz", "run/best.npz", "run/metrics.jsonl", "lstm_lm_step.onnx"):
        assert (tmp_path / f).exists(), f


def test_seq2seq_reverses_held_out_digit_strings(tmp_path):
    r = example("seq2seq_reverse").main(["--out", str(tmp_path), "--train", "8000", "--test", "300",
                                         "--epochs", "3", "--quiet"])
    assert r["token_accuracy"] >= 0.95, r
    assert r["same_predictions"] and r["onnx_token_accuracy"] == r["numpy_token_accuracy"]
    assert r["ok"]


def test_sentiment_lstm_uses_long_range_context(tmp_path):
    r = example("sentiment_longrange").main(
        ["--out", str(tmp_path), "--train", "2000", "--test", "300", "--min-len", "5", "--max-len", "40",
         "--test-min-len", "30", "--vocab", "64", "--hidden", "32", "--epochs", "4", "--quiet"])
    assert r["min_distance"] >= 29                             # the verdict is >= 29 steps back
    assert r["accuracy"] >= 0.9, r                             # chance is 50%
    assert r["onnx_accuracy"] == r["accuracy"] and r["max_logit_diff"] < 1e-4
    assert r["control_accuracy"] < 0.65, r                     # shuffled labels: nothing to learn
    assert r["ok"]


def test_counted_ngram_baseline_is_a_proper_distribution():
    import numpy as np
    m = example("char_lm")
    train = np.array([0, 1, 2, 0, 1, 2, 0, 1, 3] * 50)
    counts, uni = m.ngram_counts(train, 3), m.unigram_logprobs(train, 4)
    for history in ([0, 1], [3, 3], []):                 # seen, unseen and no context
        total = sum(m.ngram_prob(counts, uni, history, c, 0.8) for c in range(4))
        assert abs(total - 1.0) < 1e-12, (history, total)
    assert m.ngram_prob(counts, uni, [0, 1], 2, 0.8) > m.ngram_prob(counts, uni, [0, 1], 3, 0.8)
    # a periodic text is nearly certain under its own trigram counts
    assert m.ngram_perplexity(counts, uni, np.array([0, 1, 2] * 20), 0.95) < 1.3
