"""Drawing models with graphviz: IR -> graphviz.Digraph -> .dot / .svg / .png / .pdf.

- one box per op application: its op with key attributes (`Conv2d(6, k=5)`, via the op's
  `describe`) above its name; model inputs as ovals and outputs as double ovals, with their types;
- edges carry the tensor type (`f32[N, 6, 28, 28]`);
- block instances are nested clusters labelled with the block call (`BasicBlock(64)`) and
  their path; `collapse=True` draws each top-level block instance as one box (a set of scope
  paths or block names collapses just those), edges into and out of it keep their types;
- applications of one layer instance are tied by a dashed "shared" edge, and a weight tied
  into another layer (Linear(tied=wte)) by a dashed "tied" edge; neither affects the layout;
- several models are drawn side by side, one cluster each; `links` adds edges between them
  (a GAN: the generated-sample edge from the generator's output to the discriminator's input,
  and a noise source feeding the generator), drawn without constraining the layout.

Node ids are positional (`m0_n3`), never user names, so no name can clash with DOT syntax
(':' is a port separator); every user text goes through HTML escaping.
"""
from __future__ import annotations

import html
import shutil
from pathlib import Path

import graphviz

from ...errors import ArchError
from ...fileio import atomic_write
from ...ir.graph import Model, Node, Value
from ...passes.cost import op_label

FORMATS = (".svg", ".png", ".pdf", ".dot", ".gv")

_FONT = "Helvetica"
_OP_STYLE = dict(shape="box", style="rounded,filled", fillcolor="#eef3fb", color="#4a6fa5")
_BLOCK_STYLE = dict(shape="box3d", style="filled", fillcolor="#fdf3e1", color="#b07d2b")
_IO_STYLE = dict(shape="oval", style="filled", color="#3d7a3d")
_SHARED_EDGE = dict(style="dashed", color="#888888", fontcolor="#666666", dir="none", constraint="false")


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _label(title: str, sub: str | None = None) -> str:
    lab = f"<B>{_e(title)}</B>"
    if sub:
        lab += f'<BR/><FONT POINT-SIZE="10" COLOR="#555555">{_e(sub)}</FONT>'
    return f"<{lab}>"


def _block_name(label: str) -> str:
    return label.split("(", 1)[0].strip()


