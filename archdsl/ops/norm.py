"""Normalisation: BatchNorm (with rank-checking aliases BatchNorm1d, BatchNorm2d), LayerNorm (over
trailing dims, or channels-first), GroupNorm, InstanceNorm1d/2d/3d, RMSNorm and
LocalResponseNorm, with PyTorch's arguments, defaults and parameters.

Feature counts come first and are checked against the input (`GroupNorm(32, 64)` is 32 groups
of 64 channels); float hyper-parameters (eps, momentum, alpha, ...) are keyword-only.

ONNX: LayerNormalization from opset 17, GroupNormalization from 21 (per-channel scale, the
opset-21 meaning), RMSNormalization from 23; below those, decompositions (GroupNorm through
InstanceNormalization on [N, G, -1]). ReduceMean takes its axes as an attribute below opset 18
and as an input from 18, so a decomposition that reduces is written twice
(`@lowering(since=18)` and `@lowering()`).
"""
from __future__ import annotations

import numpy as np

from ..autodiff import functional as F
from ..backends.torch.lazy import TF
from ..ir.graph import ParamSpec
from ..ir.types import is_static
from .base import Arg, Op, Sample, explain_params, lowering


class BatchNorm(Op):
    """Batch normalisation over the channel dim 1 of [N, C], [N, C, L] or [N, C, H, W].

    Training mode normalises with the batch statistics and updates the running statistics in
    place (PyTorch's convention: new = (1 - momentum) * old + momentum * batch, unbiased batch
    variance); inference mode (and ONNX export) uses the running statistics.
    """
    name = "BatchNorm"
    family = "norm"
    args = (Arg("num_features", "int", None, doc="the channels (dim 1); checked against the input (inferred)"),
            Arg("eps", "float", 1e-5, keyword_only=True), Arg("momentum", "float", 0.1, keyword_only=True))
    ranks: tuple[int, ...] = (2, 3, 4)
    samples = (Sample("x: f32[N, 3, 4, 4] -> BatchNorm"), Sample("x: f32[N, 5] -> BatchNorm(5, eps=0.001)"))

    def batch_coupled(self, a):
        return True

    def infer(self, a):
        x = a.x
        if x.rank not in self.ranks:
            want = " or ".join(_RANK_NAMES[r] for r in self.ranks)
            other = [o.name for o in (BatchNorm1d, BatchNorm2d) if x.rank in o.ranks and o.name != self.name]
            raise self.fail(f"expects a {want} input, got {x}",
                            f"use {other[0]} (or BatchNorm) for a {x.rank}-D input" if other
                            else "did you mean to Flatten first?" if x.rank > max(self.ranks) else None)
        self.expect_float(x)
        c = x.shape[1]
        if not is_static(c):
            raise self.fail(f"the channel dim (dim 1) of the input must be concrete, got {x}")
        n = a.attrs["num_features"]
        if n is not None and n != c:
            raise self.fail(f"num_features is {n} but the input has {c} channels ({x})",
                            f"write {self.name}({c}), or leave the count out: it is inferred")
        if a.attrs["eps"] <= 0:
            raise self.fail(f"eps must be positive, got {a.attrs['eps']}")
        if not 0.0 <= a.attrs["momentum"] <= 1.0:
            raise self.fail(f"momentum must be in [0, 1], got {a.attrs['momentum']}")
        return [x]

    def params(self, a):
        c = int(a.x.shape[1])
        return {"weight": ParamSpec((c,), "ones"), "bias": ParamSpec((c,), "zeros"),
                "running_mean": ParamSpec((c,), "zeros", buffer=True),
                "running_var": ParamSpec((c,), "ones", buffer=True)}

    def lower(self, a, g, inputs):
        # Inference mode; BatchNormalization accepts [N, C] as well as [N, C, D1, ...].
        return [g.op("BatchNormalization", [inputs[0], g.param("weight"), g.param("bias"),
                                            g.param("running_mean"), g.param("running_var")],
                     epsilon=float(a.attrs["eps"]))]

    def forward(self, a, ctx, inputs, params):
        return [F.batch_norm(inputs[0], params["weight"], params["bias"], params["running_mean"],
                             params["running_var"], ctx.training, a.attrs["momentum"], a.attrs["eps"])]

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.batch_norm(inputs[0], params["running_mean"], params["running_var"], params["weight"],
                              params["bias"], ctx.training, a.attrs["momentum"], a.attrs["eps"])]


