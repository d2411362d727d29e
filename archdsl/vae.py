"""A VAE: a model trained by its train section, and another model of the file that is its
decoder, sharing the VAE's weights by name.

    block DigitsDecoder(hidden: int) { input z  output z -> Linear(hidden) -> ReLU -> Linear(64) ... }

    model Decoder(latent: int = 8) {                       # the latent -> a sample
      input z: f32[N, latent]
      output recon = z -> DigitsDecoder(256, name="decoder") -> Sigmoid
    }
    model VAE(latent: int = 8) {
      input image: f32[N, 1, 8, 8]
      ...
      z = mu + exp(0.5 * logvar) * (mu -> NormalLike)      # drawn in training, the mean (mu) else
      output recon = z -> DigitsDecoder(256, name="decoder") -> Sigmoid    # same block, same name
    }
    train VAE { loss = dict(recon=..., kl=...)  decoder = Decoder  ... }

The same block applied under the same name in both models gives the same parameter names
(`decoder.linear_1.weight`, ...), so the decoder's weights are the VAE's. Checked at compile
time (`archdsl check`), each error at the section's `decoder` setting:
- the decoder is a model of the file with one floating input (the latent, concrete sizes after
  the batch dim) and one output;
- each of its parameters is one of the VAE's, with the same shape (a did-you-mean otherwise);
- the VAE has an output with the decoder output's name and type: its reconstruction.

`archdsl sample` (archdsl/sample/vae.py, through archdsl/targets.py's VaeTarget) decodes samples of the prior N(0, I), drawn
with --seed, or reconstructs inputs (--reconstruct FILE), on the NumPy engine or on ONNX Runtime
(the decoder, or the VAE, exported with the trained weights; or an .onnx file): a picture (grid
PNG; reconstructions under their inputs, row by row) or the arrays (.npy). A reconstruction runs
the VAE in inference mode, where noise ops give their mean: z = mu.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ArchError, did_you_mean


@dataclass
class Vae:
    spec: object
    section: object          # the VAE's train section
    model: object            # CompiledModel: the VAE
    decoder: object          # CompiledModel: its decoder
    focus: object            # the one of them a command named (export, summary, render)

    @property
    def latent(self):
        return self.decoder.ir.inputs[0]

    @property
    def output(self):
        """The decoder's output, which the VAE also has: the reconstruction."""
        return self.decoder.ir.outputs[0]

    def prior(self, n: int, seed: int = 0) -> np.ndarray:
        """n samples of the prior N(0, I) with the latent's shape (what `archdsl sample --seed` draws)."""
        shape = (int(n),) + tuple(int(d) for d in self.latent.type.shape[1:])
        return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def check_decoder(spec, sec, model) -> Vae:
    """A train section's `decoder` against its model (the module docstring lists the checks)."""
    span = sec.spans.get("decoder", sec.span)
    ref = sec.entries["decoder"]
    name = getattr(ref, "name", None)
    if not isinstance(name, str):
        raise ArchError("decoder names a model of the file, e.g. decoder = Decoder", span)
    if name not in spec.ns.models:
        raise ArchError(f"train {sec.name}: decoder '{name}' is not a model", span,
                        did_you_mean(name, spec.ns.models) or f"models: {', '.join(spec.ns.models)}")
    if name == model.name:
        raise ArchError(f"train {sec.name}: the decoder must be another model than {model.name}", span,
                        "a model that takes the latent and applies the VAE's decoder block under the same name")
    dec = spec.model(name, **spec.applicable(name, model.ir.args))
    d, v = dec.ir, model.ir
    where = f"train {sec.name}: decoder {name}"
    if len(d.inputs) != 1 or len(d.outputs) != 1:
        raise ArchError(f"{where} must take one input, the latent, and have one output; it takes "
                        f"{len(d.inputs)} and has {len(d.outputs)}", span)
    z = d.inputs[0]
    if not z.type.is_float or z.type.rank < 2 or not all(isinstance(s, int) for s in z.type.shape[1:]):
        raise ArchError(f"{where} takes {z.name}: {z.type}; the latent is floating point with concrete sizes after "
                        f"the batch dim, e.g. f32[N, 8]", span)
    missing = [n for n in d.parameters if n not in v.parameters]
    if missing:
        raise ArchError(f"{where} has {len(missing)} parameter(s) that model {v.name} lacks, so their weights "
                        f"would be untrained: {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}", span,
                        did_you_mean(missing[0], list(v.parameters)) or
                        "apply the VAE's decoder block with the same name in both models (name=\"decoder\")")
    for n, p in d.parameters.items():
        if tuple(p.shape) != tuple(v.parameters[n].shape):
            raise ArchError(f"{where}: parameter {n} is {list(p.shape)} there but {list(v.parameters[n].shape)} in "
                            f"model {v.name}", span)
    out = d.outputs[0]
    mine = next((o for o in v.outputs if o.name == out.name), None)
    if mine is None or mine.type != out.type:
        raise ArchError(f"{where} outputs {out.name}: {out.type}, but model {v.name} has "
                        + (f"{out.name}: {mine.type}" if mine else f"no output '{out.name}'")
                        + " (its reconstruction)", span,
                        f"give {v.name} the output {out.name} = the decoder's result on its latent")
    return Vae(spec, sec, model, dec, model)


def find(spec, name: str | None, overrides: dict):
    """The VAE a command acting on `name` means (the model a train section with a decoder
    trains, or that decoder; no name: the file's first such section), or None."""
    secs = [s for s in spec.sections.get("train", []) if "decoder" in s.entries]
    for sec in secs:
        dec = getattr(sec.entries["decoder"], "name", None)
        if name is None or name in (sec.name, dec):
            unknown = [k for k in overrides if k not in spec.applicable(sec.name, overrides)
                       and k not in spec.applicable(dec, overrides)]
            if unknown:
                raise ArchError(f"neither {sec.name} nor {dec} has a parameter '{unknown[0]}' (--set)")
            model = spec.model(sec.name, **spec.applicable(sec.name, overrides))
            vae = check_decoder(spec, sec, model)
            if name == dec:
                vae.focus = vae.decoder
            return vae
    return None
