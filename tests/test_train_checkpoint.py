"""Checkpoints: atomic .npz round trip, strict loading, corrupt files, matching names for --init."""
import json

import numpy as np
import pytest

import archdsl
from archdsl.errors import ArchError
from archdsl.train.checkpoint import (
    init_from, load_weights, read_checkpoint, save_checkpoint,
)

SPEC = """
model A() {
  input x: f32[N, 4]
  output y = x -> Linear(8, name="fc1") -> BatchNorm -> ReLU -> Linear(3, name="fc2")
}
model B() {
  input x: f32[N, 4]
  output y = x -> Linear(8, name="fc1") -> BatchNorm -> ReLU -> Linear(5, name="head")
}
model C() {
  input x: f32[N, 4]
  output y = x -> Linear(6, name="fc1") -> ReLU -> Linear(3, name="fc2")
}
"""
spec = archdsl.compile(SPEC)
A, B, C = (spec.model(n) for n in "ABC")


def test_round_trip(tmp_path):
    w = A.init_weights(3)
    opt = {"m/fc1.weight": np.ones((8, 4), np.float32)}
    p = save_checkpoint(tmp_path / "ck.npz", w, opt, {"model": "A", "epoch": 2, "rng": {"state": 2**100}})
    ck = read_checkpoint(p)
    assert ck.is_full and ck.meta["epoch"] == 2 and ck.meta["rng"]["state"] == 2**100
    assert set(ck.weights) == set(w) and "running_mean" in " ".join(ck.weights)
    for k in w:
        np.testing.assert_array_equal(ck.weights[k], w[k])
    np.testing.assert_array_equal(ck.optim["m/fc1.weight"], 1)
    got = load_weights(p, A.ir)
    assert list(got) == list(A.ir.parameters) and all(a.dtype == np.float32 for a in got.values())
    assert not list(tmp_path.glob(".*tmp*"))     # no temporary files left behind
    # a run directory means its checkpoint.npz
    (tmp_path / "run").mkdir()
    save_checkpoint(tmp_path / "run" / "checkpoint.npz", w)
    assert read_checkpoint(tmp_path / "run").path.endswith("checkpoint.npz")


def test_plain_weights_npz_is_accepted(tmp_path):
    w = A.init_weights(0)
    np.savez(tmp_path / "w.npz", **w)
    got = load_weights(tmp_path / "w.npz", A.ir)
    np.testing.assert_array_equal(got["fc2.bias"], w["fc2.bias"])


def test_strict_loading_names_the_problems(tmp_path):
    p = save_checkpoint(tmp_path / "a.npz", A.init_weights(0))
    with pytest.raises(ArchError, match=r"missing 2: head.weight, head.bias; unexpected 2: fc2.weight, fc2.bias"):
        load_weights(p, B.ir)
    with pytest.raises(ArchError, match=r"fc1.weight is \[8, 4\], the model needs \[6, 4\]"):
        w = A.init_weights(0)
        save_checkpoint(tmp_path / "c.npz", {k: v for k, v in w.items() if "batchnorm" not in k})
        load_weights(tmp_path / "c.npz", C.ir)
    w = A.init_weights(0)
    w["fc2.bias"] = np.array([np.nan, 0, 0], np.float32)
    save_checkpoint(tmp_path / "n.npz", w)
    with pytest.raises(ArchError, match="fc2.bias contains NaN"):
        load_weights(tmp_path / "n.npz", A.ir)


