"""Where a model's ``issue_snippet`` sits in a document, in LSP positions.

A ``LineIndex`` is built once per document text: the offset where each line starts. Every
occurrence of a snippet (multi-line ones included) becomes a range by two binary searches,
with columns counted in the position encoding the client negotiated (UTF-16 by default).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass

from lsprotocol import types

_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # LSP's three line terminators


def _units_counter(encoding: str | None) -> type[_Units]:
    if encoding == types.PositionEncodingKind.Utf8:
        return _Utf8
    if encoding == types.PositionEncodingKind.Utf32:
        return _Utf32
    return _Utf16


class _Units:
    @staticmethod
    def count(text: str) -> int:
        raise NotImplementedError


class _Utf16(_Units):
    @staticmethod
    def count(text: str) -> int:
        return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


class _Utf8(_Units):
    @staticmethod
    def count(text: str) -> int:
        return len(text.encode("utf-8", errors="surrogatepass"))


class _Utf32(_Units):
    @staticmethod
    def count(text: str) -> int:
        return len(text)


@dataclass(frozen=True)
class Occurrence:
    """One place a snippet occurs: string offsets and the LSP range."""

    start: int
    end: int
    range: types.Range


class LineIndex:
    """Line starts of one text, for offset -> LSP position conversions."""

    def __init__(self, text: str, encoding: str | None = types.PositionEncodingKind.Utf16) -> None:
        self.text = text
        self.line_starts = [0, *(m.end() for m in _LINE_BREAK.finditer(text))]
        self._units = _units_counter(encoding)

    def position(self, offset: int) -> types.Position:
        """The LSP position of a string offset (code points) in the text."""
        line = bisect.bisect_right(self.line_starts, offset) - 1
        start = self.line_starts[line]
        return types.Position(line=line, character=self._units.count(self.text[start:offset]))

    def offset(self, position: types.Position) -> int:
        """The string offset of an LSP position (clamped to the line)."""
        line = min(max(position.line, 0), len(self.line_starts) - 1)
        start = self.line_starts[line]
        end = self.line_starts[line + 1] if line + 1 < len(self.line_starts) else len(self.text)
        units = 0
        for index in range(start, end):
            if units >= position.character:
                return index
            units += self._units.count(self.text[index])
        return end

    def range(self, start: int, end: int) -> types.Range:
        return types.Range(start=self.position(start), end=self.position(end))

    def occurrences(self, snippet: str) -> Iterator[Occurrence]:
        """Every (non-overlapping) occurrence of ``snippet``, in document order."""
        if not snippet:
            return
        start = self.text.find(snippet)
        while start != -1:
            end = start + len(snippet)
            yield Occurrence(start, end, self.range(start, end))
            start = self.text.find(snippet, end)
