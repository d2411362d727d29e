"""Shape constraints: conditions on the input sizes that a model needs but its types cannot say.

A shape rule sometimes has to equate two symbolic dims that are equal for some sizes only. A
U-Net's skip connection joins `H` with `(H//2)*2` (a pool, then a stride-2 transposed conv): they
agree when H is even. Refusing the model would be a false error; accepting it silently would let
ONNX Runtime fail later with a raw message. So the shape rule records a `Constraint` on the model
(with the span of the op that needs it) and goes on; it fails only when the dims can never be
equal. `archdsl run`, `archdsl.runtime.Session` and the NumPy executor check every constraint
against the concrete input sizes before running, and refuse in words ("H must be a multiple of
16"). Exported ONNX files carry the constraints in their metadata (`archdsl.constraints`, JSON),
so a file is checked without its spec.

When two dims count as possibly equal: when they are not provably equal, at least one of them is
an expression the affine arithmetic of `Sym` could not simplify (a floor division that does not
divide, a product of symbols, a ceil-mode pool), and some sizes make them equal (found by trying
sizes up to `SEARCH_POINTS` combinations). Two affine dims that differ (`T` and `S`, `T` and
`T + 1`) stay an error, as before: declaring different symbols says the sizes are independent.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

from ..errors import Span
from .types import DimExpr, ExprName, Sym, is_static, resolve_dim

SEARCH_POINTS = 4096        # size combinations tried to decide whether a relation can hold
MAX_SEARCH_DEPTH = 100      # expressions nested deeper are not searched (they count as differing)
METADATA_KEY = "archdsl.constraints"


# -- deciding relations ------------------------------------------------------------------------
def _opaque(d) -> bool:
    return not is_static(d) and any(isinstance(k, ExprName) for k in d.terms)


def _symbols(*dims) -> list[str]:
    out: list[str] = []
    for d in dims:
        if not is_static(d):
            out += [s for s in d.symbols() if s not in out]
    return out


def _assignments(symbols: list[str]):
    """Size combinations to try, small sizes first."""
    if not symbols:
        yield {}
        return
    top = max(2, int(round(SEARCH_POINTS ** (1.0 / len(symbols)))))
    for values in itertools.product(range(1, top + 1), repeat=len(symbols)):
        yield dict(zip(symbols, values))


def _depth(d) -> int:
    """How deeply expressions nest in a dim (measured without recursion, up to MAX_SEARCH_DEPTH + 1)."""
    deepest, todo = 0, [(d, 0)]
    while todo and deepest <= MAX_SEARCH_DEPTH:
        d, k = todo.pop()
        deepest = max(deepest, k)
        if not is_static(d):
            todo += [(a, k + 1) for name in d.terms if isinstance(name, ExprName) for a in name.expr.args]
    return deepest


def _sometimes(pred, *dims) -> bool:
    if any(_depth(d) > MAX_SEARCH_DEPTH for d in dims):
        return False        # too deep to evaluate safely; treated as never
    for b in _assignments(_symbols(*dims)):
        if pred(b):
            return True
    return False


def relate(d1, d2) -> str:
    """'equal' (provably), 'maybe' (for some sizes: record a constraint) or 'differ'."""
    if d1 == d2:
        return "equal"
    if not (_opaque(d1) or _opaque(d2)):
        return "differ"
    hit = _sometimes(lambda b: _equal_at(d1, d2, b), d1, d2)
    return "maybe" if hit else "differ"


def _equal_at(d1, d2, b) -> bool:
    v1, v2 = resolve_dim(d1, b), resolve_dim(d2, b)
    return v1 is not None and v1 == v2


def at_least(d, k: int) -> str:
    """Whether dim `d` >= k: 'always' (provably), 'maybe' (for some sizes) or 'never'."""
    if is_static(d):
        return "always" if int(d) >= k else "never"
    if not _opaque(d) and all(c >= 0 for c in d.terms.values()) and d.const + sum(d.terms.values()) >= k:
        return "always"         # every symbol is at least 1
    hit = _sometimes(lambda b: _at_least_at(d, k, b), d)
    return "maybe" if hit else "never"


def _at_least_at(d, k, b) -> bool:
    v = resolve_dim(d, b)
    return v is not None and v >= k


# -- the constraint ----------------------------------------------------------------------------
@dataclass(eq=False)
class Constraint:
    """`lhs == rhs` or `lhs >= rhs` over the model's symbolic dims.

    op, what: the op that needs it and why, in words ("input 1 must agree with input 0 in dim
    2"); the elaborator adds `span` and `layer` (the node), the exporter `where` ("unet.arch:23")."""
    lhs: object
    relation: str               # "==" or ">="
    rhs: object
    what: str
    op: str = ""
    layer: str = ""
    span: Span | None = None
    where: str = ""

    def key(self) -> tuple:
        return (self.lhs, self.relation, self.rhs)

    def symbols(self) -> list[str]:
        return _symbols(self.lhs, self.rhs)

    def values(self, bindings: dict) -> tuple:
        return resolve_dim(self.lhs, bindings), resolve_dim(self.rhs, bindings)

    def holds(self, bindings: dict) -> bool | None:
        """True or False at these sizes; None when a symbol it needs is not bound."""
        lv, rv = self.values(bindings)
        if lv is None or rv is None:
            return None
        return lv == rv if self.relation == "==" else lv >= rv

    def text(self) -> str:
        return f"{pretty(self.lhs)} {'=' if self.relation == '==' else '>='} {pretty(self.rhs)}"

    def location(self) -> str:
        if self.where:
            return self.where
        return f"{self.span.file}:{self.span.line}" if self.span is not None else ""

    def to_json(self, where: str | None = None) -> dict:
        return {"lhs": _dim_json(self.lhs), "relation": self.relation, "rhs": _dim_json(self.rhs),
                "what": self.what, "op": self.op, "layer": self.layer,
                "where": where if where is not None else self.location()}

    @staticmethod
    def from_json(d: dict) -> "Constraint":
        return Constraint(_dim_from_json(d["lhs"]), str(d["relation"]), _dim_from_json(d["rhs"]),
                          str(d.get("what", "")), str(d.get("op", "")), str(d.get("layer", "")), None,
                          str(d.get("where", "")))


def dumps(constraints, where=None) -> str:
    """The metadata value for an exported model: a JSON list. where: span -> 'FILE:LINE'."""
    return json.dumps([c.to_json(where(c.span) if where is not None and c.span is not None else None)
                       for c in constraints], separators=(",", ":"))


def loads(text: str) -> list[Constraint]:
    """Constraints from ONNX metadata; [] for a value this version cannot read (never an error:
    the model still runs, ONNX Runtime then reports what does not fit)."""
    try:
        return [Constraint.from_json(d) for d in json.loads(text)]
    except (ValueError, TypeError, KeyError, AttributeError):
        return []


def _dim_json(d):
    if is_static(d):
        return int(d)
    return {"const": d.const, "terms": [[_name_json(k), c] for k, c in d.terms.items()]}


def _name_json(k):
    if isinstance(k, ExprName):
        return {"op": k.expr.op, "args": [_dim_json(a) for a in k.expr.args]}
    return str(k)


def _dim_from_json(j):
    if isinstance(j, int) and not isinstance(j, bool):
        return j
    terms = {}
    for name, c in j["terms"]:
        if isinstance(name, dict):
            expr = DimExpr(str(name["op"]), *(_dim_from_json(a) for a in name["args"]))
            (name,) = Sym.opaque(expr).terms
        terms[name] = int(c)
    d = Sym(terms, int(j["const"]))
    return d.const if not d.terms else d


# -- words ----------------------------------------------------------------------------------------
def pretty(d) -> str:
    """A dim as a reader writes it: 2*(H//2), (T-3)//2 + 1."""
    if is_static(d):
        return str(int(d))
    parts = []
    for name, c in sorted(d.terms.items(), key=lambda kv: str(kv[0])):
        text = _pretty_name(name)
        if c != 1 and c != -1 and isinstance(name, ExprName):
            text = f"({text})"
        term = text if c == 1 else f"-{text}" if c == -1 else f"{c}*{text}"
        parts.append(term)
    s = parts[0]
    for p in parts[1:]:
        s += f" - {p[1:]}" if p.startswith("-") else f" + {p}"
    if d.const:
        s += f" + {d.const}" if d.const > 0 else f" - {-d.const}"
    return s


def _pretty_name(name) -> str:
    if not isinstance(name, ExprName):
        return str(name)
    e = name.expr
    args = [_wrapped(a) for a in e.args]
    if e.op == "floordiv":
        return f"{args[0]}//{args[1]}"
    if e.op == "mul":
        return f"{args[0]}*{args[1]}"
    return f"ceil_pool({', '.join(args)})"


def _wrapped(d) -> str:
    text = pretty(d)
    simple = is_static(d) or (len(d.terms) == 1 and not d.const and next(iter(d.terms.values())) == 1)
    return text if simple else f"({text})"


LIMIT = 4096        # sizes tried when saying which sizes fit


def _fitting(symbol: str, constraints, bindings: dict) -> list[int]:
    """Sizes of `symbol` in 1..LIMIT that satisfy every constraint on it alone."""
    own = [c for c in constraints if c.symbols() == [symbol]]
    out = []
    for v in range(1, LIMIT + 1):
        b = {**bindings, symbol: v}
        if all(c.holds(b) is not False for c in own):
            out.append(v)
    return out


def explain(c: Constraint, constraints, bindings: dict) -> tuple[str, str]:
    """(message, hint) for a constraint that fails at `bindings`."""
    lv, rv = c.values(bindings)
    syms = c.symbols()
    at = ", ".join(f"{s} = {bindings[s]}" for s in syms if s in bindings)
    rule = (f"{pretty(c.lhs)} must equal {pretty(c.rhs)}, but they are {lv} and {rv}" if c.relation == "=="
            else f"{pretty(c.lhs)} must be at least {pretty(c.rhs)}, but it is {lv}")
    message = f"{rule} (with {at})" if at else rule
    hint = " ".join(x for x in (c.op or "a layer", f"at {c.location()}" if c.location() else "",
                                f"({c.layer})" if c.layer else "") if x)
    hint += f" needs {c.text()}" + (f" ({c.what})" if c.what else "")
    if len(syms) == 1:
        s = syms[0]
        fit = _fitting(s, constraints, bindings)
        given = bindings[s]
        if fit and len(fit) < LIMIT:
            step = fit[0]
            if step > 1 and fit == list(range(step, LIMIT + 1, step)):
                message = f"{s} must be a multiple of {step}, got {s} = {given}"
            elif fit == list(range(fit[0], LIMIT + 1)):
                message = f"{s} must be at least {fit[0]}, got {s} = {given}"
            below = [v for v in fit if v < given][-1:]
            above = [v for v in fit if v > given][:1]
            near = " or ".join(str(v) for v in below + above)
            if near:
                hint += f"; {s} = {near} would fit"
        elif not fit:
            hint += f"; no {s} up to {LIMIT} fits"
    return message, hint


def violated(constraints, bindings: dict) -> list[Constraint]:
    """The constraints that fail at `bindings` (those with unbound symbols are skipped)."""
    return [c for c in constraints if c.holds(bindings) is False]


def bindings_of(types, shapes) -> dict[str, int]:
    """Symbol values from input types (TensorType) and the concrete shapes given for them: each
    dim that is a plain symbol binds it (dims that are expressions bind nothing)."""
    out: dict[str, int] = {}
    for t, shape in zip(types, shapes):
        if len(shape) != t.rank:
            continue
        for d, v in zip(t.shape, shape):
            if not is_static(d) and d.const == 0 and len(d.terms) == 1:
                (name, coef), = d.terms.items()
                if coef == 1 and not isinstance(name, ExprName):
                    out.setdefault(str(name), int(v))
    return out


def check_inputs(model, shapes: dict) -> None:
    """Raise an ArchError (at the layer that needs it) when the shapes of a model's inputs
    (name -> shape) break one of its constraints."""
    from ..errors import ArchError
    inputs = [v for v in model.inputs if v.name in shapes]
    bindings = bindings_of([v.type for v in inputs], [tuple(shapes[v.name]) for v in inputs])
    bad = violated(model.constraints, bindings)
    if bad:
        message, hint = explain(bad[0], model.constraints, bindings)
        raise ArchError(f"the inputs do not fit model {model.name}: {message}", bad[0].span, hint)