_RANK_NAMES = {2: "[N, C]", 3: "[N, C, L]", 4: "[N, C, H, W]"}


class BatchNorm1d(BatchNorm):
    """BatchNorm that accepts [N, C] or [N, C, L] only."""
    name = "BatchNorm1d"
    ranks = (2, 3)
    samples = (Sample("x: f32[N, 4, T] -> BatchNorm1d"),)


class BatchNorm2d(BatchNorm):
    """BatchNorm that accepts [N, C, H, W] only."""
    name = "BatchNorm2d"
    ranks = (4,)
    samples = (Sample("x: f32[N, 2, 3, 3] -> BatchNorm2d(2, momentum=0.3)"),)


class LayerNorm(Op):
    """Normalises over the trailing dims `normalized_shape` (the last dim by default), then scales
    and shifts: weight and bias of that shape (PyTorch's nn.LayerNorm). With channels_first=true
    it normalises over the channel dim 1 of [N, C, *spatial] instead (ConvNeXt's LayerNorm for
    channels-first maps; normalized_shape is then C)."""
    name = "LayerNorm"
    family = "norm"
    args = (Arg("normalized_shape", "ints", None, doc="the trailing dims normalised over (inferred: the last)"),
            Arg("eps", "float", 1e-5, keyword_only=True),
            Arg("channels_first", "bool", False, keyword_only=True,
                doc="normalise over dim 1 of [N, C, *spatial] (ConvNeXt), not the trailing dims"))
    samples = (Sample("x: f32[N, T, 6] -> LayerNorm"), Sample("x: f32[N, 4] -> LayerNorm(4, eps=0.001)"),
               Sample("x: f32[N, 3, 2, 4] -> LayerNorm((2, 4))"),
               Sample("x: f32[N, 5, 3, 4] -> LayerNorm(5, eps=1e-6, channels_first=true)"))

    def derive(self, a) -> tuple:
        """The normalised dims (trailing ones, or (C,) channels-first)."""
        if a.attrs["channels_first"]:
            return self._channels_first(a.x, a.attrs["normalized_shape"])
        return trailing_dims(self, a.x, a.attrs["normalized_shape"])

    def _channels_first(self, x, ns) -> tuple:
        if x.rank < 2:
            raise self.fail(f"channels_first=true expects [N, C, *spatial], got {x}")
        c = x.shape[1]
        if not is_static(c):
            raise self.fail(f"the channel dim (dim 1) of the input must be concrete, got {x}")
        want = ns[0] if isinstance(ns, tuple) and len(ns) == 1 else ns
        if isinstance(want, tuple) or (want is not None and want != c):
            raise self.fail(f"with channels_first=true normalized_shape is the channel count; it is {_show(ns)} "
                            f"but the input has {c} channels ({x})", f"write LayerNorm({c}, channels_first=true)")
        return (c,)

    def time_local(self, a):
        if a.attrs["channels_first"]:
            return False
        return len(a.derived) == 1 or a.x.rank - len(a.derived) >= 2

    def infer(self, a):
        self.expect_float(a.x)
        if a.attrs["eps"] <= 0:
            raise self.fail(f"eps must be positive, got {a.attrs['eps']}")
        return [a.x]

    def params(self, a):
        d = tuple(int(v) for v in a.derived)
        return {"weight": ParamSpec(d, "ones"), "bias": ParamSpec(d, "zeros")}

    @lowering(since=17)
    def lower_native(self, a, g, inputs):
        x = inputs[0]
        if a.attrs["channels_first"]:           # channels last, normalise, back (what ConvNeXt exports)
            r = a.x.rank
            x = g.op("Transpose", [x], perm=[0] + list(range(2, r)) + [1])
        y = g.op("LayerNormalization", [x, g.param("weight"), g.param("bias")],
                 axis=-len(a.derived), epsilon=float(a.attrs["eps"]))
        if a.attrs["channels_first"]:
            y = g.op("Transpose", [y], perm=[0, r - 1] + list(range(1, r - 1)))
        return [y]

    @lowering()
    def lower_decomposed(self, a, g, inputs):
        # (x - mean) / sqrt(var + eps) * w + b, with the population variance.
        x, k = inputs[0], len(a.derived)
        dt = a.x.np_dtype
        axes = [1] if a.attrs["channels_first"] else list(range(-k, 0))
        mean = g.op("ReduceMean", [x], axes=axes, keepdims=1)       # (only below opset 17: axes an attribute)
        d = g.op("Sub", [x, mean])
        var = g.op("ReduceMean", [g.op("Pow", [d, g.const(np.asarray(2.0, dtype=dt), hint="two")])],
                   axes=axes, keepdims=1)
        std = g.op("Sqrt", [g.op("Add", [var, g.const(np.asarray(float(a.attrs["eps"]), dtype=dt), hint="eps")])])
        w, b = g.param("weight"), g.param("bias")
        if a.attrs["channels_first"]:
            w, b = _channel_bcast(a, g, "weight"), _channel_bcast(a, g, "bias")
        return [g.op("Add", [g.op("Mul", [g.op("Div", [d, std]), w]), b])]

    def forward(self, a, ctx, inputs, params):
        x = inputs[0]
        if a.attrs["channels_first"]:
            r = x.ndim
            y = F.layer_norm(F.transpose(x, (0,) + tuple(range(2, r)) + (1,)), params["weight"], params["bias"],
                             (-1,), a.attrs["eps"])
            return [F.transpose(y, (0, r - 1) + tuple(range(1, r - 1)))]
        return [F.layer_norm(x, params["weight"], params["bias"], tuple(range(-len(a.derived), 0)),
                             a.attrs["eps"])]

    def torch_forward(self, a, ctx, inputs, params):
        shape = tuple(int(v) for v in a.derived)
        if a.attrs["channels_first"]:
            y = TF.layer_norm(inputs[0].movedim(1, -1), shape, params["weight"], params["bias"], a.attrs["eps"])
            return [y.movedim(-1, 1)]
        return [TF.layer_norm(inputs[0], shape, params["weight"], params["bias"], a.attrs["eps"])]