class _ModelDrawer:
    def __init__(self, model: Model, index: int, collapse: bool | set[str]):
        self.m = model
        self.prefix = f"m{index}_"
        self.collapse = collapse
        self.node_id: dict[int, str] = {}          # id(Node) -> dot id of what represents it
        self.collapsed: dict[str, str] = {}        # scope path -> dot id of its box
        self._n = 0

    def _fresh(self, kind: str) -> str:
        self._n += 1
        return f"{self.prefix}{kind}{self._n}"

    def _is_collapsed(self, path: str, depth: int) -> bool:
        if self.collapse is True:
            return depth == 0
        if not self.collapse:
            return False
        sc = self.m.scopes.get(path)
        return path in self.collapse or (sc is not None and _block_name(sc.label) in self.collapse)

    def _visible_scope(self, n: Node) -> tuple[tuple[str, ...], str | None]:
        """(clusters the node is drawn in, collapsed scope standing for it or None)."""
        for depth, path in enumerate(n.scope):
            if self._is_collapsed(path, depth):
                return tuple(n.scope[:depth]), path
        return tuple(n.scope), None

    def _scope_label(self, path: str) -> str:
        sc = self.m.scopes.get(path)
        return sc.label if sc is not None else path

    def _src(self, v: Value) -> str:
        if v.producer is None:
            return self.input_id[v.name]
        return self.node_id[id(v.producer)]

    def draw(self, g: graphviz.Digraph) -> None:
        m = self.m
        # place every drawn item in its cluster tree: path tuple -> list of (id, attrs)
        tree: dict[tuple[str, ...], list[tuple[str, dict]]] = {(): []}

        def put(where: tuple[str, ...], nid: str, attrs: dict) -> None:
            for i in range(len(where) + 1):
                tree.setdefault(where[:i], [])
            tree[where].append((nid, attrs))

        self.input_id = {}
        for v in m.inputs:
            nid = self._fresh("in")
            self.input_id[v.name] = nid
            put((), nid, dict(label=_label(v.name, str(v.type)), fillcolor="#e3f4e3", **_IO_STYLE))

        for n in m.nodes:
            where, coll = self._visible_scope(n)
            if coll is not None:
                if coll not in self.collapsed:
                    nid = self._fresh("blk")
                    self.collapsed[coll] = nid
                    put(where, nid, dict(label=_label(self._scope_label(coll), coll), **_BLOCK_STYLE))
                self.node_id[id(n)] = self.collapsed[coll]
                continue
            nid = self._fresh("n")
            self.node_id[id(n)] = nid
            attrs = dict(label=_label(op_label(n.kind, n.op.describe(n.attrs)), n.name), **_OP_STYLE)
            put(where, nid, attrs)

        self._emit(g, tree, ())

        # data edges, one per (source, destination, tensor): a tensor consumed by several
        # nodes inside one collapsed block is drawn once
        seen = set()
        for n in m.nodes:
            dst = self.node_id[id(n)]
            for v in n.inputs:
                src = self._src(v)
                key = (src, dst, id(v))
                if src == dst or key in seen:
                    continue
                seen.add(key)
                g.edge(src, dst, label=str(v.type), fontsize="9")
        self.output_id = {}
        for v in m.outputs:
            oid = self._fresh("out")
            self.output_id[v.name] = oid
            g.node(oid, label=_label(v.name, str(v.type)), fillcolor="#e6eefc", peripheries="2", **_IO_STYLE)
            g.edge(self._src(v), oid, label=str(v.type), fontsize="9")

        self._shared_edges(g)

    def _emit(self, g, tree, path: tuple[str, ...]) -> None:
        for nid, attrs in tree[path]:
            g.node(nid, **attrs)
        children = [p for p in tree if len(p) == len(path) + 1 and p[:len(path)] == path]
        for child in children:
            scope = child[-1]
            with g.subgraph(name=f"cluster_{self._fresh('s')}") as c:
                c.attr(label=_label(self._scope_label(scope), scope), style="rounded,dashed",
                       color="#999999", labeljust="l", fontname=_FONT)
                self._emit(c, tree, child)

    def _shared_edges(self, g) -> None:
        drawn = set()

        def link(a: str, b: str, label: str) -> None:
            if a == b or (a, b) in drawn:
                return
            drawn.add((a, b))
            g.edge(a, b, label=label, fontsize="9", **_SHARED_EDGE)

        first_of_instance: dict[str, Node] = {}
        first_of_param: dict[str, Node] = {}
        for n in self.m.nodes:
            if n.instance:
                first = first_of_instance.setdefault(n.instance, n)
                if first is not n:
                    link(self.node_id[id(first)], self.node_id[id(n)], f"shared: {n.instance}")
            for pname in n.params.values():
                first = first_of_param.setdefault(pname, n)
                if first is not n and first.instance != n.instance:
                    link(self.node_id[id(first)], self.node_id[id(n)], f"tied: {pname}")


_LINK_EDGE = dict(style="bold", color="#b03a2e", fontcolor="#b03a2e", fontsize="10", constraint="false")


