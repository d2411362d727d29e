"""Tensor math written as expressions (-x, x * 0.5, a / b, x ** 2, exp(x), where(...), a @ b,
comparisons, x[:, 1:-1]): the ops they make, their dtype rules, and PyTorch as the oracle for
values and gradients."""
import numpy as np
import pytest

import archdsl
from archdsl.autodiff import Tensor, backward
from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.errors import ArchError
from harness import check_grads, check_parity

INPUTS = "  input a: f32[N, 4, 6]\n  input b: f32[N, 4, 6]\n  input c: f32[6, 3]\n"


def model(expr: str, inputs: str = INPUTS):
    return archdsl.compile(f"model M {{\n{inputs}  output y = {expr}\n}}\n").model()


def values(seed=0):
    rng = np.random.default_rng(seed)
    return {"a": rng.standard_normal((2, 4, 6)), "b": rng.uniform(0.5, 2.0, (2, 4, 6)),
            "c": rng.standard_normal((6, 3))}


# (expression in .arch, the same in torch)
EXPRESSIONS = [
    ("-a", lambda a, b, c: -a),
    ("a * 0.5 + 1.0", lambda a, b, c: a * 0.5 + 1.0),
    ("2 * a - b", lambda a, b, c: 2 * a - b),
    ("1.0 - a", lambda a, b, c: 1.0 - a),
    ("a / b", lambda a, b, c: a / b),
    ("a / 4", lambda a, b, c: a / 4),
    ("3 / b", lambda a, b, c: 3 / b),
    ("a ** 2", lambda a, b, c: a ** 2),
    ("b ** 0.5 + b ** -1.5", lambda a, b, c: b ** 0.5 + b ** -1.5),
    ("2 ** a", lambda a, b, c: 2 ** a),
    ("b ** a", lambda a, b, c: b ** a),
    ("exp(0.5 * a)", lambda a, b, c: (0.5 * a).exp()),
    ("log(b)", lambda a, b, c: b.log()),
    ("sqrt(b)", lambda a, b, c: b.sqrt()),
    ("rsqrt(b)", lambda a, b, c: b.rsqrt()),
    ("abs(a)", lambda a, b, c: a.abs()),
    ("tanh(a) * sigmoid(b)", lambda a, b, c: a.tanh() * b.sigmoid()),
    ("where(a > 0, a, 0.5 * b)", lambda a, b, c: __import__("torch").where(a > 0, a, 0.5 * b)),
    ("where(a <= b, -3.0, a)", lambda a, b, c: __import__("torch").where(a <= b, -3.0, a)),
    ("a @ c", lambda a, b, c: a @ c),
    ("a @ (b -> Transpose((0, 2, 1)))", lambda a, b, c: a @ b.transpose(1, 2)),
    ("a[:, 1:-1:2]", lambda a, b, c: a[:, 1:-1:2]),
    ("a[..., 0] + b[:, :, -1]", lambda a, b, c: a[..., 0] + b[:, :, -1]),
    ("a[:, 2:, :3]", lambda a, b, c: a[:, 2:, :3]),
    ("a[-1, 1, 4:]", lambda a, b, c: a[-1, 1, 4:]),
    ("sum(a)", lambda a, b, c: a.sum()),
    ("mean(a, 1)", lambda a, b, c: a.mean(1)),
    ("sum(b, (0, 2), keepdim=true)", lambda a, b, c: b.sum((0, 2), keepdim=True)),
    ("mean(a, dim=-1)", lambda a, b, c: a.mean(-1)),
    ("mean(-0.5 * sum(1 + a - b ** 2 - exp(a), (1, 2)))",          # a VAE's KL term
     lambda a, b, c: (-0.5 * (1 + a - b ** 2 - a.exp()).sum((1, 2))).mean()),
]


@pytest.mark.parametrize("expr,fn", EXPRESSIONS, ids=[e for e, _ in EXPRESSIONS])
def test_values_and_gradients_match_torch(expr, fn):
    torch = pytest.importorskip("torch")
    m = model(expr).ir
    xs = values()
    ours = {k: Tensor(v, requires_grad=True) for k, v in xs.items()}
    out = NumpyExecutor(m, {}, dtype=np.float64).forward(ours)["y"]
    theirs = {k: torch.tensor(v, requires_grad=True) for k, v in xs.items()}
    ref = fn(**theirs)
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-12, atol=1e-12)
    probe = np.random.default_rng(1).standard_normal(ref.shape)
    backward((out * probe).sum())
    (ref * torch.tensor(probe)).sum().backward()
    for k in xs:
        want = theirs[k].grad
        got = ours[k].grad
        if want is None:
            assert got is None or not np.any(got), k
        else:
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-12, err_msg=k)


