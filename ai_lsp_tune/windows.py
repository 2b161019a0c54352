"""Long files in windows of whole lines, for the server (cover the file) and the dataset (crop
an example to the code around its issues).

A window is a slice of the document's lines. Cuts fall before top-level definitions where
possible (a line that starts at column 0 after a blank line), then at blank lines, then
anywhere. What a window costs is the caller's business: ``Cost(first, end)`` gives the tokens of
the whole chat that shows lines ``first``..``end - 1``; it must not shrink as a window grows.
The window prompt's format (``prompts.window_user_prompt``) names the file and the line range.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate

from ai_lsp_tune.prompts import PromptParts, window_user_prompt

Cost = Callable[[int, int], int]
OVERLAP = 0.1  # share of a serving window repeated at the start of the next one

_LINE_END = re.compile(r"\r\n|\r|\n")  # LSP's three line terminators
_NOT_A_START = re.compile(r"[\s)\]}]|(end|else|elif|elseif|except|finally|catch)\b")
_STRONG, _WEAK, _NONE = 2, 1, 0


@dataclass(frozen=True)
class Window:
    """Lines ``first``..``end - 1`` (0-based) of a document, as text and string offsets."""

    first: int
    end: int
    start_offset: int
    end_offset: int
    code: str

    @property
    def first_line(self) -> int:
        """1-based, as the prompt says it."""
        return self.first + 1

    @property
    def last_line(self) -> int:
        return self.end


class Lines:
    """A document's lines (ends kept), where each starts, and how good a cut before each is."""

    def __init__(self, code: str) -> None:
        self.code = code
        if "\r" in code:
            self.starts = [0, *(m.end() for m in _LINE_END.finditer(code))]
        else:  # the common case, without a regex match per line (4x faster)
            self.starts = [0, *accumulate(len(line) + 1 for line in code.split("\n")[:-1])]
        if self.starts[-1] == len(code) and len(self.starts) > 1:
            self.starts.pop()  # a final line break does not start another line
        self.count = len(self.starts)
        bounds = [*self.starts, len(code)]
        texts = [code[bounds[i] : bounds[i + 1]] for i in range(self.count)]
        self.cut_quality = [_cut_quality(texts, i) for i in range(self.count)]

    def offset(self, line: int) -> int:
        return self.starts[line] if line < self.count else len(self.code)

    def text(self, first: int, end: int) -> str:
        return self.code[self.offset(first) : self.offset(end)]

    def window(self, first: int, end: int) -> Window:
        return Window(first, end, self.offset(first), self.offset(end), self.text(first, end))

    def line_of(self, offset: int) -> int:
        """The 0-based line holding string offset ``offset``."""
        low, high = 0, self.count - 1
        while low < high:
            middle = (low + high + 1) // 2
            if self.starts[middle] <= offset:
                low = middle
            else:
                high = middle - 1
        return low

    def snippet_span(self, snippet: str) -> tuple[int, int] | None:
        """Lines (first, end) of the snippet's first occurrence; None when it is not there."""
        at = self.code.find(snippet) if snippet else -1
        if at < 0:
            return None
        return self.line_of(at), self.line_of(at + len(snippet) - 1) + 1

    def best_cut(self, low: int, high: int, *, latest: bool = True) -> int:
        """A cut in ``low..high`` (cut before that line), of the best kind, latest or earliest."""
        span = range(high, low - 1, -1) if latest else range(low, high + 1)
        for wanted in (_STRONG, _WEAK):
            for line in span:
                if line >= self.count or line == 0 or self.cut_quality[line] >= wanted:
                    return line
        return high if latest else low


def _cut_quality(texts: Sequence[str], line: int) -> int:
    """Strong: a top-level start after a blank line; weak: any line after a blank line."""
    if line == 0:
        return _STRONG
    if texts[line - 1].strip():
        return _NONE
    text = texts[line]
    if text.strip() and not _NOT_A_START.match(text):
        return _STRONG
    return _WEAK


