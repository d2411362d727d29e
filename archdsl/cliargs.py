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
