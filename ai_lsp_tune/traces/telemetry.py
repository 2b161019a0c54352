"""The server's own OpenTelemetry export: every analysis a span tree, in our span format.

Spans go through a ``BatchSpanProcessor`` to an OTLP JSON-lines file (the collector's file
exporter format, per workspace, 0600, size-rotated) and, when the standard
``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` variables are set, to a collector over OTLP/HTTP too.
The tracer provider is our own, not the global one, so nothing else in the process writes to
the training data by accident.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ai_lsp_tune import __version__ as package_version
from ai_lsp_tune import paths
from ai_lsp_tune.traces import genai

log = logging.getLogger(__name__)

TRACE_FILE_NAME = "ai-lsp-otel.jsonl"
_OTLP_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def default_trace_file(workspace_root: str | Path | None) -> Path:
    """Where a workspace's analyses are recorded unless ``traceFile`` says otherwise."""
    return paths.workspace_dir(workspace_root) / "traces" / TRACE_FILE_NAME


class Telemetry:
    """Creates the analysis and feedback spans; a disabled instance records nothing."""

    def __init__(self, provider: TracerProvider | None, trace_file: Path | None) -> None:
        self._provider = provider
        self.trace_file = trace_file
        source = provider if provider is not None else trace.NoOpTracerProvider()
        self._tracer = source.get_tracer(genai.INSTRUMENTATION_SCOPE, package_version)

    @property
    def enabled(self) -> bool:
        return self._provider is not None

    @classmethod
    def disabled(cls) -> Telemetry:
        return cls(None, None)

    @classmethod
    def configure(cls, *, enabled: bool, trace_file: Path) -> Telemetry:
        """Set up the file export (and OTLP/HTTP when configured); disabled records nothing."""
        if not enabled or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
            return cls.disabled()
        from ai_lsp_tune.traces.exporter import OtlpJsonFileSpanExporter

        resource = Resource.create(
            {"service.name": "ai-lsp-tune", "service.version": package_version}
        )
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OtlpJsonFileSpanExporter(trace_file)))
        if any(os.environ.get(var) for var in _OTLP_ENDPOINT_VARS):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            log.info("also exporting spans over OTLP/HTTP")
        log.info("recording analyses to %s", trace_file)
        return cls(provider, trace_file)

    @contextlib.contextmanager
    def analysis_span(self) -> Iterator[Span]:
        """The root span of one analysis; fill it with ``finish_analysis``."""
        with self._tracer.start_as_current_span(
            genai.ANALYSIS_SPAN_NAME, kind=SpanKind.INTERNAL, record_exception=False
        ) as span:
            yield span

    @contextlib.contextmanager
    def attempt_span(self, model: str, provider: str) -> Iterator[Span]:
        """A child span per model call (the first answer, the retry)."""
        with self._tracer.start_as_current_span(
            f"chat {model}",
            kind=SpanKind.CLIENT,
            attributes={
                genai.OPERATION_NAME: "chat",
                genai.PROVIDER_NAME: provider,
                genai.REQUEST_MODEL: model,
            },
        ) as span:
            yield span

    @staticmethod
    def finish_analysis(span: Span, record: genai.AnalysisRecord) -> None:
        span.set_attributes(genai.analysis_attributes(record))
        if not record.valid:
            span.set_status(Status(StatusCode.ERROR, record.error or "invalid model output"))

    def record_feedback(self, record: genai.FeedbackRecord) -> None:
        """A span saying what the user did with a diagnostic of an earlier analysis."""
        with self._tracer.start_as_current_span(
            genai.FEEDBACK_SPAN_NAME, attributes=genai.feedback_attributes(record)
        ):
            pass

    def flush(self, timeout_ms: int = 5000) -> None:
        if self._provider is not None:
            self._provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        """Export what is buffered and stop; called on LSP shutdown."""
        if self._provider is not None:
            self._provider.force_flush(5000)
            self._provider.shutdown()
            self._provider = None


def span_ids(span: Span) -> tuple[str, str]:
    """(trace id, span id) in hex, as OTLP JSON writes them."""
    context = span.get_span_context()
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)