def trailing_dims(op: Op, x, ns) -> tuple:
    """normalized_shape (None: the last dim) checked to be the concrete trailing dims of x."""
    if x.rank < 1:
        raise op.fail(f"expects an input with at least 1 dim, got {x}")
    dims = (x.shape[-1],) if ns is None else tuple(ns) if isinstance(ns, tuple) else (ns,)
    if len(dims) > x.rank or tuple(x.shape[x.rank - len(dims):]) != dims:
        raise op.fail(f"normalized_shape {_show(ns)} is not the trailing dims of the input {x}",
                      f"write {op.name}({x.shape[-1]}) to normalise over the last dim"
                      if is_static(x.shape[-1]) else None)
    if not all(is_static(d) for d in dims):
        raise op.fail(f"the last dim of the input (normalised over) must be concrete, got {x}")
    return dims


def _show(v) -> str:
    return "(" + ", ".join(map(str, v)) + ")" if isinstance(v, tuple) else str(v)


def reduce_mean_last(g, x, k: int = 1):
    """ReduceMean over the last k axes, keeping them. Only emitted below opset 17
    (LayerNormalization is native from 17), where ReduceMean still takes `axes` as an attribute
    (an input from 18)."""
    return g.op("ReduceMean", [x], axes=list(range(-k, 0)), keepdims=1)


def _eps_const(a, g, eps: float) -> str:
    return g.const(np.asarray(eps, dtype=a.x.np_dtype), hint="eps")


def _channel_bcast(a, g, local: str) -> str:
    """A per-channel parameter [C] as [C, 1, ...], to broadcast against [N, C, *spatial]."""
    return g.derived(local, lambda v: v.reshape((-1,) + (1,) * (a.x.rank - 2)), "bcast")


