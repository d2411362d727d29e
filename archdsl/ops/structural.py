"""Structural ops: Flatten, Reshape, Transpose (alias Permute), Concat, Split and Chunk (several
outputs), Squeeze, Unsqueeze, Pad, Roll, Tile, Expand, and the elementwise binary Add, Sub, Mul
that the elaborator makes of `a + b`, `a - b`, `a * b`.

Shape rules work with symbolic dims; negative dims are normalised against the input rank. The
ops taken from PyTorch keep its argument names and meanings (`Chunk(2, dim=-1)`,
`Roll(shifts, dims)`, `Pad(pad)` with F.pad's pairs from the last dim backwards).
"""
from __future__ import annotations

import operator
from functools import reduce

import numpy as np

from ..autodiff import functional as F
from ..backends.torch.lazy import TK, torch
from ..ir.types import Sym, TensorType, fit_number, is_static
from .base import CUDA_PROVIDER, Arg, Op, Sample, Window, lowering


def _prod(dims):
    return reduce(lambda a, b: a * b, dims, 1)


def _concrete(dims) -> list[int] | None:
    return [int(d) for d in dims] if all(is_static(d) for d in dims) else None


class Flatten(Op):
    """PyTorch's Flatten: merges dims start_dim..end_dim (inclusive) into one."""
    name = "Flatten"
    family = "structural"
    args = (Arg("start_dim", "int", 1), Arg("end_dim", "int", -1))
    samples = (Sample("x: f32[N, 2, 3, 4] -> Flatten"), Sample("x: f32[N, T, 2, 3] -> Flatten(start_dim=2)"),
               Sample("x: f32[N, 3, T] -> Flatten(start_dim=0, end_dim=1)"))

    def derive(self, a) -> tuple[int, int]:
        """(start, end): the merged dims, normalised against the rank."""
        x, attrs = a.x, a.attrs
        r = max(x.rank, 1)      # a 0-D input flattens like a 1-D one, as in PyTorch
        s, e = attrs["start_dim"], attrs["end_dim"]
        for what, v in (("start_dim", s), ("end_dim", e)):
            if not -r <= v < r:
                raise self.fail(f"{what}={v} is out of range for the {x.rank}-D input {x}",
                                f"choose a dim in {-r}..{r - 1}")
        s, e = s % r, e % r
        if s > e:
            raise self.fail(f"start_dim {attrs['start_dim']} (dim {s}) comes after end_dim "
                            f"{attrs['end_dim']} (dim {e}) for the {x.rank}-D input {x}")
        return s, e

    def infer(self, a):
        x = a.x
        s, e = a.derived
        if x.rank == 0:
            return [x.with_shape((1,))]
        return [x.with_shape(x.shape[:s] + (_prod(x.shape[s:e + 1]),) + x.shape[e + 1:])]

    @lowering(since=21, providers=(CUDA_PROVIDER,))
    def lower_cuda(self, a, g, inputs):
        # ONNX Runtime's CUDA Flatten kernel stops at Flatten-13 (Flatten-21 would run on the
        # CPU): the same merge as a Reshape, whose kernel covers every opset
        return self.lower(a, g, inputs, native=False)

    @lowering()
    def lower(self, a, g, inputs, native=True):
        (x,) = inputs
        t = a.x
        s, e = a.derived
        r = t.rank
        if r == 0:
            return [g.op("Reshape", [x, g.ints([1])])]
        if s == e:
            return [x]
        if native and s == 1 and e == r - 1:
            return [g.op("Flatten", [x], axis=1)]
        head = [0] * s + [-1]           # 0 copies the input dim at the same index
        tail = _concrete(t.shape[e + 1:])
        if tail is not None:
            return [g.op("Reshape", [x, g.ints(head + tail)])]
        # One symbolic dim among the merged one and the trailing ones: -1 finds it.
        merged = _prod(t.shape[s:e + 1])
        rest = [merged] + list(t.shape[e + 1:])
        if sum(not is_static(d) for d in rest) == 1:
            return [g.op("Reshape", [x, g.ints([0] * s + [int(d) if is_static(d) else -1 for d in rest])])]
        # Several symbolic dims: take the trailing ones from the runtime shape (a Concat of a Shape
        # output, which the CUDA provider runs on the CPU).
        shape = g.op("Shape", [x])
        tail_dims = g.op("Slice", [shape, g.ints([e + 1], "starts"), g.ints([r], "ends"), g.ints([0], "axes")])
        return [g.op("Reshape", [x, g.op("Concat", [g.ints(head), tail_dims], axis=0)])]

    def forward(self, a, ctx, inputs, params):
        (x,) = inputs
        if a.x.rank == 0:
            return [F.reshape(x, (1,))]
        s, e = a.derived
        shp = tuple(x.shape)
        return [F.reshape(x, shp[:s] + (-1,) + shp[e + 1:])]

    def torch_forward(self, a, ctx, inputs, params):
        if a.x.rank == 0:
            return [inputs[0].reshape(1)]
        return [inputs[0].flatten(*a.derived)]


