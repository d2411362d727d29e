"""The GAN objectives and the alternating loop: gradients, one step against PyTorch, checkpoints
holding both models and both optimizers, bit-for-bit resume, data checks, `archdsl train`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import archdsl
from archdsl.autodiff import Tensor, backward, check_grads
from archdsl.backends.numpy.executor import NumpyExecutor
from archdsl.errors import ArchError
from archdsl.gan import objectives as O
from archdsl.gan import read_gan_checkpoint, train_gan
from archdsl.passes.init import initialize
from archdsl.train.checkpoint import load_weights, read_checkpoint

ROOT = Path(__file__).resolve().parent.parent

MLP = """
model G(z: int = 3) {
  input noise: f32[N, z]
  output x = noise -> Linear(8) -> ReLU -> Linear(2)
}
model D {
  input x: f32[N, 2]
  output score = x -> Linear(8) -> LeakyReLU(0.2) -> Linear(1)
}
gan P { generator = G  discriminator = D  batch = 16  epochs = 3  seed = 1
        g_optimizer = Adam(lr=1e-2)  d_optimizer = Adam(lr=1e-2) }
"""

# BatchNorm in both (D's batch statistics make the loop score real and fake in separate passes)
CONV = """
model G {
  input noise: f32[N, 4, 1, 1]
  x = noise -> ConvTranspose2d(6, 2, bias=false) -> BatchNorm -> ReLU
  output img = x -> ConvTranspose2d(1, 3, stride=2, padding=1, output_padding=1) -> Tanh
}
model D {
  input img: f32[N, 1, 4, 4]
  x = img -> Conv2d(4, 3, stride=2, padding=1, bias=false) -> BatchNorm -> LeakyReLU(0.2)
  output score = x -> Flatten -> Linear(1)
}
gan P { generator = G  discriminator = D  batch = 8  epochs = 2  d_steps = 2  objective = least_squares }
"""


def points(n=100, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 2)).astype(np.float32)


def images(n=40, seed=0):
    return np.tanh(np.random.default_rng(seed).standard_normal((n, 1, 4, 4))).astype(np.float32)


def quiet(**kw):
    return dict(quiet=True, log=lambda s: None, **kw)


# -- objectives ------------------------------------------------------------------------------------

@pytest.mark.parametrize("objective", O.OBJECTIVES)
def test_objective_values_at_an_undecided_discriminator(objective):
    zero = Tensor(np.zeros((4, 1), np.float32), requires_grad=True)
    d = float(O.d_loss(objective, zero, zero).data)
    g = float(O.g_loss(objective, zero).data)
    if objective == "least_squares":
        assert d == pytest.approx(0.5) and g == pytest.approx(0.5)
    else:
        assert d == pytest.approx(2 * np.log(2), rel=1e-6)
        assert g == pytest.approx(-np.log(2) if objective == "minimax" else np.log(2), rel=1e-6)


@pytest.mark.parametrize("objective", O.OBJECTIVES)
def test_joint_discriminator_loss_equals_the_two_pass_loss(objective):
    rng = np.random.default_rng(0)
    r, f = rng.standard_normal((5, 1)), rng.standard_normal((5, 1))
    a, b = Tensor(r, requires_grad=True), Tensor(f, requires_grad=True)
    two = O.d_loss(objective, a, b)
    backward(two)
    j = Tensor(np.concatenate([r, f]), requires_grad=True)
    one = O.d_loss_joint(objective, j, 5)
    backward(one)
    assert float(one.data) == pytest.approx(float(two.data), rel=1e-12)
    np.testing.assert_allclose(j.grad, np.concatenate([a.grad, b.grad]), rtol=1e-12)


@pytest.mark.parametrize("objective", O.OBJECTIVES)
def test_generator_loss_gradient_through_the_discriminator(objective):
    """d g_loss / d fake through D (BatchNorm in training mode) vs central differences, float64."""
    d_ir = archdsl.compile(CONV).gan().discriminator.ir
    w = {k: v.astype(np.float64) for k, v in initialize(d_ir, 3).items()}

    def fn(fake):
        ex = NumpyExecutor(d_ir, w, dtype=np.float64)
        return O.g_loss(objective, ex.forward({"img": fake}, training=True)["score"])
    check_grads(fn, [np.random.default_rng(1).standard_normal((6, 1, 4, 4))])


def test_probability_shown_in_the_progress_bar():
    assert O.probability("non_saturating", np.zeros((3, 1))) == 0.5
    assert O.probability("least_squares", np.array([[0.2], [0.4]])) == pytest.approx(0.3)


# -- one step against PyTorch -------------------------------------------------------------------------

@pytest.mark.parametrize("objective", O.OBJECTIVES)
def test_one_step_matches_pytorch(objective):
    """D update on (real, G(z)), then G update through the *updated* D on the same G(z)."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    pair = archdsl.compile(MLP.replace("seed = 1", f"seed = 1  objective = {objective}")).gan()
    real = points(64)
    res = train_gan(pair, real, steps=1, **quiet())
    cfg = res.config
    # what the loop drew: weights, noise, the first real batch
    gw, dw = initialize(pair.generator.ir, cfg.seed), initialize(pair.discriminator.ir, cfg.seed + 1)
    z = pair.noise(cfg.batch, np.random.default_rng([cfg.seed, 4]))
    order = np.random.default_rng([cfg.seed, 2]).permutation(len(real))
    x = real[order[:cfg.batch]]

    def net(w, acts):
        layers = []
        for i, act in enumerate(acts):
            lin = torch.nn.Linear(*w[f"linear_{i + 1}.weight"].shape[::-1])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w[f"linear_{i + 1}.weight"]))
                lin.bias.copy_(torch.from_numpy(w[f"linear_{i + 1}.bias"]))
            layers += [lin] + ([act] if act is not None else [])
        return torch.nn.Sequential(*layers)
    G = net(gw, [torch.nn.ReLU(), None])
    D = net(dw, [torch.nn.LeakyReLU(0.2), None])
    og = torch.optim.Adam(G.parameters(), lr=1e-2, betas=(0.5, 0.999))
    od = torch.optim.Adam(D.parameters(), lr=1e-2, betas=(0.5, 0.999))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    fake = G(torch.from_numpy(z))
    sr, sf = D(torch.from_numpy(x)), D(fake.detach())
    if objective == "least_squares":
        ld = 0.5 * (((sr - 1) ** 2).mean() + (sf ** 2).mean())
    else:
        ld = bce(sr, torch.ones_like(sr)) + bce(sf, torch.zeros_like(sf))
    od.zero_grad()
    ld.backward()
    od.step()
    s = D(fake)
    lg = {"minimax": -bce(s, torch.zeros_like(s)), "non_saturating": bce(s, torch.ones_like(s)),
          "least_squares": 0.5 * ((s - 1) ** 2).mean()}[objective]
    og.zero_grad()
    lg.backward()
    og.step()
    for ex, tnet in ((res.generator, G), (res.discriminator, D)):
        mine = ex.weights()
        for i, lin in enumerate(m for m in tnet if isinstance(m, torch.nn.Linear)):
            np.testing.assert_allclose(mine[f"linear_{i + 1}.weight"], lin.weight.detach().numpy(), atol=2e-6)
            np.testing.assert_allclose(mine[f"linear_{i + 1}.bias"], lin.bias.detach().numpy(), atol=2e-6)
    assert res.history[-1]["d_loss"] == pytest.approx(ld.item(), rel=1e-5)
    assert res.history[-1]["g_loss"] == pytest.approx(lg.item(), rel=1e-5)


