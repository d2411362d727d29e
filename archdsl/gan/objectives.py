"""The adversarial objectives, on the discriminator's raw scores (Tensors of shape [B, 1] or [B]).

    objective        discriminator loss                              generator loss
    minimax          bce(d_real, 1) + bce(d_fake, 0)                 -bce(d_fake, 0) = mean log(1 - s(d_fake))
    non_saturating   bce(d_real, 1) + bce(d_fake, 0)                  bce(d_fake, 1) = -mean log s(d_fake)
    least_squares    (mse(d_real, 1) + mse(d_fake, 0)) / 2           mse(d_fake, 1) / 2

bce is binary cross-entropy on logits (sigmoid folded in, numerically stable) and mse the mean
squared error, both from archdsl.train.losses. Goodfellow et al. (2014) state the game as
minimax and recommend the non-saturating generator loss in practice (the default here); least
squares is Mao et al. (2017) with the a=0, b=1, c=1 coding.

`d_loss_joint` scores real and generated samples in one discriminator pass (concatenated along
the batch): the same loss as the two-pass form when nothing in D couples the examples of a
batch (no BatchNorm in training mode), with half the per-op overhead.

`probability` turns scores into what the progress bar shows as D(x) and D(G(z)): the mean
sigmoid for the logistic objectives, the mean raw score for least squares.
"""
from __future__ import annotations

import numpy as np

from ..autodiff import functional as F
from ..train.losses import binary_cross_entropy, mse

OBJECTIVES = ("non_saturating", "minimax", "least_squares")


def _const(value: float, like) -> np.ndarray:
    return np.full(like.shape, value, dtype=like.data.dtype)


def _pair_loss(objective: str, score, target: float):
    if objective == "least_squares":
        return mse(score, _const(target, score))
    return binary_cross_entropy(score, _const(target, score))


def d_loss(objective: str, d_real, d_fake):
    """Discriminator loss from its scores on a real batch and a generated batch."""
    real = _pair_loss(objective, d_real, 1.0)
    fake = _pair_loss(objective, d_fake, 0.0)
    total = real + fake
    return total * 0.5 if objective == "least_squares" else total


def d_loss_joint(objective: str, scores, n_real: int):
    """As `d_loss` for scores of [real; generated] in one tensor (equal halves)."""
    targets = np.zeros(scores.shape, dtype=scores.data.dtype)
    targets[:n_real] = 1.0
    if objective == "least_squares":
        return mse(scores, targets)                   # mean over 2B = (mean_r + mean_f) / 2
    return binary_cross_entropy(scores, targets) * 2.0   # = mean_r + mean_f


def g_loss(objective: str, d_fake):
    """Generator loss from the discriminator's scores on generated samples."""
    if objective == "minimax":
        return F.neg(binary_cross_entropy(d_fake, _const(0.0, d_fake)))
    if objective == "least_squares":
        return mse(d_fake, _const(1.0, d_fake)) * 0.5
    return binary_cross_entropy(d_fake, _const(1.0, d_fake))


def probability(objective: str, scores: np.ndarray) -> float:
    """Mean D output as shown in the progress bar: sigmoid for the logistic objectives."""
    s = np.asarray(scores, dtype=np.float64)
    if objective == "least_squares":
        return float(s.mean())
    return float((0.5 * (1.0 + np.tanh(0.5 * s))).mean())
