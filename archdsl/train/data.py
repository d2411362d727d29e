"""Training data: `.npz` files of named arrays.

Arrays are looked up by name: one per model input (the input's own name, e.g. `image`) and one
per loss target (the name used in the loss call, e.g. `label` in `cross_entropy(logits, label)`);
a train section may rename them (`inputs = dict(image="x")`, `targets = dict(label="y")`). The
first axis of every array is the example axis. Everything is checked before training starts, and
every problem names the file and the array:

    missing array (with a did-you-mean), pickled/object arrays (never unpickled), empty arrays or
    scalars, wrong dtype kind, wrong trailing shape for the model input or loss target, NaN/inf,
    class labels out of range, and arrays of different lengths.

Shuffling is seeded: each epoch of a run with seed s visits the examples in the next permutation
drawn from one generator seeded with (s, 2); checkpoints keep its state as of the start of the
epoch, so a run resumed in the middle of an epoch redraws the same order and continues exactly
where it stopped. The train/validation split is drawn from (s, 1).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..datafile import read_arrays
from ..errors import ArchError, did_you_mean
from ..ir.types import TensorType, is_static


@dataclass
class TargetSpec:
    """What a loss expects of its target array, derived from the model output it compares to."""
    name: str              # name in the loss call
    output: TensorType     # type of the model output the loss reads
    kind: str              # "classes" | "binary" | "regression"
    ignore_index: int | None = None


class Dataset:
    """Named arrays of equal length (first axis = examples), already in the dtypes the model wants."""

    def __init__(self, arrays: dict[str, np.ndarray], path: str = "<memory>"):
        self.arrays = arrays
        self.path = path
        lens = {len(a) for a in arrays.values()}
        self.n = lens.pop() if len(lens) == 1 else 0

    def __len__(self) -> int:
        return self.n

    def subset(self, idx: np.ndarray) -> "Dataset":
        return Dataset({k: a[idx] for k, a in self.arrays.items()}, self.path)

    def batch(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {k: a[idx] for k, a in self.arrays.items()}

    def batches(self, batch: int, order: np.ndarray | None = None, start: int = 0):
        """Yield (batch_index, arrays) for batches of `batch` examples in `order` (default: as
        stored), from batch number `start` on; the last batch may be smaller."""
        order = np.arange(self.n) if order is None else order
        for b, i in enumerate(range(start * batch, self.n, batch), start=start):
            yield b, self.batch(order[i:i + batch])

    def num_batches(self, batch: int) -> int:
        return -(-self.n // batch)


def shuffle_rng(seed: int) -> np.random.Generator:
    """The generator whose successive permutations order the epochs of a run with `seed`."""
    return np.random.default_rng([seed & 0xFFFFFFFF, 2])


def split(ds: Dataset, val_split: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """Seeded random split into (train, validation); val_split = fraction held out (0: none)."""
    if not val_split:
        return ds, None
    if not 0.0 < val_split < 1.0:
        raise ArchError(f"val_split must be a fraction in (0, 1), got {val_split}")
    n_val = int(round(len(ds) * val_split))
    if n_val < 1 or n_val >= len(ds):
        raise ArchError(f"val_split {val_split} of {len(ds)} examples in {ds.path} leaves "
                        f"{len(ds) - n_val} for training and {n_val} for validation",
                        hint="use a larger data set or a different val_split")
    perm = np.random.default_rng([seed & 0xFFFFFFFF, 1]).permutation(len(ds))
    return ds.subset(np.sort(perm[n_val:])), ds.subset(np.sort(perm[:n_val]))


# -- loading ---------------------------------------------------------------------------------------

def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of an .npz file, never unpickling, each array's declared size checked against
    the memory limit before it is read (archdsl/datafile.py); unreadable files -> ArchError."""
    path = str(path)
    if not os.path.exists(path):
        raise ArchError(f"no data file '{path}'")
    if os.path.isdir(path):
        raise ArchError(f"data '{path}' is a directory, not an .npz file")
    arrays = read_arrays(path, "data")
    if isinstance(arrays, np.ndarray):
        raise ArchError(f"{path}: expected an .npz archive of named arrays, got a single array",
                        hint="save with np.savez(path, image=x, label=y)")
    return arrays


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _check_trailing(path, key, arr, want: tuple, what: str) -> None:
    """`arr`'s shape after the example axis must match `want` (ints must agree, symbols match any)."""
    got = arr.shape[1:]
    ok = len(got) == len(want) and all(not is_static(w) or int(w) == g for g, w in zip(got, want))
    if not ok:
        raise ArchError(f"{path}: array '{key}' has shape {list(arr.shape)}, but {what} needs "
                        f"[examples, {', '.join(str(d) for d in want)}]" if want else
                        f"{path}: array '{key}' has shape {list(arr.shape)}, but {what} needs [examples]",
                        hint=f"each example must be {_fmt_shape(want)}; got {_fmt_shape(got)}")