# -- checkpoints and resume ----------------------------------------------------------------------------

def test_checkpoint_holds_both_models_and_both_optimizers(tmp_path):
    pair = archdsl.compile(MLP).gan()
    res = train_gan(pair, points(), run_dir=tmp_path, **quiet())
    assert res.steps == 3 * (100 // 16) and res.epochs_done == 3 and not res.interrupted
    ck, w, o = read_gan_checkpoint(tmp_path / "checkpoint.npz")
    assert ck.meta["kind"] == "gan" and ck.meta["generator"] == "G" and ck.meta["discriminator"] == "D"
    assert ck.meta["step"] == res.steps and ck.meta["g_optimizer"]["t"] == ck.meta["d_optimizer"]["t"] == res.steps
    assert set(w["generator"]) == set(pair.generator.ir.parameters)
    assert set(w["discriminator"]) == set(pair.discriminator.ir.parameters)
    assert {k.split("/")[0] for k in o["generator"]} == {"m", "v"} == {k.split("/")[0] for k in o["discriminator"]}
    for k, a in res.generator.weights().items():
        np.testing.assert_array_equal(w["generator"][k], a)
    # the plain weight files load as any weights do
    gw = load_weights(tmp_path / "generator.npz", pair.generator.ir)
    np.testing.assert_array_equal(gw["linear_1.weight"], w["generator"]["linear_1.weight"])
    load_weights(tmp_path / "discriminator.npz", pair.discriminator.ir)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [1, 2, 3]
    assert set(json.loads(lines[0])) >= {"step", "d_loss", "g_loss", "d_real", "d_fake", "seconds"}
    assert not list(tmp_path.glob(".*tmp*"))            # atomic writes leave no temporary files


def _stop_at(k):
    def on_step(trainer, step, rec):
        if step == k:
            trainer.request_stop()
    return on_step


def _same_state(a: Path, b: Path):
    ca, cb = read_checkpoint(a), read_checkpoint(b)
    assert ca.weights.keys() == cb.weights.keys() and ca.optim.keys() == cb.optim.keys()
    for k in ca.weights:
        np.testing.assert_array_equal(ca.weights[k], cb.weights[k], err_msg=k)
    for k in ca.optim:
        np.testing.assert_array_equal(ca.optim[k], cb.optim[k], err_msg=k)
    assert ca.meta["rng"] == cb.meta["rng"]
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]   # noqa: E731
    assert strip(ca.meta["history"]) == strip(cb.meta["history"])


