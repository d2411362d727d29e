"""`archdsl summary --explain`: the arithmetic behind every row of the summary.

    print(explain_model(model))          # a CompiledModel or an ir.Model

For each layer, in order: its name, op and output type, then the lines its op's `explain`
gives (archdsl/ops/base.py has the generic version, the conv, pool, dense and embedding
families their own formulas), e.g. for LeNet-5's first layer

    conv2d_1  Conv2d(6, k=5)  → f32[N, 6, 28, 28]
        Conv2d k=5 s=1 p=0: H = W = (32 + 2·0 − 5)/1 + 1 = 28; C: 1 → 6
        params: 6·(1·5·5) + 6 = 156  (6 filters of 1·5·5, and a bias each)

A layer applied a second time (shared weights) or a weight tied to another layer says where its
parameters were counted, so that the per-layer counts add up to the total, which the last line
shows as that sum.
"""
from __future__ import annotations

from ..passes.cost import analyze, op_label

ARROW = "\u2192"
INDENT = "    "


def _ir(model):
    return getattr(model, "ir", model)


def explain_node(node) -> list[str]:
    """The op's explanation of one node (lines, without indentation)."""
    return list(node.op.explain(node.app))


def explain_layers(model, dims: dict | None = None, batch: int = 1) -> list[dict]:
    """One record per layer: name, op label, output types, explanation lines, params counted."""
    ir = _ir(model)
    report = analyze(ir, dims=dims, batch=batch)
    rows = {r.name: r for r in report.rows}
    out = []
    for n in ir.nodes:
        r = rows[n.name]
        lines = explain_node(n)
        if r.shared_with:
            lines = [ln for ln in lines if not ln.startswith("params: ")]
            lines.append(f"params: none new: the same layer as {r.shared_with} (shared weights, counted there)")
        elif r.reused_params:
            lines.append("counted here: " + f"{r.params:,}" + " (" + ", ".join(r.reused_params)
                         + " shared with an earlier layer and counted there)")
        out.append(dict(name=n.name, op=op_label(n.kind, n.op.describe(n.attrs)),
                        out_types=[str(v.type) for v in n.outputs], lines=lines, params=r.params,
                        scope=list(n.scope)))
    return out


def explain_model(model, dims: dict | None = None, batch: int = 1) -> str:
    """The explained summary as text (see the module docstring)."""
    ir = _ir(model)
    layers = explain_layers(ir, dims, batch)
    out = [f'Model "{ir.name}": how each layer\'s output shape and parameter count come about', ""]
    for v in ir.inputs:
        out.append(f"input {v.name}: {v.type}")
    out.append("")
    for layer in layers:
        out.append(f"{layer['name']}  {layer['op']}  {ARROW} {', '.join(layer['out_types'])}")
        out.extend(INDENT + ln for ln in layer["lines"])
    out.append("")
    for v in ir.outputs:
        out.append(f"output {v.name}: {v.type}")
    counts = [layer["params"] for layer in layers if layer["params"]]
    total = ir.param_count()
    if 1 < len(counts) <= 24 and sum(counts) == total:
        out.append(f"Total params: {' + '.join(f'{c:,}' for c in counts)} = {total:,}")
    else:
        out.append(f"Total params: {total:,}" + (f" over {len(counts)} layers with parameters" if counts else ""))
    return "\n".join(out) + "\n"