class Reshape(Op):
    """Reshape to `shape` (ONNX semantics): -1 infers one dim, 0 copies the input dim at the
    same index. The input may have symbolic dims; element counts are checked when static."""
    name = "Reshape"
    family = "structural"
    args = (Arg("shape", "shape"),)
    samples = (Sample("x: f32[N, 2, 6] -> Reshape((0, 3, -1))"), Sample("x: f32[N, T, 6] -> Reshape((0, 0, 2, 3))"))

    def infer(self, a):
        x = a.x
        shape = tuple(a.attrs["shape"])
        if sum(1 for v in shape if v == -1) > 1:
            raise self.fail(f"at most one dim of the target shape {shape} can be -1")
        out = []
        for i, v in enumerate(shape):
            if v == 0:
                if i >= x.rank:
                    raise self.fail(f"target dim {i} is 0 (copy the input dim), but the input {x} "
                                    f"has only {x.rank} dims")
                out.append(x.shape[i])
            elif v < -1:
                raise self.fail(f"target shape {shape} has the invalid dim {v}",
                                "use positive sizes, -1 to infer one dim, or 0 to copy an input dim")
            else:
                out.append(v)
        # Cancel dims the input and the target have in common (copied or equal), then compare.
        rest_in = list(x.shape)
        rest_out = []
        for d in out:
            if d == -1:
                continue
            if d in rest_in:
                rest_in.remove(d)
            else:
                rest_out.append(d)
        have, want = _prod(rest_in), _prod(rest_out)   # want is an int: rest_out holds no syms
        # (copied symbolic dims always cancel against the input dim they copy)
        if -1 in out:
            if want == 0:
                raise self.fail(f"cannot infer the -1 dim of {shape} next to a 0-sized dim")
            if is_static(have):
                if have % want:
                    raise self.fail(f"cannot reshape {x} ({_prod(x.shape)} elements) to {shape}: "
                                    f"{have} is not divisible by {want}")
                inferred = have // want
            else:
                inferred = have // want     # affine when divisible, else an opaque symbol
            out[out.index(-1)] = inferred
        elif have != want:
            if is_static(have):
                raise self.fail(f"cannot reshape {x} ({_prod(x.shape)} elements) to {shape} "
                                f"({_prod(out)} elements)")
            raise self.fail(f"cannot reshape {x} to {shape}: the symbolic dims "
                            f"{', '.join(str(d) for d in rest_in if isinstance(d, Sym))} have no place in it",
                            "use 0 to copy a dim of the input, or -1 to infer one")
        return [x.with_shape(tuple(out))]

    def lower(self, a, g, inputs):
        return [g.op("Reshape", [inputs[0], g.ints(list(a.attrs["shape"]))])]

    def forward(self, a, ctx, inputs, params):
        (x,) = inputs
        shp = tuple(x.shape)
        return [F.reshape(x, tuple(shp[i] if v == 0 else v for i, v in enumerate(a.attrs["shape"])))]

    def torch_forward(self, a, ctx, inputs, params):
        x = inputs[0]
        return [x.reshape([x.shape[i] if v == 0 else v for i, v in enumerate(a.attrs["shape"])])]


class Transpose(Op):
    """Permutes the dims: output dim i is input dim perm[i]."""
    name = "Transpose"
    family = "structural"
    args = (Arg("perm", "shape"),)
    samples = (Sample("x: f32[N, T, 4] -> Transpose((0, 2, 1))"),)

    def derive(self, a) -> tuple[int, ...]:
        """The permutation, normalised against the rank."""
        x, perm = a.x, tuple(a.attrs["perm"])
        if len(perm) != x.rank:
            raise self.fail(f"perm {perm} has {len(perm)} entries, but the input {x} has {x.rank} dims")
        if any(not -x.rank <= p < x.rank for p in perm):
            raise self.fail(f"perm {perm} has a dim out of range for the {x.rank}-D input {x}")
        norm = tuple(p % x.rank for p in perm)
        if sorted(norm) != list(range(x.rank)):
            raise self.fail(f"perm {perm} is not a permutation of the dims 0..{x.rank - 1} of {x}",
                            "each dim must appear exactly once")
        return norm

    def infer(self, a):
        return [a.x.with_shape(tuple(a.x.shape[p] for p in a.derived))]

    def lower(self, a, g, inputs):
        if not a.derived:        # a 0-D tensor: ONNX cannot carry an empty `perm` attribute
            return [g.op("Identity", inputs)]
        return [g.op("Transpose", inputs, perm=list(a.derived))]

    def forward(self, a, ctx, inputs, params):
        return [F.transpose(inputs[0], a.derived)]

    def torch_forward(self, a, ctx, inputs, params):
        return [inputs[0].permute(a.derived)]


