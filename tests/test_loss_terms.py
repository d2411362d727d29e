"""Loss expressions in train sections (archdsl/train/objective.py): named terms that are built-in
losses or expressions over the model's tensors, weights with ramps, each term reported in the
epoch lines, metrics.jsonl and the checkpoint's history, compile-time errors at their positions,
and resume bit for bit."""
import json

import numpy as np
import pytest

import archdsl
from archdsl.cli import main as cli_main
from archdsl.errors import ArchError, ArchErrors
from archdsl.train import config_for, train
from archdsl.train.checkpoint import read_checkpoint

NET = """
model Net {
  input x: f32[N, 4]
  input y: f32[N, 2]
  h = x -> Linear(8) -> Tanh
  output logits = h -> Linear(3)
  output aux = h -> Linear(3)
  output pred = h -> Linear(2)
}
"""
TRAIN = """
train Net {
  loss = dict(main = cross_entropy(logits, label),
              aux  = cross_entropy(aux, label),
              reg  = mean(sum((pred - y) ** 2, 1)))
  loss_weights = dict(aux = 0.3, reg = ramp(0.0, 1.0, steps=10))
  optimizer = Adam(lr=1e-2)
  batch = 8  epochs = 3  metrics = [accuracy]  val_split = 0.2  seed = 0
}
"""


def data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    return {"x": x, "y": x[:, :2] * 0.5, "label": (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1)}


def compile_net(section=TRAIN, net=NET):
    return archdsl.compile(net + section)


def quiet(**kw):
    return dict(quiet=True, log=lambda s: None, **kw)


def test_terms_and_weights_are_read_from_the_section():
    cfg = config_for(compile_net(), "Net")
    assert cfg.loss is None
    assert [t["name"] for t in cfg.terms] == ["main", "aux", "reg"]
    assert cfg.terms[0]["loss"] == {"name": "cross_entropy", "output": "logits", "target": "label", "kwargs": {}}
    assert cfg.terms[1]["weight"] == 0.3
    assert cfg.terms[2]["weight"] == {"name": "ramp", "start": 0.0, "end": 1.0, "steps": 10}
    assert cfg.terms[2]["expr"] == "mean(sum((pred - y) ** 2, 1))" and cfg.terms[2]["at"][1:] == [14, 22]
    # the classic single loss keeps the form checkpoints have always stored
    one = config_for(compile_net(TRAIN.replace(TRAIN[TRAIN.index("  loss ="):TRAIN.index("  optimizer")],
                                               "  loss = cross_entropy(logits, label)\n")), "Net")
    assert one.terms == [] and one.loss["name"] == "cross_entropy"


def test_each_term_is_reported_and_the_total_is_their_weighted_sum(tmp_path, capsys):
    spec = compile_net(TRAIN.replace("ramp(0.0, 1.0, steps=10)", "2.0"))
    res = train(spec.model("Net"), data(), run_dir=tmp_path, log=print, quiet=True)
    h = res.history
    assert {"loss", "main", "aux", "reg", "accuracy", "val_loss", "val_main", "val_aux", "val_reg",
            "val_accuracy"} <= set(h[-1])
    for r in h:
        assert r["loss"] == pytest.approx(r["main"] + 0.3 * r["aux"] + 2.0 * r["reg"], rel=1e-9)
        assert r["val_loss"] == pytest.approx(r["val_main"] + 0.3 * r["val_aux"] + 2.0 * r["val_reg"], rel=1e-9)
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["reg"] for r in lines] == [r["reg"] for r in h]
    assert read_checkpoint(tmp_path / "checkpoint.npz").meta["history"][-1]["aux"] == h[-1]["aux"]
    out = capsys.readouterr().out
    assert "main " in out and "aux " in out and "reg " in out and "val_reg " in out
    assert h[-1]["reg"] < h[0]["reg"]                      # the expression term trains the model


def test_ramped_weight_follows_the_step_and_is_reported():
    weights = []
    res = train(compile_net().model("Net"), data(), on_step=lambda t, e, b, s, loss: weights.append(
        t.objective.weight(t.objective.terms[2], s - 1, 4)), **quiet())
    assert weights[:3] == [0.0, 0.1, 0.2] and weights[-1] == 1.0
    assert [r["reg_weight"] for r in res.history] == [0.4, 0.8, 1.0]     # 4 steps per epoch, ramp over 10


def test_an_expression_term_trains_as_the_built_in_loss_does():
    sec = TRAIN.replace(TRAIN[TRAIN.index("  loss ="):TRAIN.index("  optimizer")], "  loss = LOSS\n")
    sec = sec.replace("metrics = [accuracy]", "")
    a = train(compile_net(sec.replace("LOSS", "mse(pred, y)")).model("Net"), data(), **quiet())
    b = train(compile_net(sec.replace("LOSS", "mean((pred - y) ** 2)")).model("Net"), data(), **quiet())
    assert [r["loss"] for r in a.history] == pytest.approx([r["loss"] for r in b.history], rel=1e-5)
    for k in a.weights:
        np.testing.assert_allclose(a.weights[k], b.weights[k], rtol=1e-4, atol=1e-6, err_msg=k)
    assert set(b.history[-1]) == {"epoch", "step", "lr", "loss", "val_loss", "seconds"}    # one term: no names


