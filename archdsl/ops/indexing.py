"""Index: what subscripts on a tensor make, `x[:, 0]`, `x[..., :d]`, `x[:, 1:-1:2]`.

Python's rules, per axis: an integer picks one position and drops the axis (negative counts from
the end), a slice `start:stop:step` keeps the positions it names (any part may be left out;
negative bounds count from the end; a negative step walks backwards); `...` stands for as many
whole axes as needed; axes after the last subscript are kept whole.

On a symbolic dim, the positions a subscript names must exist: `x[:, 7]` needs T >= 8 and
`x[:, 2:]` needs T >= 3, recorded as constraints the input sizes are checked against before the
model runs (ir/constraints.py). A slice may not be empty.

ONNX: one Slice over the sliced and picked axes, then one Squeeze of the picked ones.
"""
from __future__ import annotations

from typing import NamedTuple

from ..autodiff import functional as F
from ..backends.torch.lazy import TK
from ..ir.types import is_static
from .base import Arg, Op, Sample

INT64_MAX = 2 ** 63 - 1
INT64_MIN = -(2 ** 63)


class AxisIndex(NamedTuple):
    axis: int
    pick: bool            # an integer index (the axis is dropped) rather than a slice
    start: int | None
    stop: int | None
    step: int


def _bound(v) -> bool:
    return v is None or (isinstance(v, int) and not isinstance(v, bool))


def format_index(index) -> str:
    """The subscripts as written: [:, 1:-1:2, 0]."""
    parts = []
    for it in index:
        if isinstance(it, int):
            parts.append(str(it))
            continue
        start, stop, step = it
        s = f"{'' if start is None else start}:{'' if stop is None else stop}"
        if step is not None and step != 1:
            s += f":{step}"
        parts.append(s)
    return "[" + ", ".join(parts) + "]"


