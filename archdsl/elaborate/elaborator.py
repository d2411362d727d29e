"""AST -> IR: bind parameters, evaluate expressions, expand blocks and `repeat`, share and tie
weights, and check every tensor shape as each op is applied (the op's own shape rule).

Errors in independent statements are all collected; a statement that failed poisons the names
it would have bound, so later uses stay quiet instead of cascading.
"""
from __future__ import annotations

import bisect

import math
import operator
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from ..errors import ArchError, ArchErrors, ShapeError, Span, did_you_mean
from ..ir.cell import Cell, CellBody
from ..ir.graph import Model, Node, Param, Scope, Value
from ..ir.initializers import SCHEMAS as INIT_SCHEMAS
from ..ir.initializers import Initializer, make as make_init
from ..ir.types import DTYPES, Sym, TensorType
from ..ops.base import Op, load_all
from ..syntax import ast as A
from .bind import bind_args
from .loader import Namespace
from .values import (CALLABLES, POISON, BlockInstance, BlockKind, Builtin, Composed, InitFactory, LayerInstance,
                     OpKind, Poison, RepeatCallable, TensorRef, show)

# Limits that bound the work and stack any spec can demand; each error names its constant.
MAX_BLOCK_DEPTH = 64          # blocks applied inside blocks
MAX_REPEAT = 10_000           # copies in one `repeat`
MAX_NODES = 200_000           # layers in one model
MAX_EXPANSIONS = 200_000      # block applications + repeat copies in one model (nested repeats of
                              # layer-less blocks add no layers but still cost time)
MAX_EVAL_DEPTH = 500          # nested evaluations and applications, through blocks as well
MAX_INT = 2 ** 62
# Python frames one level of MAX_EVAL_DEPTH may take: at most 4 measured (eval -> e_Pipe ->
# apply -> apply_block -> run_body -> assign -> eval counts 2 levels), so 6 leaves a margin. The
# recursion limit is raised to fit while a model is elaborated, so MAX_EVAL_DEPTH is what a user
# meets, never a RecursionError.
_FRAMES_PER_LEVEL = 6
PARAM_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


class _Collected(Exception):
    """Raised after an error was recorded, to abandon the current statement."""


@dataclass(eq=False)
class Frame:
    """One body being elaborated: a model, or one application of a block / repeat copy."""
    env: dict
    path: str                       # qualified prefix for names ("" at model level)
    scopes: tuple                   # enclosing scope paths
    counters: dict = field(default_factory=dict)
    taken: set = field(default_factory=set)
    depth: int = 0

    def qualify(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def unique(self, base: str, auto: bool) -> str:
        if auto:
            n = self.counters.get(base, 0) + 1
            while f"{base}_{n}" in self.taken:
                n += 1
            self.counters[base] = n
            name = f"{base}_{n}"
        else:
            name, k = base, 1
            while name in self.taken:
                k += 1
                name = f"{base}_{k}"
        self.taken.add(name)
        return name


def _builtins() -> dict:
    def channels(x):
        t = _tensor_arg(x, "channels")
        if t.rank < 2:
            raise ArchError(f"channels() needs a tensor of rank >= 2, got {t}")
        return t.shape[1]

    def dim(x, i):
        t = _tensor_arg(x, "dim")
        if not isinstance(i, int) or not -t.rank <= i < t.rank:
            raise ArchError(f"dim(): axis {show(i)} is out of range for {t}")
        return t.shape[i]

    def rank(x):
        return _tensor_arg(x, "rank").rank

    def shape(x):
        return tuple(_tensor_arg(x, "shape").shape)

    def _len(x):
        if not isinstance(x, (tuple, list, str)):
            raise ArchError(f"len() needs a tuple, list or string, got {show(x)}")
        return len(x)

    def _num(fn, name, unary=True):
        def f(*xs):
            if unary and len(xs) != 1:
                raise ArchError(f"{name}() takes 1 argument, got {len(xs)}")
            if not xs or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
                raise ArchError(f"{name}() needs numbers, got {', '.join(show(x) for x in xs) or 'nothing'}")
            try:
                r = fn(*xs)
            except (ValueError, OverflowError, ZeroDivisionError):     # sqrt(-1), float(10**400), rsqrt(0)
                raise ArchError(f"{name}({', '.join(show(x) for x in xs)}) has no finite real value") from None
            if isinstance(r, int) and abs(r) > MAX_INT:
                raise ArchError(f"{name}() result is too large")
            return r
        return f

    def _sum(x):
        if not isinstance(x, tuple) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x):
            raise ArchError(f"sum() needs a tensor, or a tuple of numbers, got {show(x)}",
                            hint="e.g. sum(depths[:i]): the blocks before stage i (0 for none)")
        r = sum(x)
        if (isinstance(r, int) and abs(r) > MAX_INT) or (isinstance(r, float) and not math.isfinite(r)):
            raise ArchError("sum() result is too large")
        return r

    def where(*xs):
        raise ArchError("where() needs a bool tensor as its condition, e.g. where(x > 0, x, 0.0)",
                        hint="to choose between numbers write: a if cond else b")

    def reduce(fn, name):
        def f(*xs):
            if len(xs) != 1 or not isinstance(xs[0], tuple) or not xs[0] or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs[0]):
                raise ArchError(f"{name}() needs a tensor, or a tuple of numbers, got "
                                f"{', '.join(show(x) for x in xs) or 'nothing'}")
            return fn(xs[0])
        return f

    def sigmoid(v):
        return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))

    # functions of numbers that apply an op to a tensor argument (exp(x) -> Exp)
    maths = {"abs": (abs, "Abs"), "sqrt": (math.sqrt, "Sqrt"), "exp": (math.exp, "Exp"), "log": (math.log, "Log"),
             "rsqrt": (lambda v: 1.0 / math.sqrt(v), "Rsqrt"), "tanh": (math.tanh, "Tanh"),
             "sigmoid": (sigmoid, "Sigmoid")}
    out = {"channels": Builtin("channels", channels), "dim": Builtin("dim", dim),
           "rank": Builtin("rank", rank), "shape": Builtin("shape", shape), "len": Builtin("len", _len),
           "min": Builtin("min", _num(min, "min", unary=False)), "max": Builtin("max", _num(max, "max", unary=False)),
           "int": Builtin("int", _num(int, "int")), "float": Builtin("float", _num(float, "float")),
           "where": Builtin("where", where, tensor="where"),
           "sum": Builtin("sum", _sum, tensor="Sum"),        # of an empty tuple: 0
           "mean": Builtin("mean", reduce(lambda v: sum(v) / len(v), "mean"), tensor="Mean")}
    out.update({name: Builtin(name, _num(fn, name), tensor=op) for name, (fn, op) in maths.items()})
    out.update({kind: InitFactory(kind) for kind in INIT_SCHEMAS})     # zeros, normal(std=...), ...
    return out


def _tensor_arg(x, fname) -> TensorType:
    if not isinstance(x, TensorRef):
        raise ArchError(f"{fname}() needs a tensor, got {show(x)}")
    return x.value.type


BUILTINS = _builtins()


