"""Training on the NumPy engine: losses, optimizers, loops, checkpoints."""