def _ones_zeros(a, g, n: int, hint: str) -> tuple[str, str]:
    """Constant scale 1 and shift 0 of length n, for ONNX normalisations without an affine."""
    dt = a.x.np_dtype
    return g.const(np.ones(n, dt), hint=f"{hint}_ones"), g.const(np.zeros(n, dt), hint=f"{hint}_zeros")


def _channels(op: Op, x, n, what: str = "num_channels", min_rank: int = 2) -> int:
    """The concrete channel count (dim 1) of x, checked against a given count n (None: inferred)."""
    if x.rank < min_rank:
        raise op.fail(f"expects an [N, C{', *spatial' if min_rank > 2 else ', ...'}] input with at least "
                      f"{min_rank} dims, got {x}")
    op.expect_float(x)
    c = x.shape[1]
    if not is_static(c):
        raise op.fail(f"the channel dim (dim 1) of the input must be concrete, got {x}")
    if n is not None and n != c:
        raise op.fail(f"{what} is {n} but the input has {c} channels ({x})",
                      f"write {c}, or leave the count out: it is inferred")
    return int(c)


def _positive_eps(op: Op, eps) -> None:
    if eps is not None and eps <= 0:
        raise op.fail(f"eps must be positive, got {eps}")


class GroupNorm(Op):
    """Group normalisation (Wu & He): the channels of each sample split into num_groups groups,
    each normalised over its channels and positions, then a per-channel scale and shift
    (affine). PyTorch's nn.GroupNorm(num_groups, num_channels)."""
    name = "GroupNorm"
    family = "norm"
    args = (Arg("num_groups", "int"),
            Arg("num_channels", "int", None, doc="the channels (dim 1); checked against the input (inferred)"),
            Arg("eps", "float", 1e-5, keyword_only=True), Arg("affine", "bool", True, keyword_only=True))
    samples = (Sample("x: f32[N, 6, 3, 4] -> GroupNorm(3, 6)"), Sample("x: f32[N, 4, T] -> GroupNorm(2, eps=0.001)"),
               Sample("x: f32[N, 4, 2, 3, 2] -> GroupNorm(1, 4, affine=false)"))

    def derive(self, a) -> int:
        """The channel count."""
        c = _channels(self, a.x, a.attrs["num_channels"])
        g = a.attrs["num_groups"]
        if g < 1:
            raise self.fail(f"num_groups must be positive, got {g}")
        if c % g:
            raise self.fail(f"the {c} channels of the input ({a.x}) do not split into num_groups={g} groups",
                            "choose num_groups among " + ", ".join(str(i) for i in range(1, c + 1) if c % i == 0)
                            if c <= 4096 else None)
        _positive_eps(self, a.attrs["eps"])
        return c

    def infer(self, a):
        return [a.x]

    def params(self, a):
        if not a.attrs["affine"]:
            return {}
        return {"weight": ParamSpec((a.derived,), "ones"), "bias": ParamSpec((a.derived,), "zeros")}

    def explain(self, a):
        c, g = a.derived, a.attrs["num_groups"]
        return [f"GroupNorm: {g} groups of {c}/{g} = {c // g} channels; each sample's group normalised over its "
                f"channels and positions (shape unchanged)"] + explain_params(a.params)

    def _scale_shift(self, a, g):
        if a.attrs["affine"]:
            return g.param("weight"), g.param("bias")
        return _ones_zeros(a, g, a.derived, "affine")

    @lowering(since=21)
    def lower_native(self, a, g, inputs):
        scale, shift = self._scale_shift(a, g)
        return [g.op("GroupNormalization", [inputs[0], scale, shift], num_groups=a.attrs["num_groups"],
                     epsilon=float(a.attrs["eps"]))]

    @lowering()
    def lower_decomposed(self, a, g, inputs):
        # the groups as the channels of [N, G, -1], normalised by InstanceNormalization
        x, groups = inputs[0], a.attrs["num_groups"]
        ones, zeros = _ones_zeros(a, g, groups, "groups")
        y = g.op("InstanceNormalization", [g.op("Reshape", [x, g.ints([0, groups, -1])]), ones, zeros],
                 epsilon=float(a.attrs["eps"]))
        y = g.op("Reshape", [y, g.op("Shape", [x])])
        if a.attrs["affine"]:
            y = g.op("Add", [g.op("Mul", [y, _channel_bcast(a, g, "weight")]), _channel_bcast(a, g, "bias")])
        return [y]

    def forward(self, a, ctx, inputs, params):
        return [F.group_norm(inputs[0], a.attrs["num_groups"], params.get("weight"), params.get("bias"),
                             a.attrs["eps"])]

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.group_norm(inputs[0], a.attrs["num_groups"], params.get("weight"), params.get("bias"),
                              a.attrs["eps"])]