def test_reverse_slices_match_torch_flip():
    torch = pytest.importorskip("torch")
    m = model("a[:, ::-1, ::-2]").ir
    a = values()["a"]
    got = NumpyExecutor(m, {}).run({k: v.astype(np.float32) for k, v in values().items()})["y"]
    want = torch.tensor(a).flip(1).flip(2)[:, :, ::2].numpy()     # torch has no negative steps
    np.testing.assert_allclose(got, want, rtol=1e-6)
    check_parity(m, {k: v.astype(np.float32) for k, v in values().items()})


COMPARISONS = [("a > 0", np.greater), ("a < b", np.less), ("a >= 0.5", np.greater_equal),
               ("b <= a", np.less_equal), ("a == a", np.equal), ("a != 0", np.not_equal)]


@pytest.mark.parametrize("expr,np_fn", COMPARISONS, ids=[e for e, _ in COMPARISONS])
def test_comparisons_make_bool_masks(expr, np_fn):
    torch = pytest.importorskip("torch")
    m = model(expr)
    assert str(m.ir.outputs[0].type) == "bool[N, 4, 6]"
    xs = {k: v.astype(np.float32) for k, v in values().items()}
    got = check_parity(m.ir, xs)["y"]
    t = {k: torch.tensor(v) for k, v in xs.items()}
    want = eval(expr, {}, t).numpy()
    np.testing.assert_array_equal(got, want)


def test_number_on_the_left_reads_as_written_in_summaries():
    m = model("1.0 - a")
    assert [n.kind for n in m.ir.nodes] == ["Sub"]
    assert "1 - x" in m.summary()
    assert "x / 2" in model("a / 2").summary() and "x ** 2" in model("a ** 2").summary()


def test_a_number_takes_the_tensors_dtype():
    ints = "  input ids: i64[N, T]\n"
    m = model("ids * 2 + 1", ints)
    assert str(m.ir.outputs[0].type) == "i64[N, T]"
    got = check_parity(m.ir, {"ids": np.arange(6, dtype=np.int64).reshape(2, 3)})["y"]
    assert got.dtype == np.int64 and got.tolist() == [[1, 3, 5], [7, 9, 11]]
    with pytest.raises(ArchError, match=r"the number 0.5 does not fit the tensor i64\[N, T\]") as e:
        model("ids * 0.5", ints)
    assert e.value.span.line == 3 and "whole numbers" in e.value.hint
    with pytest.raises(ArchError, match=r"does not fit the tensor f16\[N, 3\]"):
        model("x * 1e300", "  input x: f16[N, 3]\n")
    assert str(model("x * 2", "  input x: f16[N, 3]\n").ir.outputs[0].type) == "f16[N, 3]"


@pytest.mark.parametrize("expr,inputs,message", [
    ("a + ids", "  input a: f32[N, T]\n  input ids: i64[N, T]\n", r"different dtypes: f32\[N, T\] \+ i64\[N, T\]"),
    ("exp(ids)", "  input ids: i64[N, T]\n", r"Exp: expects a floating-point input, got i64\[N, T\]"),
    ("ids / 2", "  input ids: i64[N, T]\n", r"Div: takes floating-point operands, got i64\[N, T\]"),
    ("m + m", "  input m: bool[N, T]\n", r"Add: takes numbers, not the bool tensor bool\[N, T\]"),
    ("where(a, a, 0.0)", "  input a: f32[N, T]\n", r"Where: the condition must be a bool tensor"),
    ("a @ a", "  input a: f32[N, 3, 4]\n", r"MatMul: cannot multiply f32\[N, 3, 4\] @ f32\[N, 3, 4\]"),
    ("a // 2", "  input a: f32[N, 4]\n", r"'//' is not defined on tensors"),
    ("a % a", "  input a: f32[N, 4]\n", r"'%' is not defined on tensors"),
    ("a @ 2", "  input a: f32[N, 4]\n", r"'@' multiplies two tensors"),
    ("a * 'x'", "  input a: f32[N, 4]\n", r"'\*' between a tensor and 'x' is not supported"),
    ("a * dim(a, 1)", "  input a: f32[N, T]\n", r"'\*' between a tensor and the symbolic dim T"),
    ("a + b", "  input a: f32[N, T]\n  input b: f32[N, S]\n", r"Add: cannot broadcast"),
    ("where(1 > 0, 1, 2)", "  input a: f32[N, 4]\n", r"where\(\) needs a bool tensor as its condition"),
    ("where(a > 0, a)", "  input a: f32[N, 4]\n", r"where\(\) takes 3 arguments"),
    ("exp(a, a)", "  input a: f32[N, 4]\n", r"exp\(\) takes 1 argument, got 2"),
    ("not (a > 0)", "  input a: f32[N, 4]\n", r"'not' needs a bool"),
])
def test_errors_name_the_operands_with_a_position(expr, inputs, message):
    with pytest.raises(ArchError, match=message) as e:
        model(expr, inputs)
    assert e.value.span is not None and e.value.span.line == inputs.count("\n") + 2
    assert e.value.hint


