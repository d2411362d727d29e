"""The special drawings of `archdsl render`: a recurrent model unrolled over K steps
(`--unroll K`) and receptive fields (`--receptive-field LAYER`)."""
from __future__ import annotations

from pathlib import Path

from ..errors import ArchError


def render_special(model, output, unroll: int | None = None, receptive_field: str | None = None,
                   rankdir: str = "TB") -> Path:
    """`archdsl render --unroll K` / `--receptive-field LAYER`: draw and write (format by the
    extension, atomically). Returns the path written."""
    from .drawing import save_graph
    if unroll is not None and receptive_field is not None:
        raise ArchError("--unroll and --receptive-field draw different pictures: choose one")
    if unroll is not None:
        from .unroll import unroll_dot
        g = unroll_dot(model, unroll)
    else:
        from .receptive import receptive_field_dot
        g = receptive_field_dot(model, receptive_field, rankdir=rankdir)
    return save_graph(g, output)