class _InstanceNorm(Op):
    """Instance normalisation (Ulyanov et al.) over the positions of each sample's channel; PyTorch's
    defaults: no affine, no running statistics. With track_running_stats=true, training updates
    running statistics and inference (and ONNX) normalises with them, as PyTorch does."""
    family = "norm"
    args = (Arg("num_features", "int", None, doc="the channels (dim 1); checked against the input (inferred)"),
            Arg("eps", "float", 1e-5, keyword_only=True), Arg("momentum", "float", 0.1, keyword_only=True),
            Arg("affine", "bool", False, keyword_only=True), Arg("track_running_stats", "bool", False, keyword_only=True))
    rank = 0

    def derive(self, a) -> int:
        """The channel count."""
        x = a.x
        if x.rank != self.rank:
            other = [o.name for o in (InstanceNorm1d, InstanceNorm2d, InstanceNorm3d) if o.rank == x.rank]
            raise self.fail(f"expects a {_RANK_NAMES.get(self.rank)} input, got {x}",
                            f"use {other[0]} for a {x.rank}-D input" if other else None)
        c = _channels(self, x, a.attrs["num_features"], "num_features", 3)
        _positive_eps(self, a.attrs["eps"])
        if not 0.0 <= a.attrs["momentum"] <= 1.0:
            raise self.fail(f"momentum must be in [0, 1], got {a.attrs['momentum']}")
        return c

    def infer(self, a):
        return [a.x]

    def params(self, a):
        c, p = a.derived, {}
        if a.attrs["affine"]:
            p = {"weight": ParamSpec((c,), "ones"), "bias": ParamSpec((c,), "zeros")}
        if a.attrs["track_running_stats"]:
            p["running_mean"] = ParamSpec((c,), "zeros", buffer=True)
            p["running_var"] = ParamSpec((c,), "ones", buffer=True)
        return p

    def lower(self, a, g, inputs):
        # inference: the running statistics if tracked (BatchNormalization), else the instance's own
        scale, shift = ((g.param("weight"), g.param("bias")) if a.attrs["affine"]
                        else _ones_zeros(a, g, a.derived, "affine"))
        eps = float(a.attrs["eps"])
        if a.attrs["track_running_stats"]:
            return [g.op("BatchNormalization", [inputs[0], scale, shift, g.param("running_mean"),
                                                g.param("running_var")], epsilon=eps)]
        return [g.op("InstanceNormalization", [inputs[0], scale, shift], epsilon=eps)]

    def forward(self, a, ctx, inputs, params):
        track = a.attrs["track_running_stats"]
        return [F.instance_norm(inputs[0], params.get("weight"), params.get("bias"), params.get("running_mean"),
                                params.get("running_var"), use_input_stats=ctx.training or not track,
                                momentum=a.attrs["momentum"], eps=a.attrs["eps"])]

    def torch_forward(self, a, ctx, inputs, params):
        track = a.attrs["track_running_stats"]
        return [TF.instance_norm(inputs[0], params.get("running_mean"), params.get("running_var"),
                                 params.get("weight"), params.get("bias"), ctx.training if track else True,
                                 a.attrs["momentum"], a.attrs["eps"])]


_RANK_NAMES[5] = "[N, C, D, H, W]"


class InstanceNorm1d(_InstanceNorm):
    """Instance normalisation of [N, C, L]: each sample's channel normalised over its positions."""
    name = "InstanceNorm1d"
    rank = 3
    samples = (Sample("x: f32[N, 3, T] -> InstanceNorm1d"),
               Sample("x: f32[N, 4, 6] -> InstanceNorm1d(4, affine=true, track_running_stats=true)"))


