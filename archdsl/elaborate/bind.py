"""Binding a layer call's positional and keyword arguments to an op's schema."""
from __future__ import annotations

from ..errors import ArchError, Span, did_you_mean
from ..errors import show_value as _show
from ..ir.types import DTYPES
from ..ops.base import Arg, Op

_KIND_NAMES = {"int": "an int", "float": "a number", "bool": "a bool (true/false)", "str": "a string",
               "ints": "an int or a tuple of ints", "shape": "a tuple of ints",
               "padding": "an int, a tuple of ints, or 'same'/'valid'", "layer": "a layer instance",
               "cell": "a cell (e.g. LSTMCell(64))",
               "dtype": "a dtype (f32, i64, ...)", "any": "a value"}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_kind(arg: Arg, v) -> bool:
    k = arg.kind
    if v is None and arg.default is None:
        return True
    if k == "int":
        return _is_int(v)
    if k == "float":
        return (_is_int(v) or isinstance(v, float))
    if k == "bool":
        return isinstance(v, bool)
    if k == "str":
        return isinstance(v, str)
    if k == "ints":
        return _is_int(v) or (isinstance(v, tuple) and len(v) > 0 and all(_is_int(x) for x in v))
    if k == "shape":
        return isinstance(v, tuple) and all(_is_int(x) for x in v)
    if k == "padding":
        return _is_int(v) or v in ("same", "valid") or (isinstance(v, tuple) and all(_is_int(x) for x in v))
    if k == "dtype":
        return isinstance(v, str) and v in DTYPES
    if k == "layer":
        return hasattr(v, "is_layer_instance")
    if k == "cell":
        return getattr(v, "is_cell", False)
    return True


def bind_args(op: Op, positional: list, keywords: dict, span: Span | None = None,
              arg_spans: dict | None = None) -> dict:
    """Schema-checked attributes: every declared arg present (defaults filled), types checked."""
    arg_spans = arg_spans or {}
    names = [a.name for a in op.args]
    by_position = [a for a in op.args if not a.keyword_only]
    if len(positional) > len(by_position):
        kw = [a.name for a in op.args if a.keyword_only]
        raise ArchError(f"{op.name} takes at most {len(by_position)} positional argument"
                        f"{'s' if len(by_position) != 1 else ''} ({', '.join(a.name for a in by_position) or 'none'}), "
                        f"got {len(positional)}", arg_spans.get(len(by_position), span),
                        f"give {', '.join(kw)} by name, e.g. {op.name}({kw[0]}=...)" if kw else None)
    attrs: dict = {}
    for i, v in enumerate(positional):
        attrs[by_position[i].name] = v
    for k, v in keywords.items():
        if k not in names:
            raise ArchError(f"{op.name} has no argument '{k}'", arg_spans.get(k, span),
                            did_you_mean(k, names) or (f"{op.name} takes: {', '.join(names)}" if names else f"{op.name} takes no arguments"))
        if k in attrs:
            raise ArchError(f"{op.name} got argument '{k}' twice", arg_spans.get(k, span))
        attrs[k] = v
    for a in op.args:
        if a.name not in attrs:
            if a.required:
                raise ArchError(f"{op.name} is missing required argument '{a.name}'", span,
                                f"write {op.name}({', '.join(x.name for x in op.args if x.required)}, ...)")
            attrs[a.name] = a.default
            continue
        v = attrs[a.name]
        where = arg_spans.get(a.name, arg_spans.get(names.index(a.name), span))
        if _is_int(v) and a.kind == "float":
            v = attrs[a.name] = float(v)
        if not check_kind(a, v):
            raise ArchError(f"{op.name} argument '{a.name}' must be {_KIND_NAMES[a.kind]}, got {_show(v)}", where)
        if a.choices is not None and v not in a.choices:
            raise ArchError(f"{op.name} argument '{a.name}' must be one of {', '.join(map(repr, a.choices))}, got {_show(v)}",
                            where, did_you_mean(str(v), [str(c) for c in a.choices]))
    return attrs
