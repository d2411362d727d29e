"""Cost model: parameters, multiply-accumulates and activation memory of a model.

    report = analyze(model, dims={"T": 128}, batch=8)

Symbolic dims are resolved with `dims`; `N` defaults to `batch`. A dim that still cannot be
resolved counts as 1 (for MACs and memory) and the symbols it needed are listed in
`report.assumed`, so a reader knows which figures are per-unit of that symbol. Opaque dims that
shape rules produce for non-affine expressions (`(T-3)//2`) are evaluated once their symbols
are bound.

Parameters are counted at the FIRST application of each Param: a layer applied twice, or a
weight tied to another layer, is counted once. Buffers (BatchNorm running statistics) are not
parameters; they are reported apart. Parameters are stored as float32 (4 bytes each), which is
what archdsl initialises, trains and exports. Activation memory is the sum of the bytes of
every node output for one forward pass at the stated dims (model inputs are not included;
`input_bytes` has them). All figures are exact ints.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..ir.graph import Model, Node
from ..ir.types import ExprName, TensorType, is_static

PARAM_BYTES = 4     # float32


@dataclass
class NodeCost:
    name: str
    kind: str
    describe: str
    scope: tuple[str, ...]
    instance: str
    out_types: list[str]            # with symbols, e.g. "f32[N, 6, 28, 28]"
    out_shapes: list[list[int]]     # resolved
    params: int                     # counted here (first application of each Param)
    trainable: int
    buffers: int                    # buffer elements first used here
    macs: int
    out_bytes: int
    shared_with: str | None = None      # first node applying the same layer instance
    reused_params: list[str] = field(default_factory=list)   # counted at an earlier node
    # a user cell's step (ops that declare a step graph: ops/scan.py): one row per layer of the
    # step, with its per-step output shapes and MACs; its parameters are counted in this row
    step: list["NodeCost"] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["scope"] = list(self.scope)
        return d


@dataclass
class ScopeCost:
    path: str
    label: str
    depth: int          # 0 for a top-level block instance
    params: int = 0
    macs: int = 0
    nodes: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class CostReport:
    model: str
    batch: int
    dims: dict[str, int]        # bindings used (N included)
    assumed: list[str]          # symbols that were unbound and counted as 1
    rows: list[NodeCost]
    scopes: dict[str, ScopeCost]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    buffer_elements: int
    macs: int
    activation_bytes: int
    input_bytes: int
    param_bytes: int
    buffer_bytes: int

    def row(self, name: str) -> NodeCost:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def rows_with_scopes(self):
        """Each row with the block instances it enters, for tables that print a header per
        instance: (row, [(depth, ScopeCost), ...]), outermost first."""
        open_scopes: tuple = ()
        for r in self.rows:
            common = 0
            while common < min(len(open_scopes), len(r.scope)) and open_scopes[common] == r.scope[common]:
                common += 1
            yield r, [(depth, self.scopes[r.scope[depth]]) for depth in range(common, len(r.scope))]
            open_scopes = r.scope


class _Resolver:
    """Symbolic dims -> ints, recording the symbols that had to be assumed to be 1."""

    def __init__(self, bindings: dict[str, int]):
        self.bindings = dict(bindings)
        self.assumed: list[str] = []

    def dim(self, d) -> int:
        if is_static(d):
            return int(d)
        total, missing = d.const, []
        for name, c in d.terms.items():
            v = self._symbol(name, missing)
            if v is not None:
                total += c * v
        if missing:
            for s in missing:
                if s not in self.assumed:
                    self.assumed.append(s)
            return 1
        return total

    def shape(self, t: TensorType) -> tuple[int, ...]:
        return tuple(self.dim(d) for d in t.shape)

    def _symbol(self, name: str, missing: list[str]) -> int | None:
        if isinstance(name, ExprName):      # a symbol standing for an expression: evaluate it
            inner: list[str] = []
            v = name.expr.value(lambda d: self._value(d, inner))
            missing.extend(s for s in inner if s not in missing)
            return v
        if name in self.bindings:
            return int(self.bindings[name])
        missing.append(name)
        return None

    def _value(self, d, missing: list[str]) -> int | None:
        if is_static(d):
            return int(d)
        total = d.const
        for name, c in d.terms.items():
            v = self._symbol(name, missing)
            if v is None:
                return None
            total += c * v
        return total


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def analyze(model: Model, dims: dict[str, int] | None = None, batch: int = 1) -> CostReport:
    bindings = {"N": int(batch), **{k: int(v) for k, v in (dims or {}).items()}}
    res = _Resolver(bindings)

    first_of_instance: dict[str, str] = {}
    counted: set[str] = set()
    rows: list[NodeCost] = []
    scopes: dict[str, ScopeCost] = {}

    def scope_of(path: str, depth: int) -> ScopeCost:
        if path not in scopes:
            sc = model.scopes.get(path)
            scopes[path] = ScopeCost(path, sc.label if sc is not None else path, depth)
        return scopes[path]

    for n in model.nodes:
        params = trainable = buffers = 0
        reused = []
        for pname in n.params.values():
            p = model.parameters[pname]
            if pname in counted:
                reused.append(pname)
                continue
            counted.add(pname)
            if p.spec.buffer:
                buffers += p.numel
            else:
                params += p.numel
                trainable += p.numel if p.trainable else 0
        in_shapes = [res.shape(v.type) for v in n.inputs]
        out_shapes = [res.shape(v.type) for v in n.outputs]
        macs = int(n.op.macs(n.app, in_shapes, out_shapes))
        out_bytes = sum(_numel(s) * v.type.np_dtype.itemsize for s, v in zip(out_shapes, n.outputs))
        shared_with = None
        if n.instance:
            first = first_of_instance.setdefault(n.instance, n.name)
            shared_with = first if first != n.name else None
        rows.append(NodeCost(
            name=n.name, kind=n.kind, describe=_describe(n), scope=tuple(n.scope), instance=n.instance,
            out_types=[str(v.type) for v in n.outputs], out_shapes=[list(s) for s in out_shapes],
            params=params, trainable=trainable, buffers=buffers, macs=macs, out_bytes=out_bytes,
            shared_with=shared_with, reused_params=reused, step=_step_rows(n, res)))
        for depth, path in enumerate(n.scope):
            sc = scope_of(path, depth)
            sc.params += params
            sc.macs += macs
            sc.nodes += 1

    for path, sc in model.scopes.items():     # scopes without nodes still get a (zero) row
        if path not in scopes:
            scopes[path] = ScopeCost(path, sc.label, path.count("."))

    # totals over every parameter of the model (normally exactly the ones nodes refer to)
    total = trainable = buffer_el = 0
    for pname, p in model.parameters.items():
        if p.spec.buffer:
            buffer_el += p.numel
        else:
            total += p.numel
            trainable += p.numel if p.trainable else 0

    input_bytes = sum(_numel(res.shape(v.type)) * v.type.np_dtype.itemsize for v in model.inputs)
    return CostReport(
        model=model.name, batch=bindings["N"], dims=bindings, assumed=list(res.assumed),
        rows=rows, scopes=scopes,
        total_params=total, trainable_params=trainable, non_trainable_params=total - trainable,
        buffer_elements=buffer_el, macs=sum(r.macs for r in rows),
        activation_bytes=sum(r.out_bytes for r in rows), input_bytes=input_bytes,
        param_bytes=total * PARAM_BYTES, buffer_bytes=buffer_el * PARAM_BYTES)


def _step_rows(n: Node, res: _Resolver) -> list[NodeCost]:
    """Rows for the layers of one step of a node's cell (none for other nodes): per-step output
    shapes and MACs, and each layer's parameters (those of the node, counted there once)."""
    rec = n.op.recurrence(n.app)
    body = rec.body if rec is not None else None
    if body is None:
        return []
    m = body.model
    rows, counted = [], set()
    for b in m.nodes:
        params = trainable = 0
        for pname in b.params.values():
            if pname in counted:
                continue
            counted.add(pname)
            p = m.parameters[pname]
            if not p.spec.buffer:
                params += p.numel
        in_shapes = [res.shape(v.type) for v in b.inputs]
        out_shapes = [res.shape(v.type) for v in b.outputs]
        rows.append(NodeCost(
            name=b.name, kind=b.kind, describe=_describe(b), scope=tuple(b.scope), instance=b.instance,
            out_types=[str(v.type) for v in b.outputs], out_shapes=[list(s) for s in out_shapes],
            params=params, trainable=trainable, buffers=0, macs=int(b.op.macs(b.app, in_shapes, out_shapes)),
            out_bytes=sum(_numel(s) * v.type.np_dtype.itemsize for s, v in zip(out_shapes, b.outputs)),
            step=_step_rows(b, res)))
    return rows


def _describe(n: Node) -> str:
    return n.op.describe(n.attrs)


def op_label(kind: str, describe: str) -> str:
    """'Conv2d' + '6, k=5' -> 'Conv2d(6, k=5)'; no parentheses when there is nothing to say."""
    return f"{kind}({describe})" if describe else kind
