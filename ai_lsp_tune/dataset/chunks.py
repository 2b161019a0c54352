"""The first pass of `prepare-dataset` over a chunk of trace input: its usable runs, read.

A large plain trace file is cut at line starts into chunks that worker processes read at the
same time (``collect_chunk``), each writing the usable runs it finds to its own private temp
file. Once every chunk was read (a run's document URI or a dismissal may come later in the
input), ``clean.clean_chunk`` cleans each chunk's runs the same way. ``prepare`` merges the
small per-chunk results in input order, so counts, line numbers, duplicates and splits are
exactly what one sequential pass gives.
"""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ai_lsp_tune.dataset.example import ExampleMetadata
from ai_lsp_tune.dataset.report import DatasetReport
from ai_lsp_tune.files import private_binary_writer
from ai_lsp_tune.schema import DiagnosticResult, parse_json_text
from ai_lsp_tune.traces import genai, otlp
from ai_lsp_tune.traces.agent_runs import AgentRun, agent_run_from_span
from ai_lsp_tune.traces.skim import skim_and_decode

_URI_ATTRIBUTES = (genai.DOCUMENT_URI, "uri")  # ours; the original ai-lsp's analyze_document
RUN_COUNTS = (
    *("agent_runs", "no_final_result", "error_status", "with_final_result", "scrubbed"),
    *("invalid_result", "invalid_text", "usable", "feedback_spans", "local_answers"),
)


@dataclass(frozen=True)
class Chunk:
    """Lines of one trace file from byte ``start`` (a line start) to ``end`` (None: the end)."""

    path: Path
    start: int = 0
    end: int | None = None  # always None for .gz (read as a stream)
    size: int = 0  # on-disk bytes, for progress


@dataclass
class Collected:
    """What reading a chunk found, besides its candidates file: all small."""

    read: otlp.ReadReport
    lines: int = 0  # line numbers in ``read.problems`` count from the chunk's first line
    candidates: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    formats: Counter[str] = field(default_factory=Counter)
    uris: list[tuple[str, str]] = field(default_factory=list)  # (span id, URI), in input order
    dismissed: list[tuple[tuple[str, str], tuple[str, str]]] = field(default_factory=list)
    applied: list[tuple[str, str]] = field(default_factory=list)  # (trace, span): a fix applied
    file_keys: list[tuple[str, str, str]] = field(default_factory=list)  # (uri, parent, name)


def collect_chunk(
    chunk: Chunk, candidates: Path, on_progress: Callable[[int], None] | None = None
) -> Collected:
    """Read a chunk: counts, URIs and dismissals kept; usable runs written to ``candidates``."""
    found = Collected(read=otlp.ReadReport())
    report = DatasetReport()
    unfinished = 0  # runs in skimmed lines; summed here, as pydantic's setattr is slow

    def skim(line: bytes) -> tuple[int, list[otlp.RawSpan]] | None:
        nonlocal unfinished
        skimmed = skim_and_decode(line)
        if skimmed is None:
            return None
        if skimmed.runs:
            unfinished += skimmed.runs
            found.formats[skimmed.run_format.value] += skimmed.runs
        if skimmed.uris:
            found.uris.extend(skimmed.uris)
        return skimmed.spans, skimmed.decoded

    def spans() -> Iterator[otlp.Span]:
        found.lines = yield from otlp.read_range(
            chunk.path,
            found.read,
            start=chunk.start,
            end=chunk.end,
            on_progress=on_progress,
            skim=skim,
        )

    with private_binary_writer(candidates) as out:
        for span in spans():
            attrs = span.attributes
            try:
                run = agent_run_from_span(span)
            except _MALFORMED as exc:  # an attribute of the wrong type or shape
                _malformed(found.read, chunk.path, span, exc)
                continue
            if run is None:
                if genai.is_feedback_span(span.name, attrs):
                    _remember_feedback(found, attrs, report)
                    continue
                uri = next((attrs[k] for k in _URI_ATTRIBUTES if isinstance(attrs.get(k), str)), "")
                if uri and span.span_id:
                    found.uris.append((span.span_id, uri))
                continue
            report.agent_runs += 1
            found.formats[run.format.value] += 1
            result = _usable_result(run, report)
            if result is None:
                continue
            report.usable += 1
            report.local_answers += run.answered_locally
            found.candidates += 1
            found.file_keys.append((run.document_uri, run.parent_span_id, run.document_name))
            # Pickled: a private temp file read back by this package only, and far cheaper
            # than JSON for the long prompts.
            pickle.dump(_candidate(run, result), out, pickle.HIGHEST_PROTOCOL)
    report.agent_runs += unfinished
    report.no_final_result += unfinished
    found.counts = {name: getattr(report, name) for name in RUN_COUNTS}
    return found


_MALFORMED = (TypeError, ValueError, AttributeError, KeyError, OverflowError, RecursionError)


def _malformed(read: otlp.ReadReport, path: Path, span: otlp.Span, error: Exception) -> None:
    """Count a decoded span as malformed after all: it cannot be read as what it claims to be."""
    read.spans -= 1
    line = int(span.source.rsplit(":", 1)[1])
    read.bad_span(path, line, f"{span.name[:60]}: {type(error).__name__}")


def _usable_result(run: AgentRun, report: DatasetReport) -> dict[str, Any] | None:
    """The answer as parsed JSON, or None (counted) when the run cannot be an example."""
    if run.output is None:  # checked first: skimmed lines cannot tell a failure apart
        report.no_final_result += 1
        return None
    if run.failed:
        report.error_status += 1
        return None
    report.with_final_result += 1
    if run.output_scrubbed or run.prompt_scrubbed:
        report.scrubbed += 1
        return None
    try:  # parsed once: the target is this value, as compact JSON without a ```json fence
        value = parse_json_text(run.output)
        result = DiagnosticResult.model_validate(value)
    except (ValueError, RecursionError):  # not JSON, or not a DiagnosticResult
        report.invalid_result += 1
        return None
    if not all(_is_unicode(text) for text in (run.system, run.user, run.output)):
        report.invalid_text += 1
        return None
    if run.output_recovered:  # the model's raw tool arguments: any key order, fields left out
        return result.model_dump(mode="json")  # as the recorded answers are written
    return value if isinstance(value, dict) else None


def _is_unicode(text: str) -> bool:
    """False for text with an unpaired surrogate (``\\ud800`` in JSON): UTF-8 cannot hold it."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _candidate(run: AgentRun, result: dict[str, Any]) -> dict[str, Any]:
    seconds = run.start_time_unix_nano / 1e9
    return {
        "system": run.system,
        "user": run.user,
        "result": result,
        "metadata": ExampleMetadata(
            trace_id=run.trace_id,
            span_id=run.span_id,
            time=datetime.fromtimestamp(seconds, UTC).isoformat() if seconds else "",
            model=run.model,
            language=run.language,
            file=run.document_uri,
            format=run.format.value,
        ).model_dump(),
        "parent_span_id": run.parent_span_id,
        "document_name": run.document_name,
        "answered_locally": run.answered_locally,
    }


def _remember_feedback(found: Collected, attrs: dict[str, Any], report: DatasetReport) -> None:
    try:
        feedback = genai.feedback_from_attributes(attrs)
    except ValueError:
        return
    report.feedback_spans += 1
    key = (feedback.analysis_trace_id, feedback.analysis_span_id)
    if feedback.kind == "dismissed":
        found.dismissed.append((key, (feedback.issue_snippet, feedback.message)))
    elif feedback.kind == "fix_applied":
        found.applied.append(key)