@pytest.mark.parametrize("src, data, stop", [(MLP, points(), 8), (CONV, images(), 3)], ids=["mlp-joint", "conv-bn"])
def test_resume_is_bit_for_bit(tmp_path, src, data, stop):
    pair = archdsl.compile(src).gan()
    full = train_gan(pair, data, run_dir=tmp_path / "full", **quiet())
    part = train_gan(pair, data, run_dir=tmp_path / "part", on_step=_stop_at(stop), **quiet())
    assert part.interrupted and part.steps == stop
    rest = train_gan(pair, data, run_dir=tmp_path / "part", resume=tmp_path / "part" / "checkpoint.npz", **quiet())
    assert rest.steps == full.steps and not rest.interrupted
    _same_state(tmp_path / "full" / "checkpoint.npz", tmp_path / "part" / "checkpoint.npz")


def test_resume_trains_longer_and_refuses_other_settings(tmp_path):
    pair = archdsl.compile(MLP).gan()
    train_gan(pair, points(), run_dir=tmp_path / "a", epochs=1, **quiet())
    more = train_gan(pair, points(), run_dir=tmp_path / "a", resume=tmp_path / "a", epochs=3, **quiet())
    full = train_gan(pair, points(), run_dir=tmp_path / "b", **quiet())
    assert more.steps == full.steps
    _same_state(tmp_path / "a" / "checkpoint.npz", tmp_path / "b" / "checkpoint.npz")
    with pytest.raises(ArchError, match="cannot change batch"):
        train_gan(pair, points(), resume=tmp_path / "a", batch=8, **quiet())
    other = archdsl.compile(MLP.replace("model D", "model E").replace("discriminator = D", "discriminator = E")).gan()
    with pytest.raises(ArchError, match="with discriminator D, not E"):
        train_gan(other, points(), resume=tmp_path / "a", **quiet())
    with pytest.raises(ArchError, match="is not a GAN checkpoint"):
        train_gan(pair, points(), resume=tmp_path / "a" / "generator.npz", **quiet())


