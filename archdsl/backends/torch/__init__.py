"""The PyTorch engine: the IR as a `torch.nn.Module` (module.py), its ops' PyTorch forwards
(`torch_forward` in archdsl/ops/*.py, with the kernels they share in kernels.py), readable
standalone code out (export.py), and training on the same `Run` as the NumPy engine (train.py),
on CPU, a GPU, or several processes with DistributedDataParallel (distributed.py).

PyTorch is optional: `pip install 'archdsl[torch]'`. Nothing here imports it until it is used,
and using it without PyTorch installed is an ArchError that names that command.
"""
