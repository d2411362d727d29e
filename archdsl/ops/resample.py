"""Resampling: Upsample (nearest, linear/bilinear/trilinear; by scale_factor or to a size) and
PixelShuffle / PixelUnshuffle (sub-pixel convolution, ESPCN), as PyTorch defines them.

Upsample follows F.interpolate's coordinate rules: nearest takes source floor(j * in/out)
(1/scale_factor when a scale was given); linear modes take (j + 0.5) * in/out - 0.5 clamped at
0 (align_corners=false) or j * (in - 1)/(out - 1) (align_corners=true). ONNX Resize expresses
both exactly: 'asymmetric' + floor, and 'pytorch_half_pixel' / 'align_corners'; a scale_factor
is passed as Resize's scales (so the source positions use it, as PyTorch does), a size as its
sizes. The NumPy engine multiplies by one interpolation matrix per resized dim (a repeat for a
nearest upsampling by an integer factor), so the gradient is the transposed product.
"""
from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np

from ..autodiff import functional as F
from ..backends.torch.lazy import TF
from ..ir.types import is_static
from .base import Arg, Op, Sample, Window, lowering
from .conv import spatial_names

_LINEAR = {"linear": 3, "bilinear": 4, "trilinear": 5}      # mode -> the input rank it takes


@functools.lru_cache(maxsize=128)
def _matrix(n_in: int, n_out: int, mode: str, align: bool, scale, dtype) -> np.ndarray:
    m = F.resample_matrix(n_in, n_out, mode, align, scale, dtype)
    m.setflags(write=False)
    return m