class Elaborator:
    def __init__(self, ns: Namespace):
        self.ns = ns
        self.ops = load_all()
        self.errors: list[ArchError] = []
        self.depth = 0          # current nesting of eval/apply (MAX_EVAL_DEPTH)
        self.expansions = 0     # block applications and repeat copies so far (MAX_EXPANSIONS)
        self._assignments: dict[int, tuple] = {}    # id(definition) -> (it, name -> statement indices)

    # -- entry point --------------------------------------------------------------------------
    def model(self, name: str, overrides: dict | None = None, override_spans: dict | None = None) -> Model:
        defn = self.ns.models[name]
        self.errors = []
        self.depth = self.expansions = 0
        self.m = Model(name=name, file=defn.span.file, span=defn.span, args={})
        self.constraint_keys: set = set()
        frame = Frame(env={}, path="", scopes=())
        with _recursion_headroom(_FRAMES_PER_LEVEL * MAX_EVAL_DEPTH):
            try:
                args = self.bind_params(defn, [], dict(overrides or {}), defn.span, from_cli=True)
            except ArchError as e:
                raise e from None
            self.m.args = dict(args)
            frame.env.update(args)
            self.run_body(defn, frame, inputs=None)
        if self.errors:
            raise self.errors[0] if len(self.errors) == 1 else ArchErrors(self.errors)
        return self.m

    def expression(self, name: str, tensors: dict, expr: A.Node) -> tuple:
        """`expr` (an expression of a train section: a loss term) over the named `tensors` (name ->
        TensorType), elaborated as a model of its own whose inputs are the tensors it uses.
        Returns (the Model, the expression's value: a TensorRef, a number, ...); its output is set
        when the value is a tensor. Shape errors carry the expression's own positions."""
        self.errors = []
        self.depth = self.expansions = 0
        self.m = Model(name=name, file=expr.span.file, span=expr.span, args={})
        self.constraint_keys = set()
        frame = Frame(env={}, path="", scopes=())
        for n, t in tensors.items():
            v = Value(n, t, None, 0, None)
            self.m.inputs.append(v)
            frame.env[n] = TensorRef(v, n)
        with _recursion_headroom(_FRAMES_PER_LEVEL * MAX_EVAL_DEPTH):
            v = self.eval(expr, frame)
        if isinstance(v, TensorRef):
            if v.value.producer is None:     # the expression is one of the tensors itself
                v = self.apply(OpKind(self.ops["Identity"]), [v], frame, expr.span)
            self.m.outputs.append(v.value)
        used = {id(x) for n in self.m.nodes for x in n.inputs}
        self.m.inputs = [x for x in self.m.inputs if id(x) in used]
        return self.m, v

    # -- parameters ---------------------------------------------------------------------------
    def bind_params(self, defn: A.Definition, positional: list, keywords: dict, span: Span,
                    from_cli: bool = False, kw_spans: dict | None = None) -> dict:
        names = [p.name for p in defn.params]
        what = f"{defn.kind} {defn.name}"
        if len(positional) > len(names):
            raise ArchError(f"{what} takes {len(names)} parameter{'s' if len(names) != 1 else ''}, got {len(positional)}",
                            span)
        given = dict(zip(names, positional))
        for k, v in keywords.items():
            if k not in names:
                hint = did_you_mean(k, names) or (f"{what} takes: {', '.join(names)}" if names else f"{what} takes no parameters")
                raise ArchError(f"{what} has no parameter '{k}'", (kw_spans or {}).get(k, span), hint)
            if k in given:
                raise ArchError(f"{what} got parameter '{k}' twice", span)
            given[k] = v
        env: dict = {}
        frame = Frame(env=env, path="", scopes=())
        for p in defn.params:
            if p.name in given:
                v = given[p.name]
            elif p.default is not None:
                v = self.eval(p.default, frame)
            else:
                hint = f"pass it: {defn.name}({p.name}=...)" if not from_cli else f"set it: --set {p.name}=..."
                raise ArchError(f"{what} needs a value for parameter '{p.name}'", span, hint)
            if from_cli and p.name in given:    # --set values have not been through eval's checks
                where = span
                if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_INT:
                    raise ArchError(f"parameter '{p.name}' of {what}: the integer is too large", where,
                                    "integers are limited to ±2**62")
                if isinstance(v, float) and not math.isfinite(v):
                    raise ArchError(f"parameter '{p.name}' of {what} must be a finite number, got {v}", where)
            if p.type is not None:
                if p.type not in PARAM_TYPES:
                    raise ArchError(f"unknown parameter type '{p.type}'", p.span,
                                    did_you_mean(p.type, PARAM_TYPES) or "types are int, float, bool, str")
                want = PARAM_TYPES[p.type]
                if want is float and isinstance(v, int) and not isinstance(v, bool):
                    v = float(v)
                ok = isinstance(v, want) and not (want is int and isinstance(v, bool))
                if not ok and not isinstance(v, Poison):
                    where = (kw_spans or {}).get(p.name, span) if p.name in given else p.span
                    raise ArchError(f"parameter '{p.name}' of {what} must be {p.type}, got {show(v)}", where)
            env[p.name] = v
        return env

    # -- bodies -------------------------------------------------------------------------------
    def run_body(self, defn: A.Definition, frame: Frame, inputs: list | None, call_span: Span | None = None):
        """Elaborate statements; returns the outputs (TensorRefs) of a block application. A cell
        applied as one step takes its inputs, fixed tensors and states in that order (a state
        given as None starts from a fresh model input of its declared type: the step graph of a
        scanned cell) and returns its outputs, then the states' last values (the next states)."""
        is_model = inputs is None
        outputs: list = []
        symbols: dict = {}    # block input dims that bind on first use
        slots = signature(defn)
        slot_of = {id(s): i for i, s in enumerate(slots)}
        states: dict = {}     # cell state name -> (statement, the state's type at the step's start, its first value)
        last_bound: dict = {}  # name -> span of the statement that bound it last
        n_inputs = len(slots)
        if not is_model and len(inputs) != n_inputs:
            what = (f"{n_inputs} tensor{'s' if n_inputs != 1 else ''} ({', '.join(s.name for s in slots)}: its "
                    "inputs, fixed tensors and states, in that order)") if defn.kind == "cell" else \
                   f"{n_inputs} input tensor{'s' if n_inputs != 1 else ''}"
            raise ArchError(f"{defn.kind} {defn.name} takes {what}, got {len(inputs)}", call_span,
                            "pipe a tuple of tensors for several inputs: (a, b) -> Block" if n_inputs > 1 else None)
        for idx, stmt in enumerate(defn.body):
            try:
                if isinstance(stmt, (A.State, A.Fixed)) and defn.kind != "cell":
                    word = "state" if isinstance(stmt, A.State) else "fixed"
                    raise ArchError(f"'{word}' declares a cell's {'state' if word == 'state' else 'fixed tensor'}; "
                                    f"{defn.kind} {defn.name} is not a cell", stmt.span,
                                    f"write `cell {defn.name}(...) {{ ... }}` for one step of a recurrence, and run it "
                                    "over a sequence with Scan")
                if isinstance(stmt, A.Input) and is_model:
                    self.model_input(stmt, frame)
                elif isinstance(stmt, (A.Input, A.Fixed, A.State)):
                    ref = inputs[slot_of[id(stmt)]]
                    if isinstance(stmt, A.State):
                        ref = self.cell_state(stmt, ref, frame, symbols, defn, call_span)
                        states[stmt.name] = (stmt, ref.value.type, ref)
                    elif stmt.type is not None and not isinstance(ref, Poison):
                        self.check_block_input(stmt, ref, frame, symbols, defn, call_span)
                    frame.env[stmt.name] = ref
                    last_bound[stmt.name] = stmt.span
                elif isinstance(stmt, A.Assign):
                    self.assign(stmt, frame, defn, idx)
                    for t in stmt.targets:
                        last_bound[t] = stmt.span
                elif isinstance(stmt, A.ParamDecl):
                    self.declare_param(stmt, frame)
                elif isinstance(stmt, A.Output):
                    v = self.eval(stmt.value, frame, defn=defn, idx=idx)
                    outputs.append(self.output(stmt, v, frame, is_model))
                    if stmt.name:
                        last_bound[stmt.name] = stmt.span
            except _Collected:
                if isinstance(stmt, A.Assign):
                    for t in stmt.targets:
                        frame.env[t] = POISON
                elif isinstance(stmt, (A.Input, A.ParamDecl)):
                    frame.env[stmt.name] = POISON
                else:
                    outputs.append(POISON)
            except ArchError as e:
                if not is_model:
                    raise      # inside a block application: one error for the whole application
                self.errors.append(e)
                if isinstance(stmt, A.Assign):
                    for t in stmt.targets:
                        frame.env[t] = POISON
                elif isinstance(stmt, (A.Input, A.ParamDecl, A.State, A.Fixed)):
                    frame.env[stmt.name] = POISON
        if is_model:
            if not any(isinstance(s, A.Output) for s in defn.body):
                self.errors.append(ArchError(f"model {defn.name} has no output", defn.name_span,
                                             "add a line like: output logits = x -> Linear(10)"))
            if not any(isinstance(s, A.Input) for s in defn.body):
                self.errors.append(ArchError(f"model {defn.name} has no input", defn.name_span,
                                             "add a line like: input x: f32[N, 784]"))
            return None
        if not outputs:
            raise ArchError(f"{defn.kind} {defn.name} has no output", defn.name_span,
                            "end the block with: output <expression>" if defn.kind == "block" else
                            "say what each step gives: output h")
        for name, (stmt, want, first) in states.items():
            outputs.append(self.next_state(defn, stmt, want, first, frame.env.get(name), last_bound.get(name)))
        if any(isinstance(o, Poison) for o in outputs):
            return POISON
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def cell_state(self, stmt: A.State, ref, frame: Frame, symbols: dict, defn, call_span) -> TensorRef:
        """A cell's state at the start of a step: the tensor given (checked against the declared
        type), or, for None, a fresh input of the declared type (the step graph of a scan)."""
        if ref is not None:
            if not isinstance(ref, Poison):
                self.check_block_input(stmt, ref, frame, symbols, defn, call_span)
            return ref
        t = self.tensor_type(stmt.type, Frame(env={**symbols, **frame.env}, path=frame.path, scopes=frame.scopes),
                             symbolic=False, unbound=lambda d: ArchError(
                                 f"cell {defn.name}: dim {d.id} of state '{stmt.name}' is not bound by the cell's "
                                 "inputs", d.span, f"give an input a type that names it, e.g. input x: f32[{d.id}, C]"))
        v = Value(stmt.name, t, None, 0, stmt.span)
        self.m.inputs.append(v)         # (the step graph's inputs: ir/cell.py)
        return TensorRef(v, f"state {stmt.name} of cell {defn.name} (line {stmt.span.line})")

    def next_state(self, defn, stmt: A.State, want: TensorType, first, last, where: Span | None):
        """The state a cell step passes on: the name's last value, of the type the step started with."""
        if isinstance(last, Poison) or isinstance(first, Poison):
            return POISON
        if last is first:
            raise ArchError(f"cell {defn.name} never updates its state '{stmt.name}'", stmt.span,
                            f"assign its next value in the body ({stmt.name} = ...); a tensor that is the same "
                            f"at every step is declared `fixed {stmt.name}`")
        if not isinstance(last, TensorRef):
            raise ArchError(f"cell {defn.name}: state '{stmt.name}' must end the step as a tensor, got {show(last)}",
                            where or stmt.span)
        got = last.value.type
        if got != want:
            diff = ""
            if got.rank == want.rank and got.dtype == want.dtype:
                bad = [f"dim {i} is {g} instead of {w}" for i, (g, w) in enumerate(zip(got.shape, want.shape)) if g != w]
                diff = " (" + "; ".join(bad) + ")"
            raise ShapeError(f"cell {defn.name}: state '{stmt.name}' starts each step as {want} but its next value "
                             f"is {got}{diff}", where or stmt.span,
                             f"the states a step returns must have the types of the states it takes; '{stmt.name}' "
                             f"is declared at {stmt.span.file}:{stmt.span.line}:{stmt.span.col} as "
                             f"{_type_text(stmt.type)}")
        return last

    def model_input(self, stmt: A.Input, frame: Frame):
        if stmt.type is None:
            raise ArchError(f"model input '{stmt.name}' needs a type", stmt.span,
                            f"write: input {stmt.name}: f32[N, ...]")
        if any(v.name == stmt.name for v in self.m.inputs):
            raise ArchError(f"input '{stmt.name}' is declared twice", stmt.span)
        t = self.tensor_type(stmt.type, frame)
        v = Value(stmt.name, t, None, 0, stmt.span)
        self.m.inputs.append(v)
        frame.env[stmt.name] = TensorRef(v, f"input {stmt.name}")

    def declare_param(self, stmt: A.ParamDecl, frame: Frame):
        """`param name: f32[...] = init`: a Parameter node; the parameter is named after the
        statement, qualified by the enclosing block instance or repeat copy (one per instance)."""
        if stmt.name in frame.taken:
            raise ArchError(f"'{stmt.name}' already names a layer or parameter here", stmt.span,
                            "give the parameter a name of its own")
        t = self.tensor_type(stmt.type, frame, symbolic=False)
        for d, dexpr in zip(t.shape, stmt.type.dims):
            if not isinstance(d, int):
                raise ArchError(f"a parameter's dims must be ints, got {d}", dexpr.span,
                                "a parameter has one fixed shape; symbolic dims belong to inputs")
        if t.dtype != "f32":
            raise ArchError(f"parameter '{stmt.name}' must be f32, got {t.dtype}", stmt.type.dtype_span,
                            "parameters are trained and stored in float32")
        if stmt.init is None:
            raise ArchError(f"parameter '{stmt.name}' needs an initialiser", stmt.span,
                            f"write e.g. param {stmt.name}: {t} = zeros  (or normal(std=0.02), constant(1.0), ...)")
        init = self.initializer(self.eval(stmt.init, frame), "a parameter's value", stmt.init.span)
        if isinstance(init, Poison):
            raise _Collected()
        op = self.ops["Parameter"]
        inst = LayerInstance(op, self._bind(op, [tuple(t.shape)], {}, stmt.span, {}), stmt.span, name=stmt.name)
        inst.init, inst.init_spans["init"] = init, stmt.init.span
        ref = self.apply_layer(inst, [], frame, stmt.span)
        ref.origin = f"param {stmt.name} at line {stmt.span.line}"
        frame.env[stmt.name] = ref

    def initializer(self, v, what: str, span: Span):
        """An initialiser value (`normal(std=0.02)`, or a bare name: `zeros`) -> Initializer."""
        if isinstance(v, (Initializer, Poison)):
            return v
        if isinstance(v, InitFactory):
            try:
                return make_init(v.kind, [], {})
            except ArchError as err:
                raise ArchError(err.message, span, err.hint) from None
        raise ArchError(f"{what} must be an initialiser, got {show(v)}", span,
                        "e.g. kaiming_normal(mode='fan_out', nonlinearity='relu'), normal(std=0.02), zeros, "
                        "constant(1e-6)")

    def tensor_type(self, tt: A.TensorTypeExpr, frame: Frame, symbolic: bool = True, unbound=None) -> TensorType:
        """The type an annotation spells; `unbound(name_node)` makes the error for a dim that is
        a name with no value (when symbols are not allowed)."""
        if tt.dtype not in DTYPES:
            raise ArchError(f"unknown dtype '{tt.dtype}'", tt.dtype_span,
                            did_you_mean(tt.dtype, DTYPES) or f"dtypes are {', '.join(DTYPES)}")
        dims = []
        for d in tt.dims:
            if unbound is not None and isinstance(d, A.Name) and d.id not in frame.env:
                raise unbound(d)
            v = self.eval(d, frame, symbolic=symbolic)
            if isinstance(v, bool) or not isinstance(v, (int, Sym)):
                raise ArchError(f"a dimension must be an int or a symbol like N, got {show(v)}", d.span)
            if isinstance(v, int) and v <= 0:
                raise ArchError(f"a dimension must be positive, got {v}", d.span)
            if isinstance(v, Sym) and v.terms and all(c < 0 for c in v.terms.values()) and v.const <= 0:
                raise ArchError(f"a dimension must be positive, got {v}", d.span)
            dims.append(v)
        return TensorType(tt.dtype, tuple(dims))

    def check_block_input(self, stmt, ref: TensorRef, frame, symbols: dict, defn, call_span):
        """A block's (or cell's) typed input, fixed tensor or state against the tensor given; a
        dim that is a name without a value binds to the tensor's dim on first use."""
        declared = stmt.type
        actual = ref.value.type
        what = f"{defn.kind} {defn.name} {_slot_word(stmt)} '{stmt.name}'"
        if declared.dtype != actual.dtype:
            raise ShapeError(f"{what} expects {declared.dtype}, got {actual}", call_span,
                             f"declared at {stmt.span}")
        if len(declared.dims) != actual.rank:
            raise ShapeError(f"{what} expects a {len(declared.dims)}-D tensor, got {actual}",
                             call_span, f"declared at {stmt.span}")
        for d, a in zip(declared.dims, actual.shape):
            if isinstance(d, A.Name) and d.id not in frame.env:
                if d.id in symbols and symbols[d.id] != a:
                    raise ShapeError(f"{what}: dim {d.id} is {symbols[d.id]} elsewhere but {a} here ({actual})",
                                     call_span)
                symbols.setdefault(d.id, a)
                continue
            want = self.eval(d, frame)
            if want != a:
                raise ShapeError(f"{what} expects dim {show(want)} where the tensor has {a} ({actual})", call_span,
                                 f"declared at {stmt.span}")

    def assign(self, stmt: A.Assign, frame: Frame, defn, idx):
        v = self.eval(stmt.value, frame, defn=defn, idx=idx)
        if len(stmt.targets) == 1:
            name = stmt.targets[0]
            # `enc = Linear(3)` and `b = Block` both bind one named instance: using it twice shares weights
            if isinstance(v, OpKind):
                v = LayerInstance(v.op, self._bind(v.op, [], {}, stmt.value.span, {}), stmt.value.span)
            elif isinstance(v, BlockKind):
                v = BlockInstance(v.defn, self.bind_params(v.defn, [], {}, stmt.value.span), stmt.value.span, v.module)
            if isinstance(v, (LayerInstance, BlockInstance, RepeatCallable)) and v.name is None and v.path is None:
                v.name = name      # `wte = Embedding(...)` names the layer
            frame.env[name] = v
            return
        if isinstance(v, Poison):
            for t in stmt.targets:
                frame.env[t] = POISON
            return
        if not isinstance(v, tuple) or len(v) != len(stmt.targets):
            n = len(v) if isinstance(v, tuple) else 1
            raise ArchError(f"cannot unpack {n} value{'s' if n != 1 else ''} into {len(stmt.targets)} names", stmt.span)
        for t, x in zip(stmt.targets, v):
            frame.env[t] = x

    def output(self, stmt: A.Output, v, frame: Frame, is_model: bool):
        if isinstance(v, Poison):
            return POISON
        if not isinstance(v, TensorRef):
            raise ArchError(f"an output must be a tensor, got {show(v)}", stmt.value.span,
                            "outputs are tensors: output y = x -> Layer(...)")
        if is_model:
            name = stmt.name or (stmt.value.id if isinstance(stmt.value, A.Name) else f"output_{len(self.m.outputs) + 1}")
            if any(o.name == name for o in self.m.outputs):
                raise ArchError(f"output '{name}' is declared twice", stmt.span)
            if any(i.name == name for i in self.m.inputs) and v.value.producer is not None:
                raise ArchError(f"output '{name}' has the same name as an input", stmt.span, "rename the output")
            if v.value.producer is None or any(o is v.value for o in self.m.outputs):
                # a model input (or an existing output) returned again: it needs a node of its own
                v = self.apply(OpKind(self.ops["Identity"]), [v], frame, stmt.span)
            v.value.name = name     # the tensor takes the output's name (ONNX graph output too)
            self.m.outputs.append(v.value)
        if stmt.name:
            frame.env[stmt.name] = v
        return v

    # -- expressions --------------------------------------------------------------------------
    def eval(self, e: A.Node, frame: Frame, symbolic: bool = False, defn=None, idx=None):
        m = getattr(self, "e_" + type(e).__name__)
        self._enter(e.span)
        try:
            return m(e, frame, symbolic, defn, idx)
        finally:
            self.depth -= 1

    def _enter(self, span: Span | None) -> None:
        self.depth += 1
        if self.depth > MAX_EVAL_DEPTH:
            self.depth -= 1
            raise ArchError(f"blocks and expressions nested more than {MAX_EVAL_DEPTH} levels deep", span,
                            "is a block's parameter default or body recursive? Otherwise raise "
                            "archdsl.elaborate.elaborator.MAX_EVAL_DEPTH")

    def _expand(self, span: Span | None) -> None:
        self.expansions += 1
        if self.expansions > MAX_EXPANSIONS:
            raise ArchError(f"model expands to more than {MAX_EXPANSIONS:,} block applications and repeat copies",
                            span, "look for nested repeats; raise archdsl.elaborate.elaborator.MAX_EXPANSIONS "
                            "if you really mean it")

    def e_Num(self, e, frame, *_):
        if isinstance(e.value, int) and abs(e.value) > MAX_INT:
            raise ArchError(f"integer {e.value} is too large", e.span)
        return e.value

    def e_Str(self, e, frame, *_):
        return e.value

    def e_Bool(self, e, frame, *_):
        return e.value

    # (list comprehensions, not generators fed to tuple(): those would recurse through C)
    def e_TupleExpr(self, e, frame, symbolic, defn, idx):
        return tuple([self.eval(x, frame, symbolic, defn, idx) for x in e.items])

    def e_ListExpr(self, e, frame, symbolic, defn, idx):
        return tuple([self.eval(x, frame, symbolic, defn, idx) for x in e.items])

    def e_Name(self, e, frame, symbolic, defn, idx):
        n = e.id
        if n in frame.env:
            return frame.env[n]
        if n in self.ops:
            return OpKind(self.ops[n])
        d = self.ns.definitions.get(n)
        if d is not None:
            return BlockKind(d, self.ns)
        if n in BUILTINS:
            return BUILTINS[n]
        if symbolic:
            return Sym.named(n)
        if defn is not None and idx is not None:
            later = self._assigned_later(defn, idx, n)
            if later is not None:
                if _mentions(later.value, _targets_of(defn.body[idx])):
                    raise ArchError(f"cycle: '{n}' is defined from this statement's result (line {later.span.line}), "
                                    f"and this statement uses '{n}'", e.span,
                                    "a network is a DAG; use a recurrent layer for feedback loops")
                raise ArchError(f"'{n}' is used before it is defined (line {later.span.line})", e.span,
                                "move its definition above this line")
        # the suggestion is made only if the error is shown: a file with thousands of undefined
        # names would otherwise scan every name in scope for each of them (quadratic time)
        raise ArchError(f"undefined name '{n}'", e.span, lambda: did_you_mean(
            n, [*frame.env, *self.ops, *self.ns.definitions, *BUILTINS]))

    def _assigned_later(self, defn: A.Definition, idx: int, name: str):
        """The first statement after `idx` that assigns `name`, or None; from an index built
        once per definition (scanning the rest of the body for every undefined name would take
        time quadratic in the file)."""
        entry = self._assignments.get(id(defn))
        if entry is None or entry[0] is not defn:
            where: dict[str, list[int]] = {}
            for i, stmt in enumerate(defn.body):
                for t in _targets_of(stmt):
                    where.setdefault(t, []).append(i)
            entry = self._assignments[id(defn)] = (defn, where)
        indices = entry[1].get(name, ())
        k = bisect.bisect_right(indices, idx)
        return defn.body[indices[k]] if k < len(indices) else None

    def e_UnaryOp(self, e, frame, symbolic, defn, idx):
        v = self.eval(e.operand, frame, symbolic, defn, idx)
        if isinstance(v, Poison):
            return v
        if e.op == "not":
            if not isinstance(v, bool):
                raise ArchError(f"'not' needs a bool, got {show(v)}", e.operand.span,
                                "flip a mask with the opposite comparison: x <= 0 for not x > 0"
                                if isinstance(v, TensorRef) else None)
            return not v
        if isinstance(v, TensorRef):
            return self.apply(OpKind(self.ops["Neg"]), [v], frame, e.span) if e.op == "-" else v
        if isinstance(v, bool) or not isinstance(v, (int, float, Sym)):
            raise ArchError(f"unary '{e.op}' needs a number, got {show(v)}", e.operand.span)
        return -v if e.op == "-" else v

    def e_BinOp(self, e, frame, symbolic, defn, idx):
        if e.op in ("and", "or"):
            a = self.eval(e.left, frame, symbolic, defn, idx)
            if isinstance(a, Poison):
                return a
            if not isinstance(a, bool):
                raise ArchError(f"'{e.op}' needs bools, got {show(a)}", e.left.span,
                                "masks combine with where(): where(a, b, a)" if isinstance(a, TensorRef) else None)
            if (e.op == "and" and not a) or (e.op == "or" and a):
                return a
            b = self.eval(e.right, frame, symbolic, defn, idx)
            if not isinstance(b, (bool, Poison)):
                raise ArchError(f"'{e.op}' needs bools, got {show(b)}", e.right.span)
            return b
        a = self.eval(e.left, frame, symbolic, defn, idx)
        b = self.eval(e.right, frame, symbolic, defn, idx)
        if isinstance(a, Poison) or isinstance(b, Poison):
            return POISON
        if isinstance(a, TensorRef) or isinstance(b, TensorRef):
            return self.tensor_binop(e, a, b, frame)
        return _arith(e, a, b)

    def tensor_binop(self, e, a, b, frame):
        """An operator with a tensor on one side: an op applied to both tensors, or to the tensor
        with the number as its `value` (`reverse` when the number comes first: `1 - x`)."""
        both = isinstance(a, TensorRef) and isinstance(b, TensorRef)
        if e.op == "@":
            if not both:
                raise ArchError(f"'@' multiplies two tensors, got {show(a)} and {show(b)}", e.span,
                                "scale a tensor by a number with '*'")
            return self.apply(OpKind(self.ops["MatMul"]), [a, b], frame, e.span)
        if e.op not in TENSOR_OPERATORS:
            raise ArchError(f"'{e.op}' is not defined on tensors", e.span,
                            "tensors take + - * / ** @ and comparisons; // and % work on numbers")
        op = self.ops[TENSOR_OPERATORS[e.op]]
        if both:
            return self.apply(OpKind(op), [a, b], frame, e.span)
        t, num, reverse = (a, b, False) if isinstance(a, TensorRef) else (b, a, True)
        if isinstance(num, bool) or not isinstance(num, (int, float)):
            what = f"the symbolic dim {num}" if isinstance(num, Sym) else show(num)
            raise ArchError(f"'{e.op}' between a tensor and {what} is not supported", e.span,
                            "the other side must be a tensor or a number")
        attrs = self._bind(op, [], {"value": num, "reverse": reverse}, e.span, {})
        return self.apply(LayerInstance(op, attrs, e.span), [t], frame, e.span)

    def tensor_builtin(self, f: Builtin, pos: list, frame, e, kw: dict, spans: dict):
        """`exp(x)`, `where(mask, a, b)`, `sum(x, 1)`, ... with a tensor argument: the op applied
        to it (a reduction takes its op's arguments after the tensor)."""
        op = self.ops.get(f.tensor)
        if op is not None and op.args:
            if not isinstance(pos[0], TensorRef) or any(isinstance(v, TensorRef) for v in pos[1:]):
                raise ArchError(f"{f.name}() takes one tensor, then its arguments", e.span,
                                f"e.g. {f.name}(x, 1) or {f.name}(x, dim=(1, 2), keepdim=true)")
            shifted = {(k - 1 if isinstance(k, int) else k): v for k, v in spans.items()}
            attrs = self._bind(op, pos[1:], kw, e.span, shifted)
            return self.apply(LayerInstance(op, attrs, e.span), pos[:1], frame, e.span)
        if kw:
            raise ArchError(f"{f.name}() takes no keyword arguments", e.span)
        if f.tensor != "where":
            if len(pos) != 1:
                raise ArchError(f"{f.name}() takes 1 argument, got {len(pos)}", e.span, f"write {f.name}(x)")
            return self.apply(OpKind(self.ops[f.tensor]), pos, frame, e.span)
        if len(pos) != 3:
            raise ArchError(f"where() takes 3 arguments (cond, a, b), got {len(pos)}", e.span,
                            "e.g. where(x > 0, x, 0.0)")
        cond, *operands = pos
        if not isinstance(cond, TensorRef):
            raise ArchError(f"where() needs a bool tensor as its condition, got {show(cond)}", e.args[0].span,
                            "make a mask with a comparison: where(x > 0, x, 0.0)")
        tensors, attrs = [cond], {}
        for key, v, arg in zip(("x", "y"), operands, e.args[1:]):
            if isinstance(v, TensorRef):
                tensors.append(v)
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                attrs[key] = v
            else:
                raise ArchError(f"where() takes tensors or numbers as a and b, got {show(v)}", arg.span,
                                "e.g. where(keep, scores, -1e9)")
        op = self.ops["Where"]
        return self.apply(LayerInstance(op, self._bind(op, [], attrs, e.span, {}), e.span), tensors, frame, e.span)

    def e_IfExp(self, e, frame, symbolic, defn, idx):
        c = self.eval(e.cond, frame, symbolic, defn, idx)
        if isinstance(c, Poison):
            return c
        if not isinstance(c, bool):
            raise ArchError(f"a condition must be a bool, got {show(c)}", e.cond.span)
        return self.eval(e.then if c else e.orelse, frame, symbolic, defn, idx)

    def e_Index(self, e, frame, symbolic, defn, idx):
        v = self.eval(e.value, frame, symbolic, defn, idx)
        if isinstance(v, Poison):
            return POISON
        if isinstance(v, TensorRef):
            return self.subscript(e, v, frame, symbolic, defn, idx)
        if not isinstance(v, tuple):
            raise ArchError(f"cannot index {show(v)}", e.value.span,
                            "tensors and tuples (e.g. several outputs of a layer) can be indexed")
        if len(e.items) != 1 or isinstance(e.items[0], A.EllipsisExpr):
            raise ArchError("a tuple takes one integer index or slice", e.span,
                            "e.g. outs[0], depths[:i]; '...' and several subscripts work on tensors")
        if isinstance(e.items[0], A.Slice):      # depths[:i], Python's rules
            parts = []
            for node in (e.items[0].start, e.items[0].stop, e.items[0].step):
                b = None if node is None else self.eval(node, frame, symbolic, defn, idx)
                if isinstance(b, Poison):
                    return POISON
                if b is not None and (isinstance(b, bool) or not isinstance(b, int)):
                    raise ArchError(f"a slice bound must be an int, got {show(b)}", node.span)
                parts.append(b)
            if parts[2] == 0:
                raise ArchError("a slice step cannot be 0", e.items[0].step.span)
            return v[slice(*parts)]
        i = self.eval(e.items[0], frame, symbolic, defn, idx)
        if isinstance(i, Poison):
            return POISON
        if not isinstance(i, int) or isinstance(i, bool) or not -len(v) <= i < len(v):
            raise ArchError(f"index {show(i)} is out of range for a tuple of {len(v)}", e.items[0].span,
                            f"valid indices are {-len(v)}..{len(v) - 1}")
        return v[i]

    def subscript(self, e, t: TensorRef, frame, symbolic, defn, idx):
        """`x[:, 0]`, `x[..., 1:-1:2]`: the Index op, one int or (start, stop, step) per axis."""
        rank = t.value.type.rank
        ellipses = [it for it in e.items if isinstance(it, A.EllipsisExpr)]
        if len(ellipses) > 1:
            raise ArchError("subscripts take at most one '...'", ellipses[1].span,
                            "'...' stands for all the axes not named")
        n = len(e.items) - len(ellipses)
        if n > rank:
            raise ArchError(f"{n} subscripts for the {rank}-D tensor {t.value.type}", e.span,
                            f"give at most {rank} (one per axis)")

        def bound(node):
            if node is None:
                return None
            b = self.eval(node, frame, symbolic, defn, idx)
            if isinstance(b, Poison):
                raise _Collected()
            if isinstance(b, bool) or not isinstance(b, int):
                raise ArchError(f"a subscript must be an int, got {show(b)}", node.span,
                                "negative ints count from the end: x[:, -1], x[:, 1:-1]")
            return b

        index: list = []
        for it in e.items:
            if isinstance(it, A.EllipsisExpr):
                index += [(None, None, None)] * (rank - n)
            elif isinstance(it, A.Slice):
                index.append((bound(it.start), bound(it.stop), bound(it.step)))
            else:
                index.append(bound(it))
        op = self.ops["Index"]
        return self.apply(LayerInstance(op, self._bind(op, [tuple(index)], {}, e.span, {}), e.span), [t],
                          frame, e.span)

    def e_Call(self, e, frame, symbolic, defn, idx):
        f = self.eval(e.func, frame, symbolic, defn, idx)
        if isinstance(f, Poison):
            return f
        pos, kw, spans = [], {}, {}
        for i, a in enumerate(e.args):
            v = self.eval(a.value, frame, symbolic, defn, idx)
            if isinstance(v, Poison):
                return v
            if a.name is None:
                if kw:
                    raise ArchError("a positional argument cannot follow a keyword argument", a.span)
                spans[len(pos)] = a.span
                pos.append(v)
            else:
                if a.name in kw:
                    raise ArchError(f"argument '{a.name}' given twice", a.span)
                spans[a.name] = a.span
                kw[a.name] = v
        if isinstance(f, OpKind):
            # a bare cell name as an argument (Scan(LSTMCell)) is the cell with its defaults
            pos = [self._cell_instance(v, spans.get(i, e.span)) for i, v in enumerate(pos)]
            kw = {k: self._cell_instance(v, spans.get(k, e.span)) for k, v in kw.items()}
            name = self._take_name(kw, spans)
            inits = {k: self.initializer(kw.pop(k), f"{k}=", spans[k]) for k in ("init", "bias_init")
                     if k in kw and k not in [a.name for a in f.op.args]}
            attrs = self._bind(f.op, pos, kw, e.span, spans)
            inst = LayerInstance(f.op, attrs, e.span, name=name)
            inst.init, inst.bias_init = inits.get("init"), inits.get("bias_init")
            inst.init_spans = {k: spans[k] for k in inits}
            return inst
        if isinstance(f, InitFactory):
            try:
                return make_init(f.kind, pos, kw)
            except ArchError as err:
                raise ArchError(err.message, e.span, err.hint) from None
        if isinstance(f, BlockKind):
            name = self._take_name(kw, spans) if "name" not in [p.name for p in f.defn.params] else None
            args = self.bind_params(f.defn, pos, kw, e.span, kw_spans=spans)
            return BlockInstance(f.defn, args, e.span, f.module, name=name)
        if isinstance(f, Builtin):
            if f.tensor is not None and any(isinstance(v, TensorRef) for v in pos):
                return self.tensor_builtin(f, pos, frame, e, kw, spans)
            if kw:
                raise ArchError(f"{f.name}() takes no keyword arguments", e.span)
            try:
                return f.fn(*pos)
            except ArchError as err:
                raise ArchError(err.message, e.span, err.hint) from None
            except TypeError:
                raise ArchError(f"wrong number of arguments to {f.name}()", e.span) from None
        if isinstance(f, (LayerInstance, BlockInstance)):
            raise ArchError(f"{show(f)} already has its arguments", e.span,
                            "apply layers to tensors with '->': x -> layer")
        raise ArchError(f"{show(f)} is not callable", e.func.span)

    def _cell_instance(self, v, span):
        if isinstance(v, BlockKind) and v.is_cell:
            return BlockInstance(v.defn, self.bind_params(v.defn, [], {}, span), span, v.module)
        return v

    def _take_name(self, kw: dict, spans: dict):
        name = kw.pop("name", None)
        if name is not None and (not isinstance(name, str) or not name.isidentifier()):
            raise ArchError(f"name= must be an identifier string, got {show(name)}", spans.get("name"))
        return name

    def _bind(self, op: Op, pos, kw, span, spans):
        return bind_args(op, pos, kw, span, spans)

    def e_Repeat(self, e, frame, symbolic, defn, idx):
        n = self.eval(e.count, frame, symbolic, defn, idx)
        if isinstance(n, Poison):
            return n
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ArchError(f"a repeat count must be an int >= 0, got {show(n)}", e.count.span,
                            "repeat 0 { ... } passes its input through unchanged")
        if n > MAX_REPEAT:
            raise ArchError(f"repeat count {n} exceeds the limit of {MAX_REPEAT}", e.count.span,
                            "raise archdsl.elaborate.elaborator.MAX_REPEAT if you really mean it")
        return RepeatCallable(n, e.var, e.body, dict(frame.env), e.span)

    def e_Pipe(self, e, frame, symbolic, defn, idx):
        # `x -> A -> B -> C` is Pipe(Pipe(Pipe(x, A), B), C): walk the chain in a loop, innermost
        # link first, so a chain of any length costs no stack.
        links = []
        while isinstance(e, A.Pipe):
            links.append(e)
            e = e.left
        left = self.eval(e, frame, symbolic, defn, idx)
        for link in reversed(links):
            left = self._pipe_link(link, left, frame, symbolic, defn, idx)
        return left

    def _pipe_link(self, e, left, frame, symbolic, defn, idx):
        right = self.eval(e.right, frame, symbolic, defn, idx)
        if isinstance(left, Poison) or isinstance(right, Poison):
            return POISON
        if not isinstance(right, CALLABLES):
            hint = "to combine tensors write a + b, or (a, b) -> Concat(axis=1)" if isinstance(right, TensorRef) else None
            raise ArchError(f"the right side of '->' must be a layer or block, got {show(right)}", e.right.span, hint)
        if isinstance(left, CALLABLES):
            return Composed(left, right)
        tensors = list(left) if isinstance(left, tuple) else [left]
        for t in tensors:
            if not isinstance(t, TensorRef):
                raise ArchError(f"the left side of '->' must be a tensor (or a tuple of tensors), got {show(t)}",
                                e.left.span)
        return self.apply(right, tensors, frame, e.right.span)

    # -- application --------------------------------------------------------------------------
    def apply(self, f, tensors: list, frame: Frame, span: Span):
        self._enter(span)
        try:
            return self._apply(f, tensors, frame, span)
        finally:
            self.depth -= 1

    def _apply(self, f, tensors: list, frame: Frame, span: Span):
        if isinstance(f, OpKind):
            f = LayerInstance(f.op, self._bind(f.op, [], {}, span, {}), span)
        if isinstance(f, BlockKind):
            f = BlockInstance(f.defn, self.bind_params(f.defn, [], {}, span), span, f.module)
        if isinstance(f, LayerInstance):
            return self.apply_layer(f, tensors, frame, span)
        if isinstance(f, BlockInstance):
            return self.apply_block(f, tensors, frame, span)
        if isinstance(f, Composed):
            # (A -> B -> C) is Composed(Composed(A, B), C): unroll the left spine in a loop
            parts = []
            while isinstance(f, Composed):
                parts.append(f.second)
                f = f.first
            parts.append(f)
            out = None
            for part in reversed(parts):
                out = self.apply(part, tensors, frame, span)
                if isinstance(out, Poison):     # a part that already reported its error
                    return POISON
                tensors = list(out) if isinstance(out, tuple) else [out]
            return out
        if isinstance(f, RepeatCallable):
            return self.apply_repeat(f, tensors, frame, span)
        raise ArchError(f"{show(f)} is not a layer", span)

    def apply_layer(self, inst: LayerInstance, tensors: list, frame: Frame, span: Span):
        op = inst.op
        lo, hi = (op.n_inputs, op.n_inputs) if isinstance(op.n_inputs, int) else op.n_inputs
        if len(tensors) < lo or (hi != -1 and len(tensors) > hi):
            want = f"{lo}" if lo == hi else f"at least {lo}" if hi == -1 else f"{lo} to {hi}"
            hint = ("pipe a tuple for several inputs: (a, b) -> " + op.name if lo > 1
                    else "declare a learnable tensor with: param w: f32[...] = normal(std=0.02)" if hi == 0 else None)
            raise ArchError(f"{op.name} takes {want} input tensor{'s' if want != '1' else ''}, got {len(tensors)}", span,
                            hint)
        if len(self.m.nodes) >= MAX_NODES:
            raise ArchError(f"model has more than {MAX_NODES} layers", span,
                            "raise archdsl.elaborate.elaborator.MAX_NODES if you really mean it")
        in_types = [t.value.type for t in tensors]
        owner = next((v for v in inst.attrs.values() if isinstance(v, BlockInstance) and v.is_cell), None)
        attrs = inst.attrs if owner is None else {k: self.cell_of(v, frame) if v is owner else v
                                                   for k, v in inst.attrs.items()}
        try:
            app = op.bind(attrs, in_types, span)
        except ShapeError as err:
            hint = err.hint
            if hint is None:
                origins = [t.origin for t in tensors if t.origin]
                if origins:
                    hint = "input came from " + ", ".join(origins)
            raise ShapeError(err.message, err.span or span, hint) from None
        first = inst.path is None
        # a layer that runs a cell (Scan) has the cell instance's weights and name: scanning the
        # same cell instance twice shares them, as applying a layer instance twice does
        counter = owner if owner is not None else inst
        if first:
            if owner is not None and owner.path is not None:
                inst.path = owner.path
            else:
                base = inst.name or (owner.name or owner.defn.name.lower() if owner is not None else op.name.lower())
                auto = inst.name is None and (owner is None or owner.name is None)
                inst.path = frame.qualify(frame.unique(base, auto=auto))
                if owner is not None:
                    owner.path = inst.path
        counter.applied += 1
        node_name = inst.path if counter.applied == 1 else f"{inst.path}#{counter.applied}"
        node = Node(node_name, app, [t.value for t in tensors], span=span, scope=frame.scopes,
                    instance=inst.path)
        tied = inst.attrs.get("tied")
        if tied is not None and inst.init is not None and "weight" in app.params:
            raise ArchError(f"init= cannot set the weight {op.name} shares with {tied.name or tied.op.name} (tied=)",
                            inst.init_spans["init"], "initialise the layer it is tied to instead")
        for local, spec in app.params.items():
            pname = f"{inst.path}.{local}" if local else inst.path   # '': named after the instance
            if tied is not None and local == "weight":
                if tied.path is None or "weight" not in tied.params:
                    raise ArchError(f"tied layer {tied.name or tied.op.name} must be applied before the layer tied to it",
                                    span, "use the embedding first, then the output projection")
                pname = tied.params["weight"]
            existing = self.m.parameters.get(pname)
            if existing is not None:
                if tuple(existing.shape) != tuple(spec.shape):
                    what = "tied" if tied is not None and local == "weight" else "shared"
                    raise ShapeError(f"{what} parameter {pname} has shape {list(existing.shape)}, but this use of "
                                     f"{op.name} needs {list(spec.shape)} (input {', '.join(map(str, in_types))})",
                                     span, "a shared layer must see inputs of the same size each time")
            else:
                existing = self.m.parameters[pname] = Param(pname, self._initialised(inst, local, spec, pname))
            app.params[local] = existing.spec
            node.params[local] = pname
            inst.params.setdefault(local, pname)
        if first:
            self._check_inits_used(inst, app)
        for c in app.constraints:
            if c.key() not in self.constraint_keys:
                self.constraint_keys.add(c.key())
                c.span, c.layer = span, node_name
                self.m.constraints.append(c)
        origin = f"{op.name} at line {span.line}"
        out_types = app.out_types
        node.outputs = [Value(node_name if len(out_types) == 1 else f"{node_name}:{i}", t, node, i, span)
                        for i, t in enumerate(out_types)]
        self.m.nodes.append(node)
        refs = [TensorRef(v, origin) for v in node.outputs]
        return refs[0] if len(refs) == 1 else tuple(refs)

    def _initialised(self, inst: LayerInstance, local: str, spec, pname: str):
        """The op's parameter spec, with the layer's `init=` (weights) or `bias_init=` (biases)."""
        key = "bias_init" if _is_bias(local) else "init"
        init = getattr(inst, key)
        if init is None or spec.buffer:
            return spec
        try:
            init.check_shape(tuple(spec.shape), pname)
        except ArchError as err:
            raise ArchError(err.message, inst.init_spans.get(key), err.hint) from None
        return replace(spec, initializer=init)

    def _check_inits_used(self, inst: LayerInstance, app) -> None:
        """`init=` on a layer without weights (or `bias_init=` without a bias) is a mistake."""
        trained = [local for local, s in app.params.items() if not s.buffer]
        for key, want, init in (("init", "weights", inst.init), ("bias_init", "bias", inst.bias_init)):
            if init is None or any(_is_bias(local) == (key == "bias_init") for local in trained):
                continue
            no_bias = key == "bias_init" and inst.attrs.get("bias") is False
            raise ArchError(f"{inst.op.name} has no {want} for {key}= to initialise", inst.init_spans[key],
                            "it was made with bias=false" if no_bias else
                            "init= sets a layer's weights, bias_init= its biases")

    def cell_of(self, inst: BlockInstance, frame: Frame) -> Cell:
        """The ir Cell of a cell instance: what an op that runs it holds (one per instance)."""
        if inst.cell is None:
            defn = inst.defn
            slots = signature(defn)
            names = {kind: tuple(s.name for s in slots if isinstance(s, kind)) for kind in (A.Input, A.Fixed, A.State)}
            if not names[A.State]:
                raise ArchError(f"cell {defn.name} has no state", defn.name_span,
                                "a cell carries at least one state from step to step: state h: f32[N, hidden]; "
                                "for a layer without state write a block")
            if not names[A.Input]:
                raise ArchError(f"cell {defn.name} has no input to read at each step", defn.name_span,
                                "a scanned cell reads step t of a sequence: input x: f32[N, C]")
            depth = frame.depth
            inst.cell = Cell(defn.name, inst.label, names[A.Input], names[A.Fixed], names[A.State], inst.span,
                             lambda steps, fixed: self.cell_body(inst, steps, fixed, depth))
        return inst.cell

    def cell_body(self, inst: BlockInstance, step_types: list, fixed_types: list, depth: int) -> CellBody:
        """One step of a cell as a graph of its own (ir/cell.py), elaborated at these types: the
        step inputs and fixed tensors become inputs of a new Model, and so do the states, with
        their declared types; its parameters are named relative to the cell."""
        defn = inst.defn
        self._expand(inst.span)
        sub = Model(name=defn.name, file=defn.span.file, span=defn.span, args=dict(inst.args))
        slots = signature(defn)
        given = []
        for stmt, t in zip([s for s in slots if not isinstance(s, A.State)], list(step_types) + list(fixed_types)):
            given.append(TensorRef(Value(stmt.name, t, None, 0, stmt.span), f"{_slot_word(stmt)} {stmt.name} of cell "
                                                                              f"{defn.name}"))
        n_states = sum(isinstance(s, A.State) for s in slots)
        outer = self.m, self.constraint_keys
        self.m, self.constraint_keys = sub, set()
        try:
            frame = Frame(env=dict(inst.args), path="", scopes=(), depth=depth + 1)
            out = self.run_body(defn, frame, given + [None] * n_states, call_span=inst.span)
            constraints = sub.constraints
        finally:
            self.m, self.constraint_keys = outer
        if isinstance(out, Poison):
            raise _Collected()
        outs = list(out) if isinstance(out, tuple) else [out]
        sub.inputs = [g.value for g in given] + sub.inputs      # the states, added as they were declared
        sub.outputs = [o.value for o in outs]
        sub.constraints = constraints
        n_out = len(outs) - n_states
        out_names = tuple(s.name or (s.value.id if isinstance(s.value, A.Name) else f"output_{i + 1}")
                          for i, s in enumerate(x for x in defn.body if isinstance(x, A.Output)))
        return CellBody(sub, tuple(s.name for s in slots if isinstance(s, A.Input)),
                        tuple(s.name for s in slots if isinstance(s, A.Fixed)),
                        tuple(s.name for s in slots if isinstance(s, A.State)), out_names[:n_out],
                        tuple(s.span for s in slots if isinstance(s, A.State)))

    def apply_block(self, inst: BlockInstance, tensors: list, frame: Frame, span: Span):
        if frame.depth >= MAX_BLOCK_DEPTH:
            raise ArchError(f"blocks nested deeper than {MAX_BLOCK_DEPTH} (is {inst.defn.name} recursive?)", span,
                            "raise archdsl.elaborate.elaborator.MAX_BLOCK_DEPTH if the nesting is intended")
        self._expand(span)
        if inst.path is None:
            local = frame.unique(inst.name or inst.defn.name.lower(), auto=inst.name is None)
            inst.path = frame.qualify(local)
            self.m.scopes[inst.path] = Scope(inst.path, inst.label, inst.span)
        inst.applied += 1
        # Re-applying the same instance re-elaborates its body under the same path, so the
        # parameter names (and hence the weights) are shared; node names get a #k suffix.
        sub = Frame(env=dict(inst.args), path=inst.path, scopes=frame.scopes + (inst.path,), depth=frame.depth + 1)
        n_before = len(self.m.nodes)
        out = self.run_body(inst.defn, sub, inputs=tensors, call_span=span)
        if inst.applied > 1:
            for node in self.m.nodes[n_before:]:
                node.name = f"{node.name}#{inst.applied}"
                for i, v in enumerate(node.outputs):
                    v.name = node.name if len(node.outputs) == 1 else f"{node.name}:{i}"
        return out

    def apply_repeat(self, rep: RepeatCallable, tensors: list, frame: Frame, span: Span):
        if rep.count == 0:          # no copies: the input passes through (a stage of depth 0)
            return tensors[0] if len(tensors) == 1 else tuple(tensors)
        if rep.path is None:
            local = frame.unique(rep.name or "repeat", auto=rep.name is None)
            rep.path = frame.qualify(local)
            self.m.scopes[rep.path] = Scope(rep.path, f"repeat {rep.count}", rep.span)
        rep.applied += 1
        cur = tensors
        for i in range(rep.count):
            self._expand(span)
            copy_path = f"{rep.path}.{i}"
            if copy_path not in self.m.scopes:
                self.m.scopes[copy_path] = Scope(copy_path, f"[{i}]", rep.span)
            env = dict(rep.env)
            if rep.var:
                env[rep.var] = i
            sub = Frame(env=env, path=copy_path, scopes=frame.scopes + (rep.path, copy_path), depth=frame.depth + 1)
            body = self.eval(rep.body, sub)
            if isinstance(body, Poison):
                return POISON
            if not isinstance(body, CALLABLES):
                raise ArchError(f"a repeat body must be a layer or block, got {show(body)}", rep.body.span)
            out = self.apply(body, cur, sub, span)
            cur = list(out) if isinstance(out, tuple) else [out]
        return cur[0] if len(cur) == 1 else tuple(cur)