def largest_end(cost: Cost, first: int, count: int, budget: int) -> int:
    """The longest window from ``first`` that fits; at least one line, even a too-long one."""
    low, high = first + 1, count
    if cost(first, low) > budget:
        return low
    while low < high:
        middle = (low + high + 1) // 2
        if cost(first, middle) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def cover(lines: Lines, cost: Cost, budget: int, *, overlap: float = OVERLAP) -> list[Window]:
    """Windows that together show every line, each fitting ``budget`` (serving)."""
    if cost(0, lines.count) <= budget:
        return [lines.window(0, lines.count)]
    windows: list[Window] = []
    first, covered = 0, 0
    while True:
        end = largest_end(cost, first, lines.count, budget)
        if end <= covered:  # the overlap left no room for new lines: start where we stopped
            first = covered
            end = largest_end(cost, first, lines.count, budget)
        if end >= lines.count:
            windows.append(lines.window(first, lines.count))
            return windows
        cut = lines.best_cut(max(first + (end - first) // 2, covered + 1, first + 1), end)
        windows.append(lines.window(first, cut))
        covered = cut
        back = int((cut - first) * overlap)
        first = max(first + 1, lines.best_cut(cut - 2 * back, cut - back) if back else cut)


def first_window(lines: Lines, cost: Cost, budget: int) -> Window:
    """The file's first lines that fit, ending before a definition where possible."""
    end = largest_end(cost, 0, lines.count, budget)
    if end < lines.count:
        end = lines.best_cut(max(1, end // 2), end)
    return lines.window(0, end)


def around(lines: Lines, first: int, end: int, cost: Cost, budget: int) -> Window | None:
    """The widest window holding lines ``first``..``end - 1`` that fits, snapped to
    definitions; None when those lines alone do not fit."""
    if cost(first, end) > budget:
        return None
    low, high = 0, lines.count
    while low < high:  # grow both ways by ``grow`` lines
        grow = (low + high + 1) // 2
        if cost(max(0, first - grow), min(lines.count, end + grow)) <= budget:
            low = grow
        else:
            high = grow - 1
    start = max(0, first - low)
    if start < first:  # begin at a definition, giving up at most half the lines above
        start = lines.best_cut(start, start + (first - start) // 2, latest=False)
    stop = max(end, largest_end(cost, start, lines.count, budget))
    if stop < lines.count:  # end before one, likewise
        stop = lines.best_cut(stop - (stop - end) // 2, stop)
    return lines.window(start, stop)


def crop(
    lines: Lines, spans: Sequence[tuple[int, int]], cost: Cost, budget: int
) -> list[Window] | None:
    """Windows for training that together hold every span (an issue's lines): spans that fit
    together share a window. None when one span alone does not fit. No span: the first window."""
    if not spans:
        return [first_window(lines, cost, budget)]
    groups: list[tuple[int, int]] = []
    for first, end in sorted(spans):
        if cost(first, end) > budget:
            return None
        if groups:
            joined = (min(groups[-1][0], first), max(groups[-1][1], end))
            if cost(*joined) <= budget:
                groups[-1] = joined
                continue
        groups.append((first, end))
    windows: list[Window] = []
    for first, end in groups:
        if any(w.first <= first and end <= w.end for w in windows):
            continue  # an earlier window already holds these lines
        window = around(lines, first, end, cost, budget)
        if window is not None:
            windows.append(window)
    return windows


def window_prompt(parts: PromptParts, lines: Lines, window: Window) -> str:
    """The user prompt showing ``window`` of the code in ``parts`` (itself maybe a window)."""
    offset = (parts.first_line or 1) - 1
    total = parts.total_lines or lines.count
    return window_user_prompt(
        parts.language,
        window.code,
        parts.name,
        offset + window.first_line,
        offset + window.last_line,
        total,
    )
