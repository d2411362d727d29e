"""Real results of the attention family, at small settings (the examples run the full ones):

* the attention seq2seq (specs/seq2seq_attention.arch) learns digit reversal: held-out greedy
  decoding on the NumPy engine and ONNX Runtime, and its attention weights are the
  anti-diagonal (examples/attention_reverse.py);
* a small BERT (specs/bert.arch BertSmall) trained with BERT's masking on a structured
  synthetic language predicts masked tokens far above chance (examples/bert_mlm.py);
* a character GPT (specs/gpt_char.arch) trained with `archdsl train` on the char-LM corpus beats
  the unigram baseline, and `archdsl sample` gives the same text on the NumPy engine and ONNX
  Runtime (examples/gpt_char.py).
"""

import numpy as np

from harness import example


def test_reversal_data_layout():
    m = example("attention_reverse")
    d, lengths = m.reversal_data(50, seed=3)
    for i in range(50):
        ln = int(lengths[i])
        digits = d["src"][i, m.MAX_LEN - ln:]
        assert (d["src"][i, :m.MAX_LEN - ln] == m.PAD).all()
        assert (d["tgt_out"][i, :ln] == digits[::-1]).all() and d["tgt_out"][i, ln] == m.EOS
        assert (d["tgt_out"][i, ln + 1:] == m.IGNORE).all()
        assert d["tgt_in"][i, 0] == m.BOS and (d["tgt_in"][i, 1:ln + 1] == digits[::-1]).all()


def test_attention_seq2seq_learns_reversal_with_an_antidiagonal(tmp_path):
    m = example("attention_reverse")
    png = tmp_path / "attention.png"
    r = m.main(["--out", str(tmp_path), "--train-size", "3000", "--test-size", "300", "--epochs", "3",
                "--batch", "32", "--png", str(png), "--quiet"])
    assert r["token_accuracy"] >= 0.95, r
    assert r["onnx_same_tokens"] >= 0.999, r
    # output step t copies padded source position S-1-t: the attention argmax sits there
    assert r["antidiagonal"] >= 0.9, r
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bert_masking_follows_the_80_10_10_rule():
    m = example("bert_mlm")
    tokens, segments = m.sentence_pairs(3000, seed=5)
    inputs, labels = m.mask_tokens(tokens, np.random.default_rng(0))
    words = tokens >= m.FIRST_WORD
    sel = labels != m.IGNORE
    assert not (sel & ~words).any()                              # never [CLS], [SEP], [PAD]
    assert (sel.sum(axis=1) >= 1).all()
    assert abs(sel.sum() / words.sum() - 0.15) < 0.01
    assert (labels[sel] == tokens[sel]).all()
    masked = (inputs[sel] == m.MASK).mean()
    same = (inputs[sel] == tokens[sel]).mean()
    assert abs(masked - 0.8) < 0.02 and 0.09 < same < 0.13      # 10% unchanged (+ random hits)
    assert (inputs[~sel] == tokens[~sel]).all()
    # segments: [CLS] A [SEP] is 0, B [SEP] is 1, padding 0
    sep = tokens == m.SEP
    first_sep = sep.argmax(axis=1)
    for i in range(20):
        assert (segments[i, :first_sep[i] + 1] == 0).all() and segments[i, first_sep[i] + 1] == 1


def test_small_bert_predicts_masked_tokens_far_above_chance(tmp_path):
    m = example("bert_mlm")
    r = m.main(["--out", str(tmp_path), "--train-size", "2000", "--copies", "2", "--test-size", "500",
                "--epochs", "2", "--batch", "32", "--dropout", "0.0", "--quiet"])
    assert r["chance_uniform"] < 0.02 and r["chance_majority"] < 0.2, r
    assert r["accuracy"] >= 0.35 and r["accuracy"] >= 2.5 * r["chance_majority"], r
    assert r["onnx_same"] >= 0.999, r


def test_char_gpt_trains_with_archdsl_train_and_samples_on_both_engines(tmp_path):
    m = example("gpt_char")
    r = m.main(["--out", str(tmp_path), "--limit", "40000", "--epochs", "8", "--batch", "8", "--lr", "6e-3",
                "--no-lstm", "--set", "d=48", "--set", "ffn=96", "--set", "layers=1",
                "--sample-length", "40", "--quiet"])
    assert r["gpt_test_perplexity"] < 0.6 * r["unigram_test_perplexity"], r
    assert abs(r["gpt_onnx_test_perplexity"] - r["gpt_test_perplexity"]) < 1e-3 * r["gpt_test_perplexity"]
    assert r["same_samples"] and len(r["samples"]["numpy"]) == len("Return the ") + 40, r["samples"]
    assert r["ok"]
