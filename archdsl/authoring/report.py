"""`archdsl report SPEC -o report.html`: one self-contained HTML page about a spec, and the HTML
a compiled model shows in a notebook.

    spec = archdsl.compile("specs/lenet5.arch")
    html = report_html(spec)                      # the page (str)
    write_report(spec, "lenet5.html")
    model_html(model)                             # a model's drawing + summary table (notebooks)

The page holds, for each model of the file: its inputs, outputs and totals, the drawing (inline
SVG), the summary table (block instances as header rows), the explained shape and parameter
arithmetic of every layer, and, where they apply, the receptive fields of a conv net and the
drawing of a recurrent model unrolled over three steps; then the spec's source (and the
sources it imports), highlighted. Nothing is loaded from elsewhere: styles are inline, the
drawings are SVG elements in the page, no script runs, so the file can be mailed, attached to
a course page or opened offline.
"""
from __future__ import annotations

import html
import re
from datetime import datetime, timezone
from pathlib import Path

from ..errors import ArchError
from ..fileio import atomic_write
from ..passes.cost import op_label

_CSS = """
.archdsl { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1d2330; }
.archdsl h1 { font-size: 1.6em; margin: 0.2em 0; }
.archdsl h2 { font-size: 1.3em; margin-top: 1.6em; border-bottom: 1px solid #d0d7e2; }
.archdsl h3 { font-size: 1.05em; margin-top: 1.2em; }
.archdsl .meta { color: #5a6275; font-size: 0.9em; }
.archdsl table.summary { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
.archdsl table.summary th { text-align: left; border-bottom: 2px solid #8892a6; padding: 3px 10px; }
.archdsl table.summary td { padding: 2px 10px; border-bottom: 1px solid #eceff4; vertical-align: top; }
.archdsl table.summary td.num { text-align: right; font-variant-numeric: tabular-nums; }
.archdsl table.summary tr.scope td { font-weight: bold; background: #fdf3e1; }
.archdsl table.summary tr.input td { color: #5a6275; }
.archdsl table.totals td { padding: 1px 10px; font-size: 0.9em; }
.archdsl table.totals td.num { text-align: right; font-variant-numeric: tabular-nums; }
.archdsl .drawing { overflow: auto; max-height: 80vh; border: 1px solid #d0d7e2; padding: 6px;
                    background: #ffffff; }
.archdsl .drawing svg { max-width: none; height: auto; }
.archdsl pre.explain { font-size: 0.85em; background: #f7f8fa; padding: 8px; overflow-x: auto; }
.archdsl .layer { font-weight: bold; }
.archdsl .highlight pre { font-size: 0.85em; padding: 8px; overflow-x: auto; }
.archdsl .note { color: #8a5a00; }
"""


COLLAPSE_ABOVE = 150     # layers; a bigger model's drawing shows its blocks as boxes


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _ir(model):
    return getattr(model, "ir", model)


def svg_inline(g) -> str | None:
    """A graphviz drawing as an <svg> element to put into HTML (None without graphviz's `dot`)."""
    from .drawing import svg_text
    try:
        svg = svg_text(g)
    except ArchError:
        return None
    svg = re.sub(r"<\?xml[^>]*\?>", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>", "", svg, flags=re.S)
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.S)
    return svg.strip()


