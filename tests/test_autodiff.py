"""Tests for archdsl.autodiff: gradients vs finite differences (float64),
forwards vs independent numpy / naive-loop references (and torch if present)."""

import math
import os
import sys

import numpy as np
import pytest

try:
    import archdsl.autodiff  # noqa: F401
except ImportError:  # plain `pytest` from a checkout without an installed package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from archdsl import autodiff as ad  # noqa: E402
from archdsl.autodiff import check_grads  # noqa: E402
from archdsl.autodiff import functional as F  # noqa: E402


def rng(seed=0):
    return np.random.default_rng(seed)


def away_from_zero(a, gap=0.1):
    """Keep values off kinks (relu, abs, ...) so finite differences are valid."""
    return a + np.sign(a) * gap + (a == 0) * gap


def distinct(shape, seed=0):
    """Values with pairwise gaps >> eps: unique max/min positions."""
    n = math.prod(shape)
    return (rng(seed).permutation(n).reshape(shape) * 0.1 - n * 0.05).astype(np.float64)


def close(a, b, rtol=1e-6, atol=1e-8):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# =============================================================================
# core: tape, backward semantics, grad mode
# =============================================================================

def test_backward_accumulates_and_clears_tape():
    x = ad.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = x * x
    z = ad.sum(y * 2.0 + x)  # fan-out of x
    assert ad.tape_size() > 0
    ad.backward(z)
    assert ad.tape_size() == 0
    close(x.grad, 4 * x.data + 1)
    assert y.grad is not None  # intermediates readable
    close(y.grad, np.full(3, 2.0))
    ad.backward(ad.sum(x * 3.0))  # leaves accumulate across calls
    close(x.grad, 4 * x.data + 4)
    ad.zero_grad([x])
    assert x.grad is None


def test_backward_errors():
    x = ad.tensor(np.ones(2), requires_grad=True)
    loss = ad.sum(x * x)
    ad.backward(loss)
    with pytest.raises(RuntimeError, match="no longer on the tape"):
        ad.backward(loss)  # graph consumed
    with pytest.raises(RuntimeError, match="does not require grad"):
        ad.backward(ad.sum(ad.tensor(np.ones(2))))
    with ad.no_grad():
        frozen = ad.sum(x)
    with pytest.raises(RuntimeError, match="does not require grad"):
        ad.backward(frozen)
    # a leaf loss just receives the seed
    ad.zero_grad([x])
    ad.backward(x, np.array([2.0, 3.0]))
    close(x.grad, [2.0, 3.0])


def test_leaf_grads_do_not_alias():
    a = ad.tensor(np.ones(3), requires_grad=True)
    b = ad.tensor(np.ones(3), requires_grad=True)
    ad.backward(a + b, np.arange(3.0))
    assert a.grad is not b.grad
    a.grad *= 10  # an in-place optimizer step must not leak into b
    close(b.grad, np.arange(3.0))


def test_no_grad_and_constants_record_nothing():
    w = ad.tensor(np.ones((2, 2)), requires_grad=True)
    c = ad.tensor(np.ones((2, 2)))
    ad.clear_tape()
    with ad.no_grad():
        assert not ad.is_grad_enabled()
        out = F.relu(w @ w + 1.0)
        with ad.enable_grad():
            assert ad.is_grad_enabled()
    assert ad.is_grad_enabled()
    assert ad.tape_size() == 0 and not out.requires_grad
    out = F.tanh(c * c)
    assert ad.tape_size() == 0 and not out.requires_grad

    @ad.no_grad()
    def infer(t):
        return t * 2.0
    assert not infer(w).requires_grad


def test_dtype_policy_and_float32_preserved():
    assert ad.tensor(1.5).dtype == np.float32
    assert ad.tensor([1.0, 2.0]).dtype == np.float32
    assert ad.tensor(np.zeros(2)).dtype == np.float64
    assert ad.tensor([1, 2]).dtype.kind == "i"
    with pytest.raises(TypeError):
        ad.tensor([1, 2], requires_grad=True)
    r = rng()
    x = ad.tensor(r.standard_normal((4, 6)).astype(np.float32), requires_grad=True)
    w = ad.tensor(r.standard_normal((3, 6)).astype(np.float32), requires_grad=True)
    g = ad.tensor(np.ones(6, np.float32), requires_grad=True)
    h = F.layer_norm(F.gelu(x * 0.5 + 1.0) / 3.0, g, None)
    h = F.sigmoid(h) ** 2 - F.exp(F.minimum(h, 0.5))
    loss = F.softmax_cross_entropy(F.linear(h, w), np.array([0, 1, 2, 0]), label_smoothing=0.1)
    assert loss.dtype == np.float32
    ad.backward(loss)
    for t in (x, w, g):
        assert t.grad.dtype == np.float32


def test_float32_cnn_stays_float32():
    r = rng(41)
    f32 = lambda *s: r.standard_normal(s).astype(np.float32)  # noqa: E731
    x = ad.tensor(f32(2, 3, 9, 9))
    w1, b1 = ad.tensor(f32(4, 3, 3, 3), requires_grad=True), ad.tensor(f32(4), requires_grad=True)
    wt = ad.tensor(f32(4, 2, 2, 2), requires_grad=True)
    g, b = ad.tensor(np.ones(4, np.float32), requires_grad=True), ad.tensor(np.zeros(4, np.float32), requires_grad=True)
    emb = ad.tensor(f32(7, 5), requires_grad=True)
    rm, rv = np.zeros(4, np.float32), np.ones(4, np.float32)
    h = F.conv(x, w1, b1, stride=2, padding=1)
    h = F.batch_norm(h, g, b, rm, rv, training=True)
    h = F.elu(F.leaky_relu(h))
    h = F.conv_transpose(h, wt, stride=2)
    h = F.max_pool(h, 2) + F.avg_pool(h, 2) + F.min_pool(h, 2)
    h = F.adaptive_avg_pool2d(F.dropout(h, 0.1, True, rng(0)), (3, 2))
    h = F.global_pool(h, "avg").reshape(2, 2) @ F.take(emb, np.array([1, 3]))[:, :2]
    loss = F.mse(h, np.zeros((2, 2), np.float32)) + F.binary_cross_entropy_with_logits(h, 0.5)
    loss = loss + F.softmax_cross_entropy(h, np.full((2, 2), 0.5, np.float32)) + F.logsumexp(h) * 0.1
    assert loss.dtype == np.float32 and rm.dtype == np.float32
    ad.backward(loss)
    for t in (w1, b1, wt, g, b, emb):
        assert t.grad.dtype == np.float32, t.grad.dtype