def test_number_functions_still_work_on_numbers():
    m = model("a * (exp(0.0) + log(1.0) + sqrt(4.0) + rsqrt(4.0) + abs(-1) + tanh(0.0) + sigmoid(0.0))",
              "  input a: f32[N, 2]\n")
    node = m.ir.nodes[0]
    assert node.kind == "Mul" and node.attrs["value"] == pytest.approx(1 + 0 + 2 + 0.5 + 1 + 0 + 0.5)
    with pytest.raises(ArchError, match=r"log\(0\) has no finite real value"):
        model("a * log(0)", "  input a: f32[N, 2]\n")


def test_matmul_broadcasts_batch_dims_and_takes_vectors():
    cases = {"x @ w": "f32[N, H, T, 3]", "x @ v": "f32[N, H, T]", "v @ w": "f32[3]",
             "(x, w) -> MatMul": "f32[N, H, T, 3]"}
    inputs = "  input x: f32[N, H, T, 5]\n  input w: f32[5, 3]\n  input v: f32[5]\n"
    for expr, want in cases.items():
        m = model(expr, inputs)
        assert str(m.ir.outputs[0].type) == want, expr
        rng = np.random.default_rng(0)
        xs = {"x": rng.standard_normal((2, 2, 3, 5)).astype(np.float32),
              "w": rng.standard_normal((5, 3)).astype(np.float32), "v": rng.standard_normal(5).astype(np.float32)}
        check_parity(m.ir, xs)
        check_grads(m.ir, xs)
    assert model("x @ w", inputs).cost(dims={"H": 2, "T": 3}, batch=2).macs == 2 * 2 * 3 * 3 * 5


def test_where_with_numbers_and_broadcasting():
    inputs = "  input mask: bool[N, 1, T]\n  input s: f32[N, H, T]\n"
    m = model("where(mask, s, -1e9)", inputs)
    assert str(m.ir.outputs[0].type) == "f32[N, H, T]"
    assert m.ir.nodes[0].attrs["y"] == -1e9
    both = model("where(mask, 0.0, 1.0)", inputs)
    assert str(both.ir.outputs[0].type) == "f32[N, 1, T]"
    rng = np.random.default_rng(0)
    xs = {"mask": rng.random((2, 1, 4)) < 0.5, "s": rng.standard_normal((2, 3, 4)).astype(np.float32)}
    got = check_parity(m.ir, xs)["y"]
    np.testing.assert_array_equal(got, np.where(xs["mask"], xs["s"], np.float32(-1e9)))
    check_parity(both.ir, xs)


def test_reductions_types_and_errors():
    assert str(model("sum(a)").ir.outputs[0].type) == "f32[]"
    assert str(model("mean(a, (1, 2), keepdim=true)").ir.outputs[0].type) == "f32[N, 1, 1]"
    assert [n.kind for n in model("mean(sum(a, 2))").ir.nodes] == ["Sum", "Mean"]
    assert archdsl.compile("model M(k: float = mean((1, 2, 6))) { input x: f32[N, 2]  output y = x * k }").model()
    for expr, needle in (("sum(a, 3)", "dim 3 is out of range"), ("mean(a, (1, 1))", "names a dim twice"),
                         ("sum(a, keep=true)", "did you mean 'keepdim'"), ("sum(a, b)", "takes one tensor"),
                         ("mean(ids)", "expects a floating-point input"), ("sum(2)", "needs a tensor")):
        with pytest.raises(ArchError, match=needle):
            model(expr, INPUTS + "  input ids: i64[N, 3]\n")
