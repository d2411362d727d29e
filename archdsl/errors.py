"""Errors a user can cause. Every one carries a source span and prints like a compiler diagnostic:

    bad.arch:3:27: error: BatchNorm2d: expects a [N, C, H, W] input, got f32[N, 120]
      3 |   x = x -> Linear(120) -> BatchNorm2d
        |                           ^^^^^^^^^^^
      hint: use BatchNorm1d (or BatchNorm) for a 2-D input
"""
from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass, field


EXCERPT_WIDTH = 160     # characters of a source line shown under an error; longer lines are cut


@dataclass(frozen=True)
class Span:
    """A region of one source file (1-based line and column, end exclusive)."""
    file: str
    line: int
    col: int
    end_line: int
    end_col: int
    source: str | None = field(default=None, repr=False, compare=False)  # whole file, for excerpts

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def excerpt(self) -> str:
        if self.source is None:
            return ""
        lines = self.source.split("\n")    # lines as the parser counts them (not str.splitlines,
        if not 1 <= self.line <= len(lines):  # which also breaks at \x0c, \x85, \u2028, ...)
            return ""
        text = lines[self.line - 1].rstrip("\r\n").replace("\t", " ")
        end = self.end_col if self.end_line == self.line else len(text) + 1
        col = self.col
        if len(text) > EXCERPT_WIDTH:     # a very long line: show a window around the span
            start = max(0, min(col - 1 - EXCERPT_WIDTH // 4, len(text) - EXCERPT_WIDTH))
            text = ("..." if start else "") + text[start:start + EXCERPT_WIDTH] + (
                "..." if start + EXCERPT_WIDTH < len(text) else "")
            shift = start - (3 if start else 0)
            col, end = col - shift, min(end - shift, len(text) + 1)
        width = max(1, end - col)
        gutter = str(self.line)
        pad = " " * len(gutter)
        return f"  {gutter} | {text}\n  {pad} | {' ' * (col - 1)}{'^' * width}"


class ArchError(Exception):
    """A mistake in user input (spec, data, files). Printed without a traceback; exit code 1.

    `hint` may be a function returning the hint (or None): it is called the first time the hint
    is read, so an expensive one (a did-you-mean over every name in scope) costs nothing for the
    errors that are never shown (see MAX_REPORTED_ERRORS)."""
    kind = "error"

    def __init__(self, message: str, span: Span | None = None, hint=None):
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint

    @property
    def hint(self) -> str | None:
        if callable(self._hint):
            self._hint = self._hint()
        return self._hint

    @hint.setter
    def hint(self, value) -> None:
        self._hint = value

    def format(self, style=None) -> str:
        """The diagnostic as text; `style(excerpt) -> str` may colour the source excerpt (the CLI
        passes authoring.highlight's on a terminal)."""
        where = f"{self.span}: " if self.span else "archdsl: "
        out = [f"{where}{self.kind}: {self.message}"]
        if self.span is not None:
            ex = self.span.excerpt()
            if ex and style is not None:
                ex = style(ex)
            if ex:
                out.append(ex)
        if self.hint:
            out.append(f"  hint: {self.hint}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.format()


class ArchSyntaxError(ArchError):
    pass


class ShapeError(ArchError):
    pass


class NotSupportedError(ArchError):
    pass


MAX_REPORTED_ERRORS = 100    # errors printed in full; the rest are counted (a file of 20,000 errors
                             # would otherwise take minutes to print, and nobody reads them)


class ArchErrors(ArchError):
    """Several independent errors found in one run (all in `errors`; the first
    MAX_REPORTED_ERRORS are printed, the rest counted)."""

    def __init__(self, errors: list[ArchError]):
        self.errors = errors
        first = errors[0]
        super().__init__(first.message, first.span, lambda: first.hint)

    def format(self, style=None) -> str:
        shown = self.errors[:MAX_REPORTED_ERRORS]
        body = "\n".join(e.format(style) for e in shown)
        n = len(self.errors)
        if n > len(shown):
            body += f"\n... and {n - len(shown):,} more error{'s' if n - len(shown) != 1 else ''} (not shown)"
        return f"{body}\n{n:,} error{'s' if n != 1 else ''}"


@contextlib.contextmanager
def collect_errors(errors: list):
    """Add an ArchError raised in the block (each error of an ArchErrors) to `errors` and go on,
    so that independent mistakes are reported together (see raise_errors)."""
    try:
        yield
    except ArchErrors as e:
        errors.extend(e.errors)
    except ArchError as e:
        errors.append(e)


def raise_errors(errors: list) -> None:
    """Raise what was collected: the one error as it is, several as an ArchErrors."""
    if errors:
        raise errors[0] if len(errors) == 1 else ArchErrors(errors)


def did_you_mean(name: str, candidates) -> str | None:
    """A 'did you mean X?' hint from the closest candidates, or None."""
    cands = list(candidates)
    # difflib's ratio is at most 2 * min(len) / (len + len'): a candidate much shorter or longer
    # than the name cannot reach the cutoff, so it is not compared at all
    lo, hi = len(name) * 3 / 7, len(name) * 7 / 3
    close = difflib.get_close_matches(name, [c for c in cands if lo <= len(c) <= hi], n=3, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in cands}
        if name.lower() in lowered:
            close = [lowered[name.lower()]]
    if not close:
        return None
    return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"


def show_value(v) -> str:
    """A value of the language as a message shows it: true, 'fan_out', 0.5, Linear layer."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return repr(v)
    if hasattr(v, "describe_value"):
        return v.describe_value()
    return str(v)
