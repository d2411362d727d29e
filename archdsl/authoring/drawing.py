"""Small shared pieces of the authoring drawings: HTML-label text and writing a graph to a file."""
from __future__ import annotations

import html
import shutil
from pathlib import Path

import graphviz

from ..backends.render.dot import check_format, write_graph
from ..errors import ArchError

FONT = "Helvetica"


def e(s) -> str:
    """Escape user text for a graphviz HTML label."""
    return html.escape(str(s), quote=True)


def label(title: str, *subs: str, raw_title: bool = False) -> str:
    """An HTML label: a bold title over small grey lines (already-escaped when raw)."""
    lab = f"<B>{title if raw_title else e(title)}</B>"
    for sub in subs:
        if sub:
            lab += f'<BR/><FONT POINT-SIZE="9" COLOR="#555555">{sub}</FONT>'
    return f"<{lab}>"


def sub(base: str, index) -> str:
    """'x', 3 -> x<SUB>3</SUB> (escaped)."""
    return f"{e(base)}<SUB>{e(index)}</SUB>"


def svg_text(g: graphviz.Digraph) -> str:
    """The drawing as SVG text (graphviz's `dot` program needed)."""
    if shutil.which("dot") is None:
        raise ArchError("drawing to SVG needs graphviz's 'dot' program",
                        hint="install it: apt-get install graphviz (Debian/Ubuntu) or brew install graphviz")
    try:
        return g.pipe(format="svg").decode("utf-8")
    except graphviz.ExecutableNotFound as err:
        raise ArchError("drawing needs graphviz's 'dot' program", hint=str(err)) from err


def save_graph(g: graphviz.Digraph, path: str | Path) -> Path:
    """Write a drawing in the format its extension names (.dot/.gv need no graphviz), atomically."""
    return write_graph(g, check_format(path))
