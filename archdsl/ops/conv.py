"""Convolutions: Conv1d/2d/3d, ConvTranspose1d/2d/3d (PyTorch layouts and defaults).

Layouts: input [N, C, L], [N, C, H, W] or [N, C, D, H, W]; weight [C_out, C_in/groups, *k] for a convolution and
[C_in, C_out/groups, *k] for a transposed one (what PyTorch and ONNX both use, so a checkpoint
loads unchanged). Spatial dims may be symbolic (a Conv1d(k=3) over T gives T-2); the channel
dim must be concrete, since it sizes the weight.

Padding is kept per side, `((begin, end), ...)`, because 'same' with an even effective kernel
is asymmetric: total = dilation*(k-1), begin = total//2, end = the rest (PyTorch's convention),
which ONNX's explicit `pads` = [begin..., end...] expresses exactly (no auto_pad).

The helpers here (`as_tuple`, `out_dim`, `spatial_names`) are shared with pool.py.

`spectral_norm=true` (dense.py says how) sees a convolution's weight as [C_out, rest] and a
transposed one's as [C_out/groups, rest] (dim 1), as PyTorch does.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from ..autodiff import functional as F
from ..backends.torch.lazy import TF
from ..ir.graph import ParamSpec
from ..ir.types import DimExpr, Sym, is_static
from .base import DOT, MINUS, Arg, Op, Sample, Window
from .dense import (SPECTRAL_NORM, spectral_explain, spectral_onnx, spectral_params, spectral_torch_weight,
                    spectral_weight)

_AXES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}


def spatial_names(n: int) -> tuple[str, ...]:
    return _AXES[n]


def as_tuple(op: Op, attrs: dict, name: str, n: int, minimum: int) -> tuple[int, ...]:
    """Attribute `name` (an int or n ints) as an n-tuple, each value >= minimum."""
    v = attrs[name]
    vals = tuple(v) if isinstance(v, (tuple, list)) else (v,) * n
    if len(vals) != n:
        raise op.fail(f"{name} must be an int or {n} ints (one per spatial dim), got {_show(v)}",
                      f"{op.name} works on {n} spatial dim{'s' if n > 1 else ''}")
    bad = [x for x in vals if int(x) < minimum]
    if bad:
        raise op.fail(f"{name} must be >= {minimum}, got {_show(v)}")
    return tuple(int(x) for x in vals)


def _show(v) -> str:
    """An attribute value as written in .arch: (3, 3), 'same', 2."""
    if isinstance(v, (tuple, list)):
        return "(" + ", ".join(map(str, v)) + ")"
    return repr(v) if isinstance(v, str) else str(v)


def out_dim(op: Op, size, span: int, stride: int, pb: int, pe: int, axis: str, what: str,
            ceil_mode: bool = False):
    """Output size of a sliding window of `span` (= dilation*(k-1)+1) elements over `size`
    (int or symbolic) padded by (pb, pe): floor((size + pb + pe - span) / stride) + 1.

    With ceil_mode (pools, symmetric padding) PyTorch rounds up but drops a last window that
    would start in the right padding; with a symbolic size that is value-dependent unless it
    can never happen (pb + stride <= span), and the dim becomes an opaque symbol.
    """
    num = size + pb + pe - span
    if is_static(num) and num < 0:      # the window is longer than the padded input
        raise op.fail(f"the {what} does not fit the input {axis} {size}: output {axis} would be "
                      f"{(num + stride) // stride} (input {size} + padding {pb}+{pe} - window {span}) "
                      f"// stride {stride} + 1", "use a smaller kernel, or pad the input (padding=...)")
    # (num + stride)//stride rather than num//stride + 1: equal, but keeps symbolic dims affine
    # where they can be (T//2 for a 2-wide pool over T, not an opaque (T-2)//2 plus one)
    if ceil_mode:
        out = (num + 2 * stride - 1) // stride
        if is_static(size):
            if (out - 1) * stride >= size + pb:
                out -= 1
        elif pb + stride > span:
            out = Sym.opaque(DimExpr("ceil_pool", size, span, stride, pb))
    else:
        out = (num + stride) // stride
    return out


def _conv_padding(op: Op, attrs: dict, n: int, k: tuple, d: tuple, s: tuple) -> tuple:
    """The padding attribute as per-side pairs ((b, e), ...)."""
    p = attrs["padding"]
    if p == "valid":
        return ((0, 0),) * n
    if p == "same":
        if any(x != 1 for x in s):
            raise op.fail(f"padding='same' needs stride 1, got stride={_show(attrs['stride'])}",
                          "PyTorch does not define 'same' for strided convolutions: pad explicitly")
        out = []
        for ki, di in zip(k, d):
            total = di * (ki - 1)
            out.append((total // 2, total - total // 2))
        return tuple(out)
    if isinstance(p, str):
        raise op.fail(f"padding must be an int, {n} ints, 'same' or 'valid', got {p!r}")
    vals = as_tuple(op, attrs, "padding", n, 0)
    return tuple((x, x) for x in vals)


def _pairs(pads) -> tuple:
    """Per-side padding ((b, e), ...) as one value per axis where symmetric, else the pair."""
    return tuple(b if b == e else (b, e) for b, e in pads)


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


_LETTER = {"length": "L", "depth": "D", "height": "H", "width": "W"}


def _one(v) -> str:
    """A per-axis tuple as one value when all its entries agree: (5, 5) -> '5'."""
    v = tuple(v)
    return str(v[0]) if len(set(v)) == 1 else _show(v)


def _axes_line(head: str, formulas: list[str], ndim: int) -> str:
    """'Conv2d k=5 s=1 p=0: H = W = (32 + 2·0 − 5)/1 + 1 = 28' (axes with equal arithmetic merged)."""
    letters = [_LETTER[a] for a in spatial_names(ndim)]
    if len(set(formulas)) == 1:
        return f"{head}: {' = '.join(letters)} = {formulas[0]}"
    return f"{head}: " + "; ".join(f"{l} = {f}" for l, f in zip(letters, formulas))


def window_formula(size, out, k: int, s: int, d: int, pb: int, pe: int, ceil: bool = False) -> str:
    """'(32 + 2·0 − 5)/1 + 1 = 28': the output size of a sliding window, with ⌊⌋ (or ⌈⌉ in ceil
    mode) where the division is not exact."""
    pad = f"2{DOT}{pb}" if pb == pe else f"{pb} + {pe}"
    span = str(k) if d == 1 else f"{d}{DOT}({k} {MINUS} 1) {MINUS} 1"
    num = f"({size} + {pad} {MINUS} {span})"
    span_n = d * (k - 1) + 1
    exact = s == 1 or (is_static(size) and (int(size) + pb + pe - span_n) % s == 0)
    frac = f"{num}/{s}" if exact else (f"\u2308{num}/{s}\u2309" if ceil else f"\u230a{num}/{s}\u230b")
    return f"{frac} + 1 = {out}"


class ConvGeometry(NamedTuple):
    """Per spatial axis: kernel, stride, dilation, padding (pairs (begin, end) for a
    convolution, one value a side for a transposed one) and output_padding."""
    k: tuple
    s: tuple
    d: tuple
    pads: tuple
    output_padding: tuple = ()


class _ConvBase(Op):
    family = "conv"
    ndim = 0
    sn_dim = 0              # the weight dim spectral_norm keeps (the output channels)

    def _channels(self, x):
        self.expect_rank(x, self.ndim + 2)
        self.expect_float(x)
        c = x.shape[1]
        if not is_static(c):
            raise self.fail(f"the channel dim of the input must be concrete, got {x}",
                            "channels are dim 1: inputs are [N, C, ...spatial]")
        return int(c)

    def _groups(self, attrs, c_in):
        g, c_out = attrs["groups"], attrs["out_channels"]
        if c_out < 1:
            raise self.fail(f"out_channels must be positive, got {c_out}")
        if g < 1:
            raise self.fail(f"groups must be positive, got {g}")
        if c_in % g:
            raise self.fail(f"in_channels {c_in} (dim 1 of the input) is not divisible by groups={g}")
        if c_out % g:
            raise self.fail(f"out_channels {c_out} is not divisible by groups={g}")
        return g

    def window(self, a):
        g = a.derived
        return Window("transpose" if isinstance(self, _ConvTranspose) else "conv", g.k, g.s, g.d)

    def describe(self, attrs):
        n = self.ndim
        k = attrs["kernel_size"]
        parts = [str(attrs["out_channels"]), f"k={_show(k)}"]
        for key, short, default in (("stride", "s", 1), ("padding", "p", 0), ("output_padding", "op", 0),
                                    ("dilation", "d", 1), ("groups", "g", 1)):
            if key in attrs and attrs[key] != default and attrs[key] != (default,) * n:
                parts.append(f"{short}={_show(attrs[key])}")
        if not attrs["bias"]:
            parts.append("no bias")
        if attrs.get("spectral_norm"):
            parts.append("spectral norm")
        return ", ".join(parts)


class _Conv(_ConvBase):
    """y = cross-correlation of x with weight [C_out, C_in/groups, *k], plus bias [C_out]."""
    args = (Arg("out_channels", "int"), Arg("kernel_size", "ints"), Arg("stride", "ints", 1),
            Arg("padding", "padding", 0), Arg("dilation", "ints", 1), Arg("groups", "int", 1),
            Arg("bias", "bool", True), SPECTRAL_NORM)

    def derive(self, a):
        n, attrs = self.ndim, a.attrs
        k = as_tuple(self, attrs, "kernel_size", n, 1)
        s = as_tuple(self, attrs, "stride", n, 1)
        d = as_tuple(self, attrs, "dilation", n, 1)
        return ConvGeometry(k, s, d, _conv_padding(self, attrs, n, k, d, s))

    def infer(self, a):
        x = a.x
        c_in = self._channels(x)
        self._groups(a.attrs, c_in)
        k, s, d, pads, _ = a.derived
        spatial = []
        for i, axis in enumerate(spatial_names(self.ndim)):
            what = f"kernel {k[i]}" + (f" (dilation {d[i]})" if d[i] != 1 else "")
            spatial.append(out_dim(self, x.shape[2 + i], d[i] * (k[i] - 1) + 1, s[i], *pads[i], axis, what))
        return [x.with_shape((x.shape[0], a.attrs["out_channels"], *spatial))]

    def params(self, a):
        c_in, c_out, g = int(a.x.shape[1]), a.attrs["out_channels"], a.attrs["groups"]
        k = a.derived.k
        fan_in = c_in // g * _prod(k)
        bound = 1.0 / math.sqrt(fan_in)     # PyTorch: kaiming_uniform(a=sqrt(5)) == U(+-1/sqrt(fan_in))
        p = {"weight": ParamSpec((c_out, c_in // g, *k), "uniform", bound=bound, fan_in=fan_in,
                                 fan_out=c_out // g * _prod(k))}
        if a.attrs["bias"]:
            p["bias"] = ParamSpec((c_out,), "uniform", bound=bound, fan_in=fan_in)
        return p | spectral_params(a, p["weight"].shape, self.sn_dim)

    def macs(self, a, in_shapes, out_shapes):
        return _prod(out_shapes[0]) * (in_shapes[0][1] // a.attrs["groups"]) * _prod(a.derived.k)

    def lower(self, a, g, inputs):
        k, s, d, pads, _ = a.derived
        ins = [inputs[0], spectral_onnx(a, g, self.sn_dim)] + ([g.param("bias")] if a.attrs["bias"] else [])
        return [g.op("Conv", ins, kernel_shape=list(k), strides=list(s), dilations=list(d),
                     pads=[p[0] for p in pads] + [p[1] for p in pads], group=a.attrs["groups"])]

    def forward(self, a, ctx, inputs, params):
        k, s, d, pads, _ = a.derived
        w = spectral_weight(a, ctx, params, self.sn_dim)
        return [F.conv(inputs[0], w, params.get("bias"), stride=s, padding=pads, dilation=d, groups=a.attrs["groups"])]

    def torch_forward(self, a, ctx, inputs, params):
        k, s, d, pads, _ = a.derived
        x = inputs[0]
        if any(b != e for b, e in pads):          # asymmetric ('same' with an even kernel): pad first
            x = TF.pad(x, [v for b, e in reversed(pads) for v in (b, e)])
            pads = ((0, 0),) * self.ndim
        conv = (TF.conv1d, TF.conv2d, TF.conv3d)[self.ndim - 1]
        w = spectral_torch_weight(a, ctx, params, self.sn_dim)
        return [conv(x, w, params.get("bias"), s, [b for b, _ in pads], d, a.attrs["groups"])]

    def explain(self, a):
        x, y, attrs = a.x, a.out_types[0], a.attrs
        k, s, d, pads, _ = a.derived
        p = attrs["padding"]
        head = f"{self.name} k={_one(k)} s={_one(s)} p={p if isinstance(p, str) else _one(_pairs(pads))}"
        if any(v != 1 for v in d):
            head += f" d={_one(d)}"
        if attrs["groups"] != 1:
            head += f" g={attrs['groups']}"
        formulas = [window_formula(x.shape[2 + i], y.shape[2 + i], k[i], s[i], d[i], *pads[i])
                    for i in range(self.ndim)]
        c_in, c_out, g = int(x.shape[1]), attrs["out_channels"], attrs["groups"]
        lines = [_axes_line(head, formulas, self.ndim) + f"; C: {c_in} \u2192 {c_out}"]
        per_filter = DOT.join([str(c_in) if g == 1 else f"{c_in}/{g}"] + [str(v) for v in k])
        total = c_out * (c_in // g) * _prod(k) + (c_out if attrs["bias"] else 0)
        lines.append(f"params: {c_out}{DOT}({per_filter})" + (f" + {c_out}" if attrs["bias"] else "")
                     + f" = {total:,}  ({c_out} filters of {per_filter}" + (", and a bias each)" if attrs["bias"] else ")"))
        return lines + spectral_explain(a)


class Conv1d(_Conv):
    """1-D convolution over [N, C, L] (text CNNs, audio): L_out = (L + 2p - d(k-1) - 1)//s + 1."""
    name = "Conv1d"
    ndim = 1
    samples = (Sample("x: f32[N, 3, T] -> Conv1d(4, 3, padding='same')"),
               Sample("x: f32[N, 4, 9] -> Conv1d(6, 2, stride=2, dilation=2, groups=2, bias=false)"))