class Upsample(Op):
    """Resizes the spatial dims of [N, C, *spatial] by scale_factor or to size (nn.Upsample,
    F.interpolate): mode 'nearest', or 'linear' / 'bilinear' / 'trilinear' for 1, 2 and 3
    spatial dims, with align_corners as PyTorch."""
    name = "Upsample"
    family = "resample"
    args = (Arg("size", "ints", None, doc="the output's spatial size"),
            Arg("scale_factor", "any", None, doc="a number, or one per spatial dim"),
            Arg("mode", "str", "nearest", choices=("nearest",) + tuple(_LINEAR)),
            Arg("align_corners", "bool", None, doc="linear modes only (PyTorch's default: false)"))
    samples = (Sample("x: f32[N, 2, 3, 4] -> Upsample(scale_factor=2)"),
               Sample("x: f32[N, 2, 4, 3] -> Upsample(scale_factor=(1.5, 2), mode='bilinear')"),
               Sample("x: f32[N, 3, 5] -> Upsample(size=8, mode='linear', align_corners=true)"),
               Sample("x: f32[N, 1, 2, 3, 2] -> Upsample(size=(3, 5, 4), mode='trilinear')"))

    def derive(self, a) -> tuple:
        """The scale per spatial dim (None where a size was given)."""
        x, attrs = a.x, a.attrs
        self.expect_float(x)
        if x.rank not in (3, 4, 5):
            raise self.fail(f"expects [N, C, *spatial] with 1 to 3 spatial dims, got {x}")
        n = x.rank - 2
        mode = attrs["mode"]
        if mode in _LINEAR and _LINEAR[mode] != x.rank:
            right = next(m for m, r in _LINEAR.items() if r == x.rank)
            raise self.fail(f"mode '{mode}' takes a {_LINEAR[mode]}-D input, got {x}", f"use mode='{right}'")
        if mode == "nearest" and attrs["align_corners"] is not None:
            raise self.fail("align_corners applies to the linear modes only", "leave it out with mode='nearest'")
        size, scale = attrs["size"], attrs["scale_factor"]
        if (size is None) == (scale is None):
            raise self.fail("give exactly one of size and scale_factor",
                            "Upsample(scale_factor=2) doubles each spatial dim; Upsample(size=(64, 64)) resizes")
        if size is not None:
            sizes = size if isinstance(size, tuple) else (size,) * n
            if len(sizes) != n or any(s < 1 for s in sizes):
                raise self.fail(f"size must be a positive int or {n} of them (one per spatial dim), got {size}")
            return (None,) * n
        scales = scale if isinstance(scale, tuple) else (scale,) * n
        if len(scales) != n or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and
                                       math.isfinite(s) and 0 < s <= 1e6 for s in scales):
            raise self.fail(f"scale_factor must be a positive number or {n} of them (one per spatial dim), "
                            f"got {scale!r}")
        return tuple(float(s) for s in scales)

    def infer(self, a):
        x, scales = a.x, a.derived
        size = a.attrs["size"]
        if size is not None:
            spatial = size if isinstance(size, tuple) else (size,) * (x.rank - 2)
            return [x.with_shape(tuple(x.shape[:2]) + tuple(spatial))]
        spatial = []
        for d, s, axis in zip(x.shape[2:], scales, spatial_names(x.rank - 2)):
            if not is_static(d):
                if s != int(s):
                    raise self.fail(f"a fractional scale_factor {s} needs a concrete {axis}, got {x}",
                                    "give size= instead")
                spatial.append(d * int(s))
                continue
            out = math.floor(int(d) * s)
            if out != math.floor(np.float32(s) * np.float32(int(d))):     # what ONNX Runtime computes
                raise self.fail(f"scale_factor {s} on {axis} {d} gives {out} in double precision but not in "
                                f"float32 (ONNX's scales)", f"give size={out} for that dim instead")
            if out < 1:
                raise self.fail(f"scale_factor {s} makes the {axis} {d} empty")
            spatial.append(out)
        return [x.with_shape(tuple(x.shape[:2]) + tuple(spatial))]

    def macs(self, a, in_shapes, out_shapes):
        return 0 if a.attrs["mode"] == "nearest" else math.prod(out_shapes[0]) * 2 ** (len(out_shapes[0]) - 2)

    def window(self, a):
        """Each output position reads 1 (nearest) or 2 (linear) input positions per dim, at steps
        of in/out (the receptive-field pass's 'adaptive' window, a fractional stride)."""
        x, y = a.x, a.out_types[0]
        steps = []
        for d_in, d_out, s in zip(x.shape[2:], y.shape[2:], a.derived):
            if s is not None:
                steps.append(1 / Fraction(s).limit_denominator(10 ** 6))
            elif is_static(d_in):
                steps.append(Fraction(int(d_in), int(d_out)))
            else:
                return None
        n = x.rank - 2
        k = 1 if a.attrs["mode"] == "nearest" else 2
        return Window("adaptive", (k,) * n, tuple(steps), (1,) * n)

    def _align(self, a) -> bool:
        return bool(a.attrs["align_corners"])

    def _modes(self, a) -> dict:
        if a.attrs["mode"] == "nearest":
            return dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        return dict(mode="linear", coordinate_transformation_mode="align_corners" if self._align(a)
                    else "pytorch_half_pixel")

    @lowering(since=18)
    def lower_axes(self, a, g, inputs):
        # Resize's `axes` (opset 18) lets sizes name the spatial dims alone: no runtime N and C
        if a.attrs["size"] is None:
            return self.lower(a, g, inputs)
        n = a.x.rank
        spatial = g.ints([int(d) for d in a.out_types[0].shape[2:]], "spatial")
        return [g.op("Resize", [inputs[0], "", "", spatial], axes=list(range(2, n)), **self._modes(a))]

    @lowering()
    def lower(self, a, g, inputs):
        x, kw = inputs[0], self._modes(a)
        if a.attrs["size"] is None:
            scales = g.const(np.asarray([1.0, 1.0] + list(a.derived), np.float32), hint="scales")
            return [g.op("Resize", [x, "", scales], **kw)]
        # below opset 18 sizes covers every dim, N and C read at run time (under the CUDA provider
        # that Concat of a Shape output runs on the CPU; opset 18 avoids it)
        nc = g.op("Slice", [g.op("Shape", [x]), g.ints([0], "starts"), g.ints([2], "ends"), g.ints([0], "axes")])
        sizes = g.op("Concat", [nc, g.ints([int(d) for d in a.out_types[0].shape[2:]], "spatial")], axis=0)
        return [g.op("Resize", [x, "", "", sizes], **kw)]

    def forward(self, a, ctx, inputs, params):
        x = inputs[0]
        mode = "nearest" if a.attrs["mode"] == "nearest" else "linear"
        out_sp = self._runtime_sizes(a, x.shape)
        mats = {2 + i: _matrix(int(n_in), int(n_out), mode, self._align(a), s, np.dtype(x.dtype))
                for i, (n_in, n_out, s) in enumerate(zip(x.shape[2:], out_sp, a.derived)) if (n_in, s) != (n_out, 1.0)}
        return [F.resample(x, mats) if mats else x]

    def torch_forward(self, a, ctx, inputs, params):
        size, mode = a.attrs["size"], a.attrs["mode"]
        return [TF.interpolate(inputs[0], size=size, scale_factor=None if size is not None else a.derived, mode=mode,
                               align_corners=self._align(a) if mode != "nearest" else None)]

    def _runtime_sizes(self, a, shape) -> tuple:
        size = a.attrs["size"]
        if size is not None:
            return size if isinstance(size, tuple) else (size,) * (len(shape) - 2)
        return tuple(math.floor(d * s) for d, s in zip(shape[2:], a.derived))

    def explain(self, a):
        x, y = a.x, a.out_types[0]
        how = (f"scale_factor {', '.join(f'{s:g}' for s in a.derived)}" if a.attrs["size"] is None
               else "to size " + "\u00d7".join(map(str, y.shape[2:])))
        return [f"Upsample ({a.attrs['mode']}) {how}: " + "\u00d7".join(map(str, x.shape[2:])) + " \u2192 "
                + "\u00d7".join(map(str, y.shape[2:])) + f"; C = {x.shape[1]}"]


