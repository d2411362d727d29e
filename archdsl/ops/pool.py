"""Pooling: Max/Avg/MinPool{1d,2d}, MaxPool3d, AvgPool3d, Global{Max,Avg,Min}Pool, AdaptiveAvgPool2d.

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

from fractions import Fraction

import numpy as np

from ..autodiff import functional as F
from ..backends.torch.lazy import TF
from ..ir.types import is_static
from .base import Arg, Op, Sample, Window
from .conv import ConvGeometry, _axes_line, _one, _show, as_tuple, out_dim, spatial_names, window_formula


class _Pool(Op):
    family = "pool"
    ndim = 0
    kind = ""        # "max" | "avg" | "min"
    args = (Arg("kernel_size", "ints"), Arg("stride", "ints", None), Arg("padding", "ints", 0),
            Arg("ceil_mode", "bool", False))

    def derive(self, a):
        n, attrs = self.ndim, a.attrs
        k = as_tuple(self, attrs, "kernel_size", n, 1)
        s = k if attrs["stride"] is None else as_tuple(self, attrs, "stride", n, 1)
        p = as_tuple(self, attrs, "padding", n, 0)
        for i in range(n):
            if 2 * p[i] > k[i]:
                raise self.fail(f"padding {_show(attrs['padding'])} must be at most half the kernel "
                                f"{_show(attrs['kernel_size'])}",
                                "a window made only of padding has no value (PyTorch refuses it too)")
        return ConvGeometry(k, s, (1,) * n, p)

    def window(self, a):
        g = a.derived
        return Window("conv", g.k, g.s, g.d)

    def infer(self, a):
        x = a.x
        self.expect_rank(x, self.ndim + 2)
        self.expect_float(x)
        k, s, _, p, _ = a.derived
        spatial = [out_dim(self, x.shape[2 + i], k[i], s[i], p[i], p[i], axis, f"kernel {k[i]}",
                           ceil_mode=a.attrs["ceil_mode"])
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

    def _ceil_dims(self, a) -> list[bool]:
        """Per spatial dim: does ceil_mode give one more window than floor mode here?"""
        k, s, _, p, _ = a.derived
        if not a.attrs["ceil_mode"]:
            return [False] * self.ndim
        out = []
        for i in range(self.ndim):
            size = a.x.shape[2 + i]
            if not is_static(size):
                out.append(True)
                continue
            size = int(size)
            ceil = out_dim(self, size, k[i], s[i], p[i], p[i], "", "", ceil_mode=True)
            out.append(ceil > (size + 2 * p[i] - k[i]) // s[i] + 1)
        return out

    def lower(self, a, g, inputs):
        # ONNX's shape inference before opset 22 rounds ceil_mode up without PyTorch's "no window
        # starts in the right padding" rule (onnxruntime's kernels do apply it). Where that rule
        # fires, ceil mode gives the same windows as floor mode, so such dims are lowered with
        # ceil_mode=0. Pooling is separable (max of maxes; avg divisors are per-dim products), so
        # when some dims need ceil and others not, two nodes pool each group with its own mode.
        k, s, _, p, _ = a.derived
        need = self._ceil_dims(a)
        n = self.ndim
        if all(need) or not any(need):
            groups = [(list(range(n)), all(need))]
        else:
            groups = [([i for i in range(n) if need[i]], True), ([i for i in range(n) if not need[i]], False)]
        x = inputs[0]
        if self.kind == "min":
            x = g.op("Neg", [x])
        for dims, ceil in groups:
            kw = dict(kernel_shape=[k[i] if i in dims else 1 for i in range(n)],
                      strides=[s[i] if i in dims else 1 for i in range(n)],
                      pads=[p[i] if i in dims else 0 for i in range(n)] * 2, ceil_mode=int(ceil))
            if self.kind == "avg":
                x = g.op("AveragePool", [x], count_include_pad=int(a.attrs["count_include_pad"]), **kw)
            else:
                x = g.op("MaxPool", [x], **kw)
        if self.kind == "min":
            x = g.op("Neg", [x])
        return [x]

    def forward(self, a, ctx, inputs, params):
        k, s, _, p, _ = a.derived
        kw = dict(kernel=k, stride=s, padding=p, ceil_mode=a.attrs["ceil_mode"])
        if self.kind == "avg":
            return [F.avg_pool(inputs[0], count_include_pad=a.attrs["count_include_pad"], **kw)]
        return [(F.max_pool if self.kind == "max" else F.min_pool)(inputs[0], **kw)]

    def torch_forward(self, a, ctx, inputs, params):
        k, s, _, p, _ = a.derived
        n, ceil = self.ndim, a.attrs["ceil_mode"]
        if self.kind == "avg":
            pool = (TF.avg_pool1d, TF.avg_pool2d, TF.avg_pool3d)[n - 1]
            return [pool(inputs[0], k, s, p, ceil, a.attrs["count_include_pad"])]
        pool = (TF.max_pool1d, TF.max_pool2d, TF.max_pool3d)[n - 1]
        if self.kind == "min":
            return [-pool(-inputs[0], k, s, p, 1, ceil)]
        return [pool(inputs[0], k, s, p, 1, ceil)]

    def explain(self, a):
        x, y = a.x, a.out_types[0]
        k, s, _, p, _ = a.derived
        ceil = a.attrs["ceil_mode"]
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
    samples = (Sample("x: f32[N, 3, T] -> MaxPool1d(2)"),
               Sample("x: f32[N, 2, 9] -> MaxPool1d(3, stride=2, padding=1, ceil_mode=true)"))


class MaxPool2d(_Pool):
    """Max over windows of [N, C, H, W]."""
    name, ndim, kind = "MaxPool2d", 2, "max"
    samples = (Sample("x: f32[N, 2, 6, 7] -> MaxPool2d(2)"),
               Sample("x: f32[N, 3, 7, 7] -> MaxPool2d(3, stride=2, padding=1)"))


class MaxPool3d(_Pool):
    """Max over windows of [N, C, D, H, W]."""
    name, ndim, kind = "MaxPool3d", 3, "max"
    samples = (Sample("x: f32[N, 2, 4, 4, 6] -> MaxPool3d(2)"),
               Sample("x: f32[N, 2, 5, 5, 4] -> MaxPool3d(3, stride=2, padding=1, ceil_mode=true)"))


class MinPool1d(_Pool):
    """Min over windows of [N, C, L] (ONNX: Neg -> MaxPool -> Neg)."""
    name, ndim, kind = "MinPool1d", 1, "min"
    samples = (Sample("x: f32[N, 3, 8] -> MinPool1d(3, stride=1, padding=1)"),)


class MinPool2d(_Pool):
    """Min over windows of [N, C, H, W] (ONNX: Neg -> MaxPool -> Neg)."""
    name, ndim, kind = "MinPool2d", 2, "min"
    samples = (Sample("x: f32[N, 2, 6, 6] -> MinPool2d(2)"),)


_AVG_ARGS = _Pool.args + (Arg("count_include_pad", "bool", True),)


class AvgPool1d(_Pool):
    """Mean over windows of [N, C, L]."""
    name, ndim, kind = "AvgPool1d", 1, "avg"
    args = _AVG_ARGS
    samples = (Sample("x: f32[N, 3, 8] -> AvgPool1d(3, stride=2, padding=1, count_include_pad=false)"),)


class AvgPool2d(_Pool):
    """Mean over windows of [N, C, H, W]."""
    name, ndim, kind = "AvgPool2d", 2, "avg"
    args = _AVG_ARGS
    samples = (Sample("x: f32[N, 2, 6, 6] -> AvgPool2d(2)"),
               Sample("x: f32[N, 2, 7, 5] -> AvgPool2d(3, stride=2, padding=1, ceil_mode=true)"))


class AvgPool3d(_Pool):
    """Mean over windows of [N, C, D, H, W]."""
    name, ndim, kind = "AvgPool3d", 3, "avg"
    args = _AVG_ARGS
    samples = (Sample("x: f32[N, 2, 4, 4, 4] -> AvgPool3d(2)"),
               Sample("x: f32[N, 2, 5, 4, 5] -> AvgPool3d((3, 2, 3), stride=2, padding=1, count_include_pad=false)"))


class _GlobalPool(Op):
    """Reduce every spatial dim of [N, C, ...] to size 1."""
    family = "pool"
    kind = ""

    def infer(self, a):
        x = a.x
        if x.rank < 3:
            raise self.fail(f"expects an [N, C, ...spatial] input with at least one spatial dim, got {x}",
                            "a [N, C] tensor has nothing left to pool")
        self.expect_float(x)
        return [x.with_shape((*x.shape[:2], *(1,) * (x.rank - 2)))]

    def lower(self, a, g, inputs):
        if self.kind == "avg":
            return [g.op("GlobalAveragePool", inputs)]
        if self.kind == "max":
            return [g.op("GlobalMaxPool", inputs)]
        return [g.op("Neg", [g.op("GlobalMaxPool", [g.op("Neg", inputs)])])]

    def forward(self, a, ctx, inputs, params):
        return [F.global_pool(inputs[0], kind=self.kind)]

    def torch_forward(self, a, ctx, inputs, params):
        dims = tuple(range(2, a.x.rank))
        x = inputs[0]
        if self.kind == "avg":
            return [x.mean(dims, keepdim=True)]
        return [x.amax(dims, keepdim=True) if self.kind == "max" else x.amin(dims, keepdim=True)]

    def explain(self, a):
        x, y = a.x, a.out_types[0]
        what = {"max": "the largest", "avg": "the mean", "min": "the smallest"}[self.kind]
        p, q = ("\u00d7".join(map(str, t.shape[2:])) for t in (x, y))
        return [f"{self.name}: {p} \u2192 {q}: {what} value of each of the {x.shape[1]} channels over all positions"]


class GlobalMaxPool(_GlobalPool):
    """Max over all spatial positions: [N, C, *S] -> [N, C, 1, ...]."""
    name, kind = "GlobalMaxPool", "max"
    samples = (Sample("x: f32[N, 3, T] -> GlobalMaxPool"),)


class GlobalAvgPool(_GlobalPool):
    """Mean over all spatial positions: [N, C, *S] -> [N, C, 1, ...]."""
    name, kind = "GlobalAvgPool", "avg"
    samples = (Sample("x: f32[N, 3, 4, 5] -> GlobalAvgPool"),)


class GlobalMinPool(_GlobalPool):
    """Min over all spatial positions: [N, C, *S] -> [N, C, 1, ...]."""
    name, kind = "GlobalMinPool", "min"
    samples = (Sample("x: f32[N, 2, 6] -> GlobalMinPool"),)


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive pooling windows: bin i covers [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def adaptive_matrix(size: int, out: int, dtype=np.float32) -> np.ndarray:
    """[size, out] averaging matrix: x @ M averages each adaptive bin of the last axis."""
    m = np.zeros((size, out), dtype=dtype)
    for i, (lo, hi) in enumerate(adaptive_bins(size, out)):
        m[lo:hi, i] = 1.0 / (hi - lo)
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
    samples = (Sample("x: f32[N, 2, 7, 5] -> AdaptiveAvgPool2d(3)"),
               Sample("x: f32[N, 2, 6, 4] -> AdaptiveAvgPool2d((3, 2))"))

    def derive(self, a):
        return as_tuple(self, a.attrs, "output_size", 2, 1)     # (h, w)

    def infer(self, a):
        x = a.x
        self.expect_rank(x, 4)
        self.expect_float(x)
        h, w = a.derived
        H, W = x.shape[2:]
        if not (is_static(H) and is_static(W)):
            raise self.fail(f"needs a concrete height and width to place its bins, got {x}",
                            "use GlobalAvgPool for a symbolic spatial size")
        return [x.with_shape((*x.shape[:2], h, w))]

    def window(self, a):
        ins, outs = a.x.shape[2:], a.derived
        k = tuple(max(hi - lo for lo, hi in adaptive_bins(int(i), int(o))) for i, o in zip(ins, outs))
        s = tuple(Fraction(int(i), int(o)) for i, o in zip(ins, outs))
        return Window("adaptive", k, s, (1, 1))

    def describe(self, attrs):
        v = attrs["output_size"]
        return _show(v if isinstance(v, tuple) else (v, v))

    def explain(self, a):
        h, w = a.derived
        H, W = (int(d) for d in a.x.shape[2:])
        if (H, W) == (h, w):
            return [f"{self.name}: already {H}\u00d7{W}, passes through"]
        return [f"{self.name}: {H}\u00d7{W} \u2192 {h}\u00d7{w}: row bin i averages rows \u230ai\u00b7{H}/{h}\u230b up to "
                f"\u2308(i+1)\u00b7{H}/{h}\u2309, column bin j columns \u230aj\u00b7{W}/{w}\u230b up to \u2308(j+1)\u00b7{W}/{w}\u2309"]

    def lower(self, a, g, inputs):
        (x,) = inputs
        h, w = a.derived
        H, W = (int(d) for d in a.x.shape[2:])
        if (H, W) == (h, w):
            return [x]
        if H % h == 0 and W % w == 0:
            k = [H // h, W // w]
            return [g.op("AveragePool", [x], kernel_shape=k, strides=k, pads=[0, 0, 0, 0])]
        dt = a.x.np_dtype
        y = x
        if W != w:
            y = g.op("MatMul", [y, g.const(adaptive_matrix(W, w, dt), hint="bins_w")])
        if H != h:
            y = g.op("MatMul", [g.const(adaptive_matrix(H, h, dt).T.copy(), hint="bins_h"), y])
        return [y]

    def forward(self, a, ctx, inputs, params):
        (x,) = inputs
        if tuple(x.shape[2:]) == a.derived:
            return [x]
        return [F.adaptive_avg_pool2d(x, a.derived)]

    def torch_forward(self, a, ctx, inputs, params):
        if tuple(a.x.shape[2:]) == a.derived:
            return [inputs[0]]
        return [TF.adaptive_avg_pool2d(inputs[0], a.derived)]