def test_scalar_and_reflected_operators():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    b = np.array([0.5, -1.5])

    def fn(x, y):
        return (2.0 - x) * 3 + 1 / (x + 5.0) - y / 2.0 + 2.0 ** y + x ** 3 - (-x) @ y + abs(x) + x.T

    check_grads(fn, [a, b])
    x, y = ad.tensor(a), ad.tensor(b)
    close(fn(x, y).data, (2 - a) * 3 + 1 / (a + 5) - b / 2 + 2.0 ** b + a ** 3 + a @ b + np.abs(a) + a.T)
    # ndarray on the left defers to Tensor
    z = np.ones(2) + ad.tensor(b, requires_grad=True)
    assert isinstance(z, ad.Tensor) and z.requires_grad


def test_unbroadcast():
    g = np.ones((2, 3, 4))
    close(ad.unbroadcast(g, (3, 1)), np.full((3, 1), 8.0))
    close(ad.unbroadcast(g, (4,)), np.full(4, 6.0))
    close(ad.unbroadcast(g, ()), 24.0)
    assert ad.unbroadcast(g, (2, 3, 4)) is g


@pytest.mark.parametrize("op", [F.add, F.sub, F.mul, F.div, F.maximum, F.minimum])
def test_broadcasting_binary_grads(op):
    r = rng(1)
    a = r.standard_normal((3, 1, 4))
    b = r.standard_normal((2, 4)) + 3.0  # keep division away from 0 and no max ties
    check_grads(op, [a, b])
    check_grads(lambda x: op(x, 0.7), [a])
    check_grads(lambda x: op(1.3, x), [b])
    npop = {F.add: np.add, F.sub: np.subtract, F.mul: np.multiply, F.div: np.divide,
            F.maximum: np.maximum, F.minimum: np.minimum}[op]
    close(op(ad.tensor(a), ad.tensor(b)).data, npop(a, b))


def test_pow_with_tensor_exponent():
    r = rng(2)
    x = r.uniform(0.5, 2.0, (3, 2))
    p = r.standard_normal((2,))
    check_grads(lambda a, q: a ** q, [x, p])
    close((ad.tensor(x) ** ad.tensor(p)).data, x ** p)


# =============================================================================
# elementwise
# =============================================================================

def _np_gelu_exact(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


UNARY = [
    ("neg", F.neg, lambda x: -x, None),
    ("exp", F.exp, np.exp, None),
    ("log", F.log, np.log, "pos"),
    ("sqrt", F.sqrt, np.sqrt, "pos"),
    ("pow3", lambda x: F.pow(x, 3.0), lambda x: x ** 3, None),
    ("pow2", lambda x: F.pow(x, 2), lambda x: x ** 2, None),
    ("pow_half", lambda x: F.pow(x, 0.5), np.sqrt, "pos"),
    ("pow_neg", lambda x: F.pow(x, -1.5), lambda x: x ** -1.5, "pos"),
    ("abs", F.abs, np.abs, "kink"),
    ("tanh", F.tanh, np.tanh, None),
    ("sigmoid", F.sigmoid, lambda x: 1 / (1 + np.exp(-x)), None),
    ("relu", F.relu, lambda x: np.maximum(x, 0), "kink"),
    ("leaky_relu", lambda x: F.leaky_relu(x, 0.2), lambda x: np.where(x > 0, x, 0.2 * x), "kink"),
    ("elu", lambda x: F.elu(x, 1.5), lambda x: np.where(x > 0, x, 1.5 * (np.exp(x) - 1)), "kink"),
    ("gelu", F.gelu, _np_gelu_exact, None),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"),
     lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))), None),
    ("erf", F.erf, np.vectorize(math.erf), None),
    ("clip", lambda x: F.clip(x, -0.5, 0.8), lambda x: np.clip(x, -0.5, 0.8), "clip"),
    ("softmax", F.softmax, lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True), None),
    ("log_softmax0", lambda x: F.log_softmax(x, axis=0),
     lambda x: x - np.log(np.exp(x).sum(0, keepdims=True)), None),
    ("astype", lambda x: F.astype(F.astype(x, np.float32), np.float64), lambda x: x.astype(np.float32), None),
]


@pytest.mark.parametrize("name,fn,ref,domain", UNARY, ids=[u[0] for u in UNARY])
def test_unary(name, fn, ref, domain):
    x = rng(3).standard_normal((3, 5)) * 1.5
    if domain == "pos":
        x = np.abs(x) + 0.3
    elif domain == "kink":
        x = away_from_zero(x)
    elif domain == "clip":
        x = np.where(np.abs(x + 0.5) < 0.05, x + 0.2, x)
        x = np.where(np.abs(x - 0.8) < 0.05, x + 0.2, x)
    if name == "astype":
        close(fn(ad.tensor(x)).data, ref(x), rtol=1e-6, atol=1e-6)
        x = ad.tensor(x, requires_grad=True)
        ad.backward(F.astype(x, np.float32))
        assert x.grad.dtype == np.float64
        return
    close(fn(ad.tensor(x)).data, ref(x), rtol=1e-6, atol=1e-9)
    check_grads(fn, [x])
    # float32 in, float32 out
    assert fn(ad.tensor(x.astype(np.float32))).dtype == np.float32


def test_erf_accuracy():
    xs = np.concatenate([np.linspace(-8, 8, 40001), [0.0, -0.0, 1e-300, 40.0, -40.0]])
    ref = np.array([math.erf(v) for v in xs])
    assert np.abs(F.erf_array(xs) - ref).max() < 1e-10
    xs32 = xs.astype(np.float32)
    ref32 = np.array([math.erf(v) for v in xs32.astype(np.float64)])
    out32 = F.erf_array(xs32)
    assert out32.dtype == np.float32
    assert np.abs(out32 - ref32).max() < 5e-7
    assert F.erf_array(np.array([np.inf, -np.inf])).tolist() == [1.0, -1.0]


