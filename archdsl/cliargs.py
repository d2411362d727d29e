"""argparse `type=` helpers shared by the subcommands (`archdsl train`, `archdsl sample`).

Each one converts a flag's text and rejects values out of range with an ArgumentTypeError,
so argparse reports the flag and the message instead of a traceback.
"""
from __future__ import annotations

import argparse


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


def dims(items) -> dict:
    """`--dim T=128` flags -> {"T": 128}: values of symbolic dims, each a positive int."""
    from .api import parse_set
    from .errors import ArchError
    d = parse_set(items)
    for k, v in d.items():
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ArchError(f"--dim {k}= needs a positive int, got {v!r}")
    return d
