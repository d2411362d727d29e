"""Pooling: Max/Avg/MinPool{1d,2d}, Global{Max,Avg,Min}Pool, AdaptiveAvgPool2d.

Windowed pools follow PyTorch: stride defaults to the kernel, padding is symmetric and at most
half the kernel, ceil_mode rounds the output size up but never starts a window in the right
padding. Max pooling pads with -inf; average pooling counts the zero padding in the divisor
when count_include_pad (PyTorch's default), never the ceil_mode overhang. ONNX has no MinPool:
it lowers as Neg -> MaxPool -> Neg (min(x) = -max(-x)), which also pads with +inf as it should.

Global pools reduce every spatial dim and keep it as size 1, like ONNX, so
`-> GlobalMaxPool -> Flatten` gives [N, C] (max-over-time pooling in a text CNN works on a
symbolic length T).
"""
from __future__ import annotations

import numpy as np

from ..autodiff import functional as F
from ..ir.types import is_static
from .base import Arg, Op
from .conv import _axes_line, _one, _show, as_tuple, out_dim, spatial_names, window_formula


class _Pool(Op):
    family = "pool"
    ndim = 0
    kind = ""        # "max" | "avg" | "min"
    args = (Arg("kernel_size", "ints"), Arg("stride", "ints", None), Arg("padding", "ints", 0),
            Arg("ceil_mode", "bool", False))

    def _geometry(self, attrs):
        n = self.ndim
        k = as_tuple(self, attrs, "kernel_size", n, 1)
        s = k if attrs["stride"] is None else as_tuple(self, attrs, "stride", n, 1)
        p = as_tuple(self, attrs, "padding", n, 0)
        for i in range(n):
            if 2 * p[i] > k[i]:
                raise self.fail(f"padding {_show(attrs['padding'])} must be at most half the kernel "
                                f"{_show(attrs['kernel_size'])}",
                                "a window made only of padding has no value (PyTorch refuses it too)")
        return k, s, p

    def infer(self, attrs, in_types):
        (x,) = in_types
        self.expect_rank(x, self.ndim + 2)
        self.expect_float(x)
        k, s, p = self._geometry(attrs)
        spatial = [out_dim(self, x.shape[2 + i], k[i], s[i], p[i], p[i], axis, f"kernel {k[i]}",
                           ceil_mode=attrs["ceil_mode"])
                   for i, axis in enumerate(spatial_names(self.ndim))]
        return [x.with_shape((*x.shape[:2], *spatial))]

    def describe(self, attrs):
        parts = [f"k={_show(attrs['kernel_size'])}"]
        if attrs["stride"] is not None and attrs["stride"] != attrs["kernel_size"]:
            parts.append(f"s={_show(attrs['stride'])}")
        if attrs["padding"] not in (0, (0,) * self.ndim):
            parts.append(f"p={_show(attrs['padding'])}")
        if attrs["ceil_mode"]:
            parts.append("ceil")
        if attrs.get("count_include_pad") is False:
            parts.append("exclude pad")
        return ", ".join(parts)

    def _ceil_dims(self, attrs, shape) -> list[bool]:
        """Per spatial dim: does ceil_mode give one more window than floor mode here?"""
        k, s, p = self._geometry(attrs)
        if not attrs["ceil_mode"]:
            return [False] * self.ndim
        out = []
        for i in range(self.ndim):
            size = shape[2 + i]
            if not is_static(size):
                out.append(True)
                continue
            size = int(size)
            ceil = out_dim(self, size, k[i], s[i], p[i], p[i], "", "", ceil_mode=True)
            out.append(ceil > (size + 2 * p[i] - k[i]) // s[i] + 1)
        return out

    def lower(self, node, b, inputs):
        # ONNX's shape inference before opset 22 rounds ceil_mode up without PyTorch's "no window
        # starts in the right padding" rule (onnxruntime's kernels do apply it). Where that rule
        # fires, ceil mode gives the same windows as floor mode, so such dims are lowered with
        # ceil_mode=0. Pooling is separable (max of maxes; avg divisors are per-dim products), so
        # when some dims need ceil and others not, two nodes pool each group with its own mode.
        k, s, p = self._geometry(node.attrs)
        need = self._ceil_dims(node.attrs, node.inputs[0].type.shape)
        n = self.ndim
        if all(need) or not any(need):
            groups = [(list(range(n)), all(need))]
        else:
            groups = [([i for i in range(n) if need[i]], True), ([i for i in range(n) if not need[i]], False)]
        x = inputs[0]
        if self.kind == "min":
            x = b.op("Neg", [x])
        for dims, ceil in groups:
            a = dict(kernel_shape=[k[i] if i in dims else 1 for i in range(n)],
                     strides=[s[i] if i in dims else 1 for i in range(n)],
                     pads=[p[i] if i in dims else 0 for i in range(n)] * 2, ceil_mode=int(ceil))
            if self.kind == "avg":
                x = b.op("AveragePool", [x], count_include_pad=int(node.attrs["count_include_pad"]), **a)
            else:
                x = b.op("MaxPool", [x], **a)
        if self.kind == "min":
            x = b.op("Neg", [x])
        return [x]

    def forward(self, node, ctx, inputs, params):
        k, s, p = self._geometry(node.attrs)
        kw = dict(kernel=k, stride=s, padding=p, ceil_mode=node.attrs["ceil_mode"])
        if self.kind == "avg":
            return [F.avg_pool(inputs[0], count_include_pad=node.attrs["count_include_pad"], **kw)]
        return [(F.max_pool if self.kind == "max" else F.min_pool)(inputs[0], **kw)]

    def explain(self, attrs, in_types, out_types):
        (x,), (y,) = in_types, out_types
        k, s, p = self._geometry(attrs)
        ceil = attrs["ceil_mode"]
        head = f"{self.name} k={_one(k)} s={_one(s)} p={_one(p)}" + (" ceil" if ceil else "")
        formulas = []
        for i in range(self.ndim):
            size, out = x.shape[2 + i], y.shape[2 + i]
            f = window_formula(size, out, k[i], s[i], 1, p[i], p[i], ceil=ceil)
            if ceil and is_static(size) and out != -(-(int(size) + 2 * p[i] - k[i]) // s[i]) + 1:
                f += " (the last window would start in the padding: dropped)"
            formulas.append(f)
        return [_axes_line(head, formulas, self.ndim) + f"; C = {x.shape[1]} (each channel on its own)"]


class MaxPool1d(_Pool):
    """Max over windows of [N, C, L]."""
    name, ndim, kind = "MaxPool1d", 1, "max"


class MaxPool2d(_Pool):
    """Max over windows of [N, C, H, W]."""
    name, ndim, kind = "MaxPool2d", 2, "max"


class MinPool1d(_Pool):
    """Min over windows of [N, C, L] (ONNX: Neg -> MaxPool -> Neg)."""
    name, ndim, kind = "MinPool1d", 1, "min"


class MinPool2d(_Pool):
    """Min over windows of [N, C, H, W] (ONNX: Neg -> MaxPool -> Neg)."""
    name, ndim, kind = "MinPool2d", 2, "min"


_AVG_ARGS = _Pool.args + (Arg("count_include_pad", "bool", True),)


class AvgPool1d(_Pool):
    """Mean over windows of [N, C, L]."""
    name, ndim, kind = "AvgPool1d", 1, "avg"
    args = _AVG_ARGS


class AvgPool2d(_Pool):
    """Mean over windows of [N, C, H, W]."""
    name, ndim, kind = "AvgPool2d", 2, "avg"
    args = _AVG_ARGS


class _GlobalPool(Op):
    """Reduce every spatial dim of [N, C, ...] to size 1."""
    family = "pool"
    kind = ""

    def infer(self, attrs, in_types):
        (x,) = in_types
        if x.rank < 3:
            raise self.fail(f"expects an [N, C, ...spatial] input with at least one spatial dim, got {x}",
                            "a [N, C] tensor has nothing left to pool")
        self.expect_float(x)
        return [x.with_shape((*x.shape[:2], *(1,) * (x.rank - 2)))]

    def lower(self, node, b, inputs):
        if self.kind == "avg":
            return [b.op("GlobalAveragePool", inputs)]
        if self.kind == "max":
            return [b.op("GlobalMaxPool", inputs)]
        return [b.op("Neg", [b.op("GlobalMaxPool", [b.op("Neg", inputs)])])]

    def forward(self, node, ctx, inputs, params):
        return [F.global_pool(inputs[0], kind=self.kind)]

    def explain(self, attrs, in_types, out_types):
        (x,), (y,) = in_types, out_types
        what = {"max": "the largest", "avg": "the mean", "min": "the smallest"}[self.kind]
        a, b = ("\u00d7".join(map(str, t.shape[2:])) for t in (x, y))
        return [f"{self.name}: {a} \u2192 {b}: {what} value of each of the {x.shape[1]} channels over all positions"]


class GlobalMaxPool(_GlobalPool):
    """Max over all spatial positions: [N, C, *S] -> [N, C, 1, ...]."""
    name, kind = "GlobalMaxPool", "max"


class GlobalAvgPool(_GlobalPool):
    """Mean over all spatial positions: [N, C, *S] -> [N, C, 1, ...]."""
    name, kind = "GlobalAvgPool", "avg"


class GlobalMinPool(_GlobalPool):
    """Min over all spatial positions: [N, C, *S] -> [N, C, 1, ...]."""
    name, kind = "GlobalMinPool", "min"


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive pooling windows: bin i covers [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def adaptive_matrix(size: int, out: int, dtype=np.float32) -> np.ndarray:
    """[size, out] averaging matrix: x @ M averages each adaptive bin of the last axis."""
    m = np.zeros((size, out), dtype=dtype)
    for i, (a, e) in enumerate(adaptive_bins(size, out)):
        m[a:e, i] = 1.0 / (e - a)
    return m


class AdaptiveAvgPool2d(Op):
    """Average [N, C, H, W] into a fixed [N, C, h, w] grid whatever H, W are (PyTorch's bins).

    Lowering: nothing when (H, W) == (h, w) (torchvision's AlexNet on a 6x6 map); one
    AveragePool with kernel = stride = (H/h, W/w) when both divide; otherwise two MatMuls
    with constant averaging matrices ([N,C,H,W] @ [W,w], then [h,H] @ that), which is exact
    for PyTorch's overlapping, uneven bins.
    """
    name = "AdaptiveAvgPool2d"
    family = "pool"
    args = (Arg("output_size", "ints"),)

    def _out(self, attrs):
        return as_tuple(self, attrs, "output_size", 2, 1)

    def infer(self, attrs, in_types):
        (x,) = in_types
        self.expect_rank(x, 4)
        self.expect_float(x)
        h, w = self._out(attrs)
        H, W = x.shape[2:]
        if not (is_static(H) and is_static(W)):
            raise self.fail(f"needs a concrete height and width to place its bins, got {x}",
                            "use GlobalAvgPool for a symbolic spatial size")
        return [x.with_shape((*x.shape[:2], h, w))]

    def describe(self, attrs):
        return _show(self._out(attrs))

    def explain(self, attrs, in_types, out_types):
        (x,) = in_types
        h, w = self._out(attrs)
        H, W = (int(d) for d in x.shape[2:])
        if (H, W) == (h, w):
            return [f"{self.name}: already {H}\u00d7{W}, passes through"]
        return [f"{self.name}: {H}\u00d7{W} \u2192 {h}\u00d7{w}: row bin i averages rows \u230ai\u00b7{H}/{h}\u230b up to "
                f"\u2308(i+1)\u00b7{H}/{h}\u2309, column bin j columns \u230aj\u00b7{W}/{w}\u230b up to \u2308(j+1)\u00b7{W}/{w}\u2309"]

    def lower(self, node, b, inputs):
        (x,) = inputs
        h, w = self._out(node.attrs)
        H, W = (int(d) for d in node.inputs[0].type.shape[2:])
        if (H, W) == (h, w):
            return [x]
        if H % h == 0 and W % w == 0:
            k = [H // h, W // w]
            return [b.op("AveragePool", [x], kernel_shape=k, strides=k, pads=[0, 0, 0, 0])]
        dt = node.inputs[0].type.np_dtype
        y = x
        if W != w:
            y = b.op("MatMul", [y, b.const(adaptive_matrix(W, w, dt), hint="bins_w")])
        if H != h:
            y = b.op("MatMul", [b.const(adaptive_matrix(H, h, dt).T.copy(), hint="bins_h"), y])
        return [y]

    def forward(self, node, ctx, inputs, params):
        (x,) = inputs
        h, w = self._out(node.attrs)
        if tuple(x.shape[2:]) == (h, w):
            return [x]
        return [F.adaptive_avg_pool2d(x, (h, w))]