class Index(Op):
    """x[...]: picks positions along each axis by integer (dropping the axis) or by slice
    start:stop:step, with Python's rules (what subscripts on a tensor make)."""
    name = "Index"
    family = "indexing"
    args = (Arg("index", "any", doc="per axis: an int, or a (start, stop, step) slice; made by x[...]"),)
    samples = (Sample("x: f32[N, T, 6]", expr="x[:, 1:-1, :4]"),
               Sample("x: f32[N, 5, 8]", expr="x[..., 0, ::-3]"),
               Sample("x: f32[N, T, 6]", expr="x[:, -1]"),
               Sample("x: f32[N, 7]", expr="x[:, 1::2]"))

    def time_local(self, a):
        # the batch and time axes (0, 1) stay whole
        return all(it.axis >= 2 or (not it.pick and it.start is None and it.stop is None and it.step == 1)
                   for it in a.derived)

    def derive(self, a) -> tuple[AxisIndex, ...]:
        x, index = a.x, a.attrs["index"]
        if not isinstance(index, tuple) or not all(
                (isinstance(i, int) and not isinstance(i, bool))
                or (isinstance(i, tuple) and len(i) == 3 and all(_bound(v) for v in i)) for i in index):
            raise self.fail(f"index must be one int or (start, stop, step) per axis, got {index!r}",
                            "write subscripts: x[:, 0], x[..., 1:-1]")
        if len(index) > x.rank:
            raise self.fail(f"{len(index)} subscripts for the {x.rank}-D tensor {x}", "give at most one per axis")
        out = []
        for axis, it in enumerate(index):
            if isinstance(it, int):
                out.append(AxisIndex(axis, True, it, None, 1))
                continue
            start, stop, step = it
            step = 1 if step is None else step
            if step == 0:
                raise self.fail("a slice step cannot be zero", "x[::2] takes every second position, x[::-1] reverses")
            out.append(AxisIndex(axis, False, start, stop, step))
        return tuple(out)

    def infer(self, a):
        x = a.x
        shape = list(x.shape)
        for it in a.derived:
            shape[it.axis] = self._length(a, it, x.shape[it.axis])      # None for a pick
        return [x.with_shape(tuple(d for d in shape if d is not None))]

    def _length(self, a, it: AxisIndex, d):
        """The length of a slice along a dim of size d (checking a pick on the way)."""
        where = f"{format_index(a.attrs['index'])} on dim {it.axis}"
        if it.pick:
            k = it.start
            need = k + 1 if k >= 0 else -k
            if not self.at_least(a, d, need, f"{where} needs a dim of at least {need}"):
                raise self.fail(f"index {k} is out of range for dim {it.axis} of size {d} ({a.x})",
                                f"valid indices are {-d}..{d - 1}" if is_static(d) else "count from the end with -1")
            return None
        if is_static(d):
            n = len(range(*slice(it.start, it.stop, it.step).indices(int(d))))
            if n == 0:
                raise self.fail(f"the slice {format_index(((it.start, it.stop, it.step),))[1:-1]} of dim "
                                f"{it.axis} (size {d}) is empty", "a slice must keep at least one position")
            return n
        # a symbolic dim: positions as expressions of d, valid when they need no clipping
        step, (start, stop) = it.step, (it.start, it.stop)
        needs = []          # d >= k for each bound that would otherwise be clipped
        if step > 0:
            lo = 0 if start is None else (start if start >= 0 else d + start)
            hi = d if stop is None else (stop if stop >= 0 else d + stop)
            if start is not None and start < 0:
                needs.append(-start)
            if stop is not None and stop >= 0:
                needs.append(stop)
            span = hi - lo
        else:
            lo = d - 1 if start is None else (start if start >= 0 else d + start)
            hi = -1 if stop is None else (stop if stop >= 0 else d + stop)
            if start is not None:
                needs.append(start + 1 if start >= 0 else -start)
            if stop is not None and stop < 0:
                needs.append(-stop - 1)
            span, step = lo - hi, -step
        for k in needs:
            if not self.at_least(a, d, k, f"{where} needs a dim of at least {k}"):
                raise self.fail(f"the slice is out of range for dim {it.axis} of size {d} ({a.x})",
                                "negative bounds count from the end")
        n = (span + step - 1) // step
        if not self.at_least(a, n, 1, f"{where} must not be empty"):
            raise self.fail(f"the slice of dim {it.axis} (size {d}) is always empty ({a.x})",
                            "a slice must keep at least one position")
        return n

    def explain(self, a):
        x, y = a.x, a.out_types[0]
        parts = []
        for it in a.derived:
            d = x.shape[it.axis]
            if it.pick:
                parts.append(f"dim {it.axis} ({d}): position {it.start}, dropped")
                continue
            n = y.shape[it.axis - sum(p.pick for p in a.derived if p.axis < it.axis)]
            if n != d:
                spelled = format_index(((it.start, it.stop, it.step),))[1:-1]
                parts.append(f"dim {it.axis}: {spelled} keeps {n} of {d}")
        return [f"Index {format_index(a.attrs['index'])}: {x} \u2192 {y}"
                + (f"; {'; '.join(parts)}" if parts else "")]

    def describe(self, attrs):
        index = attrs["index"]
        return format_index(index) if isinstance(index, tuple) else repr(index)

    def lower(self, a, g, inputs):
        (x,) = inputs
        axes, starts, ends, steps, picked = [], [], [], [], []
        for it in a.derived:
            if it.pick:
                k = it.start
                axes.append(it.axis)
                starts.append(k)
                ends.append(k + 1 if k != -1 else INT64_MAX)
                steps.append(1)
                picked.append(it.axis)
            elif not (it.start is None and it.stop is None and it.step == 1):
                axes.append(it.axis)
                fwd = it.step > 0
                starts.append(it.start if it.start is not None else (0 if fwd else INT64_MAX))
                ends.append(it.stop if it.stop is not None else (INT64_MAX if fwd else INT64_MIN))
                steps.append(it.step)
        if not axes:
            return [x]
        y = g.op("Slice", [x, g.ints(starts, "starts"), g.ints(ends, "ends"), g.ints(axes, "axes"),
                           g.ints(steps, "steps")])
        if picked:
            y = g.op("Squeeze", [y, g.ints(picked, "axes")])
        return [y]

    def forward(self, a, ctx, inputs, params):
        idx = tuple(it.start if it.pick else slice(it.start, it.stop, it.step) for it in a.derived)
        return [F.getitem(inputs[0], idx)]

    def torch_forward(self, a, ctx, inputs, params):
        items = tuple(it.start if it.pick else slice(it.start, it.stop, it.step) for it in a.derived)
        if any(not it.pick and it.step < 0 for it in a.derived):     # torch slices step forward only
            return [TK.index(inputs[0], items)]
        return [inputs[0][items]]