class InstanceNorm2d(_InstanceNorm):
    """Instance normalisation of [N, C, H, W] (style transfer, CycleGAN)."""
    name = "InstanceNorm2d"
    rank = 4
    samples = (Sample("x: f32[N, 3, 4, 5] -> InstanceNorm2d(3, affine=true)"),
               Sample("x: f32[N, 2, 3, 3] -> InstanceNorm2d(eps=0.001, track_running_stats=true)"))


class InstanceNorm3d(_InstanceNorm):
    """Instance normalisation of [N, C, D, H, W] (3-D U-Nets)."""
    name = "InstanceNorm3d"
    rank = 5
    samples = (Sample("x: f32[N, 2, 3, 2, 4] -> InstanceNorm3d(2, affine=true)"),)


class RMSNorm(Op):
    """Root-mean-square normalisation (Zhang & Sennrich; T5, Llama): x / sqrt(mean(x^2) + eps) *
    weight over the trailing dims normalized_shape, with no mean subtracted and no bias.
    PyTorch's nn.RMSNorm: eps defaults to the dtype's machine epsilon."""
    name = "RMSNorm"
    family = "norm"
    args = (Arg("normalized_shape", "ints", None, doc="the trailing dims normalised over (inferred: the last)"),
            Arg("eps", "float", None, keyword_only=True, doc="none: the input dtype's machine epsilon"),
            Arg("elementwise_affine", "bool", True, keyword_only=True))
    samples = (Sample("x: f32[N, T, 6] -> RMSNorm(6, eps=1e-6)"), Sample("x: f32[N, 5] -> RMSNorm"),
               Sample("x: f32[N, 2, 3, 4] -> RMSNorm((3, 4), elementwise_affine=false)"))

    def derive(self, a) -> tuple:
        """The normalised (trailing) dims."""
        return trailing_dims(self, a.x, a.attrs["normalized_shape"])

    def time_local(self, a):
        return len(a.derived) == 1 or a.x.rank - len(a.derived) >= 2

    def _eps(self, a) -> float:
        eps = a.attrs["eps"]
        return float(np.finfo(a.x.np_dtype).eps) if eps is None else float(eps)

    def infer(self, a):
        self.expect_float(a.x)
        _positive_eps(self, a.attrs["eps"])
        return [a.x]

    def params(self, a):
        if not a.attrs["elementwise_affine"]:
            return {}
        return {"weight": ParamSpec(tuple(int(v) for v in a.derived), "ones")}

    def _scale(self, a, g):
        if a.attrs["elementwise_affine"]:
            return g.param("weight")
        return g.const(np.ones(tuple(int(v) for v in a.derived), a.x.np_dtype), hint="scale_ones")

    @lowering(since=23)
    def lower_native(self, a, g, inputs):
        return [g.op("RMSNormalization", [inputs[0], self._scale(a, g)], axis=-len(a.derived),
                     epsilon=self._eps(a))]

    @lowering(since=18)
    def lower_decomposed_axes_input(self, a, g, inputs):
        return self._decomposed(a, g, inputs, lambda y, axes: g.op("ReduceMean", [y, g.ints(axes, "axes")], keepdims=1))

    @lowering()
    def lower_decomposed(self, a, g, inputs):
        return self._decomposed(a, g, inputs, lambda y, axes: g.op("ReduceMean", [y], axes=axes, keepdims=1))

    def _decomposed(self, a, g, inputs, reduce_mean):
        # x / sqrt(mean(x^2) + eps) * w
        x = inputs[0]
        ms = reduce_mean(g.op("Mul", [x, x]), list(range(-len(a.derived), 0)))
        y = g.op("Div", [x, g.op("Sqrt", [g.op("Add", [ms, _eps_const(a, g, self._eps(a))])])])
        return [g.op("Mul", [y, g.param("weight")]) if a.attrs["elementwise_affine"] else y]

    def forward(self, a, ctx, inputs, params):
        return [F.rms_norm(inputs[0], params.get("weight"), len(a.derived), self._eps(a))]

    def torch_forward(self, a, ctx, inputs, params):
        return [TF.rms_norm(inputs[0], tuple(int(v) for v in a.derived), params.get("weight"), self._eps(a))]


