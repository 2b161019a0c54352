"""A trace file recorded here, shaped like ``../shared/traces/ai-lsp-otel.jsonl``.

The real file is the original tool's: an editor session's pydantic-ai agent runs (most cancelled
while the user typed) inside logfire's ``analyze_document`` spans, batched by a Collector's file
exporter. This one is recorded the same way by real parts: a real pydantic-ai ``Agent`` (its
``FunctionModel`` answers through the output tool, or waits until the analysis is cancelled),
instrumented with the real OTel SDK, batched by a ``BatchSpanProcessor`` into our Collector-format
exporter (one flush, one line), with logfire's scrubbing of a secret-looking prompt. Tests read
it in a clean clone, where the real file is absent; ``TraceFacts`` says what each file holds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.instrumented import InstrumentationSettings

from ai_lsp_tune.prompts import SYSTEM_PROMPT, user_prompt
from ai_lsp_tune.schema import DiagnosticResult
from ai_lsp_tune.traces.agent_runs import RunFormat
from ai_lsp_tune.traces.exporter import OtlpJsonFileSpanExporter


@dataclass(frozen=True)
class TraceFacts:
    """What a trace file holds, as the tests that read it expect it."""

    path: Path
    lines: int
    spans: int
    agent_runs: int  # the rest were cancelled: no final result
    finished: int
    scrubbed: int  # logfire replaced a whole prompt: nothing to learn from
    examples: int
    over_max_seq_length: int  # at the default 2048 tokens: cropped into windows
    ungrounded: int  # issues whose snippet is not in the analysed code
    exact: int  # examples whose target is the whole final result
    names: frozenset[str]
    formats: frozenset[RunFormat]
    chunk_bytes: int  # cuts the file twice over into more than 20 chunks


def real_file_facts(path: Path) -> TraceFacts:
    return TraceFacts(
        path, lines=36, spans=353, agent_runs=31, finished=6, scrubbed=1, examples=5,
        over_max_seq_length=4, ungrounded=2, exact=4,
        names=frozenset({"main.py", "init.lua", "uv.lua"}),
        formats=frozenset({RunFormat.PYDANTIC_AI_EVENTS}), chunk_bytes=64 * 2**10,
    )  # fmt: skip


URI = "file:///home/dev/ai-lsp/{}"
# Long enough (about 19 and 14 KB) to go over 2048 tokens, as the real main.py and init.lua do.
MAIN_PY = "".join(
    f"def step_{i}(items, total):\n    for item in items:\n        total += item * {i}\n"
    f"    return total / len(items)\n\n\n"
    for i in range(180)
)
INIT_LUA = "".join(
    f"function M.setup_{i}(opts)\n  local config = vim.tbl_extend('force', M.defaults, opts)\n"
    f"  M.state[{i}] = config\n  return config\nend\n\n"
    for i in range(110)
)
UV_LUA = 'return {\n  dir = "~/code/uv.nvim",\n  opts = { notify_activate_venv = false },\n}\n'
SECRET_PY = 'import os\n\nAPI_KEY = os.environ["API_KEY"]\n'
DOCUMENTS = {  # name: (language, code)
    "main.py": ("python", MAIN_PY),
    "init.lua": ("lua", INIT_LUA),
    "uv.lua": ("lua", UV_LUA),
    "secret.py": ("python", SECRET_PY),
}


def _issue(snippet: str, message: str) -> dict[str, Any]:
    return {"issue_snippet": snippet, "severity": "warning", "message": message}


ANSWERS: dict[str, dict[str, Any]] = {
    "main-1": {"issues": [_issue("len(items)", "Division by zero on an empty list.")]},
    "main-2": {
        "issues": [
            _issue("total += item * 7", "Overflows for large inputs."),
            _issue("return total / len(items)", "Returns a float for integer input."),
        ]
    },
    "init-1": {"issues": [_issue("M.state[3] = config", "Shared state across setups.")]},
    "init-2": {  # two snippets the model made up: not in the file
        "issues": [
            _issue("vim.tbl_extend", "Opts may be nil."),
            _issue("vim.fn.system(cmd)", "Blocks the editor."),
            _issue("M.defaults", "Mutated by callers."),
            _issue("opts.args", "Not validated."),
        ]
    },
    "uv": {"issues": []},
    "secret": {"issues": [_issue("os.environ", "Read at import time.")]},
}

# Each inner list is one Collector batch (one line); "+" starts an editor session, "~name" is
# an analysis of `name` cancelled while the user typed, "name=answer" one that finished.
STORY = [
    ["+", "~main.py", "~main.py"],
    ["~main.py", "~main.py"],
    ["main.py=main-1"],
    ["~main.py", "~main.py"],
    ["+", "~init.lua"],
    ["~init.lua", "~init.lua"],
    ["~init.lua"],
    ["init.lua=init-1"],
    ["+", "~uv.lua"],
    ["~uv.lua", "~uv.lua"],
    ["~uv.lua"],
    ["uv.lua=uv"],
    ["+"],
    ["~main.py"],
    ["~main.py", "~main.py"],
    ["main.py=main-2"],
    ["+"],
    ["~init.lua"],
    ["~init.lua", "~init.lua"],
    ["~init.lua"],
    ["init.lua=init-2"],
    ["+"],
    ["~main.py"],
    ["~main.py"],
    ["~init.lua"],
    ["~init.lua"],
    ["+"],
    ["secret.py=secret"],
    ["+"],
]


class LogfireScrubbing(SpanExporter):
    """What logfire does before export: a string that looks secret becomes a placeholder."""

    MARK = "API_KEY"

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str) and value[:1] in "[{" and self.MARK in value:
            return json.dumps(self._scrub(json.loads(value)))
        if isinstance(value, str) and self.MARK in value:
            return f"[Scrubbed due to '{self.MARK}']"
        if isinstance(value, list):
            return [self._scrub(v) for v in value]
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        return value

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([self._scrubbed(span) for span in spans])

    def _scrubbed(self, s: ReadableSpan) -> ReadableSpan:
        return ReadableSpan(
            name=s.name, context=s.context, parent=s.parent, resource=s.resource,
            attributes={k: self._scrub(v) for k, v in (s.attributes or {}).items()},
            events=s.events, links=s.links, kind=s.kind, status=s.status,
            start_time=s.start_time, end_time=s.end_time,
            instrumentation_scope=s.instrumentation_scope,
        )  # fmt: skip

    def shutdown(self) -> None:
        self.inner.shutdown()


async def _record(path: Path) -> None:
    provider: TracerProvider | None = None
    for batch in STORY:
        if batch[0] == "+":
            if provider is not None:
                provider.shutdown()
            resource = Resource.create({"service.name": "ai-lsp", "service.version": "0.1.0"})
            provider = TracerProvider(resource=resource)
            # Exported only when flushed: one batch, one line, as in the real file.
            exporter = LogfireScrubbing(OtlpJsonFileSpanExporter(path))
            provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=10**9))
            logfire = provider.get_tracer("logfire", "4.14.2")
            agent = _agent(provider)
            _log(logfire, "Initializing AI Language Server")
        assert provider is not None
        for step in batch[1:] if batch[0] == "+" else batch:
            await _analysis(logfire, agent, step)
        provider.force_flush()
    assert provider is not None
    provider.shutdown()


_NEXT_ANSWER: list[str] = [""]  # the key of the answer the model gives next ("" waits)
_WAITING: list[asyncio.Event] = []  # set when the model waits: the analysis can be cancelled


def _agent(provider: TracerProvider) -> Agent[None, DiagnosticResult]:
    async def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        key = _NEXT_ANSWER[0]
        if not key:
            _WAITING[0].set()
            await asyncio.Event().wait()  # the user types on: this analysis is cancelled
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, ANSWERS[key])])

    agent = Agent(
        FunctionModel(answer, model_name="gemini-2.5-flash"),
        output_type=DiagnosticResult,
        system_prompt=SYSTEM_PROMPT,
    )
    agent.instrument = InstrumentationSettings(tracer_provider=provider)
    return agent


def _log(tracer: trace.Tracer, message: str, **attributes: Any) -> None:
    tracer.start_span(
        message, attributes={"logfire.span_type": "log", "logfire.msg": message, **attributes}
    ).end()


async def _analysis(logfire: trace.Tracer, agent: Agent[None, DiagnosticResult], step: str) -> None:
    cancelled = step.startswith("~")
    name, _, key = step.lstrip("~").partition("=")
    language, code = DOCUMENTS[name]
    uri = URI.format(name)
    if cancelled:
        _log(logfire, f"Document changed: {uri}")
    with logfire.start_as_current_span("analyze_document", attributes={"uri": uri}):
        _log(logfire, f"Starting AI analysis for {uri}")
        _NEXT_ANSWER[0], _WAITING[:] = key, [asyncio.Event()]
        run = asyncio.create_task(agent.run(user_prompt(language, code, name)))
        if cancelled:
            await _WAITING[0].wait()
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            _log(logfire, f"Analysis cancelled for {uri}")
            return
        result = await run
        found = len(result.output.issues)
        _log(logfire, f"AI analysis completed, found {found} issues")
    _log(logfire, f"Published {found} diagnostics for {uri}", uri=uri)


def record_trace_file(path: Path) -> TraceFacts:
    """Record the story into ``path`` and say what it holds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(_record(path))
    requests = [json.loads(line) for line in path.read_bytes().splitlines()]
    batches = [ss for r in requests for rs in r["resourceSpans"] for ss in rs["scopeSpans"]]
    runs = [step for batch in STORY for step in batch if step != "+"]
    return TraceFacts(
        path,
        lines=len(requests),
        spans=sum(len(batch["spans"]) for batch in batches),
        agent_runs=len(runs),
        finished=sum("=" in step for step in runs),
        scrubbed=1,  # secret.py
        examples=5,  # main.py twice, init.lua twice, uv.lua
        over_max_seq_length=4,  # main.py and init.lua
        ungrounded=2,  # init-2
        exact=4,  # all but init-2
        names=frozenset({"main.py", "init.lua", "uv.lua"}),
        formats=frozenset({RunFormat.PYDANTIC_AI}),
        chunk_bytes=4 * 2**10,
    )
