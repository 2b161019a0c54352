"""The span format this project's server writes, and reads back when preparing datasets.

One module for both sides (exporter and reader), following the OpenTelemetry GenAI semantic
conventions: ``gen_ai.system_instructions``, ``gen_ai.input.messages`` and
``gen_ai.output.messages`` hold JSON arrays of ``{"role", "parts": [{"type", "content"}]}``.
Attributes under ``ai_lsp.`` are ours: the analysed document and the user's feedback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

SPAN_FORMAT_VERSION = 1
AGENT_NAME = "ai-lsp-analyzer"
ANALYSIS_SPAN_NAME = f"invoke_agent {AGENT_NAME}"
FEEDBACK_SPAN_NAME = "ai_lsp.feedback"
INSTRUMENTATION_SCOPE = "ai_lsp_tune"
# The provider of every answer from our own model host (the local backend), in every version of
# this server: remote backends take theirs from a pydantic-ai model string, which has no "mlx".
LOCAL_PROVIDER = "mlx"

# GenAI semantic conventions
OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
AGENT_NAME_ATTR = "gen_ai.agent.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
OUTPUT_TYPE = "gen_ai.output.type"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
FINISH_REASONS = "gen_ai.response.finish_reasons"

# Ours
FORMAT_VERSION = "ai_lsp.span_format"
DOCUMENT_URI = "ai_lsp.document.uri"
DOCUMENT_LANGUAGE = "ai_lsp.document.language"
DOCUMENT_NAME = "ai_lsp.document.name"
RESULT_VALID = "ai_lsp.result.valid"
RESULT_ERROR = "ai_lsp.result.error"
ATTEMPTS = "ai_lsp.attempts"
FEEDBACK_KIND = "ai_lsp.feedback.kind"
FEEDBACK_TRACE_ID = "ai_lsp.feedback.analysis_trace_id"
FEEDBACK_SPAN_ID = "ai_lsp.feedback.analysis_span_id"
FEEDBACK_SNIPPET = "ai_lsp.feedback.issue_snippet"
FEEDBACK_MESSAGE = "ai_lsp.feedback.message"

FeedbackKind = Literal["dismissed", "fix_applied"]


@dataclass(frozen=True)
class AnalysisRecord:
    """One analysis as recorded: the prompt pair, the model's final answer text, the document."""

    model: str
    provider: str
    system: str
    user: str
    output: str | None  # the final answer text (DiagnosticResult JSON); None when none came
    valid: bool
    document_uri: str
    language: str
    document_name: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None
    attempts: int = 1


@dataclass(frozen=True)
class FeedbackRecord:
    """The user acted on a diagnostic of an earlier analysis."""

    kind: FeedbackKind
    analysis_trace_id: str  # hex, as in OTLP JSON
    analysis_span_id: str
    issue_snippet: str
    message: str
    document_uri: str


def _text_parts(text: str) -> list[dict[str, str]]:
    return [{"type": "text", "content": text}]


def analysis_attributes(record: AnalysisRecord) -> dict[str, Any]:
    """Span attributes (OTel attribute values) describing one analysis."""
    attrs: dict[str, Any] = {
        FORMAT_VERSION: SPAN_FORMAT_VERSION,
        OPERATION_NAME: "invoke_agent",
        AGENT_NAME_ATTR: AGENT_NAME,
        PROVIDER_NAME: record.provider,
        REQUEST_MODEL: record.model,
        RESPONSE_MODEL: record.model,
        OUTPUT_TYPE: "json",
        SYSTEM_INSTRUCTIONS: json.dumps(_text_parts(record.system)),
        INPUT_MESSAGES: json.dumps([{"role": "user", "parts": _text_parts(record.user)}]),
        DOCUMENT_URI: record.document_uri,
        DOCUMENT_LANGUAGE: record.language,
        DOCUMENT_NAME: record.document_name,
        RESULT_VALID: record.valid,
        ATTEMPTS: record.attempts,
    }
    if record.output is not None:
        attrs[OUTPUT_MESSAGES] = json.dumps(
            [{"role": "assistant", "parts": _text_parts(record.output), "finish_reason": "stop"}]
        )
        attrs[FINISH_REASONS] = ["stop"]
    if record.input_tokens is not None:
        attrs[INPUT_TOKENS] = record.input_tokens
    if record.output_tokens is not None:
        attrs[OUTPUT_TOKENS] = record.output_tokens
    if record.error:
        attrs[RESULT_ERROR] = record.error
    return attrs


