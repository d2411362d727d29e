"""The house rules the code itself must keep (read from the source, not run):

- no import cycle inside archdsl/ (every import counts, top-level or inside a function; only
  `if TYPE_CHECKING:` imports are left out, as they never run);
- no private name (`_x`) imported from another package;
- nothing outside archdsl/ops/ decides what to do from an op's name or family: passes, samplers,
  drawings and loops ask the op (`time_local`, `recurrence`, `window`, ...).
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent / "archdsl"


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _runtime_nodes(tree: ast.AST):
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    return [n for n in ast.walk(tree) if id(n) not in skip]


def _imports():
    """(importing module, imported module, imported name or None) for every import in archdsl."""
    for mod, path in MODULES.items():
        pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[:len(pkg.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("archdsl"):
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    yield (mod, sub, None) if sub in MODULES else (mod, target, a.name)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in MODULES:
                        yield mod, a.name, None


def test_no_import_cycle_inside_archdsl():
    g = nx.DiGraph()
    g.add_edges_from((a, b) for a, b, _ in _imports() if b in MODULES and a != b)
    cycles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_no_private_name_imported_across_packages():
    def package(m: str) -> str:
        return m if MODULES[m].name == "__init__.py" else m.rsplit(".", 1)[0]
    bad = [(a, f"{b}.{name}") for a, b, name in _imports()
           if name and name.startswith("_") and not name.startswith("__") and b in MODULES
           and package(b) != package(a)]
    assert not bad, f"private names imported from another package: {bad}"


def test_nothing_outside_ops_switches_on_op_names_or_families():
    """`n.kind == "LSTM"`, `op.name in ("RNN", "GRU")`, `node.op.family == "recurrent"`,
    `kind.startswith("BatchNorm")` are the op's business: it declares what others need
    (archdsl/ops/base.py). Flagged: an attribute compared with (or starting with) a registered op's
    name or family, outside archdsl/ops/."""
    from archdsl.ops.base import load_all
    ops = load_all()
    words = set(ops) | {op.family for op in ops.values()}

    def names_an_op(e) -> bool:
        vals = [e] if isinstance(e, ast.Constant) else list(getattr(e, "elts", []))
        return any(isinstance(v, ast.Constant) and isinstance(v.value, str)
                   and (v.value in words or any(w.startswith(v.value) and len(v.value) > 3 for w in ops))
                   for v in vals)

    found = []
    for mod, path in MODULES.items():
        if mod.startswith("archdsl.ops"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                attrs = [x for x in sides if isinstance(x, ast.Attribute) and x.attr != "op_type"]  # ONNX nodes
                if attrs and any(names_an_op(x) for x in sides):
                    found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {ast.unparse(node)}")
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr in ("startswith", "endswith") and isinstance(node.func.value, ast.Attribute)
                  and any(names_an_op(a) for a in node.args)):
                found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "op names or families tested outside archdsl/ops/:\n" + "\n".join(found)
