"""`archdsl export --format torch -o model.py`: a model as a standalone PyTorch module, code a
user can read, edit and run without archdsl.

How: torch.fx records the PyTorch engine's forward (module.py) on symbolic inputs, one node per
torch call, with the module's `self.training` as a value of the graph (so `.train()` / `.eval()`
switch dropout and BatchNorm in the written module too). The graph is renamed after the spec (each
layer's output is called after its value in the .arch file, parameters after their archdsl
names), its code is printed by torch.fx, and the file gathers:

    a docstring     what the model takes and returns, how to load weights
    imports         math, torch, torch.nn.functional as F; nothing of archdsl
    the class       __init__ makes the parameters and buffers under archdsl's names (the
                    state_dict keys of archdsl's checkpoints), reset_parameters() applies
                    archdsl's initialisers, forward() is the traced code with one comment per layer
    helpers         the kernels the forward calls (kernels.py), copied as they are

With weights (`--weights CKPT`), their state_dict is saved beside it (model.pt).
"""
from __future__ import annotations

import inspect
import keyword
import operator
import re
from pathlib import Path

from ...errors import ArchError
from ...fileio import atomic_path, atomic_write
from ...ir.graph import Model, ParamSpec
from ...version import __version__
from . import kernels
from .lazy import TF, TK, require_torch
from .module import TorchModel

torch = require_torch()
fx = torch.fx


class ExportContext:
    """The context of a forward traced for export: training is the module's `self.training` (a
    graph value), and randomness is drawn as a standalone module draws it (PyTorch's generator)."""
    tracing = True

    def __init__(self, training):
        self.training = training

    def dropout(self, x, p: float):
        return TF.dropout(x, p, self.training) if p else x

    def dropout_mask(self, shape, p: float, like):
        return TK.dropout_mask(like, shape, p, self.training) if p else None

    def drop_branch(self, x, p: float, per_row: bool):
        return TK.drop_branch(x, p, per_row, self.training) if p else x

    def noise_like(self, x, kind: str, a: float, b: float, sample: bool):
        return TK.noise_like(x, kind, a, b, True if sample else self.training)


class _Tracer(fx.Tracer):
    """Records which layer (IR node) each graph node belongs to."""
    layer = None

    def create_node(self, *args, **kwargs):
        node = super().create_node(*args, **kwargs)
        node.meta["layer"] = self.layer
        return node


# names the written module itself uses: a value may not take them
RESERVED = {"self", "math", "torch", "F", "nn", "submodule_for", "layer", "training"}


def identifier(name: str) -> str:
    """A Python name for an archdsl name: dots and other signs become underscores."""
    out = re.sub(r"\W", "_", name)
    if not out or out[0].isdigit() or keyword.iskeyword(out) or out in RESERVED or hasattr(kernels, out):
        out = "v_" + out
    return out


def short_names(names: list[str]) -> dict[str, str]:
    """Each dotted name's shortest unique tail as an identifier: 'bert.pooler.linear_1' is
    'linear_1' when no other name ends so (a tail does not start at a repeat index)."""
    out = {}
    for name in names:
        parts = name.split(".")
        for k in range(1, len(parts) + 1):
            tail = parts[-k:]
            if tail[0].isdigit() and k < len(parts):
                continue
            if sum(1 for other in names if other == ".".join(tail) or other.endswith("." + ".".join(tail))) == 1:
                break
        out[name] = identifier("_".join(tail))
    return out


