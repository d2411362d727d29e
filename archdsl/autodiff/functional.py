"""Every differentiable primitive of the engine in one namespace (``from archdsl.autodiff
import functional as F``), gathered from the modules that define them by theme:

    tensor         arithmetic, matmul, reductions, indexing, reshapes: Tensor's operators
    elementwise    sqrt, maximum/minimum, where, clip, leaky_relu, elu, erf, gelu, silu, hardswish,
                   hardsigmoid, mish, softplus, softsign, log_sigmoid, prelu
    linear         the dense layer (and deferred_weight_grads, for a layer applied at every step)
    reductions     logsumexp, softmax, log_softmax
    losses         softmax_cross_entropy, binary_cross_entropy_with_logits, mse
    shapes         concat, stack, split, unstack, squeeze, expand_dims, broadcast_to, take, pad, roll, tile,
                   resample
    convolution    conv, conv_transpose, pooling
    normalization  batch_norm, layer_norm, group_norm, instance_norm, rms_norm, local_response_norm,
                   dropout, spectral_norm (of a weight)

Nothing inside archdsl/autodiff imports this module, so it closes no import cycle.
"""
from __future__ import annotations

from ._arrays import pad_array
from .convolution import adaptive_avg_pool2d, avg_pool, conv, conv_transpose, global_pool, max_pool, min_pool
from .elementwise import (
    clip, elu, erf, erf_array, gelu, hardsigmoid, hardswish, leaky_relu, log_sigmoid, maximum, minimum, mish, prelu,
    silu, softplus, softsign, sqrt, where,
)
from .linear import deferred_weight_grads, linear
from .losses import binary_cross_entropy_with_logits, mse, softmax_cross_entropy
from .normalization import (
    batch_norm, dropout, group_norm, instance_norm, layer_norm, local_response_norm, rms_norm, spectral_norm,
)
from .reductions import log_softmax, logsumexp, softmax
from .shapes import (
    broadcast_to, concat, expand_dims, pad, resample, resample_matrix, roll, split, squeeze, stack, take, tile, unstack,
)
from .tensor import (
    abs, add, astype, div, exp, flatten, getitem, log, matmul, max, mean, min, mul, neg, pow, relu, reshape,
    sigmoid, sub, sum, tanh, transpose,
)

__all__ = [
    "add", "sub", "mul", "div", "neg", "exp", "log", "sqrt", "pow", "abs",
    "tanh", "sigmoid", "relu", "leaky_relu", "elu", "gelu", "erf", "erf_array",
    "silu", "hardswish", "hardsigmoid", "mish", "softplus", "softsign", "log_sigmoid", "prelu",
    "maximum", "minimum", "where", "clip", "astype",
    "matmul", "linear", "deferred_weight_grads",
    "sum", "mean", "max", "min", "logsumexp",
    "reshape", "transpose", "concat", "split", "stack", "unstack", "getitem", "pad",
    "broadcast_to", "expand_dims", "squeeze", "flatten", "take", "roll", "tile", "resample", "resample_matrix",
    "softmax", "log_softmax",
    "softmax_cross_entropy", "binary_cross_entropy_with_logits", "mse",
    "conv", "conv_transpose", "max_pool", "min_pool", "avg_pool", "global_pool",
    "adaptive_avg_pool2d", "batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm",
    "local_response_norm", "dropout", "spectral_norm", "pad_array",
]