def test_steps_end_a_run_inside_an_epoch_and_a_longer_run_continues_it(tmp_path):
    pair = archdsl.compile(MLP).gan()
    a = train_gan(pair, points(), run_dir=tmp_path / "a", steps=4, **quiet())
    assert a.steps == 4 and a.epochs_done == 0 and len(a.history) == 1
    train_gan(pair, points(), run_dir=tmp_path / "a", resume=tmp_path / "a", steps=10, **quiet())
    train_gan(pair, points(), run_dir=tmp_path / "b", steps=10, **quiet())
    _same_state(tmp_path / "a" / "checkpoint.npz", tmp_path / "b" / "checkpoint.npz")


def test_schedule_lowers_both_learning_rates():
    pair = archdsl.compile(MLP.replace("seed = 1", "seed = 1  schedule = cosine()")).gan()
    lrs = []
    train_gan(pair, points(), on_step=lambda t, s, r: lrs.append((t.g_opt.lr, t.d_opt.lr)), **quiet())
    assert lrs[0] == (1e-2, 1e-2) and lrs[-1][0] < 1e-3 and lrs[-1][0] == lrs[-1][1]


def test_data_checks():
    pair = archdsl.compile(MLP).gan()
    with pytest.raises(ArchError, match=r"array 'x' has shape \[100, 3\], but model input 'x' \(f32\[N, 2\]\) needs"):
        train_gan(pair, np.zeros((100, 3), np.float32), **quiet())
    with pytest.raises(ArchError, match="10 real samples, fewer than one step needs"):
        train_gan(pair, points(10), **quiet())
    with pytest.raises(ArchError, match="no array 'pts'"):
        train_gan(archdsl.compile(MLP.replace("seed = 1", 'seed = 1  data = "pts"')).gan(),
                  {"x": points(), "y": points()}, **quiet())
    with pytest.raises(ArchError, match="contains NaN"):
        train_gan(pair, np.full((50, 2), np.nan, np.float32), **quiet())


def test_loader_takes_the_named_array_or_the_only_one(tmp_path):
    pair = archdsl.compile(MLP.replace("seed = 1", 'seed = 1  data = "pts"')).gan()
    np.savez(tmp_path / "d.npz", pts=points(), other=points(3))
    assert train_gan(pair, tmp_path / "d.npz", steps=1, **quiet()).steps == 1
    np.savez(tmp_path / "e.npz", anything=points())
    assert train_gan(archdsl.compile(MLP).gan(), tmp_path / "e.npz", steps=1, **quiet()).steps == 1


# -- the command line --------------------------------------------------------------------------------

def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "archdsl", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_archdsl_train_runs_the_gan_loop_and_resumes(tmp_path):
    spec = tmp_path / "p.arch"
    spec.write_text(MLP)
    np.savez(tmp_path / "real.npz", x=points())
    p = run_cli("train", spec, "--data", tmp_path / "real.npz", "-o", tmp_path / "run", "--epochs", "2", "--threads", "1")
    assert p.returncode == 0, p.stderr
    assert "trained gan P (G vs D): 12 steps, 2 epochs" in p.stdout
    assert "epoch 2/2  step 12  d_loss" in p.stdout and "D(x)" in p.stdout and "D(G(z))" in p.stdout
    assert "archdsl sample" in p.stdout and "--weights" in p.stdout
    p = run_cli("train", spec, "-o", tmp_path / "run", "--resume", tmp_path / "run" / "checkpoint.npz",
                "--steps", "15")
    assert p.returncode == 0, p.stderr
    assert "resuming gan P" in p.stdout and "15 steps" in p.stdout
    p = run_cli("train", spec, "--data", tmp_path / "real.npz", "-o", tmp_path / "r2", "--val-split", "0.1")
    assert p.returncode == 1 and "--val-split is not supported for a gan" in p.stderr and "Traceback" not in p.stderr
    p = run_cli("export", spec, "--weights", tmp_path / "run" / "generator.npz", "-o", tmp_path / "g.onnx")
    assert p.returncode == 0, p.stderr


