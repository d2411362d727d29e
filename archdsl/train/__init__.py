"""Training on the NumPy engine: losses, optimizers, data, checkpoints, the run (run.py: what every
kind of training shares) and the supervised policy (loop.py).

    import archdsl
    from archdsl.train import train
    spec = archdsl.compile("specs/digits_cnn.arch")
    result = train(spec.model(), "digits_train.npz", run_dir="run/", epochs=5)   # follows the train section
    spec.model().to_onnx("digits.onnx", weights=result.weights)

Names are imported on first use, so `archdsl check` (whose parser registers `archdsl train`) does
not pay for the training stack.
"""
from ..lazy import lazy_exports

_EXPORTS = {
    "train": "loop", "Trainer": "loop", "TrainResult": "loop", "Run": "run",
    "TrainConfig": "config", "config_for": "config",
    "Dataset": "data", "load_data": "data",
    "load_weights": "checkpoint", "read_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "cross_entropy": "losses", "binary_cross_entropy": "losses", "mse": "losses",
    "SGD": "optim", "Adam": "optim", "AdamW": "optim", "clip_grad_norm": "optim",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
