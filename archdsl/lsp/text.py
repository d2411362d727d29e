"""Positions: the compiler's spans and the editor's LSP positions, in one file's text.

The two count differently. A span (archdsl/errors.py) has 1-based lines that end at "\\n" (as
Lark counts them) and 1-based columns in characters, after a leading byte-order mark was
dropped. An LSP position has 0-based lines that end at "\\r\\n", "\\r" or "\\n" and 0-based
columns in the client's code units (UTF-16 unless both sides agreed on UTF-8 or UTF-32).
Both are mapped through character offsets into the text, so a lone "\\r" or a character outside
the Basic Multilingual Plane cannot shift a range.
"""
from __future__ import annotations

import bisect
import re

from lsprotocol import types as T

from ..errors import Span

_EDITOR_LINE_END = re.compile(r"\r\n|\r|\n")


def code_units(text: str, encoding: str) -> int:
    """How many code units `text` takes in the negotiated position encoding."""
    if encoding == T.PositionEncodingKind.Utf8:
        return len(text.encode("utf-8", "surrogatepass"))
    if encoding == T.PositionEncodingKind.Utf32:
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


class SourceText:
    """A file's text with both line tables."""

    def __init__(self, text: str, encoding: str = T.PositionEncodingKind.Utf16):
        self.text = text
        self.encoding = encoding
        self.bom = 1 if text.startswith("\ufeff") else 0
        # where each line starts, as offsets into `text`
        self._span_lines = [0] + [m.end() for m in re.finditer("\n", text)]
        if self.bom:        # the compiler's first line starts after the mark
            self._span_lines[0] = 1
        self._editor_lines = [0] + [m.end() for m in _EDITOR_LINE_END.finditer(text)]

    # -- offsets ------------------------------------------------------------------------------
    def span_offset(self, line: int, col: int) -> int:
        """The offset of a span's (line, col), clamped into the text."""
        if line < 1:
            return 0
        if line > len(self._span_lines):
            return len(self.text)
        return min(max(self._span_lines[line - 1] + col - 1, 0), len(self.text))

    def span_position(self, offset: int) -> tuple[int, int]:
        """An offset as a span's 1-based (line, col)."""
        i = bisect.bisect_right(self._span_lines, offset) - 1
        i = max(i, 0)
        return i + 1, offset - self._span_lines[i] + 1

    def offset(self, pos: T.Position) -> int:
        """An LSP position as an offset (a character past the line's end is its end)."""
        if pos.line >= len(self._editor_lines):
            return len(self.text)
        start = self._editor_lines[pos.line]
        end = self._editor_lines[pos.line + 1] if pos.line + 1 < len(self._editor_lines) else len(self.text)
        line = self.text[start:end].rstrip("\r\n")
        if self.encoding == T.PositionEncodingKind.Utf32:
            return start + min(pos.character, len(line))
        units = 0
        for i, ch in enumerate(line):
            if units >= pos.character:
                return start + i
            units += code_units(ch, self.encoding)
        return start + len(line)

    def position(self, offset: int) -> T.Position:
        """An offset as an LSP position."""
        offset = min(max(offset, 0), len(self.text))
        i = bisect.bisect_right(self._editor_lines, offset) - 1
        return T.Position(line=i, character=code_units(self.text[self._editor_lines[i]:offset], self.encoding))

    # -- spans ----------------------------------------------------------------------------------
    def range(self, span: Span) -> T.Range:
        start = self.span_offset(span.line, span.col)
        end = max(start, self.span_offset(span.end_line, span.end_col))
        return T.Range(start=self.position(start), end=self.position(end))

    def point(self, pos: T.Position) -> tuple[int, int]:
        """An LSP position as a span's 1-based (line, col)."""
        return self.span_position(self.offset(pos))

    def full_range(self) -> T.Range:
        return T.Range(start=T.Position(line=0, character=0), end=self.position(len(self.text)))


def contains(span: Span, line: int, col: int) -> bool:
    """Whether (line, col) lies in the span; its end counts (a cursor just after a name)."""
    return (span.line, span.col) <= (line, col) <= (span.end_line, span.end_col)


def innermost(span: Span) -> tuple:
    """A sort key: of several spans that contain one point, the innermost sorts first."""
    return -span.line, -span.col, span.end_line, span.end_col