def test_where():
    r = rng(4)
    a, b = r.standard_normal((2, 3)), r.standard_normal((3,))
    cond = np.array([[True, False, True], [False, False, True]])
    check_grads(lambda x, y: F.where(cond, x, y), [a, b])
    check_grads(lambda x: F.where(cond, x, 0.0), [a])
    close(F.where(cond, a, b).data, np.where(cond, a, b))


def test_maximum_tie_goes_to_first():
    a = ad.tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = ad.tensor(np.array([1.0, 3.0]), requires_grad=True)
    ad.backward(F.maximum(a, b))
    close(a.grad, [1.0, 0.0])
    close(b.grad, [0.0, 1.0])


# =============================================================================
# matmul / linear
# =============================================================================

@pytest.mark.parametrize("sa,sb", [
    ((3, 4), (4, 2)), ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)), ((2, 1, 3, 4), (3, 4, 2)),
    ((4,), (4, 3)), ((3, 4), (4,)), ((4,), (4,)), ((4,), (2, 4, 3)), ((2, 3, 4), (4,)),
])
def test_matmul(sa, sb):
    r = rng(5)
    a, b = r.standard_normal(sa), r.standard_normal(sb)
    close(F.matmul(ad.tensor(a), ad.tensor(b)).data, np.matmul(a, b))
    check_grads(F.matmul, [a, b])


@pytest.mark.parametrize("xs", [(4, 3), (2, 5, 3), (3,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(xs, bias):
    r = rng(6)
    x, w, b = r.standard_normal(xs), r.standard_normal((2, 3)), r.standard_normal(2)
    if bias:
        check_grads(F.linear, [x, w, b])
        close(F.linear(ad.tensor(x), ad.tensor(w), ad.tensor(b)).data, x @ w.T + b)
    else:
        check_grads(F.linear, [x, w])
        close(F.linear(ad.tensor(x), ad.tensor(w)).data, x @ w.T)


def test_linear_skips_unneeded_grads():
    x = ad.tensor(np.ones((2, 3)))
    w = ad.tensor(np.ones((4, 3)), requires_grad=True)
    ad.backward(ad.sum(F.linear(x, w)))
    assert x.grad is None and w.grad.shape == (4, 3)


# =============================================================================
# reductions
# =============================================================================

@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2), (1,)])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "logsumexp"])
def test_reductions(name, axis, keepdims):
    x = distinct((2, 3, 4), seed=7) / 5
    fn = getattr(F, name)
    ref = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min,
           "logsumexp": lambda a, axis, keepdims: np.log(np.sum(np.exp(a), axis=axis, keepdims=keepdims))}[name]
    close(fn(ad.tensor(x), axis=axis, keepdims=keepdims).data, ref(x, axis=axis, keepdims=keepdims))
    check_grads(lambda t: fn(t, axis=axis, keepdims=keepdims), [x], full=False)


def test_reduction_methods_and_full_grad():
    x = distinct((3, 4), seed=8)
    check_grads(lambda t: t.sum(axis=1) * t.mean(axis=0, keepdims=True).max() + t.min(), [x])


def test_max_ties_split_gradient():
    x = ad.tensor(np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 0.0]]), requires_grad=True)
    ad.backward(F.max(x, axis=1))
    close(x.grad, [[0, 0.5, 0.5], [1, 0, 0]])


def test_logsumexp_all_neg_inf_row():
    x = np.array([[-np.inf, -np.inf], [0.0, 0.0]])
    out = F.logsumexp(ad.tensor(x), axis=1).data
    assert out[0] == -np.inf and abs(out[1] - math.log(2)) < 1e-12


# =============================================================================
# shape ops
# =============================================================================

def test_reshape_transpose_flatten_squeeze():
    x = rng(9).standard_normal((2, 3, 4))
    check_grads(lambda t: F.reshape(t, (4, -1)) * np.arange(6.0), [x])
    check_grads(lambda t: t.reshape(3, 8), [x])
    check_grads(lambda t: F.transpose(t, (2, 0, 1)), [x])
    check_grads(lambda t: t.transpose(1, 0, 2), [x])
    check_grads(lambda t: t.T, [x])
    check_grads(lambda t: F.flatten(t), [x])
    check_grads(lambda t: F.squeeze(F.expand_dims(t, 1), 1), [x])
    check_grads(lambda t: F.broadcast_to(t[:, :1, :], (5, 2, 3, 4)), [x])
    close(F.transpose(ad.tensor(x), (2, 0, 1)).data, x.transpose(2, 0, 1))
    assert F.flatten(ad.tensor(x)).shape == (2, 12)
    assert F.flatten(ad.tensor(x), 0).shape == (24,)
    assert F.expand_dims(ad.tensor(x), (0, -1)).shape == (1, 2, 3, 4, 1)
    assert ad.tensor(x).T.shape == (4, 3, 2)


def test_concat_stack_split():
    r = rng(10)
    a, b, c = r.standard_normal((2, 3)), r.standard_normal((2, 1)), r.standard_normal((2, 2))
    check_grads(lambda x, y, z: F.concat([x, y, z], axis=1), [a, b, c])
    close(F.concat([a, b, c], axis=-1).data, np.concatenate([a, b, c], axis=1))
    check_grads(lambda x, y: F.stack([x, y], axis=1), [a, a + 1])
    check_grads(lambda x, y: F.stack([x, y], axis=-1), [a, b * np.ones(3)])
    close(F.stack([a, a], axis=1).data, np.stack([a, a], axis=1))
    x = r.standard_normal((7, 3))
    check_grads(lambda t: F.split(t, [2, 4, 1], axis=0), [x])
    pieces = F.split(ad.tensor(x), 3)  # chunk size 3 -> 3, 3, 1
    assert [p.shape[0] for p in pieces] == [3, 3, 1]
    # only some pieces used
    t = ad.tensor(x, requires_grad=True)
    p1, p2 = F.split(t, [5, 2], axis=0)
    ad.backward(ad.sum(p2 * 2.0))
    close(t.grad, np.r_[np.zeros((5, 3)), np.full((2, 3), 2.0)])
    with pytest.raises(ValueError):
        F.split(ad.tensor(x), [3, 3])