class Permute(Transpose):
    """Transpose under PyTorch's other name."""
    name = "Permute"
    samples = (Sample("x: f32[N, 2, 3, 4] -> Permute((0, 2, 3, 1))"),)


class Concat(Op):
    """Concatenates 2 or more inputs along `axis`; every other dim must agree, or, with
    broadcast=true, be 1 and expand (ViT's class token [1, 1, d] before patches [N, P, d])."""
    name = "Concat"
    family = "structural"
    args = (Arg("axis", "int", 1),
            Arg("broadcast", "bool", False, doc="size-1 dims off the axis expand to the other inputs' size"))
    n_inputs = (2, -1)
    samples = (Sample("(a: f32[N, 2, 3], b: f32[N, 4, 3]) -> Concat"),
               Sample("(a: f32[N, T, 3], b: f32[N, T, 2], c: f32[N, T, 1]) -> Concat(axis=-1)"),
               Sample("(c: f32[1, 1, 4], x: f32[N, T, 4]) -> Concat(axis=1, broadcast=true)"),
               Sample("(a: f32[N, 1, 2], b: f32[1, 3, 1], c: f32[N, 3, 2]) -> Concat(axis=-1, broadcast=true)"))

    def derive(self, a) -> int:
        """The concat axis, normalised against the rank."""
        x, ax = a.x, a.attrs["axis"]
        if not -x.rank <= ax < x.rank:
            raise self.fail(f"axis {ax} is out of range for the {x.rank}-D input {x}",
                            f"choose an axis in {-x.rank}..{x.rank - 1}" if x.rank else None)
        return ax % x.rank

    def time_local(self, a):
        return a.x.rank >= 3 and a.derived >= 2

    def infer(self, a):
        in_types = a.in_types
        if len(in_types) < 2:
            raise self.fail(f"needs at least 2 inputs, got {len(in_types)}")
        x0, ax, broadcast = in_types[0], a.derived, a.attrs["broadcast"]
        for i, t in enumerate(in_types[1:], start=1):
            if t.dtype != x0.dtype:
                raise self.fail(f"input {i} has dtype {t.dtype} but input 0 has {x0.dtype} ({t} vs {x0})")
            if t.rank != x0.rank:
                raise self.fail(f"input {i} {t} has {t.rank} dims but input 0 {x0} has {x0.rank}")
        out = list(x0.shape)
        for d in range(x0.rank):
            if d == ax:
                continue
            # the size every input must have in dim d: input 0's, or with broadcast the first not 1
            k = next((i for i, t in enumerate(in_types) if t.shape[d] != 1), 0) if broadcast else 0
            out[d] = in_types[k].shape[d]
            for i, t in enumerate(in_types):
                if i == k or (broadcast and t.shape[d] == 1):
                    continue
                if not self.same_dim(a, t.shape[d], out[d], f"input {i} must agree with input {k} in dim {d}"):
                    raise self.fail(f"input {i} {t} differs from input {k} {in_types[k]} in dim {d} "
                                    f"({t.shape[d]} vs {out[d]}); only dim {ax} (the concat axis) may differ",
                                    None if broadcast or 1 not in (t.shape[d], out[d]) else
                                    "Concat(..., broadcast=true) expands size-1 dims")
        out[ax] = sum((t.shape[ax] for t in in_types[1:]), x0.shape[ax])
        return [x0.with_shape(tuple(out))]

    def _expanded(self, a, i: int) -> list[int]:
        """The dims input i broadcasts along (size 1 where the output is not)."""
        return [d for d, (s, o) in enumerate(zip(a.in_types[i].shape, a.out_types[0].shape))
                if d != a.derived and s == 1 and o != 1]

    def lower(self, a, g, inputs):
        ins = list(inputs)
        for i, name in enumerate(inputs):
            dims = self._expanded(a, i)
            if not dims:
                continue
            # Expand broadcasts both ways: 1 keeps the input's dim; concrete sizes in one Expand,
            # each runtime size read from an input that has it (builder.expand_like)
            out = a.out_types[0].shape
            fixed = [int(o) if d in dims and is_static(o) else 1 for d, o in enumerate(out)]
            if any(f != 1 for f in fixed):
                name = g.op("Expand", [name, g.ints(fixed)])
            runtime = []
            for d in dims:
                if not is_static(out[d]):
                    k = next(k for k, t in enumerate(a.in_types) if t.shape[d] == out[d])
                    runtime.append((d, inputs[k], a.in_types[k].rank, d))
            ins[i] = g.expand_like(name, len(out), runtime)
        return [g.op("Concat", ins, axis=a.derived)]

    def forward(self, a, ctx, inputs, params):
        xs = list(inputs)
        for i, x in enumerate(inputs):
            dims = self._expanded(a, i)
            if dims:
                shape = [max(t.shape[d] for t in inputs) if d in dims else s for d, s in enumerate(x.shape)]
                xs[i] = F.broadcast_to(x, tuple(shape))
        return [F.concat(xs, a.derived)]

    def torch_forward(self, a, ctx, inputs, params):
        xs = list(inputs)
        for i, x in enumerate(inputs):
            dims = self._expanded(a, i)
            if dims:        # each expanded dim's size read from an input that has it
                src = {d: next(k for k, t in enumerate(a.in_types) if t.shape[d] != 1) for d in dims}
                xs[i] = x.expand([inputs[src[d]].shape[d] if d in dims else -1 for d in range(a.in_types[i].rank)])
        return [torch.cat(xs, a.derived)]