def test_progress_line_format():
    from archdsl.gan.loop import format_record as _fmt
    s = _fmt({"d_loss": 1.2, "g_loss": 0.7, "d_real": 0.61, "d_fake": 0.4})
    assert s == "d_loss 1.2000  g_loss 0.7000  D(x) 0.610  D(G(z)) 0.400"


def test_dcgan_generator_and_discriminator_gradients_in_training_mode():
    """ConvTranspose2d from 1x1 noise with output_padding, BatchNorm on batch statistics, ReLU,
    Tanh (G) and strided Conv2d, BatchNorm, LeakyReLU (D): reverse mode vs central differences."""
    from harness import check_grads as model_grads
    pair = archdsl.compile(ROOT / "specs" / "dcgan_digits.arch").gan()
    small = archdsl.compile((ROOT / "specs" / "dcgan_digits.arch").read_text()
                            .replace("z: int = 32, ch: int = 64", "z: int = 4, ch: int = 3")
                            .replace("model Discriminator(ch: int = 64)", "model Discriminator(ch: int = 3)")
                            .replace("normal(32)", "normal(4)")
                            # a training forward's power iteration is a constant to the gradient (as
                            # in PyTorch), not to central differences: test_spectral_norm.py fixes it
                            .replace(", spectral_norm=true", "")).gan()
    assert pair.generator.param_count > 10 * small.generator.param_count
    rng = np.random.default_rng(0)
    model_grads(small.generator.ir, {"noise": rng.standard_normal((3, 4, 1, 1)).astype(np.float32)}, training=True)
    model_grads(small.discriminator.ir, {"image": np.tanh(rng.standard_normal((3, 1, 8, 8))).astype(np.float32)},
                training=True)


# -- PacGAN: the discriminator judges `pack` samples at once -------------------------------------------
PACKED = MLP.replace("input x: f32[N, 2]", "input x: f32[N, 6]").replace("batch = 16", "batch = 15  pack = 3")


def test_pack_feeds_the_discriminator_groups_of_samples(tmp_path):
    pair = archdsl.compile(PACKED).gan()
    assert pair.config.pack == 3
    seen = []
    disc_forward = NumpyExecutor.forward

    def spy(self, inputs, **kw):
        if self.model.name == "D":
            seen.append(next(iter(inputs.values())).shape)
        return disc_forward(self, inputs, **kw)
    NumpyExecutor.forward = spy
    try:
        res = train_gan(pair, points(), run_dir=tmp_path, **quiet())
    finally:
        NumpyExecutor.forward = disc_forward
    assert res.steps == 3 * (100 // 15) and np.isfinite(res.last["d_loss"])
    assert seen and all(s[1] == 6 for s in seen)                       # 3 samples of 2 values each
    assert {s[0] for s in seen} <= {5, 10}                              # 15 // 3 groups (twice when joint)
    # resume stays bit for bit with packing
    part = train_gan(pair, points(), run_dir=tmp_path / "p", on_step=_stop_at(7), **quiet())
    assert part.interrupted
    train_gan(pair, points(), run_dir=tmp_path / "p", resume=tmp_path / "p", **quiet())
    _same_state(tmp_path / "checkpoint.npz", tmp_path / "p" / "checkpoint.npz")


def test_pack_errors_name_the_packed_type():
    bad = MLP.replace("batch = 16", "batch = 16  pack = 3")            # D still takes f32[N, 2]
    with pytest.raises(ArchError) as e:
        archdsl.compile(bad)
    assert "judges 3 samples of f32[N, 2] at once, as f32[N, 6]" in e.value.message
    assert "declare D's input as f32[N, 6]" in e.value.hint
    with pytest.raises(ArchError, match="batch 16 is not a multiple of pack 3"):
        train_gan(archdsl.compile(PACKED.replace("batch = 15", "batch = 16")).gan(), points(), **quiet())
