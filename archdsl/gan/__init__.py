"""Generative adversarial networks: a `gan` section names a generator and a discriminator model;
archdsl checks them as a pair, trains them against each other on the NumPy engine, checkpoints
both, and samples from the generator on the NumPy engine or ONNX Runtime.

    import archdsl
    from archdsl.gan import train_gan, generate
    spec = archdsl.compile("specs/gan_ring.arch")
    pair = spec.gan()                                  # GanPair: .generator, .discriminator, .config
    result = train_gan(pair, "ring.npz", run_dir="run/")
    samples = generate(pair, result.generator_weights, n=2000, seed=0)

Modules: config (the section's settings), pair (the pair check, summary, drawing), objectives,
loop (the GAN policy of a training run), checkpoint (both models in one file), sampling,
image (PNG grids). Commands reach a gan section through archdsl/targets.py.
"""
from ..lazy import lazy_exports

_EXPORTS = {
    "GanConfig": "config", "GanPair": "pair", "resolve": "pair",
    "train_gan": "loop", "GanTrainer": "loop", "GanResult": "loop",
    "generate": "sampling", "sample_command": "sampling",
    "load_member": "checkpoint", "read_gan_checkpoint": "checkpoint",
    "image_grid": "image", "write_png": "image",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