def trace(net: TorchModel) -> "fx.Graph":
    """The forward of `net` as a torch.fx graph, named after the spec."""
    tracer = _Tracer()
    tracer.root, tracer.tensor_attrs = net, {}
    graph = tracer.graph = fx.Graph(tracer_cls=_Tracer)
    env = [None] * net.n_slots
    for name, i, _ in net.input_slots:
        env[i] = tracer.create_proxy("placeholder", identifier(name), (), {})
    attrs: dict = {}

    def attr(name):
        if name not in attrs:
            attrs[name] = tracer.create_proxy("get_attr", name, (), {})
        return attrs[name]

    ctx = ExportContext(attr("training"))
    short = short_names([v.name for n in net.ir.nodes for v in n.outputs])
    names: dict = {}            # graph node -> the spec's name for it
    for node, app, fwd, ins, outs, params in net.plan:
        tracer.layer = node
        res = fwd(app, ctx, [env[i] for i in ins], {k: attr(p) for k, _, _, p in params})
        for i, v, t in zip(outs, node.outputs, res):
            env[i] = t
            if isinstance(t, fx.Proxy) and t.node.op != "placeholder":
                names.setdefault(t.node, short[v.name])
    tracer.layer = None
    results = [env[i] for _, i in net.output_slots]
    graph.output(tracer.create_arg(results[0] if len(results) == 1 else tuple(results)))
    return _renamed(graph, names)


def _renamed(graph, names: dict):
    """A copy of `graph` whose layer outputs carry the spec's names (kernel calls `<kernel>_out`)."""
    out = fx.Graph()
    remap: dict = {}
    for n in graph.nodes:
        if n.op == "output":
            out.output(fx.map_arg(n.args[0], remap.__getitem__))
            continue
        name, kwargs = names.get(n), n.kwargs
        if n.op == "call_function" and getattr(n.target, "__module__", "") == kernels.__name__:
            name = name or f"{n.target.__name__}_out"
            defaults = inspect.signature(n.target).parameters
            kwargs = {k: v for k, v in kwargs.items() if not (k in defaults and _same(v, defaults[k].default))}
        new = out.create_node(n.op, n.target, fx.map_arg(n.args, remap.__getitem__),
                              fx.map_arg(kwargs, remap.__getitem__), name=name)
        new.meta = dict(n.meta)
        remap[n] = new
    out.eliminate_dead_code()
    return out


def _same(value, default) -> bool:
    """Is a keyword argument its parameter's default (left out of the written call)?"""
    return not isinstance(value, fx.Node) and type(value) is type(default) and value == default


# -- the file --------------------------------------------------------------------------------------

def module_source(model: Model, net: TorchModel | None = None, spec_file: str = "", class_name: str | None = None,
                  stem: str = "model") -> str:
    """The text of a standalone PyTorch module computing `model`."""
    net = net if net is not None else TorchModel(model, _zeros(model))
    cls = class_name or identifier(model.name)
    graph = trace(net)
    helpers, body = _used_kernels(graph.python_code(root_module="self"))
    forward = _forward_lines(body, graph)
    lines = [_docstring(model, cls, spec_file, stem), "import math", "", "import torch",
             "import torch.nn.functional as F", "from torch import nn", "", ""]
    lines += _class_source(model, cls, forward)
    lines += ["", "", _SUBMODULE_FOR]
    for src in helpers:
        lines += ["", "", src]
    return "\n".join(lines).rstrip() + "\n"


def _zeros(model: Model) -> dict:
    import numpy as np
    return {n: np.zeros(tuple(int(d) for d in p.shape), np.float32) for n, p in model.parameters.items()}


def _used_kernels(code) -> tuple[list[str], str]:
    """(the sources of the kernels the code calls, with the kernels.py functions they call in
    turn; the code with each kernel called by its own name where that name is free)."""
    src = code.src
    sources, seen = [], set()
    for gname, obj in code.globals.items():
        fn = getattr(obj, "__leaf__", obj)
        if getattr(fn, "__module__", None) != kernels.__name__:
            continue
        if gname != fn.__name__ and not re.search(rf"\b{fn.__name__}\b", src):
            src = re.sub(rf"\b{re.escape(gname)}\b", fn.__name__, src)
        _collect(fn, sources, seen)
    return sources, src


