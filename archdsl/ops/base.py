"""The op contract. Every layer kind is one `Op` subclass in its family module; defining the
class registers it.

An application of an op (a layer applied to tensors) is bound once, by `Op.bind`, into an
`Application`: the attributes, the input and output types, the parameter specs and whatever the
op derives from them (conv geometry, attention layout). Every method of the contract receives
that one object, so nothing is worked out twice:

- `name` (its spelling in .arch), `family`, `args` (the schema: names, kinds, defaults, docs)
  and `n_inputs`, which drive argument checking and "did you mean" errors;
- `derive(a) -> Any`: validation and derived values, stored as `a.derived` (optional);
- `infer(a) -> [TensorType]`: the shape rule; raise `self.fail(...)`;
- `params(a) -> {local: ParamSpec}`: parameters and their initialisers;
- `macs(a, in_shapes, out_shapes) -> int`: multiply-accumulates at concrete shapes;
- `explain(a) -> [str]`: the shape and parameter arithmetic, as a lecture writes it;
- `lower(a, g, inputs)`: the ONNX lowering through the builder `g`, or several lowerings, each
  decorated `@lowering(since=opset)` (optionally `providers=(...)`, for exports to those
  execution providers only): the exporter takes the newest one that applies; lowerings read
  runtime sizes through the builder's `dim`/`arange`/`sizes` (builder.py says why);
- `forward(a, ctx, inputs, params) -> [Tensor]`: the NumPy forward on the autodiff engine (fused
  kernels with hand-written gradients live in archdsl/autodiff/, by theme);
- `torch_forward(a, ctx, inputs, params) -> [torch.Tensor]`: the PyTorch forward (the PyTorch
  engine and `export --format torch`), written with `torch`, `TF` (torch.nn.functional) and `TK`
  (shared kernels, archdsl/backends/torch/kernels.py) from archdsl/backends/torch/lazy.py; it
  passes `ctx.training` on rather than branching on it, and draws through `ctx`
  (archdsl/backends/torch/context.py);
- `samples`: a few applications, written in .arch, that the contract test
  (tests/test_op_contract.py) runs through every method: types, ONNX Runtime parity at opset 17
  and the newest opset, a float64 gradient check, explain/summary/render, a fuzz probe.

What other passes need to know about an op it declares here (never by its name elsewhere):
`time_local`, `rowwise`, `recurrence` (with the step graph of a user cell), `context_length`,
`window`, `batch_coupled`, `stochastic`.

Adding an op: one class (schema, shape rule, params, lowering, forward, torch_forward, samples) in
its family module; its kernel, if it needs a fused one, in autodiff/ (and in
archdsl/backends/torch/kernels.py for PyTorch); nothing else edited.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import ArchError, ShapeError, Span
from ..ir.constraints import Constraint, at_least, relate
from ..ir.graph import ParamSpec
from ..ir.types import TensorType

REQUIRED = object()

# ONNX Runtime's execution providers, as a lowering's `providers` names them
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"

# The oldest ONNX opset archdsl exports (Split/Squeeze/Unsqueeze take their axes as inputs from
# 13 on, which every lowering relies on).
MIN_OPSET = 13

# Argument kinds an op schema may declare; the elaborator checks values against them.
#   int, float, bool, str, ints (int or tuple of ints), shape (tuple of ints, -1 allowed),
#   padding (int, tuple or 'same'/'valid'), layer (a layer instance, for tying), cell (a cell
#   instance: an ir.cell.Cell once applied), any
ARG_KINDS = ("int", "float", "bool", "str", "ints", "shape", "padding", "layer", "cell", "any", "dtype")


@dataclass(frozen=True)
class Arg:
    """One argument of an op's schema. `keyword_only` arguments (float hyper-parameters such as
    eps, momentum, std) can only be given by name, so that a positional value never lands on
    one silently: `BatchNorm2d(64)` is 64 features, never eps=64."""
    name: str
    kind: str
    default: Any = REQUIRED
    choices: tuple | None = None
    doc: str = ""
    keyword_only: bool = False

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(eq=False)
class Application:
    """One op applied to typed inputs, bound once (`Op.bind`); every contract method gets it."""
    op: "Op"
    attrs: dict
    in_types: tuple
    span: Span | None = None
    derived: Any = None              # what the op's `derive` worked out (geometry, layout, ...)
    out_types: tuple = ()
    params: dict = field(default_factory=dict)     # local name -> ParamSpec
    constraints: list = field(default_factory=list)  # conditions on input sizes (Op.same_dim)

    @property
    def x(self) -> TensorType:
        """The first input's type (most ops have one input)."""
        return self.in_types[0]

    def rebind(self, attrs: dict | None = None, in_types=None) -> "Application":
        """The same op bound again with changed attributes or input types (IR transforms)."""
        return self.op.bind(dict(self.attrs if attrs is None else attrs),
                            list(self.in_types if in_types is None else in_types), self.span)


