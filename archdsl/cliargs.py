"""argparse `type=` helpers shared by the subcommands (`archdsl train`, `archdsl sample`).

Each one converts a flag's text and rejects values out of range with an ArgumentTypeError,
so argparse reports the flag and the message instead of a traceback.
"""
from __future__ import annotations

import argparse
import os


def _convert(s: str, convert, expected: str):
    try:
        return convert(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {s!r}") from None


def positive_int(s: str) -> int:
    v = _convert(s, int, "a positive integer")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def nonneg_int(s: str) -> int:
    v = _convert(s, int, "an integer >= 0")
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def seed(s: str) -> int:
    v = _convert(s, int, "an integer seed")
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a seed >= 0, got {v}")
    return v


def positive_float(s: str) -> float:
    v = _convert(s, float, "a number")
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {v}")
    return v


def fraction(s: str) -> float:
    v = _convert(s, float, "a fraction")
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {v}")
    return v


def temperature(s: str) -> float:
    v = _convert(s, float, "a number")
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a temperature >= 0 (0 = greedy), got {s}")
    return v


def dims(items, models=()) -> dict:
    """`--dim T=128` flags -> {"T": 128}: values of symbolic dims, each a positive int and a symbol
    of one of `models` (IR Models): a misspelt one would otherwise be ignored without a word."""
    from .api import parse_set
    from .errors import ArchError, did_you_mean
    d = parse_set(items)
    for k, v in d.items():
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ArchError(f"--dim {k}= needs a positive int, got {v!r}")
    if models:
        known = sorted({s for m in models for v in [*m.inputs, *m.outputs] for d_ in v.type.shape
                        if not isinstance(d_, int) for s in d_.symbols()})
        for k in d:
            if k not in known:
                what = " and ".join(m.name for m in models)
                raise ArchError(f"--dim {k}: model {what} has no symbolic dim '{k}'",
                                hint=did_you_mean(k, known) or (f"its symbolic dims: {', '.join(known)}" if known
                                                                else "its shapes are all fixed"))
    return d


def output_file(s: str) -> str:
    """`-o FILE`: a file name (not empty, not a directory: `x.onnx/` would otherwise be written as
    `x.onnx`, and an empty name fails with an unrelated message). What else is refused (an
    input file, a socket) is decided when writing (archdsl/fileio.py)."""
    if not s:
        raise argparse.ArgumentTypeError("expected a file name, got an empty one")
    if s.endswith(("/", os.sep)) or os.path.basename(s) in (".", "..") or os.path.isdir(s):
        raise argparse.ArgumentTypeError(f"expected a file name, got the directory {s!r}")
    return s


def output_dir(s: str) -> str:
    """`-o RUN_DIR`: a directory name (not empty)."""
    if not s:
        raise argparse.ArgumentTypeError("expected a directory name, got an empty one")
    return s
