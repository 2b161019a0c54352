"""Recognise agent runs among spans: pydantic-ai 0.x, 1.x/2.x (every instrumentation version), ours.

What each writes on its agent-run span (checked against the real libraries, see the tests):

- pydantic-ai 0.x (instrumentation version 1): span ``agent run``; ``all_messages_events`` (a
  JSON list of ``{"role", "content"}`` events, tool calls under ``tool_calls``); ``final_result``.
- pydantic-ai 1.x/2.x (versions 2..6): span ``agent run`` (v2) or ``invoke_agent <name>`` (v3+);
  ``pydantic_ai.all_messages`` (``{"role", "parts": [...]}``), ``gen_ai.system_instructions`` when
  the prompt was given as ``instructions``; ``final_result`` as compact JSON. From v6 the tool
  return after the answer has the ``tool`` role, before it a ``user`` message: the prompt is the
  user *text*, never simply the last user message.
- this project's server: ``traces/genai.py``.

Child spans (``chat ...``, HTTP client spans) carry a leaked ``gen_ai.agent.name``: runs are
recognised by span name and format markers, never by that attribute. Messages are only parsed
for runs that finished with a result, so cancelled runs cost almost nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ai_lsp_tune.prompts import USER_PROMPT_PATTERN, parse_user_prompt
from ai_lsp_tune.traces import genai
from ai_lsp_tune.traces.spans import Span

SCRUBBED_MARKER = "[Scrubbed due to "
PYDANTIC_AI_SCOPE = "pydantic-ai"
OUTPUT_TOOL_PREFIX = "final_result"
__all__ = [  # the prompt format (build and parse) lives in ai_lsp_tune.prompts
    "OUTPUT_TOOL_PREFIX",
    "PYDANTIC_AI_SCOPE",
    "SCRUBBED_MARKER",
    "AgentRun",
    "RunFormat",
    "agent_run_from_span",
    "is_agent_run",
]
_PYDANTIC_AI_MARKERS = ("all_messages_events", "pydantic_ai.all_messages", "final_result")


class RunFormat(StrEnum):
    PYDANTIC_AI_EVENTS = "pydantic-ai 0.x"  # instrumentation version 1
    PYDANTIC_AI = "pydantic-ai 1.x/2.x"  # instrumentation versions 2..6
    AI_LSP = "ai-lsp-tune"


@dataclass(frozen=True)
class AgentRun:
    """One agent run as recorded. ``output`` is None when the run ended without a final result."""

    format: RunFormat
    trace_id: str
    span_id: str
    parent_span_id: str
    start_time_unix_nano: int
    model: str
    failed: bool  # the span's status is ERROR
    error: str
    output: str | None  # the answer's JSON text; never a scrubbed placeholder when usable
    output_scrubbed: bool  # logfire scrubbed the answer and no true copy survives
    output_recovered: bool  # scrubbed, but the output tool's arguments (raw model JSON) were not
    system: str
    user: str
    prompt_scrubbed: bool
    document_uri: str
    language: str
    document_name: str
    source: str
    answered_locally: bool = False  # by this server's own local model (``genai.LOCAL_PROVIDER``)


def is_agent_run(span: Span) -> bool:
    """An agent-run span of pydantic-ai or of our server (not a child span with leaked attrs)."""
    attrs = span.attributes
    if genai.is_analysis_span(span.name, attrs):
        return True
    if span.name == "agent run":
        return True
    if span.name == "invoke_agent" or span.name.startswith("invoke_agent "):
        if attrs.get(genai.OPERATION_NAME, "invoke_agent") != "invoke_agent":
            return False
        return span.scope_name == PYDANTIC_AI_SCOPE or any(k in attrs for k in _PYDANTIC_AI_MARKERS)
    return False


def agent_run_from_span(span: Span) -> AgentRun | None:
    """The run recorded by ``span``, or None when the span is not an agent run."""
    if not is_agent_run(span):
        return None
    if genai.is_analysis_span(span.name, span.attributes):
        return _ours(span)
    return _pydantic_ai(span)


def _ours(span: Span) -> AgentRun:
    try:
        record = genai.analysis_from_attributes(span.attributes)
    except ValueError as exc:
        return _run(span, RunFormat.AI_LSP, error=str(exc))
    output = record.output
    return _run(
        span,
        RunFormat.AI_LSP,
        model=record.model,
        error=record.error or "",
        output=output,
        output_scrubbed=output is not None and SCRUBBED_MARKER in output,
        system=record.system,
        user=record.user,
        document_uri=record.document_uri,
        language=record.language,
        document_name=record.document_name,
        answered_locally=genai.answered_locally(span.attributes),
    )


def _pydantic_ai(span: Span) -> AgentRun:
    attrs = span.attributes
    model = str(attrs.get("model_name") or attrs.get(genai.REQUEST_MODEL) or "")
    events = "all_messages_events" in attrs
    old_library = span.scope_name == PYDANTIC_AI_SCOPE and span.scope_version.startswith("0.")
    fmt = RunFormat.PYDANTIC_AI_EVENTS if events or old_library else RunFormat.PYDANTIC_AI
    final = attrs.get("final_result")
    if final is None:
        return _run(span, fmt, model=model)  # cancelled or failed: no need to read its messages
    messages = _json_list(
        attrs.get("all_messages_events" if events else "pydantic_ai.all_messages")
    )
    if events:
        system, user, tool_output = _from_events(messages)
    else:
        system, user, tool_output = _from_parts(messages)
        instructions = _texts(_json_list(attrs.get(genai.SYSTEM_INSTRUCTIONS)))
        system = "\n\n".join(s for s in (system, instructions) if s)
    output, output_scrubbed, output_recovered = _best_output(final, tool_output)
    parts = parse_user_prompt(user)
    return _run(
        span,
        fmt,
        model=model,
        output=output,
        output_scrubbed=output_scrubbed,
        output_recovered=output_recovered,
        system=system,
        user=user,
        language=parts.language if parts else "",
        document_name=parts.name if parts else "",
    )


def _run(span: Span, fmt: RunFormat, **fields: Any) -> AgentRun:
    system, user = fields.pop("system", ""), fields.pop("user", "")
    return AgentRun(
        format=fmt,
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        start_time_unix_nano=span.start_time_unix_nano,
        model=fields.pop("model", ""),
        failed=span.status_code == 2,
        error=fields.pop("error", "") or span.status_message,
        output=fields.pop("output", None),
        output_scrubbed=fields.pop("output_scrubbed", False),
        output_recovered=fields.pop("output_recovered", False),
        system=system,
        user=user,
        prompt_scrubbed=SCRUBBED_MARKER in system or SCRUBBED_MARKER in user,
        document_uri=fields.pop("document_uri", ""),
        language=fields.pop("language", ""),
        document_name=fields.pop("document_name", ""),
        source=span.source,
        answered_locally=fields.pop("answered_locally", False),
    )


def _best_output(final: Any, tool_arguments: Any) -> tuple[str | None, bool, bool]:
    """(answer text, scrubbed, recovered): logfire may have scrubbed ``final_result`` but not
    the output tool call's arguments."""
    first = _as_text(final)
    if first is not None and SCRUBBED_MARKER not in first:
        return first, False, False  # the usual case: the tool call's arguments are not needed
    arguments = _as_text(tool_arguments)
    if arguments is not None and SCRUBBED_MARKER not in arguments:
        return arguments, False, True
    candidates = [c for c in (first, arguments) if c is not None]
    return (candidates[0] if candidates else None), bool(candidates), False


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _json_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if not isinstance(value, str):
        return []
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        return []
    return parsed if isinstance(parsed, list) else []


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal user content: keep the text items
        return "".join(c for c in content if isinstance(c, str))
    return ""