def _arith(e: A.BinOp, a, b):
    op = e.op
    nums = (int, float, Sym)
    if op in ("==", "!="):
        eq = a == b
        return eq if op == "==" else not eq
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, nums) or not isinstance(b, nums):
        if op == "+" and isinstance(a, tuple) and isinstance(b, tuple):
            return a + b
        if op == "+" and isinstance(a, str) and isinstance(b, str):
            return a + b
        raise ArchError(f"'{op}' needs numbers, got {show(a)} and {show(b)}", e.span)
    if isinstance(a, Sym) or isinstance(b, Sym):
        fns = {"+": operator.add, "-": operator.sub, "*": operator.mul, "//": operator.floordiv}
        sym = a if isinstance(a, Sym) else b
        if op not in fns or (op in ("*", "//") and not (isinstance(a, int) or isinstance(b, int))):
            raise ArchError(f"'{op}' is not supported on symbolic dimension {show(sym)}", e.span)
        if isinstance(a, float) or isinstance(b, float):    # Sym arithmetic is on ints (N + 0.5 was N)
            raise ArchError(f"'{op}' between symbolic dimension {show(sym)} and a float is not supported", e.span)
        try:
            r = fns[op](a, b)
        except ZeroDivisionError:
            raise ArchError("division by zero", e.span) from None
        if isinstance(r, Sym) and (abs(r.const) > MAX_INT or any(abs(c) > MAX_INT for c in r.terms.values())):
            raise ArchError(f"integer result is too large ({op})", e.span)
        if isinstance(r, int) and abs(r) > MAX_INT:
            raise ArchError(f"integer result is too large ({op})", e.span)
        return r
    try:
        if op == "+":
            r = a + b
        elif op == "-":
            r = a - b
        elif op == "*":
            r = a * b
        elif op == "/":
            r = a / b
        elif op == "//":
            r = a // b
        elif op == "%":
            r = a % b
        elif op == "**":
            if isinstance(b, int) and isinstance(a, int) and (b > 256 or b < 0):
                r = float(a) ** b
            else:
                r = a ** b
        elif op == "<":
            r = a < b
        elif op == "<=":
            r = a <= b
        elif op == ">":
            r = a > b
        elif op == ">=":
            r = a >= b
        else:
            raise AssertionError(op)
    except ZeroDivisionError:
        raise ArchError("division by zero", e.span) from None
    except OverflowError:
        raise ArchError("number too large", e.span) from None
    if isinstance(r, complex):
        raise ArchError("the result is not a real number", e.span)
    if isinstance(r, int) and not isinstance(r, bool) and abs(r) > MAX_INT:
        raise ArchError(f"integer result is too large ({op})", e.span)
    if isinstance(r, float) and not math.isfinite(r):
        raise ArchError("the result is not finite", e.span)
    return r