def summary_table_html(model, dims: dict | None = None, batch: int = 1) -> str:
    """The summary as an HTML table plus a totals table (figures as `archdsl summary`)."""
    from ..summary import human_bytes, human_count
    ir = _ir(model)
    from ..passes.cost import analyze
    report = analyze(ir, dims=dims, batch=batch)
    rows = ['<table class="summary"><thead><tr><th>Layer</th><th>Op</th><th>Output shape</th>'
            '<th>Params</th><th>MACs</th></tr></thead><tbody>']
    for v in ir.inputs:
        rows.append(f'<tr class="input"><td>{_e(v.name)}</td><td>Input</td><td>{_e(v.type)}</td>'
                    '<td class="num">0</td><td class="num">0</td></tr>')
    for r, entered in report.rows_with_scopes():
        for depth, sc in entered:
            pad = 0.2 + 1.2 * depth
            rows.append(f'<tr class="scope"><td style="padding-left:{pad:.1f}em">{_e(sc.path)}</td>'
                        f'<td>{_e(sc.label)}</td><td></td><td class="num">{sc.params:,}</td>'
                        f'<td class="num">{sc.macs:,}</td></tr>')
        name = r.name[len(r.scope[-1]) + 1:] if r.scope and r.name.startswith(r.scope[-1] + ".") else r.name
        op = op_label(r.kind, r.describe)
        if r.shared_with:
            op += f"  [shared with {r.shared_with}]"
        elif r.reused_params:
            op += "  [tied: " + ", ".join(r.reused_params) + "]"
        pad = 0.2 + 1.2 * len(r.scope)
        rows.append(f'<tr class="layer-row"><td style="padding-left:{pad:.1f}em">{_e(name)}</td><td>{_e(op)}</td>'
                    f'<td>{"<br>".join(_e(t) for t in r.out_types)}</td><td class="num">{r.params:,}</td>'
                    f'<td class="num">{r.macs:,}</td></tr>')
    rows.append("</tbody></table>")
    totals = [("Total params", f"{report.total_params:,}"),
              ("Trainable params", f"{report.trainable_params:,}"),
              ("Non-trainable params", f"{report.non_trainable_params:,}"),
              ("MACs", f"{report.macs:,} ({human_count(report.macs)})"),
              (f"Activation memory (batch {report.batch}, forward)", human_bytes(report.activation_bytes)),
              ("Parameter memory", human_bytes(report.param_bytes))]
    rows.append('<table class="totals"><tbody>' + "".join(
        f'<tr><td>{_e(k)}</td><td class="num">{_e(v)}</td></tr>' for k, v in totals) + "</tbody></table>")
    if report.assumed:
        rows.append(f'<p class="meta">symbolic dims counted as 1: {_e(", ".join(report.assumed))}</p>')
    return "\n".join(rows)


def model_html(model, drawing: bool = True) -> str:
    """A compiled model for a notebook: its drawing (SVG, when graphviz is installed) and its
    summary table."""
    ir = _ir(model)
    parts = [f'<div class="archdsl"><style>{_CSS}</style>',
             f'<p><b>model {_e(ir.name)}</b> <span class="meta">'
             f'({_e(", ".join(f"{v.name}: {v.type}" for v in ir.inputs))}) &rarr; '
             f'({_e(", ".join(f"{v.name}: {v.type}" for v in ir.outputs))})</span></p>']
    if drawing:
        from ..backends.render import to_dot
        svg = svg_inline(to_dot([ir]))
        if svg:
            parts.append(f'<div class="drawing">{svg}</div>')
    parts.append(summary_table_html(ir))
    parts.append("</div>")
    return "\n".join(parts)


def _explained_html(ir) -> str:
    from .explain import explain_layers
    out = ['<pre class="explain">']
    for layer in explain_layers(ir):
        out.append(f'<span class="layer">{_e(layer["name"])}</span>  {_e(layer["op"])}  &rarr; '
                   f'{_e(", ".join(layer["out_types"]))}')
        out.extend("    " + _e(ln) for ln in layer["lines"])
    out.append("</pre>")
    return "\n".join(out)