@dataclass(frozen=True)
class Sample:
    """An application for the contract test, written as .arch: `x: f32[N, 3, 8, 8] ->
    Conv2d(4, 3)`, or `(q: f32[N, T, 8], m: f32[N, S, 8]) -> Op(...)`. N=2, T=5, S=4.

    values: input name -> (lo, hi) for integer inputs (ids drawn in [lo, hi)); default [0, 5).
    A float input given a range gets whole numbers in it (positive inputs for Log, Sqrt, ...).
    grad: run the gradient check (False only where the op has no gradient to check).
    expr: for an op the language writes with syntax rather than a call (`x[:, 1:]`, a `param`),
    `call` holds only the inputs (`x: f32[N, T, 6]`) and `expr` the expression whose value is the
    op's output; `setup` holds statements before it (`param p: f32[2, 3] = zeros`), and `defs`
    top-level items the call uses (an import, a cell definition).
    """
    call: str
    values: dict = field(default_factory=dict)
    grad: bool = True
    expr: str = ""
    setup: str = ""
    defs: str = ""


@dataclass(frozen=True)
class Recurrence:
    """What an op that carries state over time steps declares (sampling with carried state,
    unrolled drawings): its state inputs and outputs, and how to make it return its states."""
    states: tuple                    # state names in input order, e.g. ("h0", "c0")
    first_state: int                 # input index of the first initial state
    state_type: TensorType           # the type of each state
    returns_states: bool             # do outputs 1.. hold the final states?
    lengths_input: int | None        # input index of padded-batch lengths, if any
    forward_in_time: bool            # one direction, first step to last, returning every step
    return_states: dict              # attribute changes that make it return its final states
    cell: str = ""                   # how a drawing names one step ("LSTM cell")
    layers: int = 1
    directions: int = 1
    reverse: bool = False            # one direction, last step to first
    returns_sequence: bool = True    # output 0 is every step (else the last)
    cell_params: tuple = ()          # per (layer, direction), row k*directions + d: local param names
    state_types: tuple = ()          # each state's type, where they differ (a user cell); else state_type
    first_state_output: int = 1      # output index of the first final state (after the cell's outputs)
    body: Any = None                 # a user cell's step graph (ir/cell.py CellBody); None for fused ops

    def type_of(self, i: int) -> TensorType:
        """The type of state i."""
        return self.state_types[i] if self.state_types else self.state_type


@dataclass(frozen=True)
class Window:
    """Spatial window geometry (receptive fields): per spatial axis kernel, stride, dilation.
    kind: 'conv' (a sliding window), 'transpose' (spreads each input position), 'adaptive'
    (stride a fraction)."""
    kind: str
    kernel: tuple
    stride: tuple
    dilation: tuple


@dataclass(frozen=True)
class Lowering:
    since: int                                   # the oldest opset it applies to
    when: Callable | None = None                 # (a) -> bool: does it fit this application?
    providers: tuple | None = None               # execution providers it suits (None: all)
    method: str = "lower"


