"""Training losses: values against hand-written formulas, gradients against finite differences,
and (where PyTorch is installed) against torch."""
import numpy as np
import pytest

from archdsl.autodiff import Tensor, backward, check_grads
from archdsl.train import binary_cross_entropy, cross_entropy, mse

rng = np.random.default_rng(0)


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def test_cross_entropy_int_labels_matches_formula():
    z = rng.standard_normal((5, 4))
    y = np.array([0, 3, 1, 1, 2])
    want = -log_softmax(z)[np.arange(5), y].mean()
    assert float(cross_entropy(Tensor(z), y).data) == pytest.approx(want, rel=1e-12)
    assert float(cross_entropy(Tensor(z), y, reduction="sum").data) == pytest.approx(want * 5, rel=1e-12)


def test_cross_entropy_probabilities_and_smoothing():
    z = rng.standard_normal((3, 5))
    q = rng.random((3, 5))
    q /= q.sum(axis=1, keepdims=True)
    want = -(q * log_softmax(z)).sum(axis=1).mean()
    assert float(cross_entropy(Tensor(z), q).data) == pytest.approx(want, rel=1e-12)
    y = np.array([4, 0, 2])
    eps = 0.1
    qs = np.full((3, 5), eps / 5)
    qs[np.arange(3), y] += 1 - eps
    want = -(qs * log_softmax(z)).sum(axis=1).mean()
    assert float(cross_entropy(Tensor(z), y, label_smoothing=eps).data) == pytest.approx(want, rel=1e-12)


def test_cross_entropy_sequence_logits_and_ignore_index():
    z = rng.standard_normal((2, 3, 4))          # [N, T, C]: class axis last
    y = np.array([[1, 2, -100], [0, -100, 3]])
    lp = log_softmax(z)
    keep = y != -100
    want = -np.sum(lp[keep, y[keep]]) / keep.sum()
    got = cross_entropy(Tensor(z), y, ignore_index=-100)
    assert float(got.data) == pytest.approx(want, rel=1e-12)


def test_binary_cross_entropy_matches_formula_and_accepts_flat_targets():
    z = rng.standard_normal((6, 1)) * 3
    t = rng.integers(0, 2, 6).astype(np.float64)
    s = 1 / (1 + np.exp(-z[:, 0]))
    want = -(t * np.log(s) + (1 - t) * np.log(1 - s)).mean()
    assert float(binary_cross_entropy(Tensor(z), t).data) == pytest.approx(want, rel=1e-10)
    # large logits stay finite
    big = binary_cross_entropy(Tensor(np.array([[80.0], [-80.0]])), np.array([0.0, 1.0]))
    assert float(big.data) == pytest.approx(80.0, rel=1e-6)


def test_mse_matches_formula():
    p = rng.standard_normal((4, 3))
    t = rng.standard_normal((4, 3))
    assert float(mse(Tensor(p), t).data) == pytest.approx(((p - t) ** 2).mean(), rel=1e-12)
    assert float(mse(Tensor(p), t, reduction="sum").data) == pytest.approx(((p - t) ** 2).sum(), rel=1e-12)


@pytest.mark.parametrize("case", ["labels", "probs", "smooth", "seq_ignore", "sum"])
def test_cross_entropy_gradients(case):
    if case == "seq_ignore":
        z = rng.standard_normal((2, 3, 4))
        y = np.array([[1, 2, 0], [0, 3, 3]])
        check_grads(lambda a: cross_entropy(a, y, ignore_index=3), [z])
    elif case == "probs":
        z = rng.standard_normal((3, 4))
        q = rng.dirichlet(np.ones(4), 3)
        check_grads(lambda a: cross_entropy(a, q), [z])
    else:
        z = rng.standard_normal((4, 5))
        y = np.array([0, 4, 2, 2])
        kw = {"label_smoothing": 0.2} if case == "smooth" else {"reduction": "sum"} if case == "sum" else {}
        check_grads(lambda a: cross_entropy(a, y, **kw), [z])


def test_bce_and_mse_gradients():
    z = rng.standard_normal((5, 1))
    t = rng.random(5)
    check_grads(lambda a: binary_cross_entropy(a, t), [z])
    check_grads(lambda a: binary_cross_entropy(a, t, reduction="sum"), [z])
    p = rng.standard_normal((3, 2))
    u = rng.standard_normal((3, 2))
    check_grads(lambda a: mse(a, u), [p])
    check_grads(lambda a, b: mse(a, b), [p, u])


def test_loss_argument_errors():
    z = Tensor(rng.standard_normal((2, 3)))
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy(z, np.array([0, 1]), reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy(z, np.array([0, 1]), label_smoothing=1.5)


def test_losses_match_torch():
    torch = pytest.importorskip("torch")
    z = rng.standard_normal((4, 5)).astype(np.float32)
    y = np.array([0, 4, 2, 2])
    for kw in ({}, {"label_smoothing": 0.1}, {"reduction": "sum"}):
        zt = torch.tensor(z, requires_grad=True)
        ref = torch.nn.functional.cross_entropy(zt, torch.tensor(y), **kw)
        ref.backward()
        a = Tensor(z, requires_grad=True)
        out = cross_entropy(a, y, **kw)
        backward(out)
        np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.grad, zt.grad.numpy(), rtol=1e-5, atol=1e-6)
    zs = rng.standard_normal((2, 3, 4)).astype(np.float32)
    ys = np.array([[1, 2, -100], [0, -100, 3]])
    zt = torch.tensor(zs, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(zt.permute(0, 2, 1), torch.tensor(ys), ignore_index=-100)
    ref.backward()
    a = Tensor(zs, requires_grad=True)
    out = cross_entropy(a, ys, ignore_index=-100)
    backward(out)
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(a.grad, zt.grad.numpy(), rtol=1e-5, atol=1e-7)
    b = rng.standard_normal((6, 1)).astype(np.float32)
    t = rng.random(6).astype(np.float32)
    bt = torch.tensor(b, requires_grad=True)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(bt[:, 0], torch.tensor(t))
    ref.backward()
    a = Tensor(b, requires_grad=True)
    out = binary_cross_entropy(a, t)
    backward(out)
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(a.grad, bt.grad.numpy(), rtol=1e-5, atol=1e-7)
    pt = torch.tensor(b, requires_grad=True)
    ref = torch.nn.functional.mse_loss(pt, torch.tensor(t[:, None]))
    ref.backward()
    a = Tensor(b, requires_grad=True)
    out = mse(a, t)
    backward(out)
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(a.grad, pt.grad.numpy(), rtol=1e-5, atol=1e-7)