class Conv2d(_Conv):
    """2-D convolution over [N, C, H, W]."""
    name = "Conv2d"
    ndim = 2
    samples = (Sample("x: f32[N, 3, 7, 6] -> Conv2d(4, 3, stride=2, padding=1)"),
               Sample("x: f32[N, 2, 6, 6] -> Conv2d(2, (2, 3), padding='same', groups=2)"),
               Sample("x: f32[N, 3, 6, 6] -> Conv2d(4, 3, stride=2, padding=1, spectral_norm=true)"))


class Conv3d(_Conv):
    """3-D convolution over [N, C, D, H, W] (video, volumetric scans)."""
    name = "Conv3d"
    ndim = 3
    samples = (Sample("x: f32[N, 2, 4, 5, 4] -> Conv3d(3, 3, padding=1)"),
               Sample("x: f32[N, 4, 5, 6, 5] -> Conv3d(2, (2, 3, 1), stride=(1, 2, 2), dilation=(2, 1, 1), groups=2)"))


_INT_MAX = 2 ** 63 - 1          # a Slice end past any size


class _ConvTranspose(_ConvBase):
    """The gradient of a convolution with respect to its input (a learned upsampling):
    out = (in - 1)*s - 2p + d*(k-1) + output_padding + 1; weight [C_in, C_out/groups, *k]."""
    sn_dim = 1
    args = (Arg("out_channels", "int"), Arg("kernel_size", "ints"), Arg("stride", "ints", 1),
            Arg("padding", "ints", 0), Arg("output_padding", "ints", 0), Arg("dilation", "ints", 1),
            Arg("groups", "int", 1), Arg("bias", "bool", True), SPECTRAL_NORM)

    def derive(self, a):
        n, attrs = self.ndim, a.attrs
        k = as_tuple(self, attrs, "kernel_size", n, 1)
        s = as_tuple(self, attrs, "stride", n, 1)
        d = as_tuple(self, attrs, "dilation", n, 1)
        p = as_tuple(self, attrs, "padding", n, 0)
        op = as_tuple(self, attrs, "output_padding", n, 0)
        for i in range(n):
            if op[i] >= s[i] and op[i] >= d[i]:
                raise self.fail(f"output_padding {_show(attrs['output_padding'])} must be smaller than "
                                f"either stride {_show(attrs['stride'])} or dilation {_show(attrs['dilation'])}",
                                "output_padding only picks among the output sizes a strided input could have")
        return ConvGeometry(k, s, d, p, op)

    def infer(self, a):
        x = a.x
        c_in = self._channels(x)
        self._groups(a.attrs, c_in)
        k, s, d, p, op = a.derived
        spatial = []
        for i, axis in enumerate(spatial_names(self.ndim)):
            size = x.shape[2 + i]
            out = (size - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1
            if is_static(out) and out < 1:
                raise self.fail(f"padding {p[i]} is too large for the input {axis} {size}: output {axis} "
                                f"would be {out} = ({size} - 1)*stride {s[i]} - 2*{p[i]} + "
                                f"{d[i]}*(kernel {k[i]} - 1) + {op[i]} + 1")
            spatial.append(out)
        return [x.with_shape((x.shape[0], a.attrs["out_channels"], *spatial))]

    def params(self, a):
        c_in, c_out, g = int(a.x.shape[1]), a.attrs["out_channels"], a.attrs["groups"]
        k = a.derived.k
        fan_in = c_out // g * _prod(k)      # PyTorch computes fan_in from weight.shape[1] * prod(k)
        bound = 1.0 / math.sqrt(fan_in)
        p = {"weight": ParamSpec((c_in, c_out // g, *k), "uniform", bound=bound, fan_in=fan_in,
                                 fan_out=c_in * _prod(k))}
        if a.attrs["bias"]:
            p["bias"] = ParamSpec((c_out,), "uniform", bound=bound, fan_in=fan_in)
        return p | spectral_params(a, p["weight"].shape, self.sn_dim)

    def macs(self, a, in_shapes, out_shapes):
        return _prod(in_shapes[0]) * (a.attrs["out_channels"] // a.attrs["groups"]) * _prod(a.derived.k)

    def lower(self, a, g, inputs):
        # Symmetric pads, always: the CUDA provider (cuDNN) runs no ConvTranspose with asymmetric
        # pads and leaves it to the CPU. PyTorch's output is the full transposed convolution
        # cropped to [p, full - p + op); ONNX's pads p, p with output_padding op is that same crop
        # (the op extra positions at the end are computed, not zeros). ONNX Runtime rejects
        # output_padding >= stride, which PyTorch allows when dilation > stride: there the full
        # convolution is computed without pads or bias, cropped with a Slice, padded past its end
        # (positions no kernel tap reaches) and the bias added.
        k, s, d, p, op = a.derived
        n, bias = self.ndim, a.attrs["bias"]
        geometry = dict(kernel_shape=list(k), strides=list(s), dilations=list(d), group=a.attrs["groups"])
        if all(op[i] < s[i] for i in range(n)):
            ins = [inputs[0], spectral_onnx(a, g, self.sn_dim)] + ([g.param("bias")] if bias else [])
            return [g.op("ConvTranspose", ins, pads=list(p) * 2,
                         output_padding=list(op) if any(op) else None, **geometry)]
        y = g.op("ConvTranspose", [inputs[0], spectral_onnx(a, g, self.sn_dim)], **geometry)
        ends = [op[i] - p[i] if op[i] < p[i] else _INT_MAX for i in range(n)]     # from the end
        y = g.op("Slice", [y, g.ints(list(p), "starts"), g.ints(ends, "ends"), g.ints(list(range(2, 2 + n)), "axes")])
        extra = [max(op[i] - p[i], 0) for i in range(n)]
        if any(extra):
            y = g.op("Pad", [y, g.ints([0] * (n + 2) + [0, 0] + extra, hint="pads")])
        if bias:
            y = g.op("Add", [y, g.derived("bias", lambda v: v.reshape((-1,) + (1,) * n), "bcast")])
        return [y]

    def forward(self, a, ctx, inputs, params):
        k, s, d, p, op = a.derived
        w = spectral_weight(a, ctx, params, self.sn_dim)
        return [F.conv_transpose(inputs[0], w, params.get("bias"), stride=s, padding=p,
                                 output_padding=op, dilation=d, groups=a.attrs["groups"])]

    def torch_forward(self, a, ctx, inputs, params):
        k, s, d, p, op = a.derived
        conv = (TF.conv_transpose1d, TF.conv_transpose2d, TF.conv_transpose3d)[self.ndim - 1]
        w = spectral_torch_weight(a, ctx, params, self.sn_dim)
        return [conv(inputs[0], w, params.get("bias"), s, p, op, a.attrs["groups"], d)]

    def explain(self, a):
        x, y, attrs = a.x, a.out_types[0], a.attrs
        k, s, d, p, op = a.derived
        head = f"{self.name} k={_one(k)} s={_one(s)} p={_one(p)}"
        if any(v != 0 for v in op):
            head += f" op={_one(op)}"
        if any(v != 1 for v in d):
            head += f" d={_one(d)}"
        if attrs["groups"] != 1:
            head += f" g={attrs['groups']}"
        formulas = []
        for i in range(self.ndim):
            span = f"({k[i]} {MINUS} 1)" if d[i] == 1 else f"{d[i]}{DOT}({k[i]} {MINUS} 1)"
            extra = f" + {op[i]}" if op[i] else ""
            formulas.append(f"({x.shape[2 + i]} {MINUS} 1){DOT}{s[i]} {MINUS} 2{DOT}{p[i]} + {span}{extra} + 1"
                            f" = {y.shape[2 + i]}")
        c_in, c_out, g = int(x.shape[1]), attrs["out_channels"], attrs["groups"]
        lines = [_axes_line(head, formulas, self.ndim) + f"; C: {c_in} \u2192 {c_out}"]
        per_input = DOT.join([str(c_out) if g == 1 else f"{c_out}/{g}"] + [str(v) for v in k])
        total = c_in * (c_out // g) * _prod(k) + (c_out if attrs["bias"] else 0)
        lines.append(f"params: {c_in}{DOT}({per_input})" + (f" + {c_out}" if attrs["bias"] else "")
                     + f" = {total:,}  (each of the {c_in} input channels spreads into {per_input})")
        return lines + spectral_explain(a)


class ConvTranspose1d(_ConvTranspose):
    """Transposed 1-D convolution over [N, C, L]."""
    name = "ConvTranspose1d"
    ndim = 1
    samples = (Sample("x: f32[N, 3, T] -> ConvTranspose1d(2, 3, stride=2, padding=1, output_padding=1)"),)


class ConvTranspose2d(_ConvTranspose):
    """Transposed 2-D convolution over [N, C, H, W] (DCGAN generators, U-Net decoders)."""
    name = "ConvTranspose2d"
    ndim = 2
    samples = (Sample("x: f32[N, 4, 3, 3] -> ConvTranspose2d(2, 4, stride=2, padding=1)"),
               Sample("x: f32[N, 2, 4, 3] -> ConvTranspose2d(4, (3, 2), stride=(2, 1), groups=2, bias=false)"),
               Sample("x: f32[N, 4, 3, 3] -> ConvTranspose2d(2, 4, stride=2, padding=1, spectral_norm=true)"))


class ConvTranspose3d(_ConvTranspose):
    """Transposed 3-D convolution over [N, C, D, H, W] (3-D U-Net decoders)."""
    name = "ConvTranspose3d"
    ndim = 3
    samples = (Sample("x: f32[N, 3, 2, 3, 2] -> ConvTranspose3d(2, 2, stride=2)"),
               Sample("x: f32[N, 2, 3, 2, 3] -> ConvTranspose3d(4, 3, stride=(1, 2, 2), padding=1, "
                      "output_padding=(0, 1, 1), groups=2, bias=false)"))