def lowering(since: int = MIN_OPSET, *, when: Callable | None = None, providers: tuple | None = None):
    """Mark an op method as an ONNX lowering from opset `since` on (ONNX's own rule: the newest
    version not newer than the model's opset). `when(a)` narrows it to some applications;
    `providers` (e.g. ("CUDAExecutionProvider",)) to exports for those execution providers (the
    op version another lowering emits has no kernel there: backends/onnx/cuda_kernels.py), which
    prefer it to every portable lowering that applies; a portable export (provider None) never
    takes it."""
    def mark(fn):
        fn.__lowering__ = Lowering(since, when, providers, fn.__name__)
        return fn
    return mark


OPS: dict[str, "Op"] = {}


class Op:
    name: str = ""
    family: str = ""
    args: tuple[Arg, ...] = ()
    n_inputs: int | tuple[int, int] = 1     # exact count, or (min, max); max -1 = unbounded
    doc: str = ""
    samples: tuple = ()

    # -- what passes need to know ------------------------------------------------------------
    def batch_coupled(self, a: Application) -> bool:
        """In training, a row's output depends on the other rows of the batch (BatchNorm)."""
        return False

    def stochastic(self, a: Application) -> bool:
        """Draws random numbers in training (Dropout)."""
        return False

    def time_local(self, a: Application) -> bool:
        """Output step t of a batch-first sequence depends on input step t alone (or, for a
        recurrent op, on the steps before it through its state)."""
        return False

    def rowwise(self, a: Application) -> bool:
        """Row n of every output (dim 0, the batch) depends on row n of the inputs alone, so the
        op may run on the rows of many steps at once: a scanned cell does such work for all
        steps before its step loop. By default what is position-wise and not batch-coupled."""
        return self.time_local(a) and not self.batch_coupled(a)

    def recurrence(self, a: Application) -> Recurrence | None:
        return None

    def context_length(self, a: Application) -> int | None:
        """The longest sequence the application accepts (a position table's length)."""
        return None

    def window(self, a: Application) -> Window | None:
        return None

    # -----------------------------------------------------------------------------------------
    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        found: dict[str, Lowering] = {}
        for klass in reversed(cls.__mro__):
            for attr, fn in vars(klass).items():
                mark = getattr(fn, "__lowering__", None)
                if mark is not None:
                    found[attr] = mark
                elif attr in found:         # overridden without the mark
                    del found[attr]
        if "lower" not in found and getattr(cls, "lower", Op.lower) is not Op.lower:
            found["lower"] = Lowering(MIN_OPSET)
        cls.lowerings = tuple(sorted(found.values(), key=lambda l: -l.since))
        if cls.name:
            if cls.name in OPS:
                raise RuntimeError(f"op {cls.name} defined twice")
            OPS[cls.name] = cls()

    # -- binding ------------------------------------------------------------------------------
    def bind(self, attrs: dict, in_types: list, span: Span | None = None) -> Application:
        """Check and bind one application: derived values, output types, parameter specs."""
        a = Application(self, attrs, tuple(in_types), span)
        a.derived = self.derive(a)
        a.out_types = tuple(self.infer(a))
        a.params = dict(self.params(a))
        return a

    # -- the contract -------------------------------------------------------------------------
    def derive(self, a: Application) -> Any:
        return None

    def infer(self, a: Application) -> list[TensorType]:
        raise NotImplementedError(self.name)

    def params(self, a: Application) -> dict[str, ParamSpec]:
        return {}

    def macs(self, a: Application, in_shapes: list[tuple], out_shapes: list[tuple]) -> int:
        return 0

    def lower(self, a: Application, g, inputs: list[str]) -> list[str]:
        raise ArchError(f"{self.name} cannot be exported to ONNX yet", a.span)

    def forward(self, a: Application, ctx, inputs: list, params: dict) -> list:
        raise ArchError(f"{self.name} cannot run on the NumPy engine yet", a.span)

    def torch_forward(self, a: Application, ctx, inputs: list, params: dict) -> list:
        raise ArchError(f"{self.name} cannot run on the PyTorch engine yet", a.span)

    def lowering_for(self, a: Application, opset: int, provider: str | None = None) -> Callable:
        """The bound lowering method the exporter calls at `opset` for execution `provider` (None:
        a portable file): the newest applicable one declared for that provider, else the newest
        applicable portable one."""
        ours = [low for low in self.lowerings if low.providers is not None and provider in low.providers]
        for low in ours + [low for low in self.lowerings if low.providers is None]:
            if low.since > opset or (low.when is not None and not low.when(a)):
                continue
            return getattr(self, low.method)
        raise ArchError(f"{self.name} cannot be exported at opset {opset}",
                        a.span, f"it needs opset {min(l.since for l in self.lowerings)} or newer"
                        if self.lowerings else None)

    def describe(self, attrs: dict) -> str:
        """Key attributes for drawings and summaries, e.g. '6, k=5, s=1'."""
        parts = []
        for arg in self.args:
            if arg.name not in attrs or arg.kind == "layer":
                continue
            v = attrs[arg.name]
            if arg.required:
                parts.append(_fmt(v))
            elif v != arg.default:
                parts.append(f"{arg.name}={_fmt(v)}")
        return ", ".join(parts)

    def explain(self, a: Application) -> list[str]:
        """How this application's output shape and parameter count come about, as lines a student
        can follow (`archdsl summary --explain`): the shape arithmetic first, then, when the
        layer has parameters, one line starting 'params: '. This generic version says that the
        shape is unchanged, or shows the elements a reshape keeps (16·5·5 = 400), or the types
        in and out, and multiplies out each parameter's shape; families override it with their
        own formulas (conv.py: H = (32 + 2·0 − 5)/1 + 1 = 28)."""
        return [explain_shape(a)] + explain_params(a.params)

    def signature(self) -> str:
        """'Conv2d(out_channels, kernel_size, stride=1, ...)' for docs, hovers and tables."""
        parts, star = [], False
        for arg in self.args:
            if arg.keyword_only and not star:
                parts.append("*")
                star = True
            parts.append(arg.name if arg.required else f"{arg.name}={_fmt(arg.default)}")
        return f"{self.name}({', '.join(parts)})"

    # -- helpers for shape rules -----------------------------------------------------------
    def fail(self, message: str, hint: str | None = None) -> ShapeError:
        """An error for the op application being checked (the elaborator adds the span)."""
        return ShapeError(f"{self.name}: {message}", None, hint)

    def expect_rank(self, t: TensorType, ranks, what: str = "input") -> None:
        ranks = (ranks,) if isinstance(ranks, int) else tuple(ranks)
        if t.rank not in ranks:
            want = " or ".join(f"{r}-D" for r in ranks)
            raise self.fail(f"expects a {want} {what}, got {t}",
                            "did you mean to Flatten first?" if t.rank > max(ranks) else None)

    def same_dim(self, a: Application, d1, d2, what: str) -> bool:
        """Whether dims d1 and d2 may be equal. When they are equal for some input sizes only
        (a U-Net's skip: H against (H//2)*2), a constraint is recorded on the application and
        checked against the real sizes before the model runs (ir/constraints.py)."""
        rel = relate(d1, d2)
        if rel == "maybe":
            a.constraints.append(Constraint(d1, "==", d2, what, self.name))
        return rel != "differ"

    def at_least(self, a: Application, d, k: int, what: str) -> bool:
        """Whether dim d may be >= k; records a constraint when that holds for some sizes only."""
        rel = at_least(d, k)
        if rel == "maybe":
            a.constraints.append(Constraint(d, ">=", k, what, self.name))
        return rel != "never"

    def broadcast(self, a: Application, shapes, what: str = "operands") -> tuple | None:
        """NumPy broadcasting of several shapes with symbolic dims (None when impossible); two
        dims equal for some sizes only broadcast under a recorded constraint (`same_dim`)."""
        rank = max(len(s) for s in shapes)
        out = []
        for i in range(1, rank + 1):
            dims = [s[-i] for s in shapes if i <= len(s)]
            big = [d for d in dims if d != 1]
            d0 = big[0] if big else 1
            for d in big[1:]:
                if not self.same_dim(a, d, d0, f"the {what} must agree in dim {rank - i} (from the left "
                                               f"of the broadcast shape), or be 1"):
                    return None
            out.append(d0)
        return tuple(reversed(out))

    def expect_float(self, t: TensorType, what: str = "input") -> None:
        if not t.is_float:
            raise self.fail(f"expects a floating-point {what}, got {t}",
                            "integer token ids go through an Embedding first" if t.dtype.startswith("i") else None)

    def expect_fits(self, a, names, headroom: float = 1.0) -> None:
        """The float attributes `names` fit the input's dtype (they become constants of it), with
        `headroom` (2: twice the value must fit too)."""
        big = float(np.finfo(a.x.np_dtype).max)
        for k in names:
            v = a.attrs[k]
            if isinstance(v, float) and not abs(v) * headroom <= big:
                raise self.fail(f"{k}={v:g} does not fit the input's dtype {a.x.dtype} (max {big / headroom:g})")


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f"'{v}'"
    if v is None:
        return "none"
    return str(v)


