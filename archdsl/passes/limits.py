"""Resource limits: refuse a model too big for this machine before a single weight is allocated.

    from archdsl.passes.limits import check_resources
    est = check_resources(model, batch=64, dims={"T": 128})     # raises ArchError when too big

The figures come from the cost model (passes/cost.py), which knows every parameter and every
activation's shape without allocating anything:

    parameter bytes     float32 parameters + buffers (BatchNorm statistics)
    training bytes      parameters + gradients + Adam's two moments (4 x the parameters)
                        + buffers + the batch of inputs + activations x 2 (each activation is
                        kept for the backward pass, and its gradient is as large)

`for_training=False` (initialising or exporting weights) compares only the parameter bytes with
the limit; training compares the training bytes. Either way the error states both figures and
the layer that contributes most to the one that was too large.

The limit is, in order: the `limit_bytes` argument; the environment variable
ARCHDSL_MEMORY_LIMIT (`8G`, `512M`, `1.5GiB`, a byte count, or `none` for no limit); else the
smallest of this machine's physical memory, the container's cgroup limit and the address space
`ulimit -v` (RLIMIT_AS) leaves this process (the limit minus what the process already maps:
the interpreter, NumPy and ONNX Runtime take hundreds of MB of it before any weight exists).

Symbolic dims the caller does not bind count as 1 (as in the cost model); the error then says
which, so the figure is known to be a lower bound.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..errors import ArchError, Span
from .cost import PARAM_BYTES, analyze

ENV_VAR = "ARCHDSL_MEMORY_LIMIT"
ADAM_COPIES = 4       # the weights, their gradients, Adam's first and second moments
ACTIVATION_COPIES = 2  # each activation kept for backward, plus its gradient

_CGROUP_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")   # v2, v1
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


@dataclass
class ResourceEstimate:
    model: str
    batch: int
    param_bytes: int           # parameters and buffers
    train_bytes: int           # estimated peak memory of a training step
    limit_bytes: int | None    # None: no limit
    limit_source: str          # where the limit came from
    dominant: str              # the layer contributing most, e.g. "fc1 (Linear, line 7): 3.0 GiB"
    assumed: list[str]         # symbolic dims counted as 1
    activation_bytes: int = 0  # every layer output of one forward pass at the batch

    @property
    def fits(self) -> bool:
        return self.limit_bytes is None or self.train_bytes <= self.limit_bytes


def human_bytes(n: int | float) -> str:
    """1536 -> '1.5 KiB'."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def parse_size(text: str, what: str = ENV_VAR) -> int | None:
    """'8G', '512M', '1.5GiB', '8GB', '1000000' -> bytes (binary units); 'none'/'off' -> None."""
    t = text.strip()
    if t.lower() in ("none", "off", "unlimited", "inf"):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKmMgGtTpP]?)(?:i?[bB])?", t)
    if not m or (m.group(2) == "" and text.strip().lower().endswith("ib")):
        raise ArchError(f"{what}={text!r} is not a size", None,
                        "write a number of bytes with an optional unit: 8G, 512M, 1.5GiB, or 'none' for no limit")
    value = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if value < 1:
        raise ArchError(f"{what}={text!r} must be at least 1 byte", None, "use 'none' for no limit")
    return int(value)


def machine_memory() -> int | None:
    """Bytes of memory this process may use: the smallest of physical memory, the cgroup limit
    and the address space `ulimit -v` leaves it."""
    return _smallest(_memory_sources())[0]


def _memory_sources() -> list[tuple[int | None, str]]:
    """(bytes or None, what it is) for each bound on this process's memory."""
    total = None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    out = [(total if total and total > 0 else None, "this machine's memory")]
    for f in _CGROUP_FILES:
        try:
            with open(f) as fh:
                v = fh.read().strip()
        except OSError:
            continue
        if v.isdigit() and int(v) > 0:
            out.append((int(v), "the container's memory limit (cgroup)"))
    out.append((address_space_left(), "the address space left under `ulimit -v`"))
    return out


def _smallest(sources) -> tuple[int | None, str]:
    known = [(v, what) for v, what in sources if v is not None]
    return min(known, key=lambda s: s[0]) if known else (None, "")


def address_space_left() -> int | None:
    """RLIMIT_AS (`ulimit -v`) minus the address space this process already maps; None when
    there is no such limit."""
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    return max(0, soft - _mapped_bytes())


