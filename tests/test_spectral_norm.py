"""spectral_norm=true on Linear and the convolutions (Miyato et al. 2018): PyTorch's
parametrizations.spectral_norm as the oracle over training steps and at inference, ONNX Runtime
parity at inference, gradients against finite differences, u and v as checkpointed buffers."""
import numpy as np
import pytest

import archdsl
from archdsl.autodiff import backward
from archdsl.autodiff import functional as F
from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.backends.onnx.export import to_onnx
from archdsl.errors import ArchError
from archdsl.passes.init import initialize
from archdsl.train import read_checkpoint, train
from harness import check_grads, check_parity, random_inputs

# name -> (input type, layer, the same torch module); PyTorch normalises a transposed
# convolution's weight over dim 1, the others' over dim 0, as archdsl does
CASES = {
    "Linear": ("f32[N, 6]", "Linear(5, spectral_norm=true)", lambda nn: nn.Linear(6, 5)),
    "Linear3d": ("f32[N, T, 6]", "Linear(4, bias=false, spectral_norm=true)", lambda nn: nn.Linear(6, 4, bias=False)),
    "Conv2d": ("f32[N, 3, 6, 6]", "Conv2d(4, 3, stride=2, padding=1, spectral_norm=true)",
               lambda nn: nn.Conv2d(3, 4, 3, stride=2, padding=1)),
    "ConvTranspose2d": ("f32[N, 4, 3, 3]", "ConvTranspose2d(2, 4, stride=2, padding=1, spectral_norm=true)",
                        lambda nn: nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1)),
}


def layer_model(case: str):
    x, layer, _ = CASES[case]
    return archdsl.compile(f"model M {{\n  input x: {x}\n  output y = x -> {layer}\n}}\n").model().ir


def local(weights: dict) -> dict:
    return {k.rsplit(".", 1)[-1]: k for k in weights}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_torch_over_training_steps_and_at_inference(case):
    torch = pytest.importorskip("torch")
    m = layer_model(case)
    w = {k: v.astype(np.float64) for k, v in initialize(m, 0).items()}
    names = local(w)
    mod = CASES[case][2](torch.nn).double()
    with torch.no_grad():
        mod.weight.copy_(torch.from_numpy(w[names["weight"]]))
        if "bias" in names:
            mod.bias.copy_(torch.from_numpy(w[names["bias"]]))
    mod = torch.nn.utils.parametrizations.spectral_norm(mod)
    sn = mod.parametrizations.weight[0]
    with torch.no_grad():             # the same starting u, v (PyTorch ran 15 iterations of its own)
        sn._u.copy_(torch.from_numpy(w[names["weight_u"]]))
        sn._v.copy_(torch.from_numpy(w[names["weight_v"]]))
    ex = NumpyExecutor(m, w, dtype=np.float64)
    rng = np.random.default_rng(1)
    xs = random_inputs(m, seed=2)
    x = xs["x"].astype(np.float64)
    trained = [k for k in names if k in ("weight", "bias")]
    for step in range(3):
        y = ex.forward({"x": x}, training=True)["y"]
        ty = mod(torch.from_numpy(x))
        np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-9, atol=1e-10, err_msg=f"step {step}")
        np.testing.assert_allclose(ex.params[names["weight_u"]].data, sn._u.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ex.params[names["weight_v"]].data, sn._v.numpy(), rtol=1e-9, atol=1e-12)
        probe = rng.standard_normal(y.shape)
        backward((y * probe).sum())
        (ty * torch.from_numpy(probe)).sum().backward()
        theirs = {"weight": mod.parametrizations.weight.original, "bias": getattr(mod, "bias", None)}
        for k in trained:
            np.testing.assert_allclose(ex.params[names[k]].grad, theirs[k].grad.numpy(), rtol=1e-8, atol=1e-10,
                                       err_msg=f"gradient of {k}, step {step}")
        with torch.no_grad():         # the same SGD step on both, so each step sees new weights
            for k in trained:
                ex.params[names[k]].data -= 0.1 * ex.params[names[k]].grad
                ex.params[names[k]].grad = None
                theirs[k] -= 0.1 * theirs[k].grad
                theirs[k].grad = None
    u = ex.params[names["weight_u"]].data.copy()
    mod.eval()
    with torch.no_grad():
        ty = mod(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ex.run({"x": x})["y"], ty, rtol=1e-9, atol=1e-10)
    np.testing.assert_array_equal(ex.params[names["weight_u"]].data, u)   # inference does not iterate


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_runtime_matches_the_engine_at_inference(case):
    m = layer_model(case)
    ex = NumpyExecutor(m, initialize(m, 0))
    xs = random_inputs(m, seed=3)
    for _ in range(5):            # some power iterations: u, v away from their random start
        ex.forward(xs, training=True)
    weights = {k: t.data.copy() for k, t in ex.params.items()}
    check_parity(m, xs, weights)
    names = local(weights)
    proto = to_onnx(m, weights)
    held = {t.name for t in proto.graph.initializer}
    assert names["weight"] not in held and names["weight_u"] not in held   # W/sigma is exported instead


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradients_match_finite_differences_with_u_v_fixed(case):
    m = layer_model(case)
    check_grads(m, random_inputs(m, seed=4))      # inference: the stored u, v, no iteration


