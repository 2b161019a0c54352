"""One OTLP/JSON span decoded: ids in hex, times in ns, attribute values as Python values.

What a span of an ExportTraceServiceRequest (``resourceSpans -> scopeSpans -> spans``) becomes;
``otlp`` reads the lines of trace files and counts what it cannot use.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# A span's JSON object with its scope's name and version, decoded by a caller's ``skim``.
RawSpan = tuple[dict[str, Any], str, str]


@dataclass(slots=True)
class Span:
    """One decoded span: ids in hex, times in ns, attribute values as plain Python values."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    scope_name: str
    scope_version: str
    source: str  # "file:line", for messages that point at the input


def raw_spans(request: dict[str, Any]) -> Iterator[RawSpan]:
    """The spans of one ExportTraceServiceRequest, undecoded, with their scope."""
    for resource_spans in _dicts(request.get("resourceSpans")):
        for scope_spans in _dicts(resource_spans.get("scopeSpans")):
            scope = scope_spans.get("scope")
            scope = scope if isinstance(scope, dict) else {}
            scope_name, scope_version = str(scope.get("name", "")), str(scope.get("version", ""))
            for raw in _dicts(scope_spans.get("spans")):
                yield raw, scope_name, scope_version


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def decode_span(raw: dict[str, Any], scope_name: str, scope_version: str, source: str) -> Span:
    """A span's JSON object as a Span; raises BadField, KeyError (no name) or a TypeError."""
    status = raw.get("status") or {}
    return Span(
        name=str(raw["name"]),
        trace_id=str(raw.get("traceId", "")),
        span_id=str(raw.get("spanId", "")),
        parent_span_id=str(raw.get("parentSpanId", "")),
        start_time_unix_nano=_unix_nano(raw, "startTimeUnixNano"),
        end_time_unix_nano=_unix_nano(raw, "endTimeUnixNano"),
        attributes=decode_attributes(raw.get("attributes")),
        status_code=_status_code(status.get("code", 0)),
        status_message=str(status.get("message", "")),
        scope_name=scope_name,
        scope_version=scope_version,
        source=source,
    )


class BadField(ValueError):
    """A span field no OTLP writer could have written; the message names it."""


_MAX_UNIX_NANO = 2**64 - 1  # OTLP times are fixed64: nanoseconds up to the year 2554


def _unix_nano(raw: dict[str, Any], key: str) -> int:
    """A span time: OTLP/JSON writes it as a decimal string (a number is tolerated)."""
    value = raw.get(key, 0)
    try:
        nanos = int(value)
    except (TypeError, ValueError, OverflowError):  # "abc", NaN, 1e999 (infinity)
        nanos = -1
    if not 0 <= nanos <= _MAX_UNIX_NANO or isinstance(value, bool):
        raise BadField(f"{key} {str(value)[:40]} is not a time in nanoseconds")
    return nanos


_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}


def _status_code(code: Any) -> int:
    return _STATUS_NAMES[code] if isinstance(code, str) and code in _STATUS_NAMES else int(code)


def decode_attributes(attributes: Any) -> dict[str, Any]:
    """OTLP ``[{"key", "value": AnyValue}]`` to a plain dict (later duplicates win)."""
    if not isinstance(attributes, list):
        return {}
    return {
        str(kv["key"]): decode_value(kv.get("value"))
        for kv in attributes
        if isinstance(kv, dict) and "key" in kv
    }


def decode_value(value: Any) -> Any:
    """One OTLP AnyValue to Python (int64 strings to int, arrays and kvlists recursively)."""
    if not isinstance(value, dict):
        return None
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        try:
            return int(value["intValue"])
        except (TypeError, ValueError):
            return value["intValue"]
    if "boolValue" in value:
        return value["boolValue"]
    if "doubleValue" in value:
        return value["doubleValue"]
    if "arrayValue" in value:
        return [decode_value(v) for v in (value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in value:
        return decode_attributes((value["kvlistValue"] or {}).get("values", []))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None