class LocalResponseNorm(Op):
    """Local response normalisation across channels (AlexNet): x / (k + alpha/size * sum of x^2
    over `size` neighbouring channels)^beta, PyTorch's window (size//2 channels before,
    (size-1)//2 after)."""
    name = "LocalResponseNorm"
    family = "norm"
    args = (Arg("size", "int"), Arg("alpha", "float", 1e-4, keyword_only=True),
            Arg("beta", "float", 0.75, keyword_only=True), Arg("k", "float", 1.0, keyword_only=True))
    samples = (Sample("x: f32[N, 6, 3, 3] -> LocalResponseNorm(3, alpha=0.1)"),
               Sample("x: f32[N, 5, T] -> LocalResponseNorm(2, alpha=0.5, beta=0.5, k=2.0)"))

    def derive(self, a):
        x = a.x
        if x.rank < 3:
            raise self.fail(f"expects an [N, C, *spatial] input with at least 3 dims, got {x}")
        _channels(self, x, None, min_rank=3)
        if a.attrs["size"] < 1:
            raise self.fail(f"size must be positive, got {a.attrs['size']}")
        if a.attrs["k"] <= 0:
            raise self.fail(f"k must be positive (it keeps the denominator away from 0), got {a.attrs['k']}")
        self.expect_fits(a, ("alpha", "beta", "k"))
        if a.attrs["alpha"] < 0:
            raise self.fail(f"alpha must be >= 0, got {a.attrs['alpha']}")

    def infer(self, a):
        return [a.x]

    def explain(self, a):
        n = a.attrs["size"]
        return [f"LocalResponseNorm: each channel c divided by (k + alpha/{n} \u00b7 sum of squares over channels "
                f"c \u2212 {n // 2} .. c + {(n - 1) // 2})^beta (shape unchanged)"]

    def _pt_window(self, a) -> bool:
        """ONNX's LRN window is PyTorch's for odd sizes only (ONNX puts the longer side after);
        ONNX Runtime runs it on [N, C, H, W]."""
        return a.attrs["size"] % 2 == 1 and a.x.rank == 4

    @lowering(when=lambda a: LocalResponseNorm._pt_window(None, a))
    def lower_native(self, a, g, inputs):
        attrs = a.attrs
        return [g.op("LRN", inputs, size=attrs["size"], alpha=float(attrs["alpha"]), beta=float(attrs["beta"]),
                     bias=float(attrs["k"]))]

    @lowering()
    def lower_decomposed(self, a, g, inputs):
        # PyTorch's own formulation: the squares as [N, 1, C, positions], zero-padded along C and
        # averaged over windows of `size` channels
        x, n, attrs = inputs[0], a.attrs["size"], a.attrs
        c = int(a.x.shape[1])
        dt = a.x.np_dtype
        sq = g.op("Reshape", [g.op("Mul", [x, x]), g.ints([0, 1, c, -1])])
        sq = g.op("Pad", [sq, g.ints([0, 0, n // 2, 0, 0, 0, (n - 1) // 2, 0], "pads")])
        avg = g.op("AveragePool", [sq], kernel_shape=[n, 1], strides=[1, 1])
        avg = g.op("Reshape", [avg, g.op("Shape", [x])])
        den = g.op("Add", [g.op("Mul", [avg, g.const(np.asarray(attrs["alpha"], dt), hint="alpha")]),
                           g.const(np.asarray(attrs["k"], dt), hint="k")])
        return [g.op("Div", [x, g.op("Pow", [den, g.const(np.asarray(attrs["beta"], dt), hint="beta")])])]

    def forward(self, a, ctx, inputs, params):
        at = a.attrs
        return [F.local_response_norm(inputs[0], at["size"], at["alpha"], at["beta"], at["k"])]

    def torch_forward(self, a, ctx, inputs, params):
        at = a.attrs
        return [TF.local_response_norm(inputs[0], at["size"], at["alpha"], at["beta"], at["k"])]
