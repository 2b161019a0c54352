"""Analyses and feedback written as the server writes them (real OTel SDK, our exporter)."""

from __future__ import annotations

import json
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import StatusCode

from ai_lsp_tune.prompts import SYSTEM_PROMPT, user_prompt
from ai_lsp_tune.traces import genai
from ai_lsp_tune.traces.exporter import OtlpJsonFileSpanExporter

CODE = "def mean(xs):\n    return sum(xs) / len(xs)\n"


def issue(snippet: str, message: str = "Check this.") -> dict:
    return {"issue_snippet": snippet, "severity": "warning", "message": message}


def answer(*issues: dict, spaced: bool = False) -> str:
    separators = (", ", ": ") if spaced else (",", ":")
    return json.dumps({"issues": list(issues)}, separators=separators)


# A file too long for --max-seq-length 1024 with an issue at each end: cropped, it becomes two
# windows, one around each issue (FAR_APART_ANSWER).
FAR_APART = (
    "def first(a):\n    return a / 0\n\n"
    + "".join(f"def pad{n}(v):\n    return v + {n}\n\n" for n in range(600))
    + "def last(b):\n    return b ** 99\n"
)
FAR_APART_ANSWER = answer(issue("a / 0", "Divides by zero."), issue("b ** 99", "Huge."))


class Recorder:
    """Writes analyses and feedback as this project's server does: real SDK, our exporter."""

    def __init__(self, path: Path) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": "ai-lsp-tune"}))
        self.provider.add_span_processor(SimpleSpanProcessor(OtlpJsonFileSpanExporter(path)))
        self.tracer = self.provider.get_tracer(genai.INSTRUMENTATION_SCOPE)

    def analysis(
        self,
        code: str = CODE,
        output: str | None = None,
        *,
        uri: str = "file:///project/stats.py",
        failed: bool = False,
        provider: str = "openai",  # a teacher's answer; "mlx": the local model's own
    ) -> tuple[str, str]:
        name = uri.rsplit("/", 1)[-1]
        record = genai.AnalysisRecord(
            model="qwen-test",
            provider=provider,
            system=SYSTEM_PROMPT,
            user=user_prompt("python", code, name),
            output=output,
            valid=output is not None,
            document_uri=uri,
            language="python",
            document_name=name,
        )
        span = self.tracer.start_span(
            genai.ANALYSIS_SPAN_NAME, attributes=genai.analysis_attributes(record)
        )
        if failed:
            span.set_status(StatusCode.ERROR, "model host crashed")
        span.end()
        ctx = span.get_span_context()
        return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"

    def dismissed(self, analysis: tuple[str, str], snippet: str) -> None:
        self.feedback("dismissed", analysis, snippet)

    def fix_applied(self, analysis: tuple[str, str], snippet: str) -> None:
        self.feedback("fix_applied", analysis, snippet)

    def feedback(self, kind: genai.FeedbackKind, analysis: tuple[str, str], snippet: str) -> None:
        record = genai.FeedbackRecord(kind, *analysis, snippet, "", "file:///project/stats.py")
        self.tracer.start_span(
            genai.FEEDBACK_SPAN_NAME, attributes=genai.feedback_attributes(record)
        ).end()

    def close(self) -> None:
        self.provider.shutdown()