@pytest.mark.parametrize("idx", [
    1, (slice(None), 2), (slice(0, 3, 2), slice(None, None, -1)), (Ellipsis, None, 1),
    np.array([2, 0, 2, 1]), (np.array([0, 0, 3]), np.array([1, 1, 2])),
    (slice(None), np.array([[0, 2], [2, 2]])), np.array([True, False, True, True]),
], ids=["int", "slice", "strided", "ellipsis", "intarr", "pairarr", "colarr", "mask"])
def test_getitem(idx):
    x = rng(11).standard_normal((4, 3))
    close(ad.tensor(x)[idx].data, x[idx])
    check_grads(lambda t: t[idx], [x])


def test_getitem_list_and_tensor_index():
    x = rng(12).standard_normal((4, 3))
    close(ad.tensor(x)[[3, 3]].data, x[[3, 3]])
    close(ad.tensor(x)[ad.tensor(np.array([1, 1]))].data, x[[1, 1]])


@pytest.mark.parametrize("axis", [0, 1])
def test_take(axis):
    r = rng(13)
    w = r.standard_normal((5, 4))
    idx = np.array([[0, 3, 3], [1, 0, 3]])
    if axis == 1:
        idx = idx % 4
    close(F.take(ad.tensor(w), idx, axis=axis).data, np.take(w, idx, axis=axis))
    check_grads(lambda t: F.take(t, idx, axis=axis), [w])
    # backward equals the np.add.at definition
    t = ad.tensor(w, requires_grad=True)
    g = r.standard_normal(np.take(w, idx, axis=axis).shape)
    ad.backward(F.take(t, idx, axis=axis), g)
    ref = np.zeros_like(w)
    if axis == 0:
        np.add.at(ref, idx, g)
    else:
        np.add.at(ref, (slice(None), idx), g)
    close(t.grad, ref)


def test_take_negative_indices():
    w = np.arange(12.0).reshape(4, 3)
    t = ad.tensor(w, requires_grad=True)
    ad.backward(F.take(t, np.array([-1, 3, 0])))
    close(t.grad[:, 0], [1, 0, 0, 2])


def test_pad():
    x = rng(14).standard_normal((2, 3, 4))
    pads = [(1, 2), (0, 1)]
    close(F.pad(ad.tensor(x), pads, value=0.5).data, np.pad(x, [(0, 0), (1, 2), (0, 1)], constant_values=0.5))
    check_grads(lambda t: F.pad(t, pads, value=0.5), [x])
    check_grads(lambda t: F.pad(t, [(0, 0), (-1, 2), (1, -2)]), [x])  # negative = crop
    close(F.pad(ad.tensor(x), [(0, 0), (-1, 0), (0, -1)]).data, x[:, 1:, :-1])


# =============================================================================
# losses
# =============================================================================

