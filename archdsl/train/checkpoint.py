"""Checkpoints: one `.npz` holding everything a run needs to go on bit for bit.

    param/<name>     every parameter and buffer of the model (float32), by its IR name
    optim/<slot>/<name>  optimizer state (Adam's m and v, SGD's momentum), per trainable parameter
    __meta__         JSON as UTF-8 bytes (a uint8 array, so nothing is ever pickled):
                     format, version, model, spec file, epoch, batch within the epoch, step,
                     rng state of dropout, optimizer meta, the run's config, history, best val loss

Files are written through `fileio.atomic_path`, so an interrupted save leaves the previous
checkpoint intact, and read with `allow_pickle=False` always. `load_weights` is strict: missing,
extra or mis-shaped parameters, and truncated or corrupt files, are ArchErrors that name them.
A plain `.npz` of name -> array (no `__meta__`) is accepted as weights too, and so are other
frameworks' files (.safetensors, .pt/.pth/.bin, .onnx, Hugging Face folders): archdsl/interop
reads them into the model's names through the mapping beside its spec.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..crashpoints import crash, due
from ..errors import ArchError, did_you_mean
from ..fileio import atomic_path
from ..ir.graph import Model

FORMAT = "archdsl-checkpoint"
VERSION = 2         # 2: the run's random streams by name (train/run.py reads version 1 too)
META_KEY = "__meta__"


@dataclass
class Checkpoint:
    path: str
    weights: dict[str, np.ndarray]
    optim: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def is_full(self) -> bool:
        """A training checkpoint (with metadata), not just a bag of weights (as import-weights writes)."""
        return self.meta.get("format") == FORMAT and self.meta.get("kind") != "weights"


def save_checkpoint(path, weights: dict[str, np.ndarray], optim: dict[str, np.ndarray] | None = None,
                    meta: dict | None = None) -> Path:
    """Write a checkpoint atomically; returns the path."""
    path = Path(path)
    meta = {"format": FORMAT, "version": VERSION, **(meta or {})}
    arrays = {f"param/{k}": np.asarray(v) for k, v in weights.items()}
    arrays.update({f"optim/{k}": np.asarray(v) for k, v in (optim or {}).items()})
    arrays[META_KEY] = np.frombuffer(json.dumps(meta, allow_nan=True).encode("utf-8"), dtype=np.uint8)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        if due("checkpoint"):           # tests: die with half the file written, before the rename
            os.truncate(tmp, os.path.getsize(tmp) // 2)
            crash()
    return path


def _resolve(path) -> str:
    p = str(path)
    if os.path.isdir(p):
        cand = os.path.join(p, "checkpoint.npz")
        if os.path.exists(cand):
            return cand
        raise ArchError(f"'{p}' is a directory without a checkpoint.npz",
                        hint="pass the checkpoint file, e.g. run/checkpoint.npz or run/best.npz")
    if not os.path.exists(p):
        raise ArchError(f"no checkpoint file '{p}'")
    return p


def read_checkpoint(path, model: Model | None = None, strict: bool = True) -> Checkpoint:
    """Read a checkpoint (or a plain .npz of weights). A run directory means its checkpoint.npz.
    Another framework's weights are mapped onto `model` (strictly, or as far as they go for
    --init); the source tensors that no rule takes are listed in meta["unused"].
    Regular files only, never unpickled, every array's declared size checked against the memory
    limit before it is read (archdsl/datafile.py); the metadata's basic fields are checked here,
    the rest by the reader that needs them (metaschema.py)."""
    from ..datafile import read_arrays
    from ..interop.sources import is_foreign
    from .metaschema import BASE, check_meta
    if is_foreign(path):
        return _read_foreign(path, model, strict)
    p = _resolve(path)
    arrays = read_arrays(p, "checkpoint")
    if not isinstance(arrays, dict):
        raise ArchError(f"'{p}' holds a single array, not a checkpoint (.npz of named arrays)")
    meta: dict = {}
    if META_KEY in arrays:
        raw = arrays.pop(META_KEY)
        try:
            meta = json.loads(raw.tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise ArchError(f"'{p}': the checkpoint's metadata is corrupt: {e}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ArchError(f"'{p}' is not an archdsl checkpoint (unknown metadata)")
        check_meta(meta, BASE, p)
        if meta["version"] > VERSION:
            raise ArchError(f"'{p}' was written by a newer archdsl (checkpoint version {meta['version']})")
        weights = {k[len("param/"):]: a for k, a in arrays.items() if k.startswith("param/")}
        optim = {k[len("optim/"):]: a for k, a in arrays.items() if k.startswith("optim/")}
    else:
        weights, optim = arrays, {}
    return Checkpoint(p, weights, optim, meta)


def _read_foreign(path, model: Model | None, strict: bool) -> Checkpoint:
    if model is None:
        raise ArchError(f"'{path}' holds another framework's weights, not an archdsl checkpoint",
                        hint="it is read where the model is known: --weights, --init, or "
                             f"archdsl import-weights SPEC {path} -o weights.npz")
    from ..interop import import_weights
    imp = import_weights(path, model, strict=strict)
    return Checkpoint(str(path), imp.weights, meta={"kind": "weights", "unused": imp.unused + imp.unexpected})


def check_weights(weights: dict[str, np.ndarray], model: Model, path: str) -> dict[str, np.ndarray]:
    """Strict: exactly the model's parameters and buffers, each with its shape, floating, finite."""
    missing = [n for n in model.parameters if n not in weights]
    extra = [n for n in weights if n not in model.parameters]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {_names(missing)}")
    if extra:
        problems.append(f"unexpected {len(extra)}: {_names(extra)}")
    if problems:
        hint = None
        if missing and extra:
            hint = did_you_mean(missing[0], extra)
        raise ArchError(f"'{path}' does not fit model {model.name}: " + "; ".join(problems),
                        hint=hint or "was it trained from another model or spec version? "
                                     "(--init loads matching names only)")
    out = {}
    bad_shape = []
    for name, p in model.parameters.items():
        a = weights[name]
        want = tuple(int(d) for d in p.shape)
        if a.shape != want:
            bad_shape.append(f"{name} is {list(a.shape)}, the model needs {list(want)}")
            continue
        if a.dtype.kind != "f":
            raise ArchError(f"'{path}': parameter {name} has dtype {a.dtype}, expected floating point")
        if not np.isfinite(a).all():
            raise ArchError(f"'{path}': parameter {name} contains NaN or inf")
        out[name] = a.astype(np.float32, copy=False)
    if bad_shape:
        raise ArchError(f"'{path}' does not fit model {model.name}: {len(bad_shape)} parameter(s) "
                        f"with the wrong shape: " + "; ".join(bad_shape[:5]) + (" ..." if len(bad_shape) > 5 else ""))
    return out


