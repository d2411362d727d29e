"""Optimizers (one step vs hand computation, several steps vs torch), schedules, clipping, state."""
import math

import numpy as np
import pytest

from archdsl.autodiff import Tensor
from archdsl.train.optim import (
    SGD, Adam, AdamW, CosineSchedule, StepSchedule, WarmupSchedule, clip_grad_norm, global_grad_norm,
    schedule_factor,
)

P0 = np.array([[0.5, -1.0], [2.0, 0.25]], dtype=np.float32)
G0 = np.array([[0.1, 0.2], [-0.3, 0.4]], dtype=np.float32)
G1 = np.array([[-0.2, 0.05], [0.3, 0.1]], dtype=np.float32)


def param(p=P0):
    return Tensor(p.copy(), requires_grad=True)


def step(opt, w, g):
    w.grad = g.copy()
    opt.step()
    opt.zero_grad()


def test_sgd_plain_and_online_form():
    w = param()
    opt = SGD({"w": w}, lr=0.1)
    step(opt, w, G0)
    np.testing.assert_allclose(w.data, P0 - 0.1 * G0, rtol=1e-6)
    assert w.data.dtype == np.float32 and opt.t == 1


def test_sgd_momentum_nesterov_weight_decay():
    lr, mu, wd = 0.1, 0.9, 0.01
    for nesterov in (False, True):
        w = param()
        opt = SGD({"w": w}, lr=lr, momentum=mu, nesterov=nesterov, weight_decay=wd)
        p, buf = P0.astype(np.float64), np.zeros((2, 2))
        for g in (G0, G1):
            step(opt, w, g)
            d = g + wd * p
            buf = mu * buf + d
            p = p - lr * ((d + mu * buf) if nesterov else buf)
        np.testing.assert_allclose(w.data, p, rtol=1e-6)


def test_adam_two_steps_by_hand():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    w = param()
    opt = Adam({"w": w}, lr=lr)
    p, m, v = P0.astype(np.float64), 0.0, 0.0
    for t, g in enumerate((G0, G1), start=1):
        step(opt, w, g)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    np.testing.assert_allclose(w.data, p, rtol=1e-6)
    # first step of Adam moves every coordinate by about lr
    w = param()
    step(Adam({"w": w}, lr=lr), w, G0)
    np.testing.assert_allclose(np.abs(w.data - P0), lr, rtol=1e-4)


def test_adam_l2_vs_adamw_decoupled():
    lr, wd = 0.01, 0.1
    w = param()
    step(Adam({"w": w}, lr=lr, weight_decay=wd), w, G0)
    d = G0 + wd * P0.astype(np.float64)
    m, v = 0.1 * d, 0.001 * d * d
    want = P0 - lr * (m / 0.1) / (np.sqrt(v / 0.001) + 1e-8)
    np.testing.assert_allclose(w.data, want, rtol=1e-5)
    w = param()
    step(AdamW({"w": w}, lr=lr, weight_decay=wd), w, G0)
    p = P0 * (1 - lr * wd)
    want = p - lr * (0.1 * G0 / 0.1) / (np.sqrt(0.001 * G0 * G0 / 0.001) + 1e-8)
    np.testing.assert_allclose(w.data, want, rtol=1e-5)