class _PixelShuffle(Op):
    family = "resample"
    kind = ""        # the window: PixelShuffle spreads like a transposed conv, PixelUnshuffle gathers like a conv

    def window(self, a):
        r = a.attrs[self.args[0].name]
        return Window(self.kind, (r, r), (r, r), (1, 1))

    def _factor(self, a) -> int:
        x, r = a.x, a.attrs[self.args[0].name]
        self.expect_rank(x, 4)
        if r < 1:
            raise self.fail(f"{self.args[0].name} must be positive, got {r}")
        return r


class PixelShuffle(_PixelShuffle):
    """Rearranges [N, C*r^2, H, W] into [N, C, H*r, W*r] (sub-pixel convolution, Shi et al.):
    channel c*r^2 + i*r + j lands at row offset i, column offset j (ONNX DepthToSpace, CRD)."""
    name = "PixelShuffle"
    kind = "transpose"
    args = (Arg("upscale_factor", "int"),)
    samples = (Sample("x: f32[N, 8, 3, 2] -> PixelShuffle(2)"), Sample("x: f32[N, 9, 2, 3] -> PixelShuffle(3)"))

    def infer(self, a):
        x, r = a.x, self._factor(a)
        c = x.shape[1]
        if not is_static(c) or c % (r * r):
            raise self.fail(f"the channels of {x} must be a multiple of upscale_factor\u00b2 = {r * r}")
        return [x.with_shape((x.shape[0], c // (r * r), x.shape[2] * r, x.shape[3] * r))]

    def lower(self, a, g, inputs):
        return [g.op("DepthToSpace", inputs, blocksize=a.attrs["upscale_factor"], mode="CRD")]

    def forward(self, a, ctx, inputs, params):
        x, r = inputs[0], a.attrs["upscale_factor"]
        n, c, h, w = x.shape
        y = F.transpose(F.reshape(x, (n, c // (r * r), r, r, h, w)), (0, 1, 4, 2, 5, 3))
        return [F.reshape(y, (n, c // (r * r), h * r, w * r))]

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.pixel_shuffle(inputs[0], a.attrs["upscale_factor"])]


class PixelUnshuffle(_PixelShuffle):
    """The inverse of PixelShuffle: [N, C, H*r, W*r] into [N, C*r^2, H, W]."""
    name = "PixelUnshuffle"
    kind = "conv"
    args = (Arg("downscale_factor", "int"),)
    samples = (Sample("x: f32[N, 2, 4, 6] -> PixelUnshuffle(2)"),)

    def infer(self, a):
        x, r = a.x, self._factor(a)
        for d, axis in zip(x.shape[2:], ("height", "width")):
            if not is_static(d):
                raise self.fail(f"needs a concrete {axis}, got {x}")
            if d % r:
                raise self.fail(f"the {axis} {d} of {x} is not divisible by downscale_factor {r}")
        c = x.shape[1]
        if not is_static(c):
            raise self.fail(f"the channel dim (dim 1) of the input must be concrete, got {x}")
        return [x.with_shape((x.shape[0], c * r * r, x.shape[2] // r, x.shape[3] // r))]

    def lower(self, a, g, inputs):
        # SpaceToDepth orders the channels (i, j, c); PyTorch's order is (c, i, j): regroup them
        r = a.attrs["downscale_factor"]
        c = int(a.x.shape[1])
        s2d = g.op("SpaceToDepth", inputs, blocksize=r)
        y = g.op("Transpose", [g.op("Reshape", [s2d, g.ints([0, r * r, c, -1])])], perm=[0, 2, 1, 3])
        return [g.op("Reshape", [y, g.op("Shape", [s2d])])]

    def forward(self, a, ctx, inputs, params):
        x, r = inputs[0], a.attrs["downscale_factor"]
        n, c, h, w = x.shape
        y = F.transpose(F.reshape(x, (n, c, h // r, r, w // r, r)), (0, 1, 3, 5, 2, 4))
        return [F.reshape(y, (n, c * r * r, h // r, w // r))]

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.pixel_unshuffle(inputs[0], a.attrs["downscale_factor"])]