def _collect(fn, sources: list, seen: set) -> None:
    """fn's source (decorators removed) and, first, the kernels.py functions it calls."""
    fn = getattr(fn, "__leaf__", fn)
    if fn.__name__ in seen:
        return
    seen.add(fn.__name__)
    for name in fn.__code__.co_names:
        dep = getattr(kernels, name, None)
        if name != "leaf" and getattr(getattr(dep, "__leaf__", dep), "__module__", None) == kernels.__name__:
            _collect(dep, sources, seen)
    text = inspect.getsource(fn)
    sources.append("\n".join(l for l in text.rstrip().split("\n") if not l.startswith("@")))


_FREE = re.compile(r";\s+(?:[\w.]+ = )+None$")
_NNF = re.compile(r"\btorch\.(_C\._nn|nn\.functional)\.(\w+)\b")
_DEFAULTS = re.compile(r", (?:inplace=False|return_indices=False|padding_idx=None|max_norm=None|norm_type=2\.0|"
                       r"scale_grad_by_freq=False|sparse=False)\b")
_SLICE = re.compile(r"slice\(([^(),]+), ([^(),]+), ([^(),]+)\)")
_SUBSCRIPT = re.compile(r"(?<=[\w)\]])\[([^\[\]]*)\]")
_ASSIGN = re.compile(r"(\s+)(\w+) = (.*)$")


def _functional(m) -> str:
    """torch.nn.functional.relu -> F.relu; torch._C._nn.linear -> F.linear (the same function)."""
    where, name = m.groups()
    same = where == "nn.functional" or getattr(torch.nn.functional, name, None) is getattr(torch._C._nn, name)
    return f"F.{name}" if same else m.group(0)


def _slice(m) -> str:
    start, stop, step = ("" if p == "None" else p for p in m.groups())
    return f"{start}:{stop}" + (f":{step}" if step not in ("", "1") else "")


def _subscript(m) -> str:
    """x[(slice(None, None, None), 0)] -> x[:, 0]."""
    inner = _SLICE.sub(_slice, m.group(1))
    if inner.startswith("(") and inner.endswith(")") and ":" in inner:
        inner = inner[1:-1].rstrip(",") if inner.count("(") == 1 else inner
    return f"[{inner}]"


def _tidy(rhs: str) -> str:
    """torch.fx's right-hand side as a person writes it: F. for torch.nn.functional, keyword
    arguments without spaces, defaults that say nothing left out, x[:n] for slices."""
    rhs = _NNF.sub(_functional, rhs)
    rhs = re.sub(r"(\w) = ", r"\1=", rhs)
    rhs = _DEFAULTS.sub("", rhs)
    return _SUBSCRIPT.sub(_subscript, rhs)


def _reads_shape_or_slice(node) -> bool:
    """x.shape, x.shape[1], self.w[:n]: read where used, not on a line of their own."""
    if node.op != "call_function":
        return False
    if node.target is getattr:
        return True
    base = node.args[0] if node.target is operator.getitem else None
    return isinstance(base, fx.Node) and (base.op == "get_attr" or base.target is getattr)


def _module_expr(path: str) -> str:
    parts = path.split(".")
    if all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
        return "self." + path
    return f'self.get_submodule("{path}")'


def _forward_lines(src: str, graph) -> list[str]:
    """The forward's lines: parameters and shapes read where they are used (no line of their
    own), each layer's lines after a comment naming the layer and where the spec writes it, and
    `layer = ...` binding a deeply nested layer's parameters once."""
    nodes = {n.name: n for n in graph.nodes}
    uses: dict = {}
    for n in graph.nodes:
        for u in n.users:
            uses[n.name] = uses.get(n.name, 0) + 1
    exprs: dict = {}
    word = re.compile(r"(?<![.\w])\w+\b(?!\s*=[^=])")      # names, not attributes or keywords
    out, last = [], None
    for line in src.strip("\n").split("\n"):
        line = _FREE.sub("", line.rstrip())
        line = word.sub(lambda m: exprs.get(m.group(0), m.group(0)), line) if exprs else line
        m = _ASSIGN.match(line)
        node = nodes.get(m.group(2)) if m else None
        layer = node.meta.get("layer") if node is not None else None
        if layer is not None and layer is not last:
            described = layer.op.describe(layer.attrs)
            where = f"  ({Path(layer.span.file).name}:{layer.span.line})" if layer.span is not None else ""
            out.append(f"    # {layer.name}: {layer.kind}{f'({described})' if described else ''}{where}")
            own = [p for p in layer.params.values()]
            if own and len(_module_expr(layer.name)) > 28:
                out.append(f"    layer = {_module_expr(layer.name)}")
            last = layer
        if node is not None and node.op == "get_attr":
            path, _, attr = node.target.rpartition(".")
            bound = layer is not None and path == layer.name and len(_module_expr(path)) > 28
            exprs[node.name] = f"layer.{attr}" if bound else (f"{_module_expr(path)}.{attr}" if path else f"self.{attr}")
            continue
        if node is not None and _reads_shape_or_slice(node) and uses.get(node.name, 0) == 1:
            exprs[node.name] = _tidy(m.group(3))
            continue
        if m:
            line = f"{m.group(1)}{m.group(2)} = {_tidy(m.group(3))}"
        else:
            line = _tidy(line)
        out.append(line)
    return out