def test_power_iterations_bring_the_largest_singular_value_to_one():
    m = layer_model("Conv2d")
    ex = NumpyExecutor(m, initialize(m, 0), dtype=np.float64)
    names = local(ex.params)
    wm = ex.params[names["weight"]].data.reshape(4, -1)
    sigma_max = np.linalg.svd(wm, compute_uv=False)[0]
    x = random_inputs(m, seed=5)
    for _ in range(100):
        ex.forward(x, training=True)
    u, v = ex.params[names["weight_u"]].data, ex.params[names["weight_v"]].data
    assert abs(u @ wm @ v - sigma_max) < 1e-6 * sigma_max
    w_sn = F.spectral_norm(wm, u, v, False).data
    assert abs(np.linalg.svd(w_sn, compute_uv=False)[0] - 1.0) < 1e-6     # W/sigma has spectral norm 1


@pytest.mark.parametrize("layer", ["Flatten -> Linear(5", "Conv2d(4, 3", "ConvTranspose2d(2, 3"])
def test_u_v_are_buffers_not_parameters(layer):
    src = "model M {{\n  input x: f32[N, 3, 6, 6]\n  output y = x -> {})\n}}\n"
    a, b = (archdsl.compile(src.format(layer + extra)).model() for extra in (", spectral_norm=true", ""))
    assert a.ir.param_count() == b.ir.param_count() > 0
    buffers = sorted(k.rsplit(".", 1)[-1] for k, p in a.ir.parameters.items() if p.spec.buffer)
    assert buffers == ["weight_u", "weight_v"]
    w = a.init_weights(0)
    for k in buffers:
        name = next(n for n in w if n.endswith(k))
        assert abs(np.linalg.norm(w[name]) - 1.0) < 1e-6     # a random unit vector, as PyTorch starts
    explained = a.ir.nodes[-1].op.explain(a.ir.nodes[-1].app)
    assert explained[-1].startswith("buffers (state, not parameters): weight_u [")


SPEC = """
model D {
  input x: f32[N, 8]
  output logits = x -> Linear(16, spectral_norm=true, name="fc1") -> ReLU -> Linear(3, spectral_norm=true, name="fc2")
}

train D {
  loss      = cross_entropy(logits, label)
  optimizer = Adam(lr=1e-2)
  batch     = 8
  epochs    = 4
  seed      = 2
}
"""


def test_checkpoint_keeps_u_and_resume_is_bit_for_bit(tmp_path):
    model = archdsl.compile(SPEC).model()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 8)).astype(np.float32)
    data = {"x": x, "label": x[:, :3].argmax(axis=1).astype(np.int64)}
    quiet = dict(quiet=True, log=lambda s: None)
    full = train(model, data, run_dir=tmp_path / "full", **quiet)
    start = model.init_weights(2)
    ck = read_checkpoint(tmp_path / "full" / "checkpoint.npz")
    assert not np.array_equal(ck.weights["fc1.weight_u"], start["fc1.weight_u"])    # trained on
    np.testing.assert_array_equal(ck.weights["fc1.weight_u"], full.weights["fc1.weight_u"])
    run = tmp_path / "part"
    half = train(model, data, run_dir=run, epochs=2, **quiet)
    np.testing.assert_array_equal(read_checkpoint(run / "checkpoint.npz").weights["fc2.weight_v"],
                                  half.weights["fc2.weight_v"])
    done = train(model, data, run_dir=run, resume=run / "checkpoint.npz", epochs=4, **quiet)
    assert done.weights.keys() == full.weights.keys()
    for k in full.weights:
        np.testing.assert_array_equal(done.weights[k], full.weights[k], err_msg=k)


def test_tied_weight_is_refused():
    src = """model M {
  input ids: i64[N, T]
  emb = Embedding(10, 6)
  output y = ids -> emb -> Linear(10, tied=emb, bias=false, spectral_norm=true)
}
"""
    with pytest.raises(ArchError, match="spectral_norm=true cannot normalise a tied weight"):
        archdsl.compile(src).model()


GAN = """
model G {
  input noise: f32[N, 4]
  output x = noise -> Linear(8) -> ReLU -> Linear(2)
}
model D {
  input x: f32[N, 2]
  output score = x -> Linear(8, spectral_norm=true) -> LeakyReLU(0.2) -> Linear(1, spectral_norm=true)
}
gan P { generator = G  discriminator = D  batch = 16  epochs = 3  seed = 1
        g_optimizer = Adam(lr=1e-2)  d_optimizer = Adam(lr=1e-2) }
"""


def test_gan_discriminator_with_spectral_norm_resumes_bit_for_bit(tmp_path):
    from archdsl.gan import train_gan
    pair = archdsl.compile(GAN).gan()
    data = np.random.default_rng(0).standard_normal((100, 2)).astype(np.float32)
    quiet = dict(quiet=True, log=lambda s: None)

    def stop(trainer, step, rec):
        if step == 8:
            trainer.request_stop()
    full = train_gan(pair, data, run_dir=tmp_path / "full", **quiet)
    part = train_gan(pair, data, run_dir=tmp_path / "part", on_step=stop, **quiet)
    assert part.interrupted and part.steps == 8
    rest = train_gan(pair, data, run_dir=tmp_path / "part", resume=tmp_path / "part" / "checkpoint.npz", **quiet)
    assert rest.steps == full.steps
    a, b = (read_checkpoint(tmp_path / d / "checkpoint.npz").weights for d in ("full", "part"))
    assert a.keys() == b.keys() and any(k.endswith("weight_u") for k in a)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