def signature(defn: A.Definition) -> list:
    """The statements that take the tensors a definition is applied to, in order: its inputs
    and, for a cell, then its fixed tensors, then its states."""
    body = defn.body
    return ([s for s in body if isinstance(s, A.Input)] + [s for s in body if isinstance(s, A.Fixed)]
            + [s for s in body if isinstance(s, A.State)])


def _slot_word(stmt) -> str:
    return "state" if isinstance(stmt, A.State) else "fixed tensor" if isinstance(stmt, A.Fixed) else "input"


def _type_text(tt: A.TensorTypeExpr) -> str:
    """An annotation as written: f32[N, hidden]."""
    src = tt.span.source
    if src:
        lines = src.split("\n")
        if tt.span.line == tt.span.end_line and 0 < tt.span.line <= len(lines):
            return lines[tt.span.line - 1][tt.span.col - 1:tt.span.end_col - 1]
    return tt.dtype + "[...]"


def _targets_of(stmt) -> set:
    if isinstance(stmt, A.Assign):
        return set(stmt.targets)
    if isinstance(stmt, (A.Output, A.ParamDecl, A.State, A.Fixed)) and stmt.name:
        return {stmt.name}
    return set()


_BIAS = re.compile(r"(^|[._])bias($|[._])")


def _is_bias(local: str) -> bool:
    """A bias by its name (bias, bias_ih_l0, q_bias): what bias_init= sets; init= sets the rest."""
    return bool(_BIAS.search(local))