def _docstring(model: Model, cls: str, spec_file: str, stem: str) -> str:
    ins = ", ".join(f"{identifier(v.name)}: {v.type}" for v in model.inputs)
    outs = ", ".join(f"{identifier(v.name)}: {v.type}" for v in model.outputs)
    call = ", ".join(identifier(v.name) for v in model.inputs)
    ret = identifier(model.outputs[0].name) if len(model.outputs) == 1 else \
        ", ".join(identifier(v.name) for v in model.outputs)
    src = f" from {spec_file}" if spec_file else ""
    return f'''"""{model.name} as a PyTorch module, written by archdsl {__version__}{src}.

It needs PyTorch only:

    model = {cls}()                        # archdsl's initialisers (fresh random values)
    model.load_state_dict(torch.load("{stem}.pt"))   # trained weights (export --weights writes them)
    {ret} = model({call})

Inputs: {ins}. Returns {outs}{" (a tuple)" if len(model.outputs) > 1 else ""}.
Parameters and buffers have archdsl's names (the state_dict keys), so an archdsl checkpoint
loads as it is:

    arrays = numpy.load("run/checkpoint.npz")
    model.load_state_dict({{k[6:]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith("param/")}})

model.train() and model.eval() switch dropout and BatchNorm, as in any PyTorch module.
"""'''


def _class_source(model: Model, cls: str, forward: list[str]) -> list[str]:
    params = [(n, p) for n, p in model.parameters.items() if not p.spec.buffer]
    buffers = [(n, p) for n, p in model.parameters.items() if p.spec.buffer]
    frozen = [n for n, p in params if not p.trainable]
    lines = [f"class {cls}(nn.Module):", f'    """{model.name}: {_count(model)} parameters."""', "",
             "    # name: shape, under archdsl's names (the state_dict keys)"]
    lines += _table("PARAMETERS", params) + _table("BUFFERS", buffers)
    if frozen:
        lines += [f"    FROZEN = {tuple(frozen)!r}      # no gradients (frozen in the spec)"]
    lines += ["", "    def __init__(self):", "        super().__init__()",
              "        for name, shape in self.PARAMETERS.items():",
              "            owner, attr = submodule_for(self, name)",
              "            owner.register_parameter(attr, nn.Parameter(torch.empty(shape)"
              + (", requires_grad=name not in self.FROZEN))" if frozen else "))"),
              "        for name, shape in self.BUFFERS.items():",
              "            owner, attr = submodule_for(self, name)",
              "            owner.register_buffer(attr, torch.empty(shape))",
              "        self.reset_parameters()", "",
              "    @torch.no_grad()", "    def reset_parameters(self):",
              '        """archdsl\'s initialisers (the distributions, not archdsl\'s seeded values)."""',
              "        P, B = self.get_parameter, self.get_buffer"]
    lines += [f"        {_init_call(_ref(n, p), p.spec)}" for n, p in model.parameters.items()]
    lines += [f"        {_ref(n, p)}[{p.spec.zero_row}] = 0.0      # the padding row"
              for n, p in model.parameters.items() if p.spec.zero_row is not None]
    lines += [""] + _forward_with_docstring(forward, model)
    return lines


