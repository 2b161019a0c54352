"""Skimming a trace line: count what it holds and decode only the spans that matter.

Most bytes of a trace belong to runs that never finished (the user kept typing) and to the
model-request spans beside them; even a line with a finished run is mostly other spans. Such a
line still counts (agent runs, spans) and may carry the document URI of a later run's parent
span, but none of that needs a full ``json.loads``: ``bytes.count``/``find`` run at memory speed.
The spans that can hold an example or feedback (a ``final_result`` attribute, our
``ai_lsp.span_format``) are found by byte search and decoded alone with ``raw_decode``.

A line is only skimmed when it is a complete, UTF-8, OTLP request in the Collector's compact or
spaced form, with the fields in the order OTLP writes them (span ``traceId`` first, scope before
spans); anything unexpected returns None and the line is parsed as a whole, as before.
A line that starts compact is taken to be compact throughout (no serializer mixes the two):
its keys are searched with their whole compact openings, which ``bytes.find`` skips through
faster than the bare keys.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ai_lsp_tune.traces.agent_runs import RunFormat
from ai_lsp_tune.traces.spans import RawSpan

_RESULT_MARK = b'final_result"'  # the key of pydantic-ai's answer (compact or spaced)
_OURS_MARK = b'"ai_lsp.'
_OURS_FORMAT = b'"ai_lsp.span_format"'  # on every span of ours: a longer key, found faster
_OURS_SPAN_KEYS = (b'span_format"', b'feedback.kind"')  # on our analysis and feedback spans
_OURS_URI_KEY = b'document.uri"'
_RUN_NAME = re.compile(rb'"name": ?"(?:agent run"|invoke_agent)')
_SPAN_START = b'"startTimeUnixNano"'  # spans have it; events and links do not
_SPAN_OPEN = b'{"traceId"'  # OTLP writes a span's traceId first; `{"` never occurs in a string
_OLD_PYDANTIC_AI = (b'"name":"pydantic-ai","version":"0.', b'"name": "pydantic-ai", "version": "0.')
_URI_KEY = b'"uri"'
# A line that starts compact, as the Collector and our exporter write it, is compact throughout:
# its keys are searched with their whole compact openings, which `bytes.find` skips through
# faster than the bare key (the longer the needle, the longer its skips).
_COMPACT_LINE = b'{"resourceSpans":['
_COMPACT_RESULT_KEY = b'"key":"final_result"'
_COMPACT_OURS_FORMAT = b'"key":"ai_lsp.span_format"'
_COMPACT_URI_OPENING = b'"key":"uri","value":{"stringValue":"'  # a string-valued `uri`
_URI = re.compile(
    rb'"key": ?"(?:uri|ai_lsp\.document\.uri)", ?"value": ?\{ ?"stringValue": ?"((?:[^"\\]|\\.)*)"'
)
_SPAN_ID = re.compile(rb'"spanId": ?"([0-9a-f]*)"')
_ESCAPED = re.compile(rb"[\\\x00-\x1f]")
_DECODER = json.JSONDecoder()


@dataclass
class Skimmed:
    """What a skimmed line says: its spans, runs not decoded (no result), URIs by span id."""

    spans: int
    runs: int
    run_format: RunFormat
    uris: list[tuple[str, str]] = field(default_factory=list)
    decoded: list[RawSpan] = field(default_factory=list)  # the spans that may hold a result


def skim_line(line: bytes) -> Skimmed | None:
    """The counts of a line without a usable run, or None when the line must be parsed."""
    return _skim(line, decode=False)


def skim_and_decode(line: bytes) -> Skimmed | None:
    """Like ``skim_line``, but a span that may hold a result or feedback is decoded alone.

    None when the line must be parsed as a whole (malformed, unusual field order, non-OTLP).
    """
    return _skim(line, decode=True)


def _skim(line: bytes, *, decode: bool) -> Skimmed | None:
    body = line  # never copied: lines are large
    if not (body.startswith(b'{"resourceSpans"') and body.endswith((b"}\n", b"}\r\n"))):
        return None  # a last line without newline may be cut off: parse it to tell
    compact = body.startswith(_COMPACT_LINE)
    marks, our_uri_keys = _marks(body, compact)
    if marks and not decode:
        return None
    ascii_only = body.isascii()
    if not ascii_only:  # ASCII is valid UTF-8; only otherwise pay for a decode
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return None
    decoded: list[RawSpan] = []
    if marks:
        found = _decode_marked(body, marks, ascii_only)
        if found is None:
            return None
        decoded = found
    runs = len(_RUN_NAME.findall(body))
    runs -= sum(1 for raw, _, _ in decoded if _is_run_name(raw.get("name")))
    if runs < 0:
        return None
    # pydantic-ai's scope comes before its spans: found sooner than a run's attribute.
    scopes = _OLD_PYDANTIC_AI[:1] if compact else _OLD_PYDANTIC_AI
    old = runs > 0 and (any(m in body for m in scopes) or b"all_messages_events" in body)
    skimmed = Skimmed(
        spans=body.count(_SPAN_START),
        runs=runs,
        run_format=RunFormat.PYDANTIC_AI_EVENTS if old else RunFormat.PYDANTIC_AI,
        decoded=decoded,
    )
    if skimmed.spans < len(decoded):
        return None
    skimmed.uris = _uris(body, our_uri_keys, compact)
    return skimmed


def _marks(body: bytes, compact: bool) -> tuple[list[int], list[int]]:
    """Offsets of the attributes that make a span worth decoding, and of our URI keys."""
    marks, uri_keys = [], []
    result_mark = _COMPACT_RESULT_KEY if compact else _RESULT_MARK
    at = body.find(result_mark)
    while at != -1:
        marks.append(at)
        at = body.find(result_mark, at + len(result_mark))
    # Every span of ours carries ai_lsp.span_format (genai): a line without it holds none.
    ours = (_COMPACT_OURS_FORMAT if compact else _OURS_FORMAT) in body
    at = body.find(_OURS_MARK) if ours else -1
    while at != -1:
        if body.startswith(_OURS_SPAN_KEYS, at + len(_OURS_MARK)):
            marks.append(at)
        elif body.startswith(_OURS_URI_KEY, at + len(_OURS_MARK)):
            uri_keys.append(at)
        at = body.find(_OURS_MARK, at + len(_OURS_MARK))
    return sorted(marks), uri_keys


def _decode_marked(body: bytes, marks: list[int], ascii_only: bool) -> list[RawSpan] | None:
    """Each span holding a mark, decoded alone; None when a span cannot be found that way."""
    text = body.decode("ascii") if ascii_only else ""
    spans: list[RawSpan] = []
    end = -1  # byte offset where the last decoded span ends
    for mark in marks:
        if mark < end:
            continue  # a second mark in the same span
        start = body.rfind(_SPAN_OPEN, 0, mark)
        if start == -1 or start < end:
            return None
        try:
            if ascii_only:
                raw, stop = _DECODER.raw_decode(text, start)
            else:
                tail = body[start:].decode("utf-8")
                raw, stop_chars = _DECODER.raw_decode(tail)
                stop = start + len(tail[:stop_chars].encode("utf-8"))
        except (ValueError, RecursionError):
            return None
        # A link also opens with traceId; the mark must lie inside the span we decoded.
        if not isinstance(raw, dict) or "name" not in raw or stop <= mark:
            return None
        scope = _scope_before(body, start, text)
        if scope is None:
            return None
        spans.append((raw, *scope))
        end = stop
    return spans


def _scope_before(body: bytes, span_start: int, text: str) -> tuple[str, str] | None:
    """(name, version) of the scope whose ``spans`` array holds the span at ``span_start``.

    OTLP writes a ScopeSpans' ``scope`` before its ``spans``; None when it is not found there.
    """
    spans_key = body.rfind(b'"spans":', 0, span_start)
    scope_key = body.rfind(b'"scope":', 0, spans_key) if spans_key != -1 else -1
    if scope_key == -1 or body.rfind(b'"spans":', 0, spans_key) > scope_key:
        return None
    at = scope_key + len(b'"scope":')
    while body[at : at + 1] in (b" ", b"\t"):
        at += 1
    try:
        if text:
            scope, _ = _DECODER.raw_decode(text, at)
        else:
            scope, _ = _DECODER.raw_decode(body[at:spans_key].decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(scope, dict):
        return None
    return str(scope.get("name", "")), str(scope.get("version", ""))


def _is_run_name(name: Any) -> bool:
    return isinstance(name, str) and (name == "agent run" or name.startswith("invoke_agent"))


def _uris(body: bytes, our_uri_keys: list[int], compact: bool) -> list[tuple[str, str]]:
    """(span id, document URI) of every span with a ``uri`` or ``ai_lsp.document.uri``."""
    keys = []
    if compact:
        at = body.find(_COMPACT_URI_OPENING)
        while at != -1:
            keys.append(at + 6)  # the `"uri"` key, after `"key":`
            at = body.find(_COMPACT_URI_OPENING, at + len(_COMPACT_URI_OPENING))
    else:
        at = body.find(_URI_KEY)
        while at != -1:
            keys.append(at)
            at = body.find(_URI_KEY, at + len(_URI_KEY))
    found: list[tuple[str, str]] = []
    for at in sorted(keys + our_uri_keys) if our_uri_keys else keys:
        if _compact_uri(body, at, found):  # the usual compact form, without regexes
            continue
        # The key's `"key": ?` precedes it: try the compact and spaced forms.
        for start in (at - 6, at - 7):
            match = _URI.match(body, start) if start >= 0 else None
            if match is not None:
                uri = _uri_of(body, match)
                if uri is not None:
                    found.append(uri)
                break
    return found


def _uri_of(body: bytes, match: re.Match[bytes]) -> tuple[str, str] | None:
    # The span's own id precedes its attributes (OTLP field order); links come after.
    at = body.rfind(b'"spanId"', 0, match.start())
    span_id = _SPAN_ID.match(body, at) if at != -1 else None
    if span_id is None:
        return None
    value = match.group(1)
    if _ESCAPED.search(value):  # escapes (or invalid control characters): json decides
        try:
            return span_id.group(1).decode(), json.loads(b'"' + value + b'"')
        except ValueError:
            return None
    return span_id.group(1).decode(), value.decode("utf-8")


_COMPACT_URI = re.compile(rb'"key":"uri","value":\{"stringValue":"([^"\\\x00-\x1f]*)"')
_COMPACT_SPAN_ID = re.compile(rb'"spanId":"([0-9a-f]*)"')


def _compact_uri(body: bytes, at: int, found: list[tuple[str, str]]) -> bool:
    """``_URI`` and ``_uri_of`` for a compact ``"uri"`` key at ``at``, appending to ``found``.

    Only the plain case (no escapes, a compact span id) is read here; False leaves anything
    else to the regexes, so both ways give the same answer.
    """
    value = _COMPACT_URI.match(body, at - 6)
    if value is None:
        return False
    id_at = body.rfind(b'"spanId"', 0, at - 6)
    if id_at == -1:
        return True  # no span to give the URI to
    span_id = _COMPACT_SPAN_ID.match(body, id_at)
    if span_id is None:
        return False
    found.append((span_id.group(1).decode(), value.group(1).decode("utf-8")))
    return True