def _model_section(m, index: int) -> str:
    from ..backends.render import to_dot
    from .receptive import receptive_field_text, receptive_fields
    from .unroll import recurrence, unroll_dot
    ir = m.ir
    anchor = f"model-{index}"
    s = [f'<h2 id="{anchor}">model {_e(ir.name)}</h2>',
         '<p class="meta">inputs: ' + _e(", ".join(f"{v.name}: {v.type}" for v in ir.inputs))
         + "<br>outputs: " + _e(", ".join(f"{v.name}: {v.type}" for v in ir.outputs))
         + (("<br>parameters: " + _e(", ".join(f"{k} = {v}" for k, v in ir.args.items()))) if ir.args else "")
         + "</p>",
         "<h3>Drawing</h3>"]
    collapse = len(ir.nodes) > COLLAPSE_ABOVE and bool(ir.scopes)
    svg = svg_inline(to_dot([ir], collapse=collapse))
    if collapse:
        s.append(f'<p class="meta">{len(ir.nodes)} layers: each top-level block instance is drawn as one box '
                 f'(<code>archdsl render --collapse</code>); the summary below lists every layer.</p>')
    s.append(f'<div class="drawing">{svg}</div>' if svg else
             '<p class="note">(no drawing: graphviz\'s <code>dot</code> program is not installed)</p>')
    s += ["<h3>Summary</h3>", summary_table_html(ir)]
    s += ["<h3>Shapes and parameters, explained</h3>", _explained_html(ir)]
    if any(recurrence(n) is not None for n in ir.nodes):
        svg = svg_inline(unroll_dot(ir, 3))
        if svg:
            s += ["<h3>Unrolled over three time steps</h3>", f'<div class="drawing">{svg}</div>']
    fields = receptive_fields(ir)
    if any(rf.size is not None for rf in fields.values()) and any(
            "kernel_size" in n.attrs for n in ir.nodes):
        s += ["<h3>Receptive fields</h3>", f'<pre class="explain">{_e(receptive_field_text(ir))}</pre>']
    return "\n".join(s)


def _shown_path(f: str, main: str | Path) -> str:
    """An imported file as the spec names it: relative to the main file, or std/...."""
    import os
    from ..elaborate.loader import stdlib_dir
    p = Path(f).resolve()
    std = stdlib_dir().resolve()
    if std in p.parents:
        return "std/" + p.relative_to(std).as_posix()
    try:
        return os.path.relpath(p, Path(main).resolve().parent)
    except ValueError:
        return str(f)


def report_html(spec, model: str | None = None, overrides: dict | None = None) -> str:
    """The report page of a compiled spec (`archdsl.compile(path)`): every model of the file, or
    just `model`."""
    from ..elaborate.loader import read_spec
    from ..errors import ArchError
    from ..version import __version__
    from .highlight import highlight_html
    path = spec.file
    overrides = overrides or {}
    if model:
        models = [spec.model(model, **overrides)]
    else:       # every model, each with the overrides it declares
        models = [spec.model(n, **spec.applicable(n, overrides)) for n in spec.model_names]
    title = f"{Path(path).name}: archdsl report"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>{_e(Path(path).name)}</h1>",
            f'<p class="meta">archdsl {_e(__version__)} report, {_e(when)}. '
            f'{len(models)} model{"s" if len(models) != 1 else ""}'
            + (": " + ", ".join(f'<a href="#model-{i}">{_e(m.name)}</a>' for i, m in enumerate(models))
               if models else "")
            + ' &middot; <a href="#source">source</a></p>']
    for i, m in enumerate(models):
        body.append(_model_section(m, i))
    body.append('<h2 id="source">Source</h2>')
    files = list(dict.fromkeys(spec.ns.files or [str(path)]))
    for k, f in enumerate(files):
        try:
            text = read_spec(Path(f)) if k else spec.ns.source
        except ArchError:
            continue
        code = highlight_html(text, linenos=True)
        if k == 0:
            body.append(f"<h3>{_e(f)}</h3>{code}")
        else:
            body.append(f"<details><summary>{_e(_shown_path(f, path))} (imported)</summary>{code}</details>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<meta name=\"generator\" content=\"archdsl {_e(__version__)}\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n"
            f"<body><div class=\"archdsl\">\n" + "\n".join(body) + "\n</div></body></html>\n")


def write_report(spec, out: str | Path, model: str | None = None,
                 overrides: dict | None = None) -> Path:
    """Write the report page of a compiled spec atomically (never over the spec or a file it
    imports); returns the path written."""
    from ..fileio import refuse_overwriting_inputs
    refuse_overwriting_inputs(out, [spec.file, *spec.ns.files])
    page = report_html(spec, model, overrides)
    atomic_write(out, page)
    return Path(out)
