"""Training data from .npz files: mapping by name, seeded split and batching, and every error names
the file and the array."""
import numpy as np
import pytest

import archdsl
from archdsl.errors import ArchError
from archdsl.ir.types import TensorType
from archdsl.train.data import Dataset, TargetSpec, load_data, shuffle_rng, split

SPEC = """
model Net() {
  input image: f32[N, 1, 4, 4]
  input tokens: i64[N, 3]
  e = tokens -> Embedding(10, 16) -> Flatten
  x = image -> Flatten
  output logits = (x, e) -> Concat(axis=1) -> Linear(5)
}
"""
MODEL = archdsl.compile(SPEC).model().ir
CLASSES = [TargetSpec("label", TensorType("f32", (MODEL.outputs[0].type.shape)), "classes")]


def good(n=6):
    rng = np.random.default_rng(0)
    return {"image": rng.random((n, 1, 4, 4)).astype(np.float32),
            "tokens": rng.integers(0, 10, (n, 3)),
            "label": rng.integers(0, 5, n)}


def write(tmp_path, **arrays):
    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    return p


def load(tmp_path, targets=CLASSES, **arrays):
    return load_data(write(tmp_path, **arrays), MODEL, targets)


def err(tmp_path, match, targets=CLASSES, **arrays):
    with pytest.raises(ArchError, match=match) as e:
        load(tmp_path, targets, **arrays)
    assert "d.npz" in str(e.value)
    return e.value


def test_loads_and_converts(tmp_path):
    d = good()
    d["image"] = d["image"].astype(np.float64)
    ds = load(tmp_path, **d, extra=np.zeros(3))
    assert len(ds) == 6
    assert ds.arrays["image"].dtype == np.float32 and ds.arrays["tokens"].dtype == np.int64
    assert set(ds.arrays) == {"image", "tokens", "label"}


def test_mapping_by_name(tmp_path):
    d = good()
    p = write(tmp_path, x=d["image"], tokens=d["tokens"], y=d["label"])
    ds = load_data(p, MODEL, CLASSES, inputs_map={"image": "x"}, targets_map={"label": "y"})
    np.testing.assert_array_equal(ds.arrays["label"], d["label"])


def test_missing_array_did_you_mean(tmp_path):
    d = good()
    e = err(tmp_path, "no array 'image' for model input 'image'", images=d["image"], tokens=d["tokens"],
            label=d["label"])
    assert "did you mean 'images'" in e.format()
    d.pop("label")
    err(tmp_path, "no array 'label' for the loss target 'label'", **d)


def test_wrong_dtype_kinds(tmp_path):
    d = good()
    err(tmp_path, "'tokens' has dtype float64, but model input 'tokens'",
        **{**d, "tokens": d["tokens"].astype(np.float64)})
    err(tmp_path, "'label' has dtype float64.*integer class labels", **{**d, "label": d["label"].astype(np.float64)})
    err(tmp_path, "'image' has dtype <U1", **{**d, "image": np.array(["a"] * 6)})


def test_wrong_trailing_shape(tmp_path):
    d = good()
    e = err(tmp_path, r"'image' has shape \[6, 1, 4, 5\].*model input 'image'",
            **{**d, "image": np.zeros((6, 1, 4, 5), np.float32)})
    assert "[1, 4, 4]" in e.format()
    err(tmp_path, r"'label' has shape \[6, 2\]", **{**d, "label": np.zeros((6, 2), np.int64)})


def test_nan_inf_empty_lengths_labels(tmp_path):
    d = good()
    img = d["image"].copy()
    img[2, 0, 1, 3] = np.nan
    err(tmp_path, r"'image' contains NaN \(first at index \(2, 0, 1, 3\)\)", **{**d, "image": img})
    img[2, 0, 1, 3] = np.inf
    err(tmp_path, "'image' contains inf", **{**d, "image": img})
    err(tmp_path, "'image' is empty", **{**d, "image": np.zeros((0, 1, 4, 4), np.float32)})
    err(tmp_path, "'image' is a scalar", **{**d, "image": np.float32(1)})
    err(tmp_path, "different numbers of examples: 'image' 6, 'tokens' 6, 'label' 5", **{**d, "label": d["label"][:5]})
    err(tmp_path, "class label 7, outside 0..4", **{**d, "label": np.array([0, 1, 7, 2, 3, 4])})


def test_pickled_object_arrays_are_refused(tmp_path):
    d = good()
    e = err(tmp_path, "'label' holds Python objects", **{**d, "label": np.array([{"a": 1}] * 6, dtype=object)})
    assert "never unpickles" in e.message


def test_unreadable_files(tmp_path):
    with pytest.raises(ArchError, match="no data file"):
        load_data(tmp_path / "nope.npz", MODEL, CLASSES)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(ArchError, match="not a readable .npz"):
        load_data(bad, MODEL, CLASSES)
    full = write(tmp_path, **good(50))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(full.read_bytes()[:300])
    with pytest.raises(ArchError, match="truncated or corrupt"):
        load_data(cut, MODEL, CLASSES)
    single = tmp_path / "one.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ArchError, match="single array"):
        load_data(single, MODEL, CLASSES)


def test_binary_and_regression_targets(tmp_path):
    m = archdsl.compile("model B() {\n input x: f32[N, 2]\n output logit = x -> Linear(1)\n}").model().ir
    out = m.outputs[0].type
    x = np.zeros((4, 2), np.float32)
    p = tmp_path / "b.npz"
    np.savez(p, x=x, y=np.array([0, 1, 1, 0]))
    ds = load_data(p, m, [TargetSpec("y", out, "binary")])
    assert ds.arrays["y"].shape == (4, 1) and ds.arrays["y"].dtype == np.float32
    np.savez(p, x=x, y=np.array([0, 2, 1, 0]))
    with pytest.raises(ArchError, match="outside \\[0, 1\\]"):
        load_data(p, m, [TargetSpec("y", out, "binary")])
    np.savez(p, x=x, y=np.array([0.5, 2, 1, -3]))
    assert load_data(p, m, [TargetSpec("y", out, "regression")]).arrays["y"].shape == (4, 1)


def test_split_and_batches_are_seeded():
    ds = Dataset({"a": np.arange(10), "b": np.arange(10) * 2})
    tr, va = split(ds, 0.3, seed=0)
    tr2, va2 = split(ds, 0.3, seed=0)
    assert len(tr) == 7 and len(va) == 3
    np.testing.assert_array_equal(va.arrays["a"], va2.arrays["a"])
    assert sorted(np.concatenate([tr.arrays["a"], va.arrays["a"]])) == list(range(10))
    np.testing.assert_array_equal(tr.arrays["b"], tr.arrays["a"] * 2)
    order = shuffle_rng(0).permutation(10)
    np.testing.assert_array_equal(order, shuffle_rng(0).permutation(10))
    assert not np.array_equal(order, shuffle_rng(1).permutation(10))
    bs = list(ds.batches(4, order))
    assert [len(b["a"]) for _, b in bs] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b["a"] for _, b in bs]), order)
    assert [i for i, _ in ds.batches(4, order, start=1)] == [1, 2]
    with pytest.raises(ArchError, match="val_split"):
        split(Dataset({"a": np.arange(2)}), 0.1, 0)
