"""Sampling from a trained generator, on the NumPy engine or on ONNX Runtime.

    archdsl sample SPEC --weights run/checkpoint.npz -n 64 -o samples.png          # NumPy engine
    archdsl sample SPEC --weights run/checkpoint.npz --device cpu -o samples.npy   # ONNX Runtime
    archdsl sample SPEC --weights generator.onnx -n 64 -o samples.png              # an exported G
                                                              (or --onnx generator.onnx)
--weights takes a GAN checkpoint (run/checkpoint.npz: the generator is read from it), the
generator's plain weights (run/generator.npz), or an exported generator (.onnx, which runs on
ONNX Runtime). --device numpy runs the NumPy engine; cpu, cuda and auto run ONNX Runtime (the
generator is lowered to ONNX in memory with the same weights). Default: numpy, or auto for an
.onnx file.

The noise is `pair.noise(n, np.random.default_rng(seed))` (--seed, default 0), so both engines
see the same noise for the same seed and give the same samples within float rounding (1e-4).
Output: .npy (the samples, float32 [n, ...]), or .png: an image grid for image samples
([n, 1, H, W], [n, 3, H, W]), a scatter plot for 2-D points ([n, 2]).

A conditional generator (a class label input after the noise) samples the classes `--class`
names: `--class 3`, `--class 0,4,7`, or `--class all` (the default: every class of the training
data, which the checkpoint lists), `-n` per class (default 8); a picture has a row per class:

    archdsl sample specs/cgan_digits.arch --weights run/checkpoint.npz --class 3 -n 64 -o threes.png
    archdsl sample specs/cgan_digits.arch --weights run/checkpoint.npz -n 10 -o grid.png   # 10 x 10

`run_chunks` (a model's output on either engine, in chunks) also serves VAE sampling
(archdsl/vae.py).
"""
from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..errors import ArchError
from ..fileio import atomic_path
from . import image

ENGINES = ("numpy", "cpu", "cuda", "auto")
CHUNK = 1024


def noise(pair, n: int, seed: int = 0) -> np.ndarray:
    """The noise `archdsl sample --seed S -n N` feeds the generator."""
    return pair.noise(n, np.random.default_rng(seed))


def generate(pair, weights=None, n: int = 64, seed: int = 0, device: str = "numpy", z: np.ndarray | None = None,
             onnx=None, conditions: dict | None = None, precision: str = "fp32") -> tuple[np.ndarray, dict]:
    """(samples, info): `n` samples of the pair's generator (or one per row of `z`).

    weights: name -> array (the generator's), or None with `onnx` (a path / ModelProto of an
    exported generator). device: "numpy" for the NumPy engine, else the ONNX Runtime device
    ("cpu", "cuda", "auto"), with `precision` (runtime.Session: fp32 = TF32 off, so CUDA
    samples agree with the NumPy engine's). conditions: a conditional generator's other inputs
    (name -> array, one row per sample). info: engine, device, providers, seconds."""
    if z is None:
        if n < 1:
            raise ArchError(f"the number of samples must be at least 1, got {n}")
        z = noise(pair, n, seed)
    feeds = {pair.noise_input.name: np.asarray(z, dtype=np.float32), **(conditions or {})}
    missing = [v.name for v in pair.condition_inputs if v.name not in feeds]
    if missing:
        raise ArchError(f"generator {pair.generator.name} is conditional: it needs {', '.join(missing)} too",
                        hint="archdsl sample takes --class K for class labels")
    return run_chunks(pair.generator, weights, feeds, pair.sample_output.name, device, onnx, precision)


