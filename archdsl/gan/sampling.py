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
"""
from __future__ import annotations

import time
from pathlib import Path

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
             onnx=None, precision: str = "fp32") -> tuple[np.ndarray, dict]:
    """(samples, info): `n` samples of the pair's generator (or one per row of `z`).

    weights: name -> array (the generator's), or None with `onnx` (a path / ModelProto of an
    exported generator). device: "numpy" for the NumPy engine, else the ONNX Runtime device
    ("cpu", "cuda", "auto"), with `precision` (runtime.Session: fp32 = TF32 off, so CUDA
    samples agree with the NumPy engine's). info: engine, device, providers, seconds."""
    if device not in ENGINES:
        from ..errors import did_you_mean
        raise ArchError(f"unknown device '{device}'", hint=did_you_mean(device, ENGINES)
                        or f"choose one of: {', '.join(ENGINES)}")
    if z is None:
        if n < 1:
            raise ArchError(f"the number of samples must be at least 1, got {n}")
        z = noise(pair, n, seed)
    z = np.asarray(z, dtype=np.float32)
    zin, out = pair.noise_input.name, pair.sample_output.name
    t0 = time.perf_counter()
    if device == "numpy":
        if onnx is not None:
            raise ArchError("an exported .onnx generator runs on ONNX Runtime",
                            hint="use --device cpu, cuda or auto (or pass a checkpoint for the NumPy engine)")
        from ..backends.numpy.executor import NumpyExecutor
        ex = NumpyExecutor(pair.generator.ir, weights)
        parts = [ex.run({zin: z[i:i + CHUNK]}, training=False)[out] for i in range(0, len(z), CHUNK)]
        info = {"engine": "NumPy engine", "device": "numpy", "providers": []}
    else:
        from ..runtime import Session
        src = onnx if onnx is not None else pair.generator.to_onnx(weights=weights)
        sess = Session(str(src) if isinstance(src, (str, Path)) else src, device=device, precision=precision)
        in_names = [i.name for i in sess.inputs]
        if in_names != [zin]:
            raise ArchError(f"{sess.name} takes inputs {', '.join(in_names)}, but generator "
                            f"{pair.generator.name} takes {zin}", hint="was it exported from this spec's generator?")
        outs = [o.name for o in sess.outputs]
        name = out if out in outs else outs[0]
        parts = [sess.run({zin: z[i:i + CHUNK]})[name] for i in range(0, len(z), CHUNK)]
        info = {"engine": "ONNX Runtime", "device": sess.device, "providers": list(sess.providers)}
    samples = np.concatenate(parts).astype(np.float32, copy=False)
    info["seconds"] = time.perf_counter() - t0
    return samples, info


def write_samples(path, samples: np.ndarray) -> str:
    """Write .npy (the array) or .png (image grid / scatter plot); returns what was written."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".npy":
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, samples)
        return f"{len(samples)} samples {list(samples.shape)}"
    if ext == ".png":
        if image.is_image_batch(samples.shape):
            grid = image.image_grid(samples)
            image.write_png(path, grid)
            cols = int(np.ceil(np.sqrt(len(samples))))
            return f"an image grid of {len(samples)} samples ({cols} per row, {grid.shape[1]}x{grid.shape[0]} pixels)"
        if samples.ndim == 2 and samples.shape[1] == 2:
            image.write_png(path, image.scatter(samples))
            return f"a scatter plot of {len(samples)} 2-D samples"
        raise ArchError(f"cannot draw samples of shape {list(samples.shape[1:])} as a picture",
                        hint="PNG output takes images [N, 1, H, W] / [N, 3, H, W] or 2-D points [N, 2]; "
                             "write .npy instead")
    raise ArchError(f"cannot write samples to '{path}': unknown format '{ext or '(none)'}'",
                    hint="use .npy (the samples) or .png (an image grid)")


def sample_command(args, pair) -> int:
    """`archdsl sample` for a gan section's `pair`. args: weights (a checkpoint, a run directory,
    plain generator weights or an .onnx file), onnx (an .onnx file, instead of weights), n,
    output, seed, device (numpy|cpu|cuda|auto|None)."""
    from .checkpoint import load_member
    wpath = getattr(args, "weights", None)
    onnx_file = getattr(args, "onnx", None)
    if onnx_file:
        if wpath:
            raise ArchError("give either --weights (a checkpoint) or --onnx (an exported generator), not both")
        wpath = onnx_file
    if not wpath:
        raise ArchError(f"sampling gan {pair.name} needs the trained generator: --weights CKPT",
                        hint="a run's checkpoint.npz or generator.npz (archdsl train), or an exported .onnx")
    out = getattr(args, "output", None)
    if not out:
        raise ArchError("where to write the samples: -o OUT.npy or -o OUT.png")
    if Path(out).suffix.lower() not in (".npy", ".png"):
        write_samples(out, np.zeros((1, 1), np.float32))    # raises the format error before any work
    n = getattr(args, "n", None)
    n = 64 if n is None else int(n)
    seed = getattr(args, "seed", None)
    seed = 0 if seed is None else int(seed)
    device = getattr(args, "device", None)
    precision = getattr(args, "precision", None) or "fp32"
    if str(wpath).lower().endswith(".onnx"):
        if not Path(wpath).exists():
            raise ArchError(f"no ONNX file '{wpath}'")
        samples, info = generate(pair, None, n, seed, device or "auto", onnx=str(wpath), precision=precision)
    else:
        weights = load_member(wpath, pair.generator.ir, role="generator")
        if device in (None, "numpy") and precision != "fp32":
            raise ArchError(f"--precision {precision} applies to ONNX Runtime; the NumPy engine computes in float32",
                            hint="add --device cuda (or cpu, auto)")
        samples, info = generate(pair, weights, n, seed, device or "numpy", precision=precision)
    what = write_samples(out, samples)
    on = info["engine"] + (f" on {info['device']}" if info["engine"] == "ONNX Runtime" else "")
    print(f"wrote {out}: {what} from generator {pair.generator.name} of gan {pair.name} "
          f"({on}, seed {seed}, {info['seconds']:.2f}s)")
    return 0
