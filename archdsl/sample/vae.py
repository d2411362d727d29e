"""`archdsl sample` for a VAE (archdsl/vae.py: the VAE and its decoder, checked): samples of the
prior decoded, or inputs reconstructed, on the NumPy engine or ONNX Runtime."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ArchError


def vae_weights(vae, path, model) -> dict:
    """`model`'s weights (the VAE's or the decoder's, which are the VAE's by name) from a
    checkpoint or weights file of the VAE."""
    from ..train.checkpoint import check_weights, read_checkpoint
    ck = read_checkpoint(path, vae.model.ir)
    w = ck.weights if model is vae.model else {k: v for k, v in ck.weights.items() if k in model.ir.parameters}
    return check_weights(w, model.ir, ck.path)


def sample_command(args, vae) -> int:
    """`archdsl sample` for a VAE: -n samples of the prior decoded (default 64), or with
    --reconstruct FILE the inputs in FILE reconstructed (the first -n of them)."""
    from ..gan.sampling import run_chunks, sample_options, write_samples
    o = sample_options(args, f"sampling VAE {vae.model.name} needs its trained weights: --weights CKPT",
                       "a run's checkpoint.npz or best.npz (archdsl train), or an exported .onnx (the decoder; with "
                       "--reconstruct the VAE)")
    if getattr(args, "classes", None) is not None:
        raise ArchError("--class picks the classes of a conditional GAN; a VAE samples its prior")
    recon_file = getattr(args, "reconstruct", None)
    if recon_file:
        model = vae.model
        inputs = _inputs(recon_file, model.ir, o.n)
        weights = None if o.onnx else vae_weights(vae, o.weights, model)
        out, info = run_chunks(model, weights, inputs, vae.output.name, o.device, o.onnx, o.precision)
        first = inputs[model.ir.inputs[0].name]
        samples, cols = out, None
        if Path(o.output).suffix.lower() == ".png" and first.shape == out.shape:
            samples, cols = interleave(first, out)
        what = write_samples(o.output, samples, cols)
        done = f"{len(out)} reconstructions by {model.name}" + (", each under its input" if cols else "")
    else:
        n = 64 if o.n is None else int(o.n)
        weights = None if o.onnx else vae_weights(vae, o.weights, vae.decoder)
        out, info = run_chunks(vae.decoder, weights, {vae.latent.name: vae.prior(n, o.seed)}, vae.output.name,
                               o.device, o.onnx, o.precision)
        what = write_samples(o.output, out)
        done = f"{n} samples of the prior N(0, I) decoded by {vae.decoder.name}, seed {o.seed}"
    on = info["engine"] + (f" on {info['device']}" if info["engine"] == "ONNX Runtime" else "")
    print(f"wrote {o.output}: {what}: {done} ({on}, {info['seconds']:.2f}s)")
    return 0


def interleave(inputs: np.ndarray, recon: np.ndarray, cols: int = 8) -> tuple[np.ndarray, int]:
    """Rows of `cols` inputs, each followed by the row of their reconstructions."""
    rows = []
    for i in range(0, len(inputs), cols):
        a, b = inputs[i:i + cols], recon[i:i + cols]
        pad = cols - len(a)
        if pad:
            blank = np.zeros((pad,) + a.shape[1:], a.dtype)
            a, b = np.concatenate([a, blank]), np.concatenate([b, blank])
        rows += [a, b]
    return np.concatenate(rows), cols


def _inputs(path, ir, n) -> dict:
    """The model's inputs from an .npz (arrays named after them) or an .npy (a model with one
    input), checked as training data is; the first n rows."""
    from ..train.data import load_data, read_npz
    path = str(path)
    if path.lower().endswith(".npy"):
        if len(ir.inputs) != 1:
            raise ArchError(f"model {ir.name} takes {len(ir.inputs)} inputs; give them in an .npz named "
                            f"{', '.join(v.name for v in ir.inputs)}")
        if not Path(path).exists():
            raise ArchError(f"no file '{path}'")
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise ArchError(f"'{path}' is not a readable .npy array: {e}") from None
        files = {ir.inputs[0].name: arr}
    else:
        files = read_npz(path)
    ds = load_data(path, ir, [], files=files)
    rows = len(ds) if n is None else min(int(n), len(ds))
    return {k: a[:rows] for k, a in ds.arrays.items()}