def _mapped_bytes() -> int:
    """The process's virtual memory size (what RLIMIT_AS counts), from /proc/self/statm."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def default_limit() -> tuple[int | None, str]:
    """(limit in bytes or None, where it came from)."""
    env = os.environ.get(ENV_VAR)
    if env is not None and env.strip():
        return parse_size(env), f"{ENV_VAR}={env.strip()}"
    mem, source = _smallest(_memory_sources())
    return mem, source if mem is not None else "no limit (machine memory unknown)"


def estimate(model, batch: int = 1, dims: dict | None = None) -> ResourceEstimate:
    """The figures check_resources compares, with no limit applied."""
    return _estimate(model, batch, dims)[0]


def _estimate(model, batch, dims):
    ir = getattr(model, "ir", model)
    rep = analyze(ir, dims=dims, batch=batch)
    param_bytes = rep.param_bytes + rep.buffer_bytes
    train_bytes = (ADAM_COPIES * rep.param_bytes + rep.buffer_bytes + rep.input_bytes
                   + ACTIVATION_COPIES * rep.activation_bytes)
    return ResourceEstimate(ir.name, rep.batch, param_bytes, train_bytes, None, "", "", list(rep.assumed),
                            rep.activation_bytes), rep


def check_resources(model, batch: int = 1, dims: dict | None = None, limit_bytes: int | None = None, *,
                    for_training: bool = True) -> ResourceEstimate:
    """Refuse (ArchError) a model whose memory exceeds the limit; return the figures otherwise.

    `model` is a CompiledModel or an IR Model; `batch` and `dims` bind N and the other symbolic
    dims, as in `archdsl summary`. With `for_training=False` (initialising or exporting weights)
    only the parameter bytes must fit.
    """
    est, rep = _estimate(model, batch, dims)
    if limit_bytes is not None:
        limit, source = int(limit_bytes), "the limit given"
    else:
        limit, source = default_limit()
    est.limit_bytes, est.limit_source = limit, source
    ir = getattr(model, "ir", model)
    spans = {n.name: n.span for n in ir.nodes}

    def contribution(r) -> int:
        if for_training:
            return ADAM_COPIES * PARAM_BYTES * r.params + PARAM_BYTES * r.buffers + ACTIVATION_COPIES * r.out_bytes
        return PARAM_BYTES * (r.params + r.buffers)

    top = max(rep.rows, key=contribution, default=None)
    span: Span | None = None
    if top is not None:
        span = spans.get(top.name)
        where = f", line {span.line}" if span is not None else ""
        est.dominant = f"{top.name} ({top.kind}{where}): {human_bytes(contribution(top))}"
    figure = est.train_bytes if for_training else est.param_bytes
    if limit is None or figure <= limit:
        return est
    what = "to train" if for_training else "for its weights"
    at_batch = f" at batch {est.batch}" if for_training else ""
    msg = (f"model {est.model} needs {human_bytes(figure)} {what}{at_batch}, more than the limit of "
           f"{human_bytes(limit)} ({source}): parameters {human_bytes(est.param_bytes)} "
           f"({rep.total_params:,} weights), estimated training memory {human_bytes(est.train_bytes)}")
    if for_training:
        msg += f" (activations {human_bytes(est.activation_bytes)} at batch {est.batch}, kept for backward)"
    if est.dominant:
        msg += f"; the largest layer is {est.dominant}"
    hints = []
    if for_training:
        hints.append("use a smaller batch or model")
    if limit_bytes is None:
        hints.append(f"raise the limit with {ENV_VAR} (e.g. {ENV_VAR}={_suggest(figure)})")
    else:
        hints.append(f"raise the limit (at least {_suggest(figure)})")
    if est.assumed:
        hints.append(f"{', '.join(est.assumed)} counted as 1, so the real figure is larger")
    raise ArchError(msg, span, "; ".join(hints))


def _suggest(n: int) -> str:
    g = -(-n // (1 << 30))      # GiB, rounded up
    return f"{g}G"


def check_generation(model, batch: int, dims: dict | None, kept_bytes: int, what: str, hint: str) -> int:
    """Refuse (ArchError) generating with `model` (`archdsl sample`) when its weights, one forward
    pass at `batch` with `dims`, and the `kept_bytes` the results take (token ids, text, samples)
    exceed the memory limit; returns the figure. Counted, never allocated: `-n 100000000` is
    refused in microseconds instead of dying in an allocation."""
    weights = activations = 0
    if model is not None:       # None: an ONNX file, whose results alone are counted
        rep = analyze(getattr(model, "ir", model), dims=dims, batch=batch)
        weights, activations = rep.param_bytes + rep.buffer_bytes, rep.input_bytes + rep.activation_bytes
    figure = weights + activations + int(kept_bytes)
    limit, source = default_limit()
    if limit is None or figure <= limit:
        return figure
    raise ArchError(f"{what} needs about {human_bytes(figure)}, more than the limit of {human_bytes(limit)} "
                    f"({source}): {human_bytes(kept_bytes)} of results, {human_bytes(activations)} of "
                    f"activations at batch {batch}, {human_bytes(weights)} of weights", None, hint)