def tup(v, n: int) -> tuple:
    """An int or tuple argument as an n-tuple (kernel sizes, strides, ...)."""
    if isinstance(v, (tuple, list)):
        if len(v) != n:
            raise ShapeError(f"expected {n} values, got {len(v)}: {v}")
        return tuple(int(x) for x in v)
    return (int(v),) * n


# -- explanations (`archdsl summary --explain`) --------------------------------------------------
DOT, MINUS = "\u00b7", "\u2212"       # · and − as a lecture writes them


def product(dims) -> str:
    """(6, 1, 5, 5) -> '6·1·5·5'."""
    return DOT.join(str(d) for d in dims)


def explain_shape(a: Application) -> str:
    """The generic shape line: unchanged, a reshape's element count, or types in -> out."""
    name, in_types, out_types = a.op.name, a.in_types, a.out_types
    if len(in_types) == 1 and len(out_types) == 1:
        x, y = in_types[0].shape, out_types[0].shape
        if x == y:
            return f"{name}: shape unchanged"
        i = 0
        while i < min(len(x), len(y)) and x[i] == y[i]:
            i += 1
        rx, ry = x[i:], y[i:]
        if (rx and ry and max(len(rx), len(ry)) > 1 and all(isinstance(d, int) for d in rx + ry)
                and _prod(rx) == _prod(ry)):
            rhs = f"{product(ry)} = {_prod(ry):,}" if len(ry) > 1 else f"{_prod(ry):,}"
            return (f"{name}: [{', '.join(map(str, rx))}] \u2192 [{', '.join(map(str, ry))}] keeps every "
                    f"element: {product(rx)} = {rhs}")
    ins = ", ".join(map(str, in_types))
    outs = ", ".join(map(str, out_types))
    return f"{name}: {ins} \u2192 {outs}"


