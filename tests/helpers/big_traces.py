"""Trace files for the hostile cases, written by this project's own exporter (real OTel SDK)."""

from __future__ import annotations

import json
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from ai_lsp_tune.prompts import SYSTEM_PROMPT, user_prompt
from ai_lsp_tune.traces import genai
from ai_lsp_tune.traces.exporter import OtlpJsonFileSpanExporter

CODE = "def mean(xs):\n    return sum(xs) / len(xs)\n"
ANSWER = {
    "issues": [
        {
            "issue_snippet": "sum(xs) / len(xs)",
            "severity": "warning",
            "message": "Fails on an empty list.",
            "suggested_fixes": None,
        }
    ]
}


def record(path: Path, *, files: int = 1, padding: int = 0) -> None:
    """``files`` analyses (one per document, each answered) and, with ``padding``, a span
    whose attribute is that many bytes (a long model request, say) after each."""
    provider = TracerProvider(resource=Resource.create({"service.name": "ai-lsp-tune"}))
    provider.add_span_processor(SimpleSpanProcessor(OtlpJsonFileSpanExporter(path)))
    tracer = provider.get_tracer(genai.INSTRUMENTATION_SCOPE)
    for number in range(files):
        name = f"stats_{number}.py"
        analysis = genai.AnalysisRecord(
            model="qwen-test",
            provider="openai",  # a teacher: the local model's own answers are left out
            system=SYSTEM_PROMPT,
            user=user_prompt("python", CODE, name),
            output=json.dumps(ANSWER, separators=(",", ":")),
            valid=True,
            document_uri=f"file:///project/{name}",
            language="python",
            document_name=name,
        )
        attributes = genai.analysis_attributes(analysis)
        tracer.start_span(genai.ANALYSIS_SPAN_NAME, attributes=attributes).end()
        if padding:
            tracer.start_span("chat qwen-test", attributes={"padding": "x" * padding}).end()
    provider.shutdown()


def big_trace_file(path: Path, mib: int = 50) -> Path:
    """A valid trace file of ``mib`` MiB or a little more: a small recorded one, repeated."""
    small = path.with_name("small.jsonl")
    record(small, files=4, padding=256 * 2**10)
    body = small.read_bytes()
    with path.open("wb") as out:
        for _ in range(-(-mib * 2**20 // len(body))):
            out.write(body)
    return path
