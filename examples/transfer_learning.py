"""Transfer learning with a frozen backbone: train a digit classifier, load its backbone into a
network with a new head for another task (odd or even?), freeze the backbone and train only the
head, from few examples.

    python examples/transfer_learning.py --out out/transfer

1. `DigitsBase` (backbone: two dense layers; head: 10 classes) is trained on 1,000 digits.
2. `DigitsParity` has the same `backbone` block and a new head (a small MLP, 2 classes). Its
   weights are initialised from step 1's checkpoint by matching names (`init`): the backbone's
   four tensors match, the new head keeps its fresh init.
3. Its train section says `freeze = [backbone]`: `archdsl summary` counts the backbone as
   non-trainable, the optimizer never touches it, and only the head learns, from 50 other
   images. For comparison the same network is also trained from scratch on those 50 images.
4. The backbone's weights after step 3 are compared with step 1's, bit for bit.

The CLI equivalent of steps 1 and 3 (the spec text is SPEC below):

    archdsl train transfer.arch --model DigitsBase --data digits.npz -o base/
    archdsl train transfer.arch --model DigitsParity --data parity.npz --init base/checkpoint.npz -o head/
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))   # for _common, run as a script or loaded by path
import _common  # noqa: E402

SPEC = """
# A feature extractor shared by both models.
block Backbone() {
  input x
  output x -> Linear(64) -> ReLU -> Linear(32) -> ReLU
}

model DigitsBase(classes: int = 10) {
  input image: f32[N, 64]
  output logits = image -> Backbone(name="backbone") -> Linear(classes, name="head")
}

# The same backbone with a new head: is the digit odd?
block ParityHead() {
  input h
  output h -> Linear(32) -> ReLU -> Linear(2)
}

model DigitsParity() {
  input image: f32[N, 64]
  output logits = image -> Backbone(name="backbone") -> ParityHead(name="parity_head")
}

train DigitsBase {
  loss      = cross_entropy(logits, label)
  optimizer = Adam(lr=3e-3)
  batch     = 32
  epochs    = 30
  metrics   = [accuracy]
}

train DigitsParity {
  loss      = cross_entropy(logits, label)
  optimizer = Adam(lr=1e-2)
  batch     = 10
  epochs    = 30
  metrics   = [accuracy]
  freeze    = [backbone]
}
"""


def data():
    """(pretraining set: 1,000 digits with labels 0-9), (50 other digits labelled odd = 1 / even = 0),
    (the remaining 747 digits, labelled odd/even, for testing)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(y))
    base, few, test = perm[:1000], perm[1000:1050], perm[1050:]
    return (x[base], y[base]), (x[few], y[few] % 2), (x[test], y[test] % 2)


def main(argv=None) -> dict:
    ap = _common.parser(__doc__)
    args = ap.parse_args(argv)

    import archdsl
    from archdsl.train import config_for, read_checkpoint, train

    out = _common.output_dir(args.out)
    (xb, yb), (xf, yf), (xt, yt) = data()
    spec = archdsl.compile(SPEC)
    notes = []
    opts = dict(quiet=True, threads=1, overwrite=True, log=lambda s: notes.append(s) if not s.startswith("epoch") else None)

    base = train(spec.model("DigitsBase"), {"image": xb, "label": yb}, run_dir=out / "base", **opts)
    print(f"1. DigitsBase on {len(xb)} digits (10 classes): training accuracy {100 * base.last['accuracy']:.1f}%")

    parity = spec.model("DigitsParity")
    non_trainable = next(line for line in parity.summary().splitlines() if line.startswith("Non-trainable"))
    print(f"2. DigitsParity, summary: {non_trainable} (the frozen backbone)")

    head = train(parity, {"image": xf, "label": yf}, run_dir=out / "head", init=out / "base" / "checkpoint.npz",
                 **opts)
    for n in notes:
        print(f"   {n}")
    acc = float((head.executor.run({"image": xt})["logits"].argmax(1) == yt).mean())
    scratch_cfg = config_for(spec, "DigitsParity")
    scratch_cfg.freeze = []
    scratch_model = archdsl.compile(SPEC.replace("freeze    = [backbone]", "")).model("DigitsParity")
    scratch = train(scratch_model, {"image": xf, "label": yf}, scratch_cfg, **opts)
    acc_scratch = float((scratch.executor.run({"image": xt})["logits"].argmax(1) == yt).mean())
    print(f"3. odd/even head trained on {len(xf)} digits; test accuracy on {len(xt)} others: "
          f"{100 * acc:.1f}% (the same network from scratch on the same {len(xf)}: {100 * acc_scratch:.1f}%)")

    before = read_checkpoint(out / "base" / "checkpoint.npz").weights
    after = head.weights
    backbone = [n for n in after if n.startswith("backbone.")]
    unchanged = all(np.array_equal(before[n], after[n]) for n in backbone)
    init = parity.init_weights(0)
    head_changed = all(not np.array_equal(after[n], init[n]) for n in after if n.startswith("parity_head."))
    print(f"4. backbone ({len(backbone)} tensors) unchanged bit for bit: {unchanged}; head trained: {head_changed}")
    report = {"backbone_unchanged": unchanged, "head_changed": head_changed, "accuracy": acc,
              "scratch_accuracy": acc_scratch, "non_trainable_line": non_trainable}
    report["ok"] = unchanged and head_changed and acc > 0.9
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
