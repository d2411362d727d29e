"""The examples of user-defined cells, reproduced at a smaller size (the README quotes the full runs):

* Bahdanau attention inside the recurrence (specs/seq2seq_bahdanau.arch) learns digit reversal:
  held-out greedy decoding on the NumPy engine and ONNX Runtime, an anti-diagonal attention
  (examples/bahdanau_reverse.py);
* "Show, Attend and Tell" (specs/show_attend_tell.arch) captions images of three digits with
  their words, each word's attention on its own digit, and ONNX Runtime captions the same
  (examples/show_attend_tell.py).
"""
import numpy as np

from harness import example


def test_bahdanau_attention_learns_reversal_with_an_antidiagonal(tmp_path):
    m = example("bahdanau_reverse")
    png = tmp_path / "attention.png"
    r = m.main(["--out", str(tmp_path), "--train-size", "3000", "--test-size", "300", "--epochs", "3",
                "--batch", "32", "--png", str(png), "--no-luong", "--quiet"])
    assert r["token_accuracy"] >= 0.95, r
    assert r["onnx_same_tokens"] >= 0.999, r
    assert r["antidiagonal"] >= 0.9, r
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_caption_data_reads_the_digits_left_to_right():
    m = example("show_attend_tell")
    train_pool, test_pool = m.digit_pools()
    assert len(train_pool[0]) + len(test_pool[0]) == 1797
    d, starts = m.compose(test_pool, 40, seed=3)
    assert d["image"].shape == (40, 1, m.HEIGHT, m.WIDTH)
    for i in range(40):
        assert (np.diff(starts[i]) >= 8).all() and starts[i, -1] + 8 <= m.WIDTH       # left to right, apart
        assert d["words"][i, 0] == m.BOS and d["next"][i, -1] == m.EOS
        assert (d["words"][i, 1:] == d["next"][i, :-1]).all()
        for k, x0 in enumerate(starts[i]):       # the digit drawn at x0 is the k-th word
            img = d["image"][i, 0, :, x0:x0 + 8]
            label = d["next"][i, k]
            assert any(np.array_equal(img, t) for t, l in zip(*test_pool) if l == label)


def test_show_attend_tell_captions_digits_and_looks_at_each(tmp_path):
    m = example("show_attend_tell")
    png = tmp_path / "sat.png"
    r = m.main(["--out", str(tmp_path), "--train-size", "3000", "--test-size", "300", "--epochs", "6",
                "--png", str(png), "--quiet"])
    assert r["word_accuracy"] >= 0.85, r
    assert r["own_digit"] >= 0.9, r                # each word's attention is on its own digit
    assert r["onnx_same_words"] >= 0.999, r
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