def explain_params(specs: dict) -> list[str]:
    """'params: 6·1·5·5 + 6 = 156 (weight [6, 1, 5, 5], bias [6])', plus the buffers, if any."""
    trained = [(k, s) for k, s in specs.items() if not s.buffer]
    lines = []
    if trained:
        total = sum(_prod(s.shape) for _, s in trained)
        terms = " + ".join(product(s.shape) for _, s in trained)
        names = ", ".join(f"{k} [{', '.join(map(str, s.shape))}]" for k, s in trained)
        lines.append(f"params: {terms} = {total:,}  ({names})")
    buffers = [(k, s) for k, s in specs.items() if s.buffer]
    if buffers:
        lines.append("buffers (state, not parameters): "
                     + ", ".join(f"{k} [{', '.join(map(str, s.shape))}]" for k, s in buffers))
    return lines


def _prod(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def numel(shape) -> int:
    """Elements of a concrete shape."""
    return _prod(shape)


_loaded = False


def load_all() -> dict[str, Op]:
    """Import every family module in archdsl.ops (no hand-kept list)."""
    global _loaded
    if not _loaded:
        pkg = importlib.import_module("archdsl.ops")
        for m in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            if not m.name.startswith("_") and m.name != "base":
                importlib.import_module(f"archdsl.ops.{m.name}")
        _loaded = True
    return OPS


def get_op(name: str) -> Op | None:
    return load_all().get(name)
