"""Real results: the digits CNN reaches >= 97% test accuracy and ONNX Runtime agrees with the NumPy
engine; the 2-2-1 network learns XOR with online SGD; a frozen backbone survives transfer learning."""

import numpy as np

from harness import example


def test_digits_cnn_reaches_97_percent_and_onnx_agrees(tmp_path):
    r = example("train_digits").main(["--out", str(tmp_path), "--quiet"])
    assert r["numpy_accuracy"] >= 0.97, r
    assert r["onnx_accuracy"] == r["numpy_accuracy"] and r["same_predictions"], r
    assert r["max_logit_diff"] < 1e-4
    assert r["ok"]
    for f in ("digits_train.npz", "digits_test.npz", "digits_cnn.onnx", "run/checkpoint.npz", "run/metrics.jsonl"):
        assert (tmp_path / f).exists(), f


def test_xor_learned_with_online_sgd():
    r = example("xor_online_sgd").main([])
    assert r["learned"], r
    p = np.array(r["probs"])
    assert (p[[0, 3]] < 0.1).all() and (p[[1, 2]] > 0.9).all()
    assert r["steps"] == 4 * 400           # batch 1: one update per example


def test_transfer_learning_keeps_the_frozen_backbone(tmp_path):
    r = example("transfer_learning").main(["--out", str(tmp_path)])
    assert r["backbone_unchanged"] and r["head_changed"], r
    assert r["non_trainable_line"] == "Non-trainable params: 6,240"
    assert r["accuracy"] > 0.9, r