def is_analysis_span(name: str, attrs: Mapping[str, Any]) -> bool:
    """Our own analysis span (not a pydantic-ai span, not a child span with leaked attributes)."""
    return name == ANALYSIS_SPAN_NAME and FORMAT_VERSION in attrs


def answered_locally(attrs: Mapping[str, Any]) -> bool:
    """An analysis span's answer came from our own local model, not from a teacher."""
    return attrs.get(PROVIDER_NAME) == LOCAL_PROVIDER


def _joined_text(parts: Any) -> str:
    return "".join(
        str(p.get("content", "")) for p in parts if isinstance(p, dict) and p.get("type") == "text"
    )


def analysis_from_attributes(attrs: Mapping[str, Any]) -> AnalysisRecord:
    """Read an analysis back from the attributes of a span that ``is_analysis_span``.

    Raises ValueError (with the attribute at fault) when a required attribute is missing or
    malformed.
    """
    try:
        system = _joined_text(json.loads(attrs[SYSTEM_INSTRUCTIONS]))
        inputs = json.loads(attrs[INPUT_MESSAGES])
        users = [m for m in inputs if isinstance(m, dict) and m.get("role") == "user"]
        user = _joined_text(users[-1]["parts"]) if users else ""
        output: str | None = None
        if OUTPUT_MESSAGES in attrs:
            outputs = json.loads(attrs[OUTPUT_MESSAGES])
            answers = [m for m in outputs if isinstance(m, dict) and m.get("role") == "assistant"]
            output = _joined_text(answers[-1]["parts"]) if answers else None
    except (KeyError, TypeError, IndexError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed ai-lsp analysis span: {exc!r}") from exc
    return AnalysisRecord(
        model=str(attrs.get(REQUEST_MODEL, "")),
        provider=str(attrs.get(PROVIDER_NAME, "")),
        system=system,
        user=user,
        output=output,
        valid=bool(attrs.get(RESULT_VALID, output is not None)),
        document_uri=str(attrs.get(DOCUMENT_URI, "")),
        language=str(attrs.get(DOCUMENT_LANGUAGE, "")),
        document_name=str(attrs.get(DOCUMENT_NAME, "")),
        input_tokens=_int_or_none(attrs.get(INPUT_TOKENS)),
        output_tokens=_int_or_none(attrs.get(OUTPUT_TOKENS)),
        error=attrs.get(RESULT_ERROR),
        attempts=int(attrs.get(ATTEMPTS, 1)),
    )


def feedback_attributes(record: FeedbackRecord) -> dict[str, Any]:
    """Span attributes of a feedback span (a quick fix applied, a diagnostic dismissed)."""
    return {
        FORMAT_VERSION: SPAN_FORMAT_VERSION,
        FEEDBACK_KIND: record.kind,
        FEEDBACK_TRACE_ID: record.analysis_trace_id,
        FEEDBACK_SPAN_ID: record.analysis_span_id,
        FEEDBACK_SNIPPET: record.issue_snippet,
        FEEDBACK_MESSAGE: record.message,
        DOCUMENT_URI: record.document_uri,
    }


def is_feedback_span(name: str, attrs: Mapping[str, Any]) -> bool:
    return name == FEEDBACK_SPAN_NAME and FEEDBACK_KIND in attrs and FORMAT_VERSION in attrs


def feedback_from_attributes(attrs: Mapping[str, Any]) -> FeedbackRecord:
    kind = attrs.get(FEEDBACK_KIND)
    if kind not in ("dismissed", "fix_applied"):
        raise ValueError(f"unknown feedback kind {kind!r}")
    return FeedbackRecord(
        kind=kind,
        analysis_trace_id=str(attrs.get(FEEDBACK_TRACE_ID, "")),
        analysis_span_id=str(attrs.get(FEEDBACK_SPAN_ID, "")),
        issue_snippet=str(attrs.get(FEEDBACK_SNIPPET, "")),
        message=str(attrs.get(FEEDBACK_MESSAGE, "")),
        document_uri=str(attrs.get(DOCUMENT_URI, "")),
    )


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None