def load_weights(path, model: Model) -> dict[str, np.ndarray]:
    """name -> float32 array for every parameter and buffer of `model`, from a checkpoint."""
    ck = read_checkpoint(path, model)   # names and shapes decide, not the model name in the metadata
    return check_weights(ck.weights, model, ck.path)


@dataclass
class InitReport:
    matched: list[str]
    kept: list[str]          # model parameters not in the checkpoint (keep their init)
    unused: list[str]        # checkpoint parameters the model does not have

    def describe(self, path: str) -> str:
        s = f"initialised {len(self.matched)} of {len(self.matched) + len(self.kept)} parameters from {path}"
        if self.kept:
            s += f"; {len(self.kept)} keep their init ({_names(self.kept, 4)})"
        if self.unused:
            s += f"; {len(self.unused)} in the checkpoint unused ({_names(self.unused, 4)})"
        return s


def init_from(path, model: Model, weights: dict[str, np.ndarray]) -> InitReport:
    """Transfer learning: copy every checkpoint array whose name is a parameter of `model` into
    `weights` (in place). Shapes must agree; names that do not match are reported, not errors."""
    ck = read_checkpoint(path, model, strict=False)
    matched, bad = [], []
    for name, p in model.parameters.items():
        if name in ck.weights:
            a = ck.weights[name]
            want = tuple(int(d) for d in p.shape)
            if a.shape != want:
                bad.append(f"{name} is {list(a.shape)} in the checkpoint, {list(want)} in the model")
            elif a.dtype.kind != "f" or not np.isfinite(a).all():
                raise ArchError(f"'{ck.path}': parameter {name} is not finite floating point")
            else:
                weights[name] = a.astype(np.float32)
                matched.append(name)
    if bad:
        raise ArchError(f"cannot initialise model {model.name} from '{ck.path}': "
                        + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""),
                        hint="layers with the same name must have the same shape; rename a changed "
                             "layer (name=\"...\") so it keeps its own init")
    if not matched:
        raise ArchError(f"no parameter of model {model.name} is in '{ck.path}'",
                        hint=f"checkpoint has: {_names(list(ck.weights), 6)}; model has: "
                             f"{_names(list(model.parameters), 6)}")
    kept = [n for n in model.parameters if n not in ck.weights]
    unused = [n for n in ck.weights if n not in model.parameters] + ck.meta.get("unused", [])
    return InitReport(matched, kept, unused)


def _names(names: list[str], k: int = 5) -> str:
    return ", ".join(names[:k]) + (f", ... ({len(names) - k} more)" if len(names) > k else "")
