"""The training loop: train section and overrides, determinism, bit-for-bit resume, NaN stop naming
the layer, freezing, transfer from a checkpoint."""
import json

import numpy as np
import pytest

import archdsl
from archdsl.errors import ArchError
from archdsl.train import config_for, read_checkpoint, train

SPEC = """
model Small(classes: int = 3) {
  input x: f32[N, 8]
  h = x -> Linear(16, name="fc1") -> BatchNorm -> ReLU -> Dropout(0.2)
  output logits = h -> Linear(classes, name="fc2")
}

train Small {
  loss      = cross_entropy(logits, label, label_smoothing=0.05)
  optimizer = Adam(lr=1e-2)
  batch     = 8
  epochs    = 3
  metrics   = [accuracy]
  schedule  = [warmup(steps=3), cosine()]
  clip_norm = 1.0
  val_split = 0.2
  seed      = 4
}
"""
QUIET = dict(quiet=True, log=lambda s: None)


def make_data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    y = (x[:, :3].argmax(axis=1)).astype(np.int64)
    return {"x": x, "label": y}


@pytest.fixture(scope="module")
def model():
    return archdsl.compile(SPEC).model()


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_config_from_section_and_overrides(model):
    cfg = config_for(model.spec, "Small")
    assert cfg.loss == {"name": "cross_entropy", "output": "logits", "target": "label",
                        "kwargs": {"label_smoothing": 0.05}}
    assert cfg.optimizer == {"name": "Adam", "lr": 0.01}
    assert (cfg.batch, cfg.epochs, cfg.metrics, cfg.seed, cfg.val_split, cfg.clip_norm) == \
        (8, 3, ["accuracy"], 4, 0.2, 1.0)
    assert cfg.schedule == [{"name": "warmup", "steps": 3}, {"name": "cosine"}]
    o = cfg.with_overrides(epochs=5, batch=2, lr=0.5, seed=1, freeze=["fc1"])
    assert (o.epochs, o.batch, o.lr, o.seed, o.freeze) == (5, 2, 0.5, 1, ["fc1"])
    assert cfg.epochs == 3                                   # the original is untouched


@pytest.mark.parametrize("body, match", [
    ("loss = cross_entropy(logit, label)", "not an output of model Small.*did you mean 'logits'"),
    ("loss = crossentropy(logits, label)", "unknown loss 'crossentropy'.*did you mean 'cross_entropy'"),
    ("loss = cross_entropy(logits, label)\n optimizer = Adma(lr=1)", "unknown optimizer 'Adma'.*did you mean 'Adam'"),
    ("loss = cross_entropy(logits, label)\n optimizer = SGD(lr=0.1, momentun=0.9)", "no argument 'momentun'"),
    ("loss = cross_entropy(logits, label)\n metrics = [acuracy]", "unknown metric 'acuracy'"),
    ("loss = mse(logits, label)\n metrics = [accuracy]", "accuracy needs a classification loss"),
    ("loss = binary_cross_entropy(logits, label)\n metrics = [perplexity]",
     r"perplexity needs a classification loss \(cross_entropy\)"),
    ("loss = cross_entropy(logits, label)\n schedule = cosin()", "unknown schedule 'cosin'"),
    ("loss = cross_entropy(logits, label)\n batch = 0", "batch must be >= 1"),
    ("loss = cross_entropy(logits, label)\n freeze = [fc3]", "cannot freeze 'fc3'.*did you mean 'fc2' or 'fc1'"),
    ("optimizer = Adam(lr=1e-3)", "needs a loss"),
])
def test_train_section_errors(body, match):
    text = SPEC.split("train Small")[0] + "train Small {\n " + body + "\n}\n"
    with pytest.raises(ArchError, match="(?s)" + match) as e:
        spec = archdsl.compile(text)
        m = spec.model()
        train(m, make_data(), **QUIET)
    assert e.value.span is not None or "freeze" in body


def test_same_seed_same_weights_bit_for_bit(model):
    a = train(model, make_data(), **QUIET)
    b = train(model, make_data(), **QUIET)
    assert same(a.weights, b.weights)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    c = train(model, make_data(), seed=5, **QUIET)
    assert not same(a.weights, c.weights)
    assert a.history[-1]["val_accuracy"] is not None and a.steps == 3 * 6