def _table(name: str, items: list) -> list[str]:
    if not items:
        return [f"    {name} = {{}}"]
    return [f"    {name} = {{"] + [f'        "{n}": {_shape(p.spec)},' for n, p in items] + ["    }"]


def _forward_with_docstring(forward: list[str], model: Model) -> list[str]:
    while forward and not forward[-1].strip():
        forward = forward[:-1]
    head, rest = forward[0], forward[1:]
    outs = ", ".join(v.name for v in model.outputs)
    return ["    " + head, f'        """-> {outs}"""'] + ["    " + l for l in rest]


def _ref(name: str, p) -> str:
    return f'{"B" if p.spec.buffer else "P"}("{name}")'


def _count(model: Model) -> str:
    return f"{model.param_count():,}"


def _shape(spec: ParamSpec) -> str:
    dims = tuple(int(d) for d in spec.shape)
    return repr(dims)


def _init_call(target: str, spec: ParamSpec) -> str:
    """The torch.nn.init call that draws from archdsl's initialiser of `spec`."""
    init = spec.initializer
    if init is not None:
        args = dict(init.args)
        if init.kind == "constant":
            return f"nn.init.constant_({target}, {args['value']!r})"
        kw = ", ".join(f"{k}={v!r}" for k, v in args.items())
        return f"nn.init.{init.kind}_({target}{', ' + kw if kw else ''})"
    kind = spec.init
    if kind in ("zeros", "ones"):
        return f"nn.init.{kind}_({target})"
    if kind == "constant":
        return f"nn.init.constant_({target}, {spec.value!r})"
    if kind == "uniform":
        return f"nn.init.uniform_({target}, {-spec.bound!r}, {spec.bound!r})"
    if kind == "normal":
        return f"nn.init.normal_({target}, 0.0, {spec.std!r})"
    if kind == "xavier_uniform":
        bound = (6.0 / (spec.fan_in + spec.fan_out)) ** 0.5
        return f"nn.init.uniform_({target}, {-bound!r}, {bound!r})"
    if kind == "kaiming_normal":
        return f"nn.init.normal_({target}, 0.0, {(2.0 / spec.fan_in) ** 0.5!r})"
    if kind == "unit_normal":          # spectral_norm's u, v: normal, then unit length
        return f"nn.init.normal_({target}).div_({target}.norm().clamp_min(1e-12))"
    raise ArchError(f"no PyTorch initialiser for archdsl's '{kind}'")


_SUBMODULE_FOR = '''def submodule_for(module, name):
    """(the submodule holding `name`, made on the way, and its last part): "conv1.weight" is the
    parameter `weight` of a submodule `conv1`, as in archdsl's names."""
    *path, attr = name.split(".")
    for part in path:
        if not hasattr(module, part):
            module.add_module(part, nn.Module())
        module = getattr(module, part)
    return module, attr'''


def export_torch(model: Model, path, weights: dict | None = None, spec_file: str = "") -> list[Path]:
    """Write the module's source to `path` (and, with weights, their state_dict beside it as
    <stem>.pt), atomically; returns the files written."""
    path = Path(path)
    if path.suffix != ".py":
        raise ArchError(f"--format torch writes Python source: give a .py file, not '{path}'")
    stem = path.stem
    if not stem.isidentifier() or keyword.iskeyword(stem):
        raise ArchError(f"'{path.name}' is not an importable module name", hint="use letters, digits and _: model.py")
    net = TorchModel(model, weights if weights is not None else _zeros(model))
    text = module_source(model, net, spec_file, stem=stem)
    atomic_write(path, text)
    written = [path]
    if weights is not None:
        pt = path.with_suffix(".pt")
        with atomic_path(pt) as tmp:
            torch.save({k: torch.from_numpy(v.copy()) for k, v in net.weights().items()}, tmp)
        written.append(pt)
    return written
