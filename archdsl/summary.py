"""`archdsl summary`: a Keras/torchinfo-style table of a model's layers and its cost totals.

    report = analyze(model, dims, batch)
    print(format_summary(report, model))     # text, with block instances as indented groups
    summary_json(report, model)              # the same figures as a JSON-able dict (--json)

The text ends with these lines (tools and tests may grep them):

    Total params: 61,706
    Trainable params: 61,706
    Non-trainable params: 0
    MACs: 416,520 (0.42 M)
    Activation memory (batch 1, forward): 0.06 MB

followed by the parameter memory and, for models with symbolic dims, the values used.
"""
from __future__ import annotations

import io
import sys

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .ir.graph import Model
from .passes.cost import CostReport, op_label

INDENT = "  "


def human_count(n: int) -> str:
    """416520 -> '0.42 M' (M at least, then G, T), as summaries of MACs usually read."""
    for unit, scale in (("T", 10**12), ("G", 10**9)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n / 10**6:.2f} M"


def human_bytes(n: int) -> str:
    """Decimal megabytes (as torchinfo), GB from 1000 MB on."""
    if n >= 10**9:
        return f"{n / 10**9:.2f} GB"
    return f"{n / 10**6:.2f} MB"


def _dims_line(report: CostReport, model: Model) -> str | None:
    syms = list(model.symbols())
    for r in report.assumed:
        if r not in syms:
            syms.append(r)
    if not syms:
        return None
    parts = [f"{s}={report.dims[s]}" for s in syms if s in report.dims]
    line = "Symbolic dims: " + ", ".join(parts) if parts else "Symbolic dims:"
    if report.assumed:
        line += ("; " if parts else " ") + "assumed 1: " + ", ".join(report.assumed)
    return line


def total_lines(report: CostReport, model: Model) -> list[str]:
    lines = [
        f"Total params: {report.total_params:,}",
        f"Trainable params: {report.trainable_params:,}",
        f"Non-trainable params: {report.non_trainable_params:,}",
        f"MACs: {report.macs:,} ({human_count(report.macs)})",
        f"Activation memory (batch {report.batch}, forward): {human_bytes(report.activation_bytes)}",
        f"Parameter memory: {human_bytes(report.param_bytes)}"
        + (f" (+ {human_bytes(report.buffer_bytes)} buffers)" if report.buffer_bytes else ""),
    ]
    dl = _dims_line(report, model)
    if dl:
        lines.append(dl)
    return lines


def _op_cell(r) -> str:
    s = op_label(r.kind, r.describe)
    if r.shared_with:
        s += f"  [shared with {r.shared_with}]"
    elif r.reused_params:
        s += "  [tied: " + ", ".join(r.reused_params) + "]"
    return s


def _short(name: str, scope: tuple[str, ...]) -> str:
    if scope and name.startswith(scope[-1] + "."):
        return name[len(scope[-1]) + 1:]
    return name


def _row(table: Table, *cells: str, style: str | None = None) -> None:
    # Text cells: user names and op arguments are never read as rich markup ("[shared ...]")
    table.add_row(*(Text(c) for c in cells), style=style)


def _step_rows(table: Table, r, depth: int) -> None:
    """The layers of one step of a cell under the row that runs it: per-step shapes and MACs, and
    their parameters in parentheses (counted once, in the row above)."""
    if not r.step:
        return
    _row(table, INDENT * depth + "one step:", "", "", "", "", style="dim")
    for s in r.step:
        _row(table, INDENT * (depth + 1) + s.name, _op_cell(s), "\n".join(s.out_types),
             f"({s.params:,})" if s.params else "", f"{s.macs:,}", style="dim")
        _step_rows(table, s, depth + 2)


def format_summary(report: CostReport, model: Model, color: bool | None = None) -> str:
    """The summary as text. `color=None` colours only when stdout is a terminal."""
    if color is None:
        color = sys.stdout.isatty()
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("Layer", no_wrap=True)
    table.add_column("Op", no_wrap=True)
    table.add_column("Output shape", no_wrap=True)
    table.add_column("Params", justify="right", no_wrap=True)
    table.add_column("MACs", justify="right", no_wrap=True)

    for v in model.inputs:
        _row(table, v.name, "Input", str(v.type), "0", "0", style="dim")
    for r, entered in report.rows_with_scopes():
        for depth, sc in entered:                   # a header for each block instance entered
            _row(table, INDENT * depth + sc.path, sc.label, "", f"{sc.params:,}", f"{sc.macs:,}",
                 style="bold")
        _row(table, INDENT * len(r.scope) + _short(r.name, r.scope), _op_cell(r),
             "\n".join(r.out_types), f"{r.params:,}", f"{r.macs:,}")
        _step_rows(table, r, len(r.scope) + 1)

    buf = io.StringIO()
    console = Console(file=buf, width=100_000, force_terminal=bool(color), no_color=not color,
                      color_system="standard" if color else None, highlight=False, emoji=False,
                      legacy_windows=False)
    console.print(f'Model: "{model.name}"', markup=False)
    console.print(table)
    text = "\n".join(line.rstrip() for line in buf.getvalue().splitlines())
    return text + "\n\n" + "\n".join(total_lines(report, model)) + "\n"


def summary_json(report: CostReport, model: Model) -> dict:
    """Everything in the summary as plain JSON types (ints exact, no human figures)."""
    return {
        "model": model.name,
        "batch": report.batch,
        "dims": dict(report.dims),
        "assumed_dims": list(report.assumed),
        "inputs": [{"name": v.name, "type": str(v.type)} for v in model.inputs],
        "outputs": [{"name": v.name, "type": str(v.type)} for v in model.outputs],
        "layers": [r.as_dict() for r in report.rows],
        "scopes": [s.as_dict() for s in report.scopes.values()],
        "total_params": report.total_params,
        "trainable_params": report.trainable_params,
        "non_trainable_params": report.non_trainable_params,
        "buffer_elements": report.buffer_elements,
        "macs": report.macs,
        "activation_bytes": report.activation_bytes,
        "input_bytes": report.input_bytes,
        "param_bytes": report.param_bytes,
        "buffer_bytes": report.buffer_bytes,
    }