def norm_dim(op: Op, x, d: int, what: str = "dim", extra: int = 0) -> int:
    """dim d of x (extra = 1 for a position to insert at) in 0..rank-1+extra, or a clear error."""
    r = x.rank + extra
    if not -r <= d < r:
        raise op.fail(f"{what} {d} is out of range for the {x.rank}-D input {x}",
                      f"choose {what} in {-r}..{r - 1}" if r else None)
    return d % r


def _static_dim(op: Op, x, d: int, why: str) -> int:
    if not is_static(x.shape[d]):
        raise op.fail(f"dim {d} of the input must be concrete {why}, got {x}")
    return int(x.shape[d])


class _Pieces(Op):
    """Splits one input along `dim` into several outputs (`a, b = x -> Chunk(2, dim=-1)`)."""
    family = "structural"

    def sizes(self, a, n: int) -> list[int]:
        raise NotImplementedError

    def derive(self, a) -> tuple[int, tuple]:
        """(the dim, the piece sizes)."""
        x = a.x
        if x.rank == 0:
            raise self.fail(f"cannot split a 0-D input {x}")
        d = norm_dim(self, x, a.attrs["dim"])
        n = _static_dim(self, x, d, "to split it")
        return d, tuple(self.sizes(a, n))

    def time_local(self, a):
        return a.x.rank >= 3 and a.derived[0] >= 2

    def infer(self, a):
        d, sizes = a.derived
        x = a.x
        return [x.with_shape(x.shape[:d] + (k,) + x.shape[d + 1:]) for k in sizes]

    def explain(self, a):
        d, sizes = a.derived
        return [f"{self.name}: dim {d} of {a.x} ({sum(sizes)}) into {len(sizes)} pieces of "
                f"{', '.join(map(str, sizes))}"]

    def lower(self, a, g, inputs):
        d, sizes = a.derived
        if len(sizes) == 1:
            return [inputs[0]]
        outs = g.op("Split", [inputs[0], g.ints(list(sizes), "split")], n_out=len(sizes), axis=d)
        return list(outs)

    def forward(self, a, ctx, inputs, params):
        d, sizes = a.derived
        if len(sizes) == 1:
            return [inputs[0]]
        return list(F.split(inputs[0], list(sizes), d))

    def torch_forward(self, a, ctx, inputs, params):
        d, sizes = a.derived
        parts = torch.split(inputs[0], list(sizes), d) if len(sizes) > 1 else [inputs[0]]
        return [parts[i] for i in range(len(sizes))]