def test_corrupt_truncated_and_pickled_files(tmp_path):
    p = save_checkpoint(tmp_path / "a.npz", A.init_weights(0), meta={"model": "A"})
    data = p.read_bytes()
    for n in (0, 10, len(data) // 2, len(data) - 10):
        (tmp_path / "t.npz").write_bytes(data[:n])
        with pytest.raises(ArchError, match=r"checkpoint '.*' is not (a readable \.npz archive|an \.npy or \.npz file)"):
            load_weights(tmp_path / "t.npz", A.ir)
    np.savez(tmp_path / "o.npz", **{"fc1.weight": np.array([object()] * 3, dtype=object)})
    with pytest.raises(ArchError, match="pickled"):
        load_weights(tmp_path / "o.npz", A.ir)
    bad_meta = dict(np.load(p))
    bad_meta["__meta__"] = np.frombuffer(b"{not json", np.uint8)
    np.savez(tmp_path / "m.npz", **bad_meta)
    with pytest.raises(ArchError, match="metadata is corrupt"):
        read_checkpoint(tmp_path / "m.npz")
    newer = dict(np.load(p))
    newer["__meta__"] = np.frombuffer(json.dumps({"format": "archdsl-checkpoint", "version": 99}).encode(), np.uint8)
    np.savez(tmp_path / "v.npz", **newer)
    with pytest.raises(ArchError, match="newer archdsl"):
        read_checkpoint(tmp_path / "v.npz")
    with pytest.raises(ArchError, match="no checkpoint file"):
        read_checkpoint(tmp_path / "missing.npz")
    with pytest.raises(ArchError, match="directory without a checkpoint.npz"):
        read_checkpoint(tmp_path)


def test_init_from_matches_names(tmp_path):
    src = A.init_weights(1)
    p = save_checkpoint(tmp_path / "a.npz", src)
    w = B.init_weights(0)
    fresh_head = w["head.weight"].copy()
    rep = init_from(p, B.ir, w)
    assert len(rep.matched) == 6 and rep.kept == ["head.weight", "head.bias"]
    assert rep.unused == ["fc2.weight", "fc2.bias"]
    assert "initialised 6 of 8 parameters" in rep.describe(str(p))
    np.testing.assert_array_equal(w["fc1.weight"], src["fc1.weight"])
    np.testing.assert_array_equal(w["head.weight"], fresh_head)
    with pytest.raises(ArchError, match=r"fc1.weight is \[8, 4\] in the checkpoint, \[6, 4\] in the model"):
        init_from(p, C.ir, C.init_weights(0))
    other = save_checkpoint(tmp_path / "z.npz", {"zzz": np.zeros(2, np.float32)})
    with pytest.raises(ArchError, match="no parameter of model A"):
        init_from(other, A.ir, A.init_weights(0))


def test_export_cli_uses_load_weights(tmp_path):
    from archdsl.cli import main
    spec_file = tmp_path / "a.arch"
    spec_file.write_text(SPEC)
    w = A.init_weights(5)
    save_checkpoint(tmp_path / "ck.npz", w)
    assert main(["export", str(spec_file), "--model", "A", "--weights", str(tmp_path / "ck.npz"),
                 "-o", str(tmp_path / "a.onnx")]) == 0
    import onnxruntime as ort
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    got = ort.InferenceSession(str(tmp_path / "a.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, A.executor(w).run({"x": x})["y"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, A.executor(seed=0).run({"x": x})["y"])
    assert main(["export", str(spec_file), "--model", "B", "--weights", str(tmp_path / "ck.npz"),
                 "-o", str(tmp_path / "b.onnx")]) == 1


def test_version_1_checkpoints_are_read_with_named_streams():
    """Before runs were shared (checkpoint version 1) the supervised loop stored its dropout stream
    as `rng` with the shuffle apart, and the GAN loop its position as `in_epoch`."""
    from archdsl.train.run import upgrade_meta
    state = np.random.default_rng(3).bit_generator.state
    shuffle = np.random.default_rng(2).bit_generator.state
    up = upgrade_meta({"epoch": 1, "batch": 2, "step": 9, "rng": state, "shuffle": shuffle})
    assert up["rng"] == {"dropout": state, "shuffle": shuffle}
    gan = {"epoch": 0, "in_epoch": 3, "step": 3, "rng": {"noise": state, "shuffle": shuffle}}
    assert upgrade_meta(gan)["batch"] == 3 and upgrade_meta(gan)["rng"] == gan["rng"]
