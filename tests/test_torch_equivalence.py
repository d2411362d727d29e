"""The PyTorch engine takes the NumPy engine's steps: for the shipped small specs (digits MLP and
CNN, the LSTM language model, GPTSmall, BertSmall with its dropout, the ring GAN), the same seed
and data give the same first-step loss, and the same losses and parameters over 50 SGD steps
within the tolerances below (float32 on both; the PyTorch engine draws the NumPy engine's dropout
masks: random="numpy").

Tolerances: the first loss within 1e-5 (relative); every step's loss within 1e-4 (relative);
every parameter after 50 steps within 1e-5 of its tensor's largest magnitude (or absolutely, below
1). Measured: at most 2.2e-7 for the first losses, 1.3e-5 for a later loss (BertSmall's, near
0.02), 1.2e-6 for a parameter: the float32 rounding of two engines that sum in different orders."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import archdsl
from archdsl.train.config import TrainConfig, config_for
from archdsl.train.loop import train

torch = pytest.importorskip("torch")
from archdsl.backends.torch.train import engine_policy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STEPS = 50
FIRST_RTOL, LOSS_RTOL, PARAM_TOL = 1e-5, 1e-4, 1e-5


def _sgd(cfg: TrainConfig, lr: float) -> TrainConfig:
    return dataclasses.replace(cfg, optimizer={"name": "SGD", "lr": lr, "momentum": 0.9}, schedule=[], val_split=0.0,
                               epochs=100, metrics=["accuracy"])


def _lm(n, t, vocab, rng):
    tokens = rng.integers(0, vocab, (n, t + 1))
    return {"tokens": tokens[:, :-1], "next": tokens[:, 1:]}


def _case(name):
    """(model, config, data) of a shipped spec, with an SGD optimizer."""
    rng = np.random.default_rng(1)
    if name == "digits_mlp":
        spec = archdsl.compile(ROOT / "specs/digits_mlp.arch")
        x = rng.random((320, 64), dtype=np.float32)
        return spec.model(), _sgd(config_for(spec, "DigitsMLP"), 0.1), {"image": x, "label": rng.integers(0, 10, 320)}
    if name == "digits_cnn":
        spec = archdsl.compile(ROOT / "specs/digits_cnn.arch")
        x = rng.random((320, 1, 8, 8), dtype=np.float32)
        return spec.model(), _sgd(config_for(spec, "DigitsCNN"), 0.05), {"image": x, "label": rng.integers(0, 10, 320)}
    if name == "lstm_lm":
        spec = archdsl.compile(ROOT / "specs/lstm_lm.arch")
        return spec.model(), _sgd(config_for(spec, "LstmLM"), 0.5), _lm(160, 12, 64, rng)
    if name == "gpt_small":
        spec = archdsl.compile(ROOT / "specs/gpt.arch")
        cfg = TrainConfig(loss={"name": "cross_entropy", "output": "logits", "target": "next", "kwargs": {}}, batch=16)
        return spec.model("GPTSmall"), _sgd(cfg, 0.1), _lm(160, 16, 64, rng)
    if name == "bert_small":
        spec = archdsl.compile(ROOT / "specs/bert.arch")
        tokens = rng.integers(0, 64, (160, 16))
        labels = np.where(rng.random((160, 16)) < 0.15, tokens, -100)
        keep = np.ones((160, 16), dtype=bool)
        keep[:, 12:] = rng.random((160, 4)) < 0.5
        data = {"tokens": tokens, "segment_ids": (np.arange(16) >= 8).astype(np.int64)[None].repeat(160, 0),
                "keep": keep, "labels": labels}
        return spec.model("BertSmall"), dataclasses.replace(_sgd(config_for(spec, "BertSmall"), 0.2), batch=16), data
    raise KeyError(name)


def _run(model, cfg, data, policy):
    losses, params = [], {}

    def on_step(trainer, epoch, batch, step, loss):
        losses.append(loss)
        if step == STEPS:
            params.update({k: v.copy() for k, v in trainer.executor.weights().items()})
            trainer.request_stop()
    train(model, data, cfg, quiet=True, log=lambda s: None, on_step=on_step, policy=policy)
    return np.array(losses), params


def _agree(np_losses, t_losses, np_params, t_params):
    assert len(np_losses) == len(t_losses) == STEPS
    np.testing.assert_allclose(t_losses[0], np_losses[0], rtol=FIRST_RTOL, err_msg="first-step loss")
    np.testing.assert_allclose(t_losses, np_losses, rtol=LOSS_RTOL, err_msg="losses over 50 steps")
    assert set(t_params) == set(np_params)
    for k, a in np_params.items():
        scale = max(1.0, float(np.abs(a).max()))
        np.testing.assert_allclose(t_params[k], a, atol=PARAM_TOL * scale, rtol=0, err_msg=f"{k} after {STEPS} steps")
    assert not np.allclose(np_losses[0], np_losses[-1]), "the models must have trained"


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "lstm_lm", "gpt_small", "bert_small"])
def test_supervised_steps_agree(name):
    model, cfg, data = _case(name)
    np_losses, np_params = _run(model, cfg, data, None)
    t_losses, t_params = _run(model, cfg, data, engine_policy("model", random="numpy"))
    _agree(np_losses, t_losses, np_params, t_params)


def test_ring_gan_steps_agree():
    from archdsl.gan.loop import train_gan
    pair = archdsl.compile(ROOT / "specs/gan_ring.arch").gan()
    sgd = {"name": "SGD", "lr": 0.05, "momentum": 0.5}
    cfg = dataclasses.replace(pair.config, g_optimizer=sgd, d_optimizer=sgd, schedule=[], steps=STEPS, batch=64)
    rng = np.random.default_rng(2)
    angle = rng.integers(0, 8, 4096) * (np.pi / 4)
    real = (np.stack([np.cos(angle), np.sin(angle)], 1) * 2 + rng.normal(0, 0.02, (4096, 2))).astype(np.float32)
    runs = []
    for policy in (None, engine_policy("gan", random="numpy")):
        losses = []
        res = train_gan(pair, real, cfg, quiet=True, log=lambda s: None, policy=policy,
                        on_step=lambda tr, step, rec: losses.append((rec["d_loss"], rec["g_loss"])))
        runs.append((np.array(losses), {**res.generator_weights, **{f"D/{k}": v for k, v in res.discriminator_weights.items()}}))
    (np_l, np_p), (t_l, t_p) = runs
    assert np_l.shape == t_l.shape == (STEPS, 2)
    np.testing.assert_allclose(t_l[0], np_l[0], rtol=FIRST_RTOL, err_msg="first-step losses")
    np.testing.assert_allclose(t_l, np_l, rtol=LOSS_RTOL, err_msg="losses over 50 steps")
    for k, a in np_p.items():
        np.testing.assert_allclose(t_p[k], a, atol=PARAM_TOL * max(1.0, float(np.abs(a).max())), rtol=0, err_msg=k)


def test_vae_loss_terms_agree():
    """A loss of named expression terms with a ramped weight (specs/vae_digits.arch, smaller):
    the PyTorch engine computes each term by running its expression graph, and reports the
    same terms, weights and parameters as the NumPy engine (NormalLike's noise drawn alike)."""
    spec = archdsl.compile(ROOT / "specs/vae_digits.arch")
    model = spec.model("VAE", hidden=32)
    cfg = dataclasses.replace(config_for(spec, "VAE"), optimizer={"name": "SGD", "lr": 0.05, "momentum": 0.9},
                              batch=16, epochs=3, val_split=0.25)
    rng = np.random.default_rng(3)
    data = {"image": rng.random((96, 1, 8, 8), dtype=np.float32)}
    runs = [train(model, data, cfg, quiet=True, log=lambda s: None, policy=policy)
            for policy in (None, engine_policy("model", random="numpy"))]
    (a, b) = runs
    assert len(a.history) == len(b.history) == 3
    for ra, rb in zip(a.history, b.history):
        for k in ("loss", "recon", "kl", "kl_weight", "val_loss", "val_recon", "val_kl"):
            np.testing.assert_allclose(rb[k], ra[k], rtol=LOSS_RTOL, err_msg=f"{k} at epoch {ra['epoch']}")
    assert 0 < a.history[0]["kl_weight"] < a.history[-1]["kl_weight"] < 1, "the KL weight ramps"
    for k, w in a.weights.items():
        np.testing.assert_allclose(b.weights[k], w, atol=PARAM_TOL * max(1.0, float(np.abs(w).max())), rtol=0,
                                   err_msg=k)


def test_conditional_gan_steps_agree():
    """A conditional GAN (classes drawn for the generated batch, the real rows' labels with the
    real rows) takes the same steps on both engines."""
    from archdsl.gan.loop import train_gan
    from test_cgan import COND, labelled
    pair = archdsl.compile(COND).gan()
    sgd = {"name": "SGD", "lr": 0.05, "momentum": 0.5}
    cfg = dataclasses.replace(pair.config, g_optimizer=sgd, d_optimizer=sgd, schedule=[], steps=20)
    runs = []
    for policy in (None, engine_policy("gan", random="numpy")):
        losses = []
        res = train_gan(pair, labelled(192), cfg, quiet=True, log=lambda s: None, policy=policy,
                        on_step=lambda tr, step, rec: losses.append((rec["d_loss"], rec["g_loss"])))
        runs.append((np.array(losses), res.generator_weights))
    (np_l, np_g), (t_l, t_g) = runs
    assert np_l.shape == t_l.shape == (20, 2)
    np.testing.assert_allclose(t_l, np_l, rtol=LOSS_RTOL, err_msg="losses over 20 steps")
    for k, a in np_g.items():
        np.testing.assert_allclose(t_g[k], a, atol=PARAM_TOL * max(1.0, float(np.abs(a).max())), rtol=0, err_msg=k)
