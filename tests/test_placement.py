"""Snippet placement: every occurrence, multi-line, in the client's position encoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lsprotocol import types

from ai_lsp_tune.server.placement import LineIndex

UTF8, UTF16, UTF32 = (
    types.PositionEncodingKind.Utf8,
    types.PositionEncodingKind.Utf16,
    types.PositionEncodingKind.Utf32,
)
TEXT = 'a = "é😀"; b = eval(x)\r\nc = eval(x)\rd = 1\n'


def spans(index: LineIndex, snippet: str) -> list[tuple[int, int, int, int]]:
    return [
        (o.range.start.line, o.range.start.character, o.range.end.line, o.range.end.character)
        for o in index.occurrences(snippet)
    ]


@pytest.mark.parametrize(
    ("encoding", "first_column"),
    [(UTF16, 15), (UTF8, 18), (UTF32, 14)],  # "é" is 1/2/1 units, "😀" is 2/4/1
)
def test_columns_follow_the_negotiated_encoding(encoding: str, first_column: int) -> None:
    index = LineIndex(TEXT, encoding)
    assert spans(index, "eval(x)") == [
        (0, first_column, 0, first_column + 7),
        (1, 4, 1, 11),  # \r\n and \r both end lines
    ]


def test_multi_line_snippet_spans_lines() -> None:
    assert spans(LineIndex(TEXT), "eval(x)\rd") == [(1, 4, 2, 1)]


def test_missing_or_empty_snippet_places_nothing() -> None:
    index = LineIndex(TEXT)
    assert spans(index, "nowhere") == []
    assert spans(index, "") == []


@given(
    st.lists(st.sampled_from(["a", "é", "😀", "\n", "\r\n", "\r", " "]), max_size=40).map("".join),
    st.sampled_from([UTF8, UTF16, UTF32]),
    st.data(),
)
def test_positions_map_back_to_the_same_offsets(
    text: str, encoding: str, data: st.DataObject
) -> None:
    index = LineIndex(text, encoding)
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, len(text)))
    snippet = text[start:end]
    for occurrence in index.occurrences(snippet):
        assert text[occurrence.start : occurrence.end] == snippet
        assert index.offset(occurrence.range.start) == occurrence.start
        assert index.offset(occurrence.range.end) == occurrence.end