def test_resume_is_bit_for_bit(model, tmp_path):
    data = make_data()
    full = train(model, data, run_dir=tmp_path / "full", **QUIET)
    for stop_at in (4, 6, 13):        # mid-epoch, at an epoch's last batch, in the last epoch
        run = tmp_path / f"part{stop_at}"

        def stop(trainer, epoch, batch, step, loss):
            if step == stop_at:
                trainer.request_stop()
        part = train(model, data, run_dir=run, on_step=stop, **QUIET)
        assert part.interrupted and part.steps == stop_at
        ck = read_checkpoint(run / "checkpoint.npz")
        assert ck.meta["step"] == stop_at
        done = train(model, data, run_dir=run, resume=run / "checkpoint.npz", **QUIET)
        assert not done.interrupted and done.steps == full.steps
        assert same(done.weights, full.weights), f"resume after step {stop_at} differs"
        a = read_checkpoint(run / "checkpoint.npz")
        b = read_checkpoint(tmp_path / "full" / "checkpoint.npz")
        assert same(a.optim, b.optim) and a.meta["rng"] == b.meta["rng"]
        strip = [{k: v for k, v in h.items() if k != "seconds"} for h in a.meta["history"]]
        assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in b.meta["history"]]
    lines = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]
    assert (tmp_path / "full" / "best.npz").exists()
    assert "val_loss" in json.loads(lines[0])


def test_resume_can_only_extend_epochs(model, tmp_path):
    data = make_data()
    train(model, data, run_dir=tmp_path, epochs=1, **QUIET)
    with pytest.raises(ArchError, match="cannot change batch"):
        train(model, data, resume=tmp_path / "checkpoint.npz", batch=4, **QUIET)
    more = train(model, data, resume=tmp_path / "checkpoint.npz", epochs=2, **QUIET)
    assert more.epochs_done == 2 and len(more.history) == 2
    with pytest.raises(ArchError, match="holds weights only"):
        np.savez(tmp_path / "w.npz", **model.init_weights(0))
        train(model, data, resume=tmp_path / "w.npz", **QUIET)


def test_nan_loss_stops_naming_the_layer_and_keeps_checkpoint(model, tmp_path):
    data = make_data()
    good = {}

    def poison(trainer, epoch, batch, step, loss):
        if step == 8:
            good.update(read_checkpoint(tmp_path / "checkpoint.npz").weights)    # saved after epoch 1
            trainer.executor.params["fc2.weight"].data[0, 0] = np.inf
    with pytest.raises(ArchError) as e:
        train(model, data, run_dir=tmp_path, on_step=poison, **QUIET)
    msg = e.value.format()
    assert "at epoch 2, step 9: the loss became NaN" in msg
    assert "fc2 (Linear) became non-finite" in msg
    assert "Linear(classes, name=\"fc2\")" in msg           # the spec line, with the layer marked
    assert "the last good checkpoint" in msg
    ck = read_checkpoint(tmp_path / "checkpoint.npz")      # the end of epoch 1, as it was
    assert ck.meta["epoch"] == 1 and same(ck.weights, good)
    # a real divergence: a huge learning rate
    with pytest.raises(ArchError, match="became non-finite"):
        train(model, {**data, "x": data["x"] * 1e4}, lr=1e30, clip_norm=None, **QUIET)


FROZEN = SPEC.replace("  seed      = 4\n", "  seed      = 4\n  freeze    = [fc1]\n")


def test_freeze_from_section(tmp_path):
    m = archdsl.compile(FROZEN).model()
    assert not m.ir.parameters["fc1.weight"].trainable and m.ir.parameters["fc2.weight"].trainable
    assert "Non-trainable params: 144" in m.summary()     # fc1: 16*8 + 16
    w0 = m.init_weights(4)
    r = train(m, make_data(), **QUIET)
    for n in ("fc1.weight", "fc1.bias"):
        assert np.array_equal(r.weights[n], w0[n])
    assert not np.array_equal(r.weights["fc2.weight"], w0["fc2.weight"])
    # BatchNorm is not frozen here: its statistics moved
    assert not np.array_equal(r.weights["batchnorm_1.running_mean"], w0["batchnorm_1.running_mean"])


def test_freeze_override_and_buffers(model):
    w0 = model.init_weights(4)
    r = train(model, make_data(), freeze=["batchnorm_1", "fc2"], **QUIET)
    for n in ("batchnorm_1.weight", "batchnorm_1.running_mean", "batchnorm_1.running_var", "fc2.weight"):
        assert np.array_equal(r.weights[n], w0[n]), n
    assert not np.array_equal(r.weights["fc1.weight"], w0["fc1.weight"])
    assert model.ir.parameters["fc2.weight"].trainable           # a run's freeze leaves the IR alone
    with pytest.raises(ArchError, match="(?s)cannot freeze 'fc'.*did you mean"):
        train(model, make_data(), freeze=["fc"], **QUIET)
    with pytest.raises(ArchError, match="nothing to train"):
        train(model, make_data(), freeze=["fc1", "fc2", "batchnorm_1"], **QUIET)