def test_optimizer_argument_errors():
    w = param()
    with pytest.raises(ValueError, match="lr"):
        SGD({"w": w}, lr=0)
    with pytest.raises(ValueError, match="nesterov"):
        SGD({"w": w}, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        Adam({"w": w}, betas=(1.0, 0.9))


def test_params_without_grad_are_untouched():
    w, f = param(), param()
    opt = Adam({"w": w, "f": f}, lr=0.1)
    w.grad = G0.copy()
    opt.step()
    np.testing.assert_array_equal(f.data, P0)
    assert not np.array_equal(w.data, P0)


def test_state_round_trip_continues_identically():
    def run(split):
        w = param()
        opt = Adam({"w": w}, lr=0.05)
        grads = [G0, G1, G0 * 2, G1 * -1]
        for g in grads[:split]:
            step(opt, w, g)
        arrays = {k: a.copy() for k, a in opt.state_arrays().items()}
        meta = opt.state_meta()
        w2 = Tensor(w.data.copy(), requires_grad=True)
        opt2 = Adam({"w": w2}, lr=0.05)
        opt2.load_state(arrays, meta)
        for g in grads[split:]:
            step(opt2, w2, g)
        return w2.data
    np.testing.assert_array_equal(run(2), run(4))
    np.testing.assert_array_equal(run(1), run(4))


@pytest.mark.parametrize("name", ["SGD", "SGD-momentum", "SGD-nesterov", "Adam", "AdamW"])
def test_optimizers_match_torch(name):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal((3, 4)).astype(np.float32)
    grads = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(5)]
    tp = torch.nn.Parameter(torch.tensor(p0))
    w = Tensor(p0.copy(), requires_grad=True)
    if name.startswith("SGD"):
        kw = dict(lr=0.1, momentum=0.0 if name == "SGD" else 0.9, nesterov=name == "SGD-nesterov", weight_decay=0.01)
        ours, ref = SGD({"w": w}, **kw), torch.optim.SGD([tp], **kw)
    elif name == "Adam":
        ours, ref = Adam({"w": w}, lr=0.01, weight_decay=0.01), torch.optim.Adam([tp], lr=0.01, weight_decay=0.01)
    else:
        ours, ref = AdamW({"w": w}, lr=0.01, weight_decay=0.1), torch.optim.AdamW([tp], lr=0.01, weight_decay=0.1)
    for g in grads:
        tp.grad = torch.tensor(g)
        ref.step()
        step(ours, w, g)
    np.testing.assert_allclose(w.data, tp.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_schedules():
    per_epoch, total = 10, 100
    s = StepSchedule(step_size=3, gamma=0.5)
    assert [s.factor(e * per_epoch, total, per_epoch) for e in (0, 2, 3, 6, 9)] == [1, 1, 0.5, 0.25, 0.125]
    c = CosineSchedule()
    assert c.factor(0, total, per_epoch) == 1.0
    assert c.factor(50, total, per_epoch) == pytest.approx(0.5)
    assert c.factor(100, total, per_epoch) == pytest.approx(0.0)
    c2 = CosineSchedule(min_factor=0.1)
    assert c2.factor(100, total, per_epoch) == pytest.approx(0.1)
    w = WarmupSchedule(steps=4)
    assert [w.factor(i, total, per_epoch) for i in range(6)] == [0.25, 0.5, 0.75, 1, 1, 1]
    assert WarmupSchedule(epochs=0.5).factor(0, total, per_epoch) == pytest.approx(0.2)
    both = [WarmupSchedule(steps=10), CosineSchedule()]
    assert schedule_factor(both, 4, total, per_epoch) == pytest.approx(0.5 * (0.5 * (1 + math.cos(math.pi * 0.04))))
    with pytest.raises(ValueError):
        WarmupSchedule()


def test_clip_grad_norm():
    a, b = param(), param()
    a.grad = np.array([[3.0, 0], [0, 0]], np.float32)
    b.grad = np.array([[0, 4.0], [0, 0]], np.float32)
    assert global_grad_norm([a, b]) == pytest.approx(5.0)
    norm = clip_grad_norm([a, b], 1.0)
    assert norm == pytest.approx(5.0)
    assert global_grad_norm([a, b]) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(a.grad[0, 0] / b.grad[0, 1], 0.75)
    before = a.grad.copy()
    clip_grad_norm([a, b], 10.0)        # under the limit: untouched
    np.testing.assert_array_equal(a.grad, before)


@pytest.mark.parametrize("make", [
    lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda ps: Adam(ps, lr=0.01, weight_decay=0.01),           # L2 decay: the gathered parameters
    lambda ps: AdamW(ps, lr=0.01, weight_decay=0.1),            # decoupled decay on the span
])
@pytest.mark.parametrize("tiled", [False, True])
def test_flat_update_in_chunks_is_identical(make, tiled, monkeypatch):
    """The flat update over chunks of a few elements (parameters cut mid-tensor) gives bit for
    bit the parameters and state of one pass over everything; with parameters that tile one
    buffer (the executor's layout, updated through one view) or not."""
    import archdsl.train.optim as optim
    rng = np.random.default_rng(2)
    shapes = {"a": (3, 5), "b": (7,), "c": (2, 2, 3)}
    p0 = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    grads = [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()} for _ in range(3)]

    def run(chunk):
        monkeypatch.setattr(optim, "CHUNK", chunk)
        if tiled:
            flat = np.concatenate([v.reshape(-1) for v in p0.values()])
            views = optim._views(flat, list(p0.values()))
            ps = {k: Tensor(v, requires_grad=True) for k, v in zip(p0, views)}
        else:
            ps = {k: Tensor(v.copy(), requires_grad=True) for k, v in p0.items()}
        opt = make(ps)
        assert (opt._pspan is not None) == tiled
        for gs in grads:
            for k, p in ps.items():
                p.grad = gs[k].copy()
            opt.step()
        return {k: p.data.copy() for k, p in ps.items()}, opt.state_arrays()
    (p1, s1), (p2, s2) = run(1 << 30), run(4)
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])
    assert s1.keys() == s2.keys()
    for k in s1:
        np.testing.assert_array_equal(s1[k], s2[k])