def _np_log_softmax(z, axis=-1):
    m = z.max(axis=axis, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


def _ref_ce_labels(z, y, eps, ignore, reduction):
    logp = _np_log_softmax(z)
    C = z.shape[-1]
    q = np.eye(C)[np.where(y == ignore, 0, y)] * (1 - eps) + eps / C
    loss = -(q * logp).sum(-1)
    valid = y != ignore if ignore is not None else np.ones(y.shape, bool)
    loss = loss * valid
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum()


@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4)])
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("ignore", [None, -100, 1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_softmax_cross_entropy_labels(shape, eps, ignore, reduction):
    r = rng(15)
    z = r.standard_normal(shape) * 2
    y = r.integers(0, shape[-1], shape[:-1])
    if ignore is not None:
        y.flat[::3] = ignore
    fn = lambda t: F.softmax_cross_entropy(t, y, label_smoothing=eps, ignore_index=ignore, reduction=reduction)  # noqa: E731
    close(fn(ad.tensor(z)).data, _ref_ce_labels(z, y, eps, ignore, reduction), rtol=1e-10)
    check_grads(fn, [z])


def test_softmax_cross_entropy_probs_and_class_axis():
    r = rng(16)
    z = r.standard_normal((3, 5))
    p = r.dirichlet(np.ones(5), size=3)
    out = F.softmax_cross_entropy(ad.tensor(z), p, label_smoothing=0.1)
    q = p * 0.9 + 0.1 / 5
    close(out.data, -(q * _np_log_softmax(z)).sum(-1).mean(), rtol=1e-10)
    check_grads(lambda t, u: F.softmax_cross_entropy(t, u, label_smoothing=0.1), [z, p])
    # class axis 1 on [N, C, L] equals class-last on the transposed logits
    z3 = r.standard_normal((2, 4, 3))
    y3 = r.integers(0, 4, (2, 3))
    a = F.softmax_cross_entropy(ad.tensor(z3), y3, axis=1, reduction="none").data
    b = F.softmax_cross_entropy(ad.tensor(z3.transpose(0, 2, 1)), y3, reduction="none").data
    close(a, b)
    check_grads(lambda t: F.softmax_cross_entropy(t, y3, axis=1, label_smoothing=0.1), [z3])
    p3 = r.dirichlet(np.ones(4), size=(2, 3)).transpose(0, 2, 1)
    check_grads(lambda t, u: F.softmax_cross_entropy(t, u, axis=1), [z3, p3])


def test_softmax_cross_entropy_all_ignored_is_nan():
    out = F.softmax_cross_entropy(ad.tensor(np.zeros((2, 3))), np.array([-1, -1]), ignore_index=-1)
    assert np.isnan(out.data)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_with_logits_and_mse(reduction):
    r = rng(17)
    x = r.standard_normal((4, 3)) * 3
    t = r.uniform(0, 1, (4, 3))
    ref = np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0) - x * t
    red = {"mean": np.mean, "sum": np.sum, "none": lambda a: a}[reduction]
    close(F.binary_cross_entropy_with_logits(ad.tensor(x), t, reduction).data, red(ref))
    check_grads(lambda a, b: F.binary_cross_entropy_with_logits(a, b, reduction), [x, t])
    close(F.mse(ad.tensor(x), t, reduction).data, red((x - t) ** 2))
    check_grads(lambda a, b: F.mse(a, b, reduction), [x, t])
    check_grads(lambda a, b: F.mse(a, b, reduction), [x, t[:1]])  # broadcast target
    # extreme logits stay finite
    big = F.binary_cross_entropy_with_logits(ad.tensor(np.array([1000.0, -1000.0])), np.array([0.0, 1.0]), "none")
    close(big.data, [1000.0, 1000.0])


# =============================================================================
# convolution (naive references)
# =============================================================================

def ref_conv(x, w, b, stride, pads, dil, groups):
    nsp = x.ndim - 2
    N, C = x.shape[:2]
    O, k = w.shape[0], w.shape[2:]
    xp = np.pad(x, [(0, 0), (0, 0)] + list(pads))
    out_sp = [(xp.shape[2 + i] - dil[i] * (k[i] - 1) - 1) // stride[i] + 1 for i in range(nsp)]
    out = np.zeros((N, O, *out_sp))
    Cg, Og = C // groups, O // groups
    for o in range(O):
        gi = o // Og
        for pos in np.ndindex(*out_sp):
            for kk in np.ndindex(*k):
                src = tuple(p * s + ki * d for p, s, ki, d in zip(pos, stride, kk, dil))
                patch = xp[(slice(None), slice(gi * Cg, (gi + 1) * Cg)) + src]  # [N, Cg]
                out[(slice(None), o) + pos] += patch @ w[(o, slice(None)) + kk]
    if b is not None:
        out += b.reshape((1, O) + (1,) * nsp)
    return out


def ref_conv_transpose(x, w, b, stride, pads, opad, dil, groups):
    nsp = x.ndim - 2
    N, Cin = x.shape[:2]
    k = w.shape[2:]
    CoutG = w.shape[1]
    Cout = CoutG * groups
    CinG = Cin // groups
    full = [(x.shape[2 + i] - 1) * stride[i] + dil[i] * (k[i] - 1) + 1 + opad[i] for i in range(nsp)]
    y = np.zeros((N, Cout, *full))
    for ci in range(Cin):
        gi = ci // CinG
        for pos in np.ndindex(*x.shape[2:]):
            for kk in np.ndindex(*k):
                dst = tuple(p * s + ki * d for p, s, ki, d in zip(pos, stride, kk, dil))
                y[(slice(None), slice(gi * CoutG, (gi + 1) * CoutG)) + dst] += \
                    x[(slice(None), ci) + pos][:, None] * w[(ci, slice(None)) + kk][None, :]
    crop = tuple(slice(pb, full[i] - pe) for i, (pb, pe) in enumerate(pads))
    y = y[(slice(None), slice(None)) + crop]
    if b is not None:
        y += b.reshape((1, Cout) + (1,) * nsp)
    return y


@pytest.fixture(params=["wide", "narrow"])
def im2col_path(request, monkeypatch):
    """Run a conv test through both im2col layouts."""
    from archdsl.autodiff import im2col as conv_mod
    monkeypatch.setattr(conv_mod, "_WIDE_CG", 1 if request.param == "wide" else 10 ** 9)
    return request.param


CONV_CASES = [
    # nsp, C, O, k, stride, padding, dilation, groups
    (1, 2, 3, (3,), (1,), ((0, 0),), (1,), 1),
    (1, 4, 4, (2,), (2,), ((1, 2),), (2,), 2),
    (2, 2, 3, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    (2, 4, 2, (2, 3), (2, 1), ((0, 1), (2, 0)), (1, 2), 2),
    (2, 3, 6, (3, 3), (2, 2), ((1, 1), (0, 0)), (1, 1), 3),  # depthwise x2
    (2, 2, 2, (1, 1), (1, 2), ((0, 0), (0, 0)), (1, 1), 1),  # 1x1
    (2, 16, 4, (2, 2), (1, 1), ((0, 1), (1, 0)), (1, 1), 2),  # Cg = 8: default wide path
    (2, 4, 4, (3, 2), (1, 1), ((3, 0), (1, 2)), (2, 1), 2),  # stride 1, dilated, asymmetric
    (1, 2, 2, (2,), (1,), ((2, 3),), (1,), 1),  # padding beyond the kernel extent
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_forward_and_grads(case, im2col_path):
    nsp, C, O, k, stride, pads, dil, groups = case
    r = rng(18)
    sp = (7,) if nsp == 1 else (6, 5)
    x = r.standard_normal((2, C) + sp)
    w = r.standard_normal((O, C // groups) + k)
    b = r.standard_normal(O)
    out = F.conv(ad.tensor(x), ad.tensor(w), ad.tensor(b), stride=stride, padding=pads, dilation=dil, groups=groups)
    close(out.data, ref_conv(x, w, b, stride, pads, dil, groups), rtol=1e-10, atol=1e-10)
    xs = x[:1, :, :5] if nsp == 1 else x[:1, :, :5, :4]
    check_grads(lambda a, c, d: F.conv(a, c, d, stride=stride, padding=pads, dilation=dil, groups=groups),
                [xs, w, b])


def test_conv_padding_forms_and_float32():
    r = rng(19)
    x = r.standard_normal((1, 2, 5, 5)).astype(np.float32)
    w = r.standard_normal((3, 2, 3, 3)).astype(np.float32)
    a = F.conv(x, w, padding=1).data
    assert a.dtype == np.float32
    close(a, F.conv(x, w, padding=(1, 1)).data)
    close(a, F.conv(x, w, padding=[(1, 1), (1, 1)]).data)
    close(a, ref_conv(x.astype(np.float64), w.astype(np.float64), None, (1, 1), [(1, 1)] * 2, (1, 1), 1),
          rtol=1e-5, atol=1e-5)


CONVT_CASES = [
    # nsp, Cin, CoutG, k, stride, padding, output_padding, dilation, groups
    (1, 2, 3, (3,), (2,), ((1, 1),), (1,), (1,), 1),
    (1, 4, 1, (2,), (1,), ((0, 1),), (0,), (2,), 2),
    (2, 2, 2, (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 0), (1, 1), 1),
    (2, 4, 1, (2, 3), (3, 1), ((0, 1), (1, 0)), (2, 0), (1, 2), 2),
    (2, 3, 2, (1, 1), (2, 2), ((0, 0), (0, 0)), (0, 1), (1, 1), 1),
    (1, 2, 3, (3,), (1,), ((1, 2),), (1,), (2,), 1),  # stride 1 with output_padding
    (2, 16, 8, (2, 2), (1, 1), ((1, 0), (0, 1)), (0, 0), (1, 1), 2),  # wide groups
]


@pytest.mark.parametrize("case", CONVT_CASES)
def test_conv_transpose_forward_and_grads(case, im2col_path):
    nsp, Cin, CoutG, k, stride, pads, opad, dil, groups = case
    r = rng(20)
    sp = (4,) if nsp == 1 else (3, 4)
    x = r.standard_normal((2, Cin) + sp)
    w = r.standard_normal((Cin, CoutG) + k)
    b = r.standard_normal(CoutG * groups)
    kw = dict(stride=stride, padding=pads, output_padding=opad, dilation=dil, groups=groups)
    out = F.conv_transpose(ad.tensor(x), ad.tensor(w), ad.tensor(b), **kw)
    close(out.data, ref_conv_transpose(x, w, b, stride, pads, opad, dil, groups), rtol=1e-10, atol=1e-10)
    check_grads(lambda a, c, d: F.conv_transpose(a, c, d, **kw), [x[:1], w, b])


def test_conv_transpose_is_adjoint_of_conv(im2col_path):
    r = rng(21)
    x = r.standard_normal((2, 4, 7, 6))
    w = r.standard_normal((6, 2, 3, 2))
    kw = dict(stride=(2, 1), padding=((1, 0), (0, 1)), dilation=(1, 2), groups=2)
    y = F.conv(x, w, **kw).data
    u = r.standard_normal(y.shape)
    xt = F.conv_transpose(u, w, output_padding=(1, 0), **kw).data
    assert xt.shape == x.shape
    close(np.sum(y * u), np.sum(x * xt), rtol=1e-10)


# =============================================================================
# pooling (naive references)
# =============================================================================

def ref_pool(x, k, s, pads, kind, count_include_pad=True, ceil_mode=False):
    nsp = x.ndim - 2
    S = x.shape[2:]
    out_sp = []
    for i in range(nsp):
        L = S[i] + pads[i][0] + pads[i][1] - k[i]
        o = (-(-L // s[i]) if ceil_mode else L // s[i]) + 1
        if ceil_mode and (o - 1) * s[i] >= S[i] + pads[i][0]:
            o -= 1
        out_sp.append(o)
    out = np.zeros(x.shape[:2] + tuple(out_sp))
    for pos in np.ndindex(*out_sp):
        sl, size_inc, size_exc = [], 1, 1
        for i, p in enumerate(pos):
            st = p * s[i] - pads[i][0]
            en = min(st + k[i], S[i] + pads[i][1])
            size_inc *= en - st
            st_c, en_c = max(st, 0), min(en, S[i])
            size_exc *= en_c - st_c
            sl.append(slice(st_c, en_c))
        win = x[(slice(None), slice(None)) + tuple(sl)].reshape(x.shape[:2] + (-1,))
        if kind == "max":
            v = win.max(-1)
        elif kind == "min":
            v = win.min(-1)
        else:
            v = win.sum(-1) / (size_inc if count_include_pad else size_exc)
        out[(slice(None), slice(None)) + pos] = v
    return out


POOL_CASES = [
    # spatial, kernel, stride, padding, ceil_mode
    ((7,), (3,), (2,), ((1, 1),), False),
    ((7,), (2,), (2,), ((0, 0),), True),
    ((6, 5), (2, 2), (2, 2), ((0, 0), (0, 0)), False),
    ((6, 5), (3, 3), (2, 2), ((1, 1), (1, 1)), True),
    ((5, 7), (2, 3), (1, 2), ((1, 0), (1, 1)), False),
    ((5, 6), (3, 2), (3, 2), ((1, 1), (0, 1)), True),
]


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("kind", ["max", "min", "avg", "avg_exclude"])
def test_pool_forward_and_grads(case, kind):
    sp, k, s, pads, ceil = case
    x = distinct((2, 2) + sp, seed=22)
    if kind in ("max", "min"):
        fn = lambda t: getattr(F, kind + "_pool")(t, k, s, pads, ceil_mode=ceil)  # noqa: E731
        ref = ref_pool(x, k, s, pads, kind, ceil_mode=ceil)
    else:
        inc = kind == "avg"
        fn = lambda t: F.avg_pool(t, k, s, pads, count_include_pad=inc, ceil_mode=ceil)  # noqa: E731
        ref = ref_pool(x, k, s, pads, "avg", count_include_pad=inc, ceil_mode=ceil)
    close(fn(ad.tensor(x)).data, ref, rtol=1e-10, atol=1e-12)
    check_grads(fn, [x[:1]])


def test_pool_shared_positional_signature():
    x = distinct((1, 2, 5, 5), seed=40)
    # (x, kernel, stride, padding, count_include_pad, ceil_mode) for all three
    close(F.max_pool(x, 2, 2, 0, True, True).data, ref_pool(x, (2, 2), (2, 2), [(0, 0)] * 2, "max", ceil_mode=True))
    close(F.min_pool(x, 3, 1, 1, False, False).data, ref_pool(x, (3, 3), (1, 1), [(1, 1)] * 2, "min"))
    close(F.avg_pool(x, 3, 2, 1, False, True).data,
          ref_pool(x, (3, 3), (2, 2), [(1, 1)] * 2, "avg", count_include_pad=False, ceil_mode=True))


def test_max_pool_routes_ties_to_first():
    x = ad.tensor(np.ones((1, 1, 2, 2)), requires_grad=True)
    ad.backward(F.max_pool(x, 2))
    close(x.grad[0, 0], [[1, 0], [0, 0]])


def test_global_and_adaptive_pool():
    x = distinct((2, 3, 5, 4), seed=23)
    for kind, npf in (("avg", np.mean), ("max", np.max), ("min", np.min)):
        out = F.global_pool(ad.tensor(x), kind)
        assert out.shape == (2, 3, 1, 1)
        close(out.data, npf(x, axis=(2, 3), keepdims=True))
        check_grads(lambda t, kind=kind: F.global_pool(t, kind), [x[:1, :2]])
    x1 = distinct((2, 3, 7), seed=24)
    close(F.global_pool(ad.tensor(x1), "max").data, x1.max(-1, keepdims=True))
    for oh, ow in ((3, 2), (2, 2), (5, 4), (1, 1), (4, 3)):
        ref = np.zeros((2, 3, oh, ow))
        for i in range(oh):
            for j in range(ow):
                h0, h1 = (i * 5) // oh, -(-((i + 1) * 5) // oh)
                w0, w1 = (j * 4) // ow, -(-((j + 1) * 4) // ow)
                ref[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean((2, 3))
        close(F.adaptive_avg_pool2d(ad.tensor(x), (oh, ow)).data, ref)
        check_grads(lambda t, o=(oh, ow): F.adaptive_avg_pool2d(t, o), [x[:1, :2]], full=False)


# =============================================================================
# normalisation, dropout
# =============================================================================

@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 2, 3), (5, 3, 4)])
def test_batch_norm_training(shape):
    r = rng(25)
    x = r.standard_normal(shape) * 2 + 1
    gamma, beta = r.standard_normal(3), r.standard_normal(3)
    rm, rv = np.zeros(3), np.ones(3)
    out = F.batch_norm(ad.tensor(x), ad.tensor(gamma), ad.tensor(beta), rm, rv, training=True, momentum=0.2)
    axes = (0,) + tuple(range(2, x.ndim))
    bs = (1, 3) + (1,) * (x.ndim - 2)
    mu, var = x.mean(axes), x.var(axes)
    close(out.data, (x - mu.reshape(bs)) / np.sqrt(var.reshape(bs) + 1e-5) * gamma.reshape(bs) + beta.reshape(bs))
    n = x.size // 3
    close(rm, 0.2 * mu)
    close(rv, 0.8 + 0.2 * var * n / (n - 1))  # unbiased variance in the running estimate
    check_grads(lambda a, g, b: F.batch_norm(a, g, b, None, None, training=True), [x, gamma, beta], full=False)
    check_grads(lambda a: F.batch_norm(a, None, None, None, None, training=True), [x[:3]])


def test_batch_norm_eval():
    r = rng(26)
    x = r.standard_normal((4, 3, 2))
    gamma, beta = r.standard_normal(3), r.standard_normal(3)
    rm, rv = r.standard_normal(3), r.uniform(0.5, 2, 3)
    rm0 = rm.copy()
    out = F.batch_norm(ad.tensor(x), gamma, beta, rm, rv, training=False)
    close(out.data, (x - rm[:, None]) / np.sqrt(rv[:, None] + 1e-5) * gamma[:, None] + beta[:, None])
    close(rm, rm0)  # untouched
    check_grads(lambda a, g, b: F.batch_norm(a, g, b, rm, rv, training=False), [x, gamma, beta])


@pytest.mark.parametrize("axes", [None, -1, -2, (1, 2)])
def test_layer_norm(axes):
    r = rng(27)
    x = r.standard_normal((2, 3, 4)) * 3 + 1
    k = 2 if axes in (-2, (1, 2)) else 1
    gshape = x.shape[-k:]
    gamma, beta = r.standard_normal(gshape), r.standard_normal(gshape)
    ax = tuple(range(3 - k, 3))
    mu, var = x.mean(ax, keepdims=True), x.var(ax, keepdims=True)
    ref = (x - mu) / np.sqrt(var + 1e-5) * gamma + beta
    close(F.layer_norm(ad.tensor(x), gamma, beta, axes=axes).data, ref)
    check_grads(lambda a, g, b: F.layer_norm(a, g, b, axes=axes), [x, gamma, beta])
    check_grads(lambda a: F.layer_norm(a, axes=axes), [x])


def test_dropout():
    x = ad.tensor(np.ones((200, 50), np.float32), requires_grad=True)
    assert F.dropout(x, 0.5, training=False, rng=rng()) is x
    assert F.dropout(x, 0.0, training=True, rng=rng()) is x
    y = F.dropout(x, 0.25, training=True, rng=rng(1))
    assert y.dtype == np.float32
    vals = np.unique(y.data)
    close(vals, [0.0, 1 / 0.75], rtol=1e-6)
    assert abs((y.data == 0).mean() - 0.25) < 0.02
    ad.backward(y)
    close(x.grad, y.data)  # gradient is the same scaled mask
    close(F.dropout(x, 0.25, True, rng(1)).data, y.data)  # reproducible with the rng
    assert not F.dropout(x, 1.0, True, rng()).data.any()
    x64 = rng(2).standard_normal((4, 5))
    check_grads(lambda t: F.dropout(t, 0.3, True, rng(5)), [x64])  # same mask every call


# =============================================================================
# defprim, multi-output, gradcheck itself
# =============================================================================

@ad.defprim
def _scaled_tanh(x, a, *, scale=1.0):
    t = np.tanh(a * x)

    def vjp(g):
        d = g * scale * (1.0 - t * t)
        return ad.unbroadcast(d * a, x.shape), ad.unbroadcast(d * x, a.shape)
    return scale * t, vjp


@ad.defprim
def _sincos(x, offset):
    def vjp(gs):
        gsin, gcos = gs
        return gsin * np.cos(x) - gcos * np.sin(x), None
    return (np.sin(x + offset), np.cos(x + offset)), vjp


def test_defprim_single_and_multi_output():
    r = rng(28)
    x, a = r.standard_normal((3, 4)), r.standard_normal(4)
    check_grads(lambda u, v: _scaled_tanh(u, v, scale=2.0), [x, a])
    close(_scaled_tanh(ad.tensor(x), a, scale=2.0).data, 2 * np.tanh(a * x))
    check_grads(lambda u: _sincos(u, 0.0), [x])
    check_grads(lambda u: _sincos(u, 0.0)[1] * 3.0, [x])  # one output unused: zeros
    s, c = _sincos(ad.tensor(x), 0.5)
    assert not s.requires_grad and isinstance(c, ad.Tensor)


def test_check_grads_catches_wrong_gradient():
    @ad.defprim
    def bad_square(x):
        return x * x, lambda g: (g * x,)  # missing factor 2

    with pytest.raises(AssertionError, match="mismatch|wrong"):
        check_grads(bad_square, [np.array([1.0, 2.0])])
    with pytest.raises(AssertionError, match="wrong"):
        check_grads(bad_square, [np.array([1.0, 2.0])], full=True)


def test_mlp_training_reduces_loss():
    r = rng(29)
    X = r.standard_normal((64, 8)).astype(np.float32)
    Y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)
    params = [ad.tensor(r.standard_normal((16, 8)).astype(np.float32) * 0.3, requires_grad=True),
              ad.tensor(np.zeros(16, np.float32), requires_grad=True),
              ad.tensor(r.standard_normal((3, 16)).astype(np.float32) * 0.3, requires_grad=True),
              ad.tensor(np.zeros(3, np.float32), requires_grad=True)]
    losses = []
    for _ in range(60):
        h = F.relu(F.linear(X, params[0], params[1]))
        loss = F.softmax_cross_entropy(F.linear(h, params[2], params[3]), Y)
        ad.backward(loss)
        for p in params:
            p.data -= 0.5 * p.grad
        ad.zero_grad(params)
        losses.append(float(loss.data))
    assert losses[-1] < 0.5 * losses[0]


# =============================================================================
# optional: against torch
# =============================================================================

def _torch():
    return pytest.importorskip("torch")


def test_torch_conv_and_pools():
    torch = _torch()
    r = rng(30)
    x = r.standard_normal((2, 4, 9, 8))
    w = r.standard_normal((6, 2, 3, 3))
    b = r.standard_normal(6)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    u = r.standard_normal(ty.shape)
    ty.backward(torch.tensor(u))
    ax, aw, ab = (ad.tensor(v, requires_grad=True) for v in (x, w, b))
    ay = F.conv(ax, aw, ab, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    ad.backward(ay, u)
    close(ay.data, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    for a, t in ((ax, tx), (aw, tw), (ab, tb)):
        close(a.grad, t.grad.numpy(), rtol=1e-10, atol=1e-10)

    wt = r.standard_normal((4, 3, 3, 2))
    tt = torch.nn.functional.conv_transpose2d(torch.tensor(x), torch.tensor(wt), stride=(2, 3), padding=(1, 0),
                                              output_padding=(1, 2), groups=2, dilation=(2, 1))
    at = F.conv_transpose(x, wt, stride=(2, 3), padding=1 * np.array([1, 0]), output_padding=(1, 2),
                          groups=2, dilation=(2, 1))
    close(at.data, tt.numpy(), rtol=1e-10, atol=1e-10)

    tx1 = torch.tensor(x)
    for ceil in (False, True):
        close(F.max_pool(x, 3, 2, 1, ceil_mode=ceil).data,
              torch.nn.functional.max_pool2d(tx1, 3, 2, 1, ceil_mode=ceil).numpy())
        for inc in (False, True):
            close(F.avg_pool(x, 3, 2, 1, count_include_pad=inc, ceil_mode=ceil).data,
                  torch.nn.functional.avg_pool2d(tx1, 3, 2, 1, ceil_mode=ceil, count_include_pad=inc).numpy())
    close(F.adaptive_avg_pool2d(x, (4, 3)).data, torch.nn.functional.adaptive_avg_pool2d(tx1, (4, 3)).numpy())


def test_torch_losses_and_norms():
    torch = _torch()
    tF = torch.nn.functional
    r = rng(31)
    z = r.standard_normal((4, 5, 3))  # [N, C, L]
    y = r.integers(0, 5, (4, 3))
    y[0, 0] = -100
    tz = torch.tensor(z, requires_grad=True)
    tl = tF.cross_entropy(tz, torch.tensor(y), label_smoothing=0.15, ignore_index=-100)
    tl.backward()
    az = ad.tensor(z, requires_grad=True)
    al = F.softmax_cross_entropy(az, y, axis=1, label_smoothing=0.15, ignore_index=-100)
    ad.backward(al)
    close(al.data, tl.item(), rtol=1e-10)
    close(az.grad, tz.grad.numpy(), rtol=1e-9, atol=1e-12)

    x = r.standard_normal((6, 3, 4))
    rm, rv = r.standard_normal(3), r.uniform(0.5, 1.5, 3)
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    g, b = r.standard_normal(3), r.standard_normal(3)
    to = tF.batch_norm(torch.tensor(x), trm, trv, torch.tensor(g), torch.tensor(b), training=True, momentum=0.3)
    ao = F.batch_norm(x, g, b, rm, rv, training=True, momentum=0.3)
    close(ao.data, to.numpy())
    close(rm, trm.numpy())
    close(rv, trv.numpy())
    close(F.layer_norm(x, g[None].repeat(4, 0).T, None, axes=-2).data,
          tF.layer_norm(torch.tensor(x), (3, 4), torch.tensor(g[None].repeat(4, 0).T)).numpy())
    close(F.gelu(x).data, tF.gelu(torch.tensor(x)).numpy(), rtol=1e-9, atol=1e-10)
    close(F.gelu(x, "tanh").data, tF.gelu(torch.tensor(x), approximate="tanh").numpy())
    t = r.uniform(size=x.shape)
    close(F.binary_cross_entropy_with_logits(x, t).data,
          tF.binary_cross_entropy_with_logits(torch.tensor(x), torch.tensor(t)).item())