class Split(_Pieces):
    """Splits along `dim` into pieces of split_size_or_sections elements (the last piece takes
    the rest) or, given a tuple, of those sizes: torch.split. One output per piece."""
    name = "Split"
    args = (Arg("split_size_or_sections", "ints"), Arg("dim", "int", 0))
    samples = (Sample("x: f32[N, 7, 3] -> Split(3, dim=1)"), Sample("x: f32[N, T, 6] -> Split((1, 3, 2), dim=-1)"))

    def sizes(self, a, n):
        v = a.attrs["split_size_or_sections"]
        if isinstance(v, tuple):
            if any(k < 1 for k in v):
                raise self.fail(f"section sizes must be positive, got {_tuple(v)}")
            if sum(v) != n:
                raise self.fail(f"sections {_tuple(v)} add up to {sum(v)}, but dim {a.attrs['dim']} of {a.x} is {n}",
                                "the sections must add up to the dim's size")
            return list(v)
        if v < 1:
            raise self.fail(f"split_size must be positive, got {v}")
        return [v] * (n // v) + ([n % v] if n % v else [])


class Chunk(_Pieces):
    """Splits along `dim` into `chunks` pieces of ceil(size / chunks) elements, the last one
    smaller (torch.chunk; like it, fewer pieces when the size runs out: 6 in 4 chunks gives 3)."""
    name = "Chunk"
    args = (Arg("chunks", "int"), Arg("dim", "int", 0))
    samples = (Sample("x: f32[N, T, 8] -> Chunk(2, dim=-1)"), Sample("x: f32[N, 7, 2] -> Chunk(3, dim=1)"))

    def sizes(self, a, n):
        c = a.attrs["chunks"]
        if c < 1:
            raise self.fail(f"chunks must be positive, got {c}")
        if n == 0:
            raise self.fail(f"cannot chunk dim {a.attrs['dim']} of size 0 ({a.x})")
        size = -(-n // c)
        return [size] * (n // size) + ([n % size] if n % size else [])


def _tuple(v) -> str:
    return "(" + ", ".join(map(str, v)) + ")" if isinstance(v, tuple) else str(v)


class Squeeze(Op):
    """Removes size-1 dims: `dim` (an int or a tuple), or every dim of concrete size 1 without
    one. Unlike PyTorch, naming a dim whose size is not 1 is an error, not a no-op."""
    name = "Squeeze"
    family = "structural"
    args = (Arg("dim", "ints", None),)
    samples = (Sample("x: f32[N, 1, 4, 1] -> Squeeze"), Sample("x: f32[N, T, 1] -> Squeeze(-1)"),
               Sample("x: f32[N, 1, 3, 1] -> Squeeze((1, 3))"))

    def derive(self, a) -> tuple:
        """The removed dims, sorted."""
        x, d = a.x, a.attrs["dim"]
        if d is None:
            return tuple(i for i, v in enumerate(x.shape) if is_static(v) and v == 1)
        dims = tuple(d) if isinstance(d, tuple) else (d,)
        out = sorted({norm_dim(self, x, v) for v in dims})
        for i in out:
            if not (is_static(x.shape[i]) and x.shape[i] == 1):
                raise self.fail(f"dim {i} of {x} has size {x.shape[i]}; Squeeze removes only dims of size 1",
                                "to drop a dim of another size, index or reshape instead")
        return tuple(out)

    def time_local(self, a):
        return a.x.rank >= 3 and all(i >= 2 for i in a.derived)

    def infer(self, a):
        return [a.x.with_shape(tuple(v for i, v in enumerate(a.x.shape) if i not in a.derived))]

    def lower(self, a, g, inputs):
        if not a.derived:
            return [inputs[0]]
        return [g.op("Squeeze", [inputs[0], g.ints(list(a.derived), "axes")])]

    def forward(self, a, ctx, inputs, params):
        return [F.squeeze(inputs[0], a.derived) if a.derived else inputs[0]]

    def torch_forward(self, a, ctx, inputs, params):
        return [inputs[0].squeeze(a.derived) if a.derived else inputs[0]]


class Unsqueeze(Op):
    """Inserts a dim of size 1 at position `dim` of the output (torch.unsqueeze)."""
    name = "Unsqueeze"
    family = "structural"
    args = (Arg("dim", "int"),)
    samples = (Sample("x: f32[N, 4] -> Unsqueeze(1)"), Sample("x: f32[N, T, 3] -> Unsqueeze(-1)"))

    def derive(self, a) -> int:
        return norm_dim(self, a.x, a.attrs["dim"], extra=1)

    def time_local(self, a):
        return a.x.rank >= 2 and a.derived >= 2

    def infer(self, a):
        d, x = a.derived, a.x
        return [x.with_shape(x.shape[:d] + (1,) + x.shape[d:])]

    def lower(self, a, g, inputs):
        return [g.op("Unsqueeze", [inputs[0], g.ints([a.derived], "axes")])]

    def forward(self, a, ctx, inputs, params):
        return [F.expand_dims(inputs[0], a.derived)]

    def torch_forward(self, a, ctx, inputs, params):
        return [inputs[0].unsqueeze(a.derived)]


class Pad(Op):
    """Pads with F.pad's convention: `pad` = (left, right) pairs starting from the last dim
    ((1, 1, 2, 2) pads the last dim by 1 and the one before by 2), mode 'constant' (filled with
    `value`), 'reflect' (mirrored, edge not repeated) or 'replicate' (edge repeated)."""
    name = "Pad"
    family = "structural"
    args = (Arg("pad", "shape"), Arg("mode", "str", "constant", choices=("constant", "reflect", "replicate")),
            Arg("value", "float", 0.0, keyword_only=True))
    samples = (Sample("x: f32[N, 3, 4, 5] -> Pad((1, 2, 0, 1))"),
               Sample("x: f32[N, 2, 5, 4] -> Pad((2, 1, 3, 3), 'reflect')"),
               Sample("x: f32[N, 3, T] -> Pad((2, 1), 'replicate')"))

    def derive(self, a) -> tuple:
        """(before, after) per dim of the input, first dim first."""
        x, p, mode = a.x, a.attrs["pad"], a.attrs["mode"]
        if len(p) % 2 or not p or len(p) > 2 * x.rank:
            raise self.fail(f"pad {_tuple(p)} must hold (left, right) pairs for at most the {x.rank} dims of {x}",
                            "(1, 1) pads the last dim on both sides, (1, 1, 2, 2) the last two")
        if any(v < 0 for v in p):
            raise self.fail(f"pad amounts must be >= 0, got {_tuple(p)}")
        k = len(p) // 2
        pairs = [(0, 0)] * (x.rank - k) + [(p[2 * i], p[2 * i + 1]) for i in range(k)][::-1]
        for i, ((b, e), size) in enumerate(zip(pairs, x.shape)):
            if not (b or e) or not is_static(size):
                continue
            if mode == "reflect" and max(b, e) >= size:
                raise self.fail(f"reflect padding of {max(b, e)} needs dim {i} to be longer than that; it is {size} ({x})",
                                "use mode 'replicate', or pad less")
            if mode == "replicate" and size == 0:
                raise self.fail(f"replicate padding of dim {i} needs at least one element to repeat ({x})")
        return tuple(pairs)

    def time_local(self, a):
        return a.x.rank >= 3 and not any(a.derived[0]) and not any(a.derived[1])

    def window(self, a):
        """Padding the spatial dims of [N, C, *S] moves positions but widens no receptive field."""
        n = a.x.rank - 2
        if n < 1 or any(a.derived[0]) or any(a.derived[1]):
            return None
        return Window("conv", (1,) * n, (1,) * n, (1,) * n)

    def infer(self, a):
        x, v = a.x, a.attrs["value"]
        if v != 0.0:
            if x.is_float and not abs(v) <= float(np.finfo(x.np_dtype).max):
                raise self.fail(f"value {v} does not fit the input's dtype {x.dtype}")
            if not x.is_float and (x.dtype == "bool" or v != int(v) or not
                                   np.iinfo(x.np_dtype).min <= v <= np.iinfo(x.np_dtype).max):
                raise self.fail(f"value {v} is not a {x.dtype} (the input's dtype {x})")
        return [x.with_shape(tuple(d + b + e for d, (b, e) in zip(x.shape, a.derived)))]

    def lower(self, a, g, inputs):
        pads = [b for b, _ in a.derived] + [e for _, e in a.derived]
        mode = {"replicate": "edge"}.get(a.attrs["mode"], a.attrs["mode"])
        ins = [inputs[0], g.ints(pads, "pads")]
        if mode == "constant" and a.attrs["value"] != 0.0:
            ins.append(g.const(np.asarray(a.attrs["value"], a.x.np_dtype), hint="value"))
        return [g.op("Pad", ins, mode=mode)]

    def forward(self, a, ctx, inputs, params):
        return [F.pad(inputs[0], list(a.derived), a.attrs["value"], a.attrs["mode"])]

    def torch_forward(self, a, ctx, inputs, params):
        return [TK.pad(inputs[0], a.derived, mode=a.attrs["mode"], value=a.attrs["value"])]


class Roll(Op):
    """Shifts elements along `dims` by `shifts`, wrapping around (torch.roll; Swin's shifted
    windows). The rolled dims must be concrete."""
    name = "Roll"
    family = "structural"
    args = (Arg("shifts", "ints"), Arg("dims", "ints"))
    samples = (Sample("x: f32[N, 5, 6, 3] -> Roll((-2, -2), (1, 2))"), Sample("x: f32[N, T, 7] -> Roll(3, -1)"))

    def derive(self, a) -> tuple:
        """((dim, shift normalised to 0..size-1), ...)."""
        x, sh, dims = a.x, a.attrs["shifts"], a.attrs["dims"]
        sh = sh if isinstance(sh, tuple) else (sh,)
        dims = dims if isinstance(dims, tuple) else (dims,)
        if len(sh) != len(dims):
            raise self.fail(f"shifts {_tuple(a.attrs['shifts'])} and dims {_tuple(a.attrs['dims'])} differ in length",
                            "give one shift per rolled dim")
        out = []
        for s, d in zip(sh, dims):
            d = norm_dim(self, x, d)
            n = _static_dim(self, x, d, "to roll it")
            out.append((d, s % n if n else 0))
        if len({d for d, _ in out}) != len(out):
            raise self.fail(f"dims {_tuple(a.attrs['dims'])} name a dim twice")
        return tuple(out)

    def time_local(self, a):
        return a.x.rank >= 3 and all(d >= 2 or s == 0 for d, s in a.derived)

    def infer(self, a):
        return [a.x]

    def lower(self, a, g, inputs):
        # the last s elements first, then the rest: two Slices and a Concat per rolled dim
        y = inputs[0]
        for d, s in a.derived:
            if s == 0:
                continue
            n = int(a.x.shape[d])
            ax = g.ints([d], "axes")
            tail = g.op("Slice", [y, g.ints([n - s], "starts"), g.ints([n], "ends"), ax])
            head = g.op("Slice", [y, g.ints([0], "starts"), g.ints([n - s], "ends"), ax])
            y = g.op("Concat", [tail, head], axis=d)
        return [y]

    def forward(self, a, ctx, inputs, params):
        return [F.roll(inputs[0], [s for _, s in a.derived], [d for d, _ in a.derived])]

    def torch_forward(self, a, ctx, inputs, params):
        return [torch.roll(inputs[0], [s for _, s in a.derived], [d for d, _ in a.derived])]


class Tile(Op):
    """Repeats the input `dims[i]` times along each dim (torch.tile; PyTorch's x.repeat):
    with more entries than input dims, the input gains leading dims of size 1 first."""
    name = "Tile"
    family = "structural"
    args = (Arg("dims", "shape"),)
    samples = (Sample("x: f32[N, 2, 3] -> Tile((1, 2, 3))"), Sample("x: f32[3, 4] -> Tile((2, 1, 2))"))

    def derive(self, a) -> tuple:
        """The repeats, one per output dim."""
        x, reps = a.x, tuple(a.attrs["dims"])
        if not reps:
            raise self.fail("dims must name at least one repeat count", "Tile((1, 2)) doubles the last dim")
        if any(r < 1 for r in reps):
            raise self.fail(f"repeat counts must be >= 1, got {_tuple(reps)}")
        return (1,) * (x.rank - len(reps)) + reps

    def infer(self, a):
        x, reps = a.x, a.derived
        shape = (1,) * (len(reps) - x.rank) + tuple(x.shape)
        return [x.with_shape(tuple(d * r if r != 1 else d for d, r in zip(shape, reps)))]

    def lower(self, a, g, inputs):
        x, reps = inputs[0], a.derived
        extra = len(reps) - a.x.rank
        if extra:
            x = g.op("Unsqueeze", [x, g.ints(list(range(extra)), "axes")])
        return [g.op("Tile", [x, g.ints(list(reps), "repeats")])]

    def forward(self, a, ctx, inputs, params):
        x, reps = inputs[0], a.derived
        extra = len(reps) - x.ndim
        if extra:
            x = F.reshape(x, (1,) * extra + tuple(x.shape))
        return [F.tile(x, reps)]

    def torch_forward(self, a, ctx, inputs, params):
        return [torch.tile(inputs[0], a.derived)]


class Expand(Op):
    """Broadcasts size-1 dims to `size` (x.expand in PyTorch): -1 keeps a dim, extra leading
    entries add dims. No data is copied in the ONNX graph's semantics; the gradient sums."""
    name = "Expand"
    family = "structural"
    args = (Arg("size", "shape"),)
    samples = (Sample("x: f32[N, 1, 4] -> Expand((-1, 3, -1))"), Sample("x: f32[1, 3] -> Expand((2, 4, 3))"))

    def infer(self, a):
        x, size = a.x, tuple(a.attrs["size"])
        if len(size) < x.rank:
            raise self.fail(f"size {_tuple(size)} has fewer entries than the {x.rank} dims of {x}")
        lead = len(size) - x.rank
        if any(v < 1 for v in size[:lead]):
            raise self.fail(f"the new leading dims of size {_tuple(size)} must be positive (-1 keeps an existing dim)")
        out = list(size[:lead])
        for i, (d, v) in enumerate(zip(x.shape, size[lead:])):
            if v == -1 or v == d:
                out.append(d)
            elif is_static(d) and d == 1 and v >= 0:
                out.append(v)
            else:
                raise self.fail(f"cannot expand dim {i} of {x} (size {d}) to {v}: only size-1 dims expand",
                                "write -1 to keep a dim")
        return [x.with_shape(tuple(out))]

    def lower(self, a, g, inputs):
        x, y = a.x, a.out_types[0]
        lead = y.rank - x.rank
        shape = [int(v) for v in y.shape[:lead]] + [int(o) if is_static(d) and d == 1 else 1
                                                    for d, o in zip(x.shape, y.shape[lead:])]
        return [g.op("Expand", [inputs[0], g.ints(shape)])]

    def forward(self, a, ctx, inputs, params):
        x, size = inputs[0], a.attrs["size"]
        lead = len(size) - x.ndim
        shape = tuple(size[:lead]) + tuple(d if v == -1 else v for d, v in zip(x.shape, size[lead:]))
        return [F.broadcast_to(x, shape)]

    def torch_forward(self, a, ctx, inputs, params):
        return [inputs[0].expand(*a.attrs["size"])]


class _Binary(Op):
    """Elementwise binary op with NumPy broadcasting, between two tensors or between a tensor and a
    number (`value`; `reverse=true` when the number is the left operand, as in `1 - x`).

    Dtypes: two tensors must share one; a number takes the tensor's dtype (an integer tensor takes
    whole numbers only). Bool tensors take no arithmetic."""
    family = "structural"
    n_inputs = (1, 2)
    args = (Arg("value", "float", None, doc="a number in place of the second operand", keyword_only=True),
            Arg("reverse", "bool", False, doc="the number is the left operand", keyword_only=True))
    onnx_op = ""
    symbol = ""
    engine_fn = None      # the autodiff primitive computing it
    torch_fn = None       # the Python operator computing it on torch tensors (operator.add)
    out_dtype = None      # None: the operands' dtype
    dtypes = "numeric"    # which operand dtypes it takes: 'numeric', 'float' or 'any'

    def time_local(self, a):
        return True

    def derive(self, a):
        """The number operand in the tensor's dtype (None between two tensors)."""
        v, x = a.attrs["value"], a.x
        if len(a.in_types) == 2:
            if v is not None or a.attrs["reverse"]:
                raise self.fail("takes either two tensors or one tensor and value=, not both",
                                f"write a {self.symbol} b, or x {self.symbol} 2.0")
            return None
        if v is None:
            raise self.fail("needs a second operand: two tensors, or one tensor and value=",
                            f"e.g. x {self.symbol} 2.0")
        self._check_dtype(x)
        n = fit_number(v, x.dtype)
        if n is None:
            raise self.fail(f"the number {_num(v)} does not fit the tensor {x}",
                            "a number takes the tensor's dtype: whole numbers for integer tensors, "
                            "and within the dtype's range")
        return n

    def infer(self, a):
        in_types = a.in_types
        x = in_types[0]
        if len(in_types) == 2:
            c = in_types[1]
            if x.dtype != c.dtype:
                raise self.fail(f"operands have different dtypes: {x} {self.symbol} {c}",
                                "both sides must have the same dtype")
        self._check_dtype(x)
        if len(in_types) == 1:
            return [TensorType(self.out_dtype or x.dtype, x.shape)]
        shape = self.broadcast(a, [x.shape, c.shape])
        if shape is None:
            raise self.fail(f"cannot broadcast {x} {self.symbol} {c}: shapes [{_dims(x.shape)}] and "
                            f"[{_dims(c.shape)}] differ in a dim where neither is 1",
                            "dims are matched from the right; each pair must be equal or contain a 1")
        return [TensorType(self.out_dtype or x.dtype, shape)]

    def _check_dtype(self, t):
        if self.dtypes == "float" and not t.is_float:
            raise self.fail(f"takes floating-point operands, got {t}",
                            "integer tensors take + - * ** and comparisons" if t.dtype != "bool" else
                            "a mask selects values with where(mask, a, b)")
        if self.dtypes == "numeric" and t.dtype == "bool":
            raise self.fail(f"takes numbers, not the bool tensor {t}",
                            "a mask selects values with where(mask, a, b)")

    def operands(self, a, inputs: list, const) -> list:
        """The two operands: both inputs, or the input and `const(number)` in the written order."""
        if len(inputs) == 2:
            return list(inputs)
        c = const(a.derived)
        return [c, inputs[0]] if a.attrs["reverse"] else [inputs[0], c]

    def forward(self, a, ctx, inputs, params):
        return [type(self).engine_fn(*self.operands(a, inputs, lambda v: v))]

    def torch_forward(self, a, ctx, inputs, params):
        return [type(self).torch_fn(*self.operands(a, inputs, lambda v: v))]

    def lower(self, a, g, inputs):
        return [g.op(self.onnx_op, self.operands(a, inputs, lambda v: g.const(v, dtype=a.x.np_dtype, hint="value")))]

    def describe(self, attrs):
        if attrs.get("value") is None:
            return ""
        v = attrs["value"]
        return f"{_num(v)} {self.symbol} x" if attrs.get("reverse") else f"x {self.symbol} {_num(v)}"


def _num(v) -> str:
    """A number as a summary shows it: 2, 0.5, -1e+09."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _dims(shape) -> str:
    return ", ".join(str(d) for d in shape)


class Add(_Binary):
    """a + b, broadcast like NumPy, or a tensor plus a number (what `a + b` and `x + 1` make)."""
    name = "Add"
    onnx_op = "Add"
    samples = (Sample("(a: f32[N, 3, 4], b: f32[4]) -> Add"), Sample("(a: f32[N, T, 1], b: f32[N, 1, 3]) -> Add"),
               Sample("x: f32[N, 3] -> Add(value=0.5)"), Sample("x: i64[N, T] -> Add(value=1)", grad=False))
    symbol = "+"
    engine_fn = F.add
    torch_fn = operator.add


class Sub(_Binary):
    """a - b, broadcast like NumPy, or with a number on either side (what `a - b`, `1 - x` make)."""
    name = "Sub"
    onnx_op = "Sub"
    samples = (Sample("(a: f32[N, 3], b: f32[N, 3]) -> Sub"), Sample("(a: f32[3, 1], b: f32[N, 1, 4]) -> Sub"),
               Sample("x: f32[N, 3] -> Sub(value=1.0, reverse=true)"))
    symbol = "-"
    engine_fn = F.sub
    torch_fn = operator.sub


class Mul(_Binary):
    """a * b, elementwise, broadcast like NumPy, or a tensor times a number (what `a * b`, `0.5 * x` make)."""
    name = "Mul"
    onnx_op = "Mul"
    samples = (Sample("(a: f32[N, 2, 5], b: f32[N, 2, 5]) -> Mul"), Sample("(a: f32[N, T, 4], b: f32[N, 1, 4]) -> Mul"),
               Sample("x: f32[N, T, 4] -> Mul(value=0.5)"))
    symbol = "*"
    engine_fn = F.mul
    torch_fn = operator.mul