# operators between tensors (or a tensor and a number) -> ops
TENSOR_OPERATORS = {"+": "Add", "-": "Sub", "*": "Mul", "/": "Div", "**": "Pow", "==": "Equal",
                    "!=": "NotEqual", "<": "Less", "<=": "LessOrEqual", ">": "Greater", ">=": "GreaterOrEqual"}




def _mentions(e, names: set) -> bool:
    """Whether the expression uses one of `names` (walked with a stack: chains can be long)."""
    todo = [e]
    while todo:
        e = todo.pop()
        if isinstance(e, A.Name):
            if e.id in names:
                return True
        elif isinstance(e, A.Node):
            for f in e.__dataclass_fields__:
                if f == "span":
                    continue
                v = getattr(e, f)
                todo.extend(x for x in (v if isinstance(v, tuple) else (v,)) if isinstance(x, A.Node))
    return False


def _stack_depth() -> int:
    f, n = sys._getframe(1), 0
    while f is not None:
        f, n = f.f_back, n + 1
    return n


@contextmanager
def _recursion_headroom(frames: int):
    """Let the interpreter's recursion limit fit `frames` more frames than are in use now.

    Python-to-Python calls take no C stack (3.11+), and the elaborator's recursion is bounded by
    MAX_EVAL_DEPTH, so a few thousand frames are safe; the old limit is restored afterwards.
    """
    old = sys.getrecursionlimit()
    need = _stack_depth() + frames + 200
    if need > old:
        sys.setrecursionlimit(need)
    try:
        yield
    finally:
        if need > old:
            sys.setrecursionlimit(old)
