"""Traces of the real pydantic-ai, in every instrumentation version, give the same examples.

The samples are produced here, not written from memory: a real ``Agent`` with a ``FunctionModel``
that answers through the output tool, instrumented with the real OTel SDK and exported by our
Collector-format exporter.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.instrumented import InstrumentationSettings

from ai_lsp_tune.dataset.prepare import prepare_dataset
from ai_lsp_tune.dataset.reader import load_examples
from ai_lsp_tune.prompts import LOCAL_SYSTEM_PROMPT, SYSTEM_PROMPT, user_prompt
from ai_lsp_tune.schema import DiagnosticResult
from ai_lsp_tune.traces import otlp
from ai_lsp_tune.traces.agent_runs import RunFormat, agent_run_from_span
from ai_lsp_tune.traces.exporter import OtlpJsonFileSpanExporter
from tests.helpers.pydantic_ai_runs import Scrub

VERSIONS = (2, 3, 4, 5, 6)
CODE = "def mean(xs):\n    return sum(xs) / len(xs)\n"
USER = user_prompt("python", CODE, "stats.py")
ANSWER = {
    "issues": [
        {
            "issue_snippet": "len(xs)",
            "severity": "warning",
            "message": "Division by zero when xs is empty.",
            "suggested_fixes": [
                {
                    "title": "Guard the empty case",
                    "target_snippet": "len(xs)",
                    "replacement_snippet": "max(len(xs), 1)",
                }
            ],
        }
    ]
}


def record_run(
    path: Path, version: int, prompt_as: str, *, exporter: SpanExporter | None = None
) -> None:
    """One analysis by a real instrumented pydantic-ai Agent, exported to ``path``."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter or OtlpJsonFileSpanExporter(path)))
    tracer = provider.get_tracer("httpx")

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        # An HTTP client span inside the run: pydantic-ai's baggage leaks the agent name onto it.
        with tracer.start_as_current_span("POST", attributes={"gen_ai.agent.name": "analyzer"}):
            pass
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, ANSWER)])

    agent = Agent(
        FunctionModel(answer, model_name="scripted"),
        output_type=DiagnosticResult,
        name="analyzer",
        **{prompt_as: SYSTEM_PROMPT},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # versions 2-4 are deprecated, still in the wild
        agent.instrument = InstrumentationSettings(version=version, tracer_provider=provider)
    with trace.use_span(
        provider.get_tracer("app").start_span("analyze_document"), end_on_exit=True
    ):
        agent.run_sync(USER)
    provider.shutdown()


@pytest.mark.parametrize("prompt_as", ["system_prompt", "instructions"])
@pytest.mark.parametrize("version", VERSIONS)
def test_every_instrumentation_version_gives_the_same_example(
    tmp_path: Path, version: int, prompt_as: str
) -> None:
    trace_file = tmp_path / "traces.jsonl"
    record_run(trace_file, version, prompt_as)

    report = prepare_dataset(
        [trace_file], output_file=tmp_path / "dataset.json", output_dir=None, max_seq_length=8192
    )

    assert report.agent_runs == 1  # not the chat span, not the HTTP span with the leaked name
    assert report.runs_by_format == {RunFormat.PYDANTIC_AI.value: 1}
    assert report.examples == 1
    spans = otlp.read_spans([trace_file], otlp.ReadReport())
    (run,) = [r for s in spans if (r := agent_run_from_span(s))]
    assert run.system == SYSTEM_PROMPT  # read exactly, whichever way the version records it
    (example,) = load_examples(tmp_path / "dataset.json")["train"]
    assert example.system == LOCAL_SYSTEM_PROMPT  # re-rendered: what a local model is served
    assert example.user == USER
    assert json.loads(example.assistant) == ANSWER
    assert example.metadata is not None
    assert (example.metadata.model, example.metadata.language) == ("scripted", "python")


def test_scrubbed_final_result_falls_back_to_the_output_tool_call(tmp_path: Path) -> None:
    trace_file = tmp_path / "traces.jsonl"
    scrubbed = Scrub(
        OtlpJsonFileSpanExporter(trace_file),
        "final_result",
        lambda _: "[Scrubbed due to 'password']",
    )
    record_run(trace_file, 5, "instructions", exporter=scrubbed)

    report = otlp.ReadReport()
    (run,) = [r for s in otlp.read_spans([trace_file], report) if (r := agent_run_from_span(s))]
    assert run.output is not None and json.loads(run.output) == ANSWER
    assert not run.output_scrubbed


def test_scrubbed_prompt_makes_the_run_unusable_and_is_counted(tmp_path: Path) -> None:
    def scrub_user_prompt(all_messages: str) -> str:
        messages = json.loads(all_messages)
        for message in messages:
            for part in message["parts"]:
                if message["role"] == "user" and part.get("type") == "text":
                    part["content"] = "[Scrubbed due to 'API_KEY']"
        return json.dumps(messages)

    trace_file = tmp_path / "traces.jsonl"
    scrubbed = Scrub(
        OtlpJsonFileSpanExporter(trace_file), "pydantic_ai.all_messages", scrub_user_prompt
    )
    record_run(trace_file, 6, "system_prompt", exporter=scrubbed)
    record_run(trace_file, 6, "system_prompt")  # a good run beside it

    report = prepare_dataset([trace_file], output_file=tmp_path / "d.json", output_dir=None)
    assert (report.agent_runs, report.with_final_result) == (2, 2)
    assert (report.scrubbed, report.examples) == (1, 1)