def _check_finite(path, key, arr) -> None:
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        val = arr[tuple(bad)]
        raise ArchError(f"{path}: array '{key}' contains {'NaN' if np.isnan(val) else 'inf'} "
                        f"(first at index {tuple(int(i) for i in bad)})",
                        hint="clean or impute the data before training")


def _find(path, files: dict, name: str, what: str, mapping: dict) -> tuple[str, np.ndarray]:
    key = mapping.get(name, name)
    if key not in files:
        hint = did_you_mean(key, files) or (f"arrays in the file: {', '.join(files)}" if files else "the file is empty")
        via = f" (mapped from '{name}')" if key != name else ""
        raise ArchError(f"{path}: no array '{key}'{via} for {what}", hint=hint)
    arr = files[key]
    if arr.ndim == 0:
        raise ArchError(f"{path}: array '{key}' is a scalar; {what} needs one entry per example")
    if len(arr) == 0:
        raise ArchError(f"{path}: array '{key}' is empty (0 examples)")
    if arr.dtype.kind not in "biuf":
        raise ArchError(f"{path}: array '{key}' has dtype {arr.dtype}, {what} needs numbers")
    return key, arr


def load_data(path, model, targets: list[TargetSpec], inputs_map: dict | None = None,
              targets_map: dict | None = None, files: dict | None = None) -> Dataset:
    """Load and check `path` for `model`'s inputs and the loss `targets`; returns a Dataset keyed by
    model-input names and loss-target names. `files` (name -> array) replaces reading the file."""
    path = str(path)
    files = read_npz(path) if files is None else files
    inputs_map, targets_map = inputs_map or {}, targets_map or {}
    out: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    for v in model.inputs:
        what = f"model input '{v.name}' ({v.type})"
        key, arr = _find(path, files, v.name, what, inputs_map)
        if v.type.is_float:
            _check_finite(path, key, arr)
            arr = arr.astype(v.type.np_dtype, copy=False)
        elif v.type.dtype == "bool":
            if arr.dtype.kind != "b":
                raise ArchError(f"{path}: array '{key}' has dtype {arr.dtype}, but {what} needs booleans")
        else:
            if arr.dtype.kind not in "iub":
                raise ArchError(f"{path}: array '{key}' has dtype {arr.dtype}, but {what} needs integers",
                                hint="token ids and indices are stored as integers (np.int64)")
            arr = arr.astype(v.type.np_dtype, copy=False)
        _check_trailing(path, key, arr, tuple(v.type.shape[1:]), what)
        out[v.name] = arr
        source[v.name] = key
    for t in targets:
        what = f"the loss target '{t.name}'"
        key, arr = _find(path, files, t.name, what, targets_map)
        _check_finite(path, key, arr)
        oshape = tuple(t.output.shape[1:])
        if t.kind == "classes":
            C = t.output.shape[-1]
            if arr.dtype.kind == "f" and arr.ndim == len(t.output.shape):
                _check_trailing(path, key, arr, oshape, f"{what} (class probabilities)")
                if (arr < 0).any():
                    raise ArchError(f"{path}: array '{key}' holds negative class probabilities")
                arr = arr.astype(np.float32, copy=False)
            else:
                if arr.dtype.kind not in "iu":
                    raise ArchError(f"{path}: array '{key}' has dtype {arr.dtype}, but {what} of "
                                    f"cross_entropy needs integer class labels",
                                    hint=f"store labels as integers (np.int64), or class probabilities "
                                         f"of shape [examples, {', '.join(map(str, oshape))}]")
                _check_trailing(path, key, arr, oshape[:-1], f"{what} (class labels)")
                if is_static(C):
                    valid = arr if t.ignore_index is None else arr[arr != t.ignore_index]
                    bad = (valid < 0) | (valid >= int(C))
                    if bad.any():
                        raise ArchError(f"{path}: array '{key}' has class label {int(valid[bad][0])}, "
                                        f"outside 0..{int(C) - 1} for {C} classes")
                arr = arr.astype(np.int64, copy=False)
        else:
            if t.kind == "binary" and arr.dtype.kind not in "biuf":
                raise ArchError(f"{path}: array '{key}' has dtype {arr.dtype}, {what} needs 0/1 values")
            if arr.ndim == len(oshape) and oshape and oshape[-1] == 1:
                arr = arr[..., None]           # [M] targets for [N, 1] outputs
            _check_trailing(path, key, arr, oshape, what)
            arr = arr.astype(np.float32, copy=False)
            if t.kind == "binary" and ((arr < 0) | (arr > 1)).any():
                raise ArchError(f"{path}: array '{key}' has values outside [0, 1]; binary_cross_entropy "
                                "needs targets in [0, 1]")
        out[t.name] = arr
        source[t.name] = key
    lens = {source[k]: len(a) for k, a in out.items()}
    if len(set(lens.values())) > 1:
        raise ArchError(f"{path}: arrays have different numbers of examples: "
                        + ", ".join(f"'{k}' {n}" for k, n in lens.items()),
                        hint="the first axis of every array is the example axis")
    return Dataset(out, path)