def run_chunks(model, weights, feeds: dict, output: str, device: str, onnx=None,
               precision: str = "fp32") -> tuple[np.ndarray, dict]:
    """(`model`'s output `output` for `feeds`, info), CHUNK rows at a time: on the NumPy engine
    (device "numpy"), or on ONNX Runtime ("cpu", "cuda", "auto"): `model` exported with
    `weights` in memory, or the exported file `onnx`. info: engine, device, providers, seconds.
    Both engines give the same values for the same feeds (within float rounding, 1e-4)."""
    if device not in ENGINES:
        from ..errors import did_you_mean
        raise ArchError(f"unknown device '{device}'", hint=did_you_mean(device, ENGINES)
                        or f"choose one of: {', '.join(ENGINES)}")
    rows = len(next(iter(feeds.values())))
    chunks = [{k: v[i:i + CHUNK] for k, v in feeds.items()} for i in range(0, rows, CHUNK)]
    t0 = time.perf_counter()
    if device == "numpy":
        if onnx is not None:
            raise ArchError("an exported .onnx model runs on ONNX Runtime",
                            hint="use --device cpu, cuda or auto (or pass a checkpoint for the NumPy engine)")
        from ..backends.numpy.executor import NumpyExecutor
        ex = NumpyExecutor(model.ir, weights)
        parts = [ex.run(c, training=False)[output] for c in chunks]
        info = {"engine": "NumPy engine", "device": "numpy", "providers": []}
    else:
        from ..runtime import Session
        src = onnx if onnx is not None else model.to_onnx(weights=weights)
        sess = Session(str(src) if isinstance(src, (str, Path)) else src, device=device, precision=precision)
        in_names = [i.name for i in sess.inputs]
        if sorted(in_names) != sorted(feeds):
            raise ArchError(f"{sess.name} takes inputs {', '.join(in_names)}, but {model.name} takes "
                            f"{', '.join(feeds)}", hint=f"was it exported from this spec's {model.name}?")
        outs = [o.name for o in sess.outputs]
        name = output if output in outs else outs[0]
        parts = [sess.run(c)[name] for c in chunks]
        info = {"engine": "ONNX Runtime", "device": sess.device, "providers": list(sess.providers)}
    samples = np.concatenate(parts).astype(np.float32, copy=False)
    info["seconds"] = time.perf_counter() - t0
    return samples, info


