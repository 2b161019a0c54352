"""Runs of the real pydantic-ai answering with the model's own JSON text, scrubbed or not."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.instrumented import InstrumentationSettings

from ai_lsp_tune.prompts import SYSTEM_PROMPT, user_prompt
from ai_lsp_tune.schema import DiagnosticResult
from ai_lsp_tune.traces.exporter import OtlpJsonFileSpanExporter

CODE = "def mean(xs):\n    return sum(xs) / len(xs)\n"


def record_run(path: Path, tool_arguments: str, *, scrub_final_result: bool) -> None:
    """One analysis answered through the output tool with ``tool_arguments`` as written."""
    exporter: SpanExporter = OtlpJsonFileSpanExporter(path)
    if scrub_final_result:  # as logfire does when the answer mentions a "password"
        exporter = Scrub(exporter, "final_result", lambda _: "[Scrubbed due to 'password']")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, tool_arguments)])

    agent = Agent(
        FunctionModel(answer, model_name="scripted"),
        output_type=DiagnosticResult,
        name="analyzer",
        instructions=SYSTEM_PROMPT,
    )
    agent.instrument = InstrumentationSettings(version=5, tracer_provider=provider)
    with trace.use_span(provider.get_tracer("app").start_span("analyze"), end_on_exit=True):
        agent.run_sync(user_prompt("python", CODE, "stats.py"))
    provider.shutdown()


class Scrub(SpanExporter):
    """What logfire's scrubbing does before export: replace an attribute value."""

    def __init__(self, inner: SpanExporter, key: str, scrub: Any) -> None:
        self.inner, self.key, self.scrub = inner, key, scrub

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        changed = []
        for span in spans:
            attrs = dict(span.attributes or {})
            if self.key in attrs:
                attrs[self.key] = self.scrub(attrs[self.key])
            changed.append(
                ReadableSpan(
                    name=span.name,
                    context=span.context,
                    parent=span.parent,
                    resource=span.resource,
                    attributes=attrs,
                    kind=span.kind,
                    status=span.status,
                    start_time=span.start_time,
                    end_time=span.end_time,
                    instrumentation_scope=span.instrumentation_scope,
                )
            )
        return self.inner.export(changed)

    def shutdown(self) -> None:
        self.inner.shutdown()