def test_resume_with_terms_and_a_ramp_is_bit_for_bit(tmp_path):
    model = compile_net().model("Net")
    full = train(model, data(), run_dir=tmp_path / "full", **quiet())

    def stop(t, epoch, batch, step, loss):
        if step == 6:
            t.request_stop()
    part = train(model, data(), run_dir=tmp_path / "part", on_step=stop, **quiet())
    assert part.interrupted and part.steps == 6
    rest = train(model, data(), run_dir=tmp_path / "part", resume=tmp_path / "part" / "checkpoint.npz", **quiet())
    assert rest.steps == full.steps
    for k in full.weights:
        np.testing.assert_array_equal(full.weights[k], rest.weights[k], err_msg=k)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]   # noqa: E731
    assert strip(rest.history) == strip(full.history)


@pytest.mark.parametrize("loss, needle, where", [
    ("mean(logits + pred)", r"Add: cannot broadcast f32\[N, 3\] \+ f32\[N, 2\]", (11, 15)),
    ("sum(logits, 1)", r"the loss is f32\[N\]; a loss is one floating-point number", (11, 10)),
    ("dict(a = mean(logit ** 2))", r"undefined name 'logit'.*did you mean 'logits'", (11, 24)),
    ("dict(a = sum(logits > 0))", "Sum: expects a floating-point input, got bool", (11, 19)),
    ("0.5 * mse(pred, y)", "mse\\(...\\) is a loss term of its own", (11, 16)),
    ("dict(accuracy = mean(pred))", "'accuracy' cannot name a loss term", (11, 15)),
    ("dict(a = mean(pred -> Linear(1)))", "holds layers with weights", (11, 19)),
    ("dict(a = mean(pred -> NormalLike))", "draws random numbers", (11, 32)),
    ("3.0", "is 3.0, not computed from the model's tensors", (11, 10)),
    ("crossentropy(logits, label)", "unknown loss 'crossentropy'.*did you mean 'cross_entropy'", (11, 10)),
])
def test_loss_errors_are_compile_errors_at_their_positions(loss, needle, where):
    with pytest.raises(ArchError, match="(?s)" + needle) as e:
        archdsl.compile(NET + f"train Net {{\n  loss = {loss}\n}}\n")
    assert (e.value.span.line, e.value.span.col) == where, e.value.format()


@pytest.mark.parametrize("weights, needle", [
    ("dict(rec = 0.5)", "no loss term 'rec'.*did you mean 'reg'"),
    ("dict(reg = ramp(0.0, 1.0))", "ramp needs a start, an end and one of steps= or epochs="),
    ("dict(reg = ramp(0.0, 1.0, steps=0))", "steps or epochs must be a positive integer"),
    ("dict(reg = warm(0.0, 1.0, steps=5))", "must be a number or ramp"),
    ("[0.5]", "maps term names to weights"),
])
def test_weight_errors(weights, needle):
    with pytest.raises((ArchError, ArchErrors), match="(?s)" + needle):
        archdsl.compile(NET + TRAIN.replace("dict(aux = 0.3, reg = ramp(0.0, 1.0, steps=10))", weights))
    with pytest.raises(ArchError, match="loss_weights weighs named loss terms"):
        archdsl.compile(NET + "train Net { loss = mse(pred, y)  loss_weights = dict(loss = 2.0) }")


def test_independent_loss_errors_are_reported_together_by_archdsl_check(tmp_path, capsys):
    bad = TRAIN.replace("(pred - y) ** 2", "(pred - x) ** 2").replace("aux = 0.3", "axu = 0.3")
    (tmp_path / "bad.arch").write_text(NET + bad)
    assert cli_main(["check", str(tmp_path / "bad.arch")]) == 1
    err = capsys.readouterr().err
    assert "bad.arch:14:32: error: Sub: cannot broadcast f32[N, 2] - f32[N, 4]" in err
    assert "bad.arch:15:18: error: loss_weights: there is no loss term 'axu'" in err and "Traceback" not in err


def test_a_non_finite_term_is_named(tmp_path):
    spec = compile_net(TRAIN.replace("mean(sum((pred - y) ** 2, 1))", "mean(log(pred * 0.0 - 1.0))"))
    with pytest.raises(ArchError, match=r"loss term reg\).*the loss became NaN, although every layer output was "
                                        r"finite"):
        train(spec.model("Net"), data(), run_dir=tmp_path, **quiet())