def _from_events(events: list[Any]) -> tuple[str, str, Any]:
    """System prompt, user prompt and output-tool arguments from 0.x ``all_messages_events``."""
    systems, users, tool_output = [], [], None
    for event in events:
        if not isinstance(event, dict):
            continue
        role = event.get("role")
        if role == "system":
            systems.append(_content_text(event.get("content")))
        elif role == "user":
            users.append(_content_text(event.get("content")))
        elif role == "assistant":
            for call in event.get("tool_calls") or []:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and _is_output_tool(function.get("name")):
                    tool_output = function.get("arguments")
    return "\n\n".join(s for s in systems if s), _pick_prompt(users), tool_output


def _from_parts(messages: list[Any]) -> tuple[str, str, Any]:
    """System prompt, user prompt and output-tool arguments from ``pydantic_ai.all_messages``."""
    systems, users, tool_output = [], [], None
    for message in messages:
        if not isinstance(message, dict):
            continue
        role, parts = message.get("role"), message.get("parts") or []
        if role == "system":
            systems.append(_texts(parts))
        elif role == "user":
            text = _texts(parts)
            if text:
                users.append(text)
        elif role == "assistant":
            for part in parts:
                if (
                    isinstance(part, dict)
                    and part.get("type") == "tool_call"
                    and _is_output_tool(part.get("name"))
                ):
                    tool_output = part.get("arguments")
    return "\n\n".join(s for s in systems if s), _pick_prompt(users), tool_output


def _texts(parts: list[Any]) -> str:
    return "".join(
        str(p.get("content", "")) for p in parts if isinstance(p, dict) and p.get("type") == "text"
    )


def _pick_prompt(users: list[str]) -> str:
    # The analysis prompt if one is there (retry feedback is user text too), else the first.
    for text in reversed(users):
        if USER_PROMPT_PATTERN.match(text):
            return text
    return users[0] if users else ""


def _is_output_tool(name: Any) -> bool:
    return isinstance(name, str) and name.startswith(OUTPUT_TOOL_PREFIX)