def to_dot(models: list[Model] | Model, rankdir: str = "TB",
           collapse: bool | set[str] = False, links: list[dict] | None = None,
           title: str | None = None) -> graphviz.Digraph:
    """The graph of one or several models (several: one cluster each, side by side).

    links: edges between models, each {"from": (model index, output name), "to": (model index,
    input name), "label": str} and optionally "noise": (model index, input name, label) for a
    source node feeding that input (the GAN pair uses both)."""
    if isinstance(models, Model):
        models = [models]
    if not models:
        raise ArchError("nothing to draw: no models given")
    rankdir = rankdir.upper()
    if rankdir not in ("TB", "LR", "BT", "RL"):
        raise ArchError(f"unknown rank direction '{rankdir}'", hint="use one of TB, LR, BT, RL")
    if isinstance(collapse, (list, tuple, frozenset)):
        collapse = set(collapse)
    g = graphviz.Digraph(name=models[0].name if len(models) == 1 else "models")
    g.attr(rankdir=rankdir, fontname=_FONT, newrank="true")
    g.attr("node", fontname=_FONT, fontsize="11")
    g.attr("edge", fontname=_FONT, color="#555555")
    for k, link in enumerate(links or []):      # sources first: they are drawn left/top
        if link.get("noise"):
            g.node(f"link{k}_noise", label=_label(link["noise"][2]), shape="parallelogram", style="filled",
                   fillcolor="#f6e7f7", color="#7d3c98")
    if len(models) == 1:
        g.attr(label=_label(title or models[0].name), labelloc="t")
        drawers = [_ModelDrawer(models[0], 0, collapse)]
        drawers[0].draw(g)
    else:
        if title:
            g.attr(label=_label(title), labelloc="t")
        drawers = []
        for i, m in enumerate(models):
            with g.subgraph(name=f"cluster_model{i}") as c:
                c.attr(label=_label(m.name), style="rounded", color="#333333", fontsize="14")
                drawers.append(_ModelDrawer(m, i, collapse))
                drawers[-1].draw(c)
    for k, link in enumerate(links or []):
        (a, out), (b, inp) = link["from"], link["to"]
        g.edge(drawers[a].output_id[out], drawers[b].input_id[inp], label=str(link.get("label", "")), **_LINK_EDGE)
        if link.get("noise"):
            m, inp, _ = link["noise"]
            g.edge(f"link{k}_noise", drawers[m].input_id[inp], color="#7d3c98")
            with g.subgraph() as same:          # the two models' inputs side by side
                same.attr(rank="same")
                same.node(drawers[m].input_id[inp])
                same.node(drawers[b].input_id[link["to"][1]])
    return g


def render(models: list[Model] | Model, out_path: str | Path, rankdir: str = "TB",
           collapse: bool | set[str] = False, links: list[dict] | None = None, title: str | None = None) -> Path:
    """Draw to a file; the format follows the extension. Returns the path written."""
    out = check_format(out_path)
    return write_graph(to_dot(models, rankdir, collapse, links=links, title=title), out)


def check_format(path: str | Path) -> Path:
    """`path` as a Path, if its extension names a format a drawing can be written in (checked
    before anything is drawn)."""
    out = Path(path)
    ext = out.suffix.lower()
    if ext not in FORMATS:
        raise ArchError(f"cannot render to '{out}': unknown format '{ext or '(none)'}'",
                        hint="supported: " + ", ".join(FORMATS))
    return out


def write_graph(g: graphviz.Digraph, out: Path) -> Path:
    """Write a drawing in the format its extension names (.dot/.gv need no graphviz), atomically."""
    ext = out.suffix.lower()
    if ext in (".dot", ".gv"):
        atomic_write(out, g.source)
        return out
    if shutil.which("dot") is None:
        raise ArchError(f"rendering {ext} needs graphviz's 'dot' program",
                        hint="install it: apt-get install graphviz (Debian/Ubuntu) or brew install graphviz; "
                             ".dot output works without it")
    try:
        data = g.pipe(format=ext[1:])
    except graphviz.ExecutableNotFound as e:
        raise ArchError(f"rendering {ext} needs graphviz's 'dot' program", hint=str(e)) from e
    except graphviz.CalledProcessError as e:
        msg = (e.stderr or b"").decode(errors="replace").strip() if isinstance(e.stderr, bytes) else str(e.stderr or e)
        raise ArchError(f"graphviz failed to render {out}: {msg}") from e
    atomic_write(out, data)
    return out