def write_samples(path, samples: np.ndarray, cols: int | None = None) -> str:
    """Write .npy (the array) or .png (image grid, `cols` per row / scatter plot); returns what
    was written."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".npy":
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, samples)
        return f"{len(samples)} samples {list(samples.shape)}"
    if ext == ".png":
        if image.is_image_batch(samples.shape):
            cols = cols or int(np.ceil(np.sqrt(len(samples))))
            grid = image.image_grid(samples, cols=cols)
            image.write_png(path, grid)
            return f"an image grid of {len(samples)} samples ({cols} per row, {grid.shape[1]}x{grid.shape[0]} pixels)"
        if samples.ndim == 2 and samples.shape[1] == 2:
            image.write_png(path, image.scatter(samples))
            return f"a scatter plot of {len(samples)} 2-D samples"
        raise ArchError(f"cannot draw samples of shape {list(samples.shape[1:])} as a picture",
                        hint="PNG output takes images [N, 1, H, W] / [N, 3, H, W] or 2-D points [N, 2]; "
                             "write .npy instead")
    raise ArchError(f"cannot write samples to '{path}': unknown format '{ext or '(none)'}'",
                    hint="use .npy (the samples) or .png (an image grid)")


def sample_options(args, needs: str, hint: str) -> SimpleNamespace:
    """The options `archdsl sample` of a generative model reads: the weights (a checkpoint, plain
    weights, or an .onnx file: `onnx`), the output file (its format checked before any work), n,
    seed and the device (default: numpy, or auto for an .onnx file). `needs` says what is missing
    without weights, `hint` which trained files will do."""
    wpath = getattr(args, "weights", None)
    onnx_file = getattr(args, "onnx", None)
    if onnx_file:
        if wpath:
            raise ArchError("give either --weights (a checkpoint) or --onnx (an exported model), not both")
        wpath = onnx_file
    if not wpath:
        raise ArchError(needs, hint=hint)
    out = getattr(args, "output", None)
    if not out:
        raise ArchError("where to write the samples: -o OUT.npy or -o OUT.png")
    if Path(out).suffix.lower() not in (".npy", ".png"):
        write_samples(out, np.zeros((1, 1), np.float32))    # raises the format error before any work
    onnx = str(wpath) if str(wpath).lower().endswith(".onnx") else None
    if onnx is not None and not Path(onnx).exists():
        raise ArchError(f"no ONNX file '{onnx}'")
    n, seed = getattr(args, "n", None), getattr(args, "seed", None)
    device = getattr(args, "device", None) or ("auto" if onnx else "numpy")
    precision = getattr(args, "precision", None) or "fp32"
    if device == "numpy" and precision != "fp32":
        raise ArchError(f"--precision {precision} applies to ONNX Runtime; the NumPy engine computes in float32",
                        hint="add --device cuda (or cpu, auto)")
    return SimpleNamespace(weights=wpath, onnx=onnx, output=out, n=n, seed=0 if seed is None else int(seed),
                           device=device, precision=precision)


def requested_classes(spec: str | None, known: list | None) -> list[int]:
    """`--class 3`, `--class 0,4,7` or `--class all` (every class of the training data, which a
    conditional GAN's checkpoint keeps); no --class: all of them."""
    if spec is None or str(spec).strip() == "all":
        if not known:
            raise ArchError("which classes? the checkpoint does not list the classes it was trained on",
                            hint="name them: --class 3 or --class 0,1,2")
        return list(known)
    try:
        out = [int(x) for x in str(spec).split(",") if x.strip()]
    except ValueError:
        raise ArchError(f"--class takes class numbers (3, or 0,4,7) or 'all', got {spec!r}") from None
    if not out:
        raise ArchError("--class needs at least one class number")
    if known:
        bad = [c for c in out if c not in known]
        if bad:
            raise ArchError(f"class {bad[0]} is not one the generator was trained on",
                            hint=f"classes: {', '.join(map(str, known))}")
    return out


def sample_command(args, pair) -> int:
    """`archdsl sample` for a gan section's `pair`. args: weights (a checkpoint, a run directory,
    plain generator weights or an .onnx file), onnx (an .onnx file, instead of weights), n,
    output, seed, device (numpy|cpu|cuda|auto|None), classes (`--class`, a conditional
    generator: n samples of each class, one row per class in a picture)."""
    from ..train.checkpoint import read_checkpoint
    from .checkpoint import load_member
    o = sample_options(args, f"sampling gan {pair.name} needs the trained generator: --weights CKPT",
                       "a run's checkpoint.npz or generator.npz (archdsl train), or an exported .onnx")
    classes = getattr(args, "classes", None)
    conditions, cols, label = None, None, ""
    if pair.condition_inputs:
        c = pair.class_input
        if c is None:
            raise ArchError(f"generator {pair.generator.name} takes conditions "
                            f"({', '.join(f'{v.name}: {v.type}' for v in pair.condition_inputs)}) that the command "
                            "line cannot give", hint="--class gives one class label input i64[N]; for other "
                                                     "conditions call archdsl.gan.generate(..., conditions=...)")
        known = None if o.onnx else read_checkpoint(o.weights).meta.get("classes", {}).get(c.name)
        cls = requested_classes(classes, known)
        n = 8 if o.n is None else int(o.n)
        conditions = {c.name: np.repeat(np.asarray(cls, c.type.np_dtype), n)}
        cols = n if len(cls) > 1 else None
        label = f", class{'es' if len(cls) > 1 else ''} {', '.join(map(str, cls))}" + (f" ({n} each)" if len(cls) > 1 else "")
        count = n * len(cls)
    else:
        if classes is not None:
            raise ArchError(f"--class picks classes of a conditional generator; {pair.generator.name} takes only noise")
        count = 64 if o.n is None else int(o.n)
    from ..passes.limits import check_generation
    per_sample = 2 * 4 * int(np.prod([d for d in pair.sample_output.type.shape[1:] if isinstance(d, int)] or [1]))
    check_generation(pair.generator.ir, min(count, CHUNK), None, per_sample * count,    # kept + joined
                     f"drawing {count:,} samples", "ask for fewer samples (-n)")
    weights = None if o.onnx else load_member(o.weights, pair.generator.ir, role="generator")
    samples, info = generate(pair, weights, count, o.seed, o.device, onnx=o.onnx, conditions=conditions,
                             precision=o.precision)
    what = write_samples(o.output, samples, cols)
    on = info["engine"] + (f" on {info['device']}" if info["engine"] == "ONNX Runtime" else "")
    print(f"wrote {o.output}: {what} from generator {pair.generator.name} of gan {pair.name}{label} "
          f"({on}, seed {o.seed}, {info['seconds']:.2f}s)")
    return 0