def test_freeze_blocks_by_scope():
    from archdsl.passes.freeze import apply_freeze, resolve_freeze
    m = archdsl.compile("specs/resnet18.arch").model()
    names = resolve_freeze(m.ir, ["layer1", "fc"])
    assert names[0].startswith("layer1.") and names[-2:] == ["fc.weight", "fc.bias"]
    assert all(n.startswith("layer1.") for n in names[:-2])
    ir = archdsl.compile("specs/lenet5.arch").model().ir
    apply_freeze(ir, ["conv2d_1", "linear_3.bias"])
    assert [n for n, p in ir.parameters.items() if not p.trainable] == \
        ["conv2d_1.weight", "conv2d_1.bias", "linear_3.bias"]


def test_init_transfers_matching_names(model, tmp_path):
    data = make_data()
    train(model, data, run_dir=tmp_path / "a", **QUIET)
    bigger = archdsl.compile(SPEC.replace('Linear(classes, name="fc2")', 'Linear(classes, name="head")')).model()
    notes = []
    r = train(bigger, data, init=tmp_path / "a" / "checkpoint.npz", freeze=["fc1"], epochs=1, quiet=True,
              log=notes.append)
    assert any("initialised 6 of 8 parameters" in n for n in notes)
    src = read_checkpoint(tmp_path / "a" / "checkpoint.npz").weights
    assert np.array_equal(r.weights["fc1.weight"], src["fc1.weight"])
    wider = archdsl.compile(SPEC.replace("Linear(16", "Linear(12")).model()
    with pytest.raises(ArchError, match="fc1.weight is \\[16, 8\\] in the checkpoint, \\[12, 8\\]"):
        train(wider, data, init=tmp_path / "a" / "checkpoint.npz", **QUIET)


def test_online_sgd_and_binary_loss():
    spec = archdsl.compile(
        "model L() {\n input x: f32[N, 2]\n output logit = x -> Linear(1)\n}\n"
        "train L {\n loss = binary_cross_entropy(logit, y)\n optimizer = SGD(lr=0.5, momentum=0.5, nesterov=true)\n"
        " batch = 1\n epochs = 30\n metrics = [accuracy]\n}\n")
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    r = train(spec.model(), {"x": x, "y": np.array([0, 1, 1, 1])}, **QUIET)   # OR is linearly separable
    assert r.steps == 120 and r.last["accuracy"] == 1.0


def test_section_maps_array_names_and_init_path(tmp_path, model):
    train(model, make_data(), run_dir=tmp_path / "a", epochs=1, **QUIET)
    text = SPEC.replace("  seed      = 4\n", '  seed      = 4\n  inputs    = dict(x="features")\n'
                        '  targets   = dict(label="y")\n  init      = "a/checkpoint.npz"\n')
    (tmp_path / "m.arch").write_text(text)
    m = archdsl.compile(tmp_path / "m.arch").model()
    d = make_data()
    notes = []
    r = train(m, {"features": d["x"], "y": d["label"]}, epochs=1, quiet=True, log=notes.append)
    assert r.epochs_done == 1 and any("initialised 8 of 8" in n for n in notes)
    with pytest.raises(ArchError, match="no array 'features' \\(mapped from 'x'\\)"):
        train(m, d, **QUIET)


def test_perplexity_metric_is_exp_of_the_mean_token_nll():
    """An LM reports perplexity per token: exp(val_loss) without label smoothing, and with
    smoothing still the model's true perplexity (not exp of the smoothed loss)."""
    src = ("model LM(vocab: int = 7) {\n input tokens: i64[N, T]\n"
           " output logits = tokens -> Embedding(vocab, 8) -> Linear(vocab)\n}\n"
           "train LM {\n loss = cross_entropy(logits, next SMOOTH)\n optimizer = Adam(lr=1e-2)\n"
           " batch = 8\n epochs = 2\n metrics = [accuracy, perplexity]\n val_split = 0.25\n}\n")
    rng = np.random.default_rng(0)
    toks = rng.integers(0, 7, (40, 6))
    data = {"tokens": toks, "next": (toks + 1) % 7}
    r = train(archdsl.compile(src.replace(" SMOOTH", "")).model(), data, **QUIET)
    h = r.history[-1]
    assert h["val_perplexity"] == pytest.approx(np.exp(h["val_loss"]), rel=1e-5)
    assert 1.0 <= h["val_perplexity"] < 7.0                        # learning the shift beats uniform
    rs = train(archdsl.compile(src.replace(" SMOOTH", ", label_smoothing=0.2")).model(), data, **QUIET)
    hs = rs.history[-1]
    assert hs["val_perplexity"] < np.exp(hs["val_loss"])           # smoothing inflates the loss only
