"""One piece of `prepare-dataset`'s work: a chunk of trace input, read or cleaned.

A large plain trace file is cut at line starts into chunks that worker processes read at the
same time (``collect_chunk``), each writing the usable runs it finds to its own private temp
file. Once every chunk was read (a run's document URI or a dismissal may come later in the
input), the chunks are cleaned the same way (``clean_chunk``): dismissed issues, secrets,
grounding, the token count. ``dataset`` merges the small per-chunk results in input order, so
counts, line numbers, duplicates and splits are exactly what one sequential pass gives.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_json

from ai_lsp_tune.dataset.crop import answer_json, crop_example
from ai_lsp_tune.dataset.redact import Redactor
from ai_lsp_tune.dataset.report import DatasetReport
from ai_lsp_tune.dataset.tokens import TokenCounter, estimate_counter
from ai_lsp_tune.files import private_binary_writer
from ai_lsp_tune.prompts import code_of
from ai_lsp_tune.schema import DiagnosticResult, parse_json_text, snippet_grounded
from ai_lsp_tune.traces import genai, otlp
from ai_lsp_tune.traces.agent_runs import AgentRun, agent_run_from_span, parse_user_prompt
from ai_lsp_tune.traces.skim import skim_and_decode

_URI_ATTRIBUTES = (genai.DOCUMENT_URI, "uri")  # ours; the original ai-lsp's analyze_document
RUN_COUNTS = (
    *("agent_runs", "no_final_result", "error_status", "with_final_result", "scrubbed"),
    *("invalid_result", "invalid_text", "usable", "feedback_spans"),
)
CLEAN_COUNTS = (
    *("issues_dismissed", "dropped_all_dismissed", "issues_ungrounded", "dropped_ungrounded"),
    *("secrets_redacted", "examples_redacted"),
)
Dismissed = dict[tuple[str, str], list[tuple[str, str]]]  # (trace, span) -> [(snippet, message)]


class ExampleMetadata(BaseModel):
    trace_id: str = ""
    span_id: str = ""
    time: str = ""  # ISO 8601, UTC
    model: str = ""
    language: str = ""
    file: str = ""  # the document URI, or its name when no URI was recorded
    format: str = ""


class Example(BaseModel):
    """One training example: the prompt pair and the DiagnosticResult JSON to learn."""

    system: str
    user: str
    assistant: str
    metadata: ExampleMetadata | None = None

    def messages(self) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.user},
            {"role": "assistant", "content": self.assistant},
        ]

    def source_file(self) -> str:
        """What the split is keyed on: the document, so no file's code is in two splits."""
        if self.metadata and self.metadata.file:
            return self.metadata.file
        parts = parse_user_prompt(self.user)
        return parts.name if parts else hashlib.sha256(self.user.encode()).hexdigest()


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


@dataclass
class Cleaned:
    """A chunk's cleaned examples: two files, and per example what the merge needs."""

    counts: dict[str, int]
    examples: Path  # dataset.json lines, in candidate order
    chats: Path  # mlx-lm chat lines, the same examples
    # per example: content digest (hex), tokens, source file, bytes of its dataset.json line
    # and of its chat lines, how many chat lines (1; 0: too long to crop; more: windows)
    rows: list[tuple[str, int, str, int, int, int]] = field(default_factory=list)


def clean_chunk(
    candidates: Path,
    keys: list[str],
    dismissed: Dismissed,
    redaction: bool,
    cleaned: Path,
    counter: TokenCounter | None = None,
    max_seq_length: int | None = None,
) -> Cleaned:
    """Clean a chunk's candidates (``keys``: their source files) into two files beside
    ``cleaned``: the dataset.json lines and the chat lines of the splits.

    ``counter`` None: the estimate (picklable by name). An example longer than
    ``max_seq_length`` keeps its dataset.json line; its chat lines are its windows.
    """
    report = DatasetReport(redaction=redaction)
    counter = counter or estimate_counter()
    count = counter.count
    out = Cleaned({}, cleaned.with_suffix(".examples"), cleaned.with_suffix(".chats"))
    system_json = _LastJson()  # the system prompt repeats across examples
    with (
        candidates.open("rb") as pickled,
        private_binary_writer(out.examples) as examples,
        private_binary_writer(out.chats) as chats,
    ):
        for key in keys:
            example = _clean(pickle.load(pickled), key, dismissed, report)
            if example is None:
                continue
            system, user, result, assistant, metadata = example
            messages = [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
                {"role": "assistant", "content": assistant},
            ]
            # Each text is JSON-encoded once, for both lines and the digest: the dataset.json
            # line is what Example.model_dump_json writes (pydantic's encoder), the chat line
            # what json.dumps(ensure_ascii=False) writes (the same escapes; both tested).
            s, u, a = system_json(system), to_json(user), to_json(assistant)
            line = b"".join(
                [
                    *(b'{"system":', s, b',"user":', u, b',"assistant":', a),
                    *(b',"metadata":', to_json(metadata), b"}\n"),
                ]
            )
            chat = b"".join(
                [
                    *(b'{"messages": [{"role": "system", "content": ', s),
                    *(b'}, {"role": "user", "content": ', u),
                    *(b'}, {"role": "assistant", "content": ', a, b"}]}\n"),
                ]
            )
            examples.write(line)
            tokens, lines = count(messages), 1
            if max_seq_length is not None and tokens > max_seq_length:
                crops = crop_example(
                    system, user, result, count, max_seq_length, count_chars=counter.count_chars
                )
                crops = crops or []
                chat = b"".join(_chat_line(system_json(system), c.user, c.assistant) for c in crops)
                lines = len(crops)
            chats.write(chat)
            digest = _content_digest(s, u, result)
            out.rows.append((digest.hex(), tokens, key, len(line), len(chat), lines))
    out.counts = {name: getattr(report, name) for name in CLEAN_COUNTS}
    return out


def _chat_line(system_json: bytes, user: str, assistant: str) -> bytes:
    return b"".join(
        [
            *(b'{"messages": [{"role": "system", "content": ', system_json),
            *(b'}, {"role": "user", "content": ', to_json(user)),
            *(b'}, {"role": "assistant", "content": ', to_json(assistant), b"}]}\n"),
        ]
    )


class _LastJson:
    """``to_json(text)``, remembering the last text."""

    def __init__(self) -> None:
        self.text: str | None = None
        self.encoded = b""

    def __call__(self, text: str) -> bytes:
        if text != self.text:
            self.text, self.encoded = text, to_json(text)
        return self.encoded


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
    }


def _remember_feedback(found: Collected, attrs: dict[str, Any], report: DatasetReport) -> None:
    try:
        feedback = genai.feedback_from_attributes(attrs)
    except ValueError:
        return
    report.feedback_spans += 1
    if feedback.kind == "dismissed":
        key = (feedback.analysis_trace_id, feedback.analysis_span_id)
        found.dismissed.append((key, (feedback.issue_snippet, feedback.message)))


def _content_digest(system: bytes, user: bytes, result: dict[str, Any]) -> bytes:
    """Equal for examples with equal parsed content (0.x writes spaced JSON, 2.x compact).

    ``system`` and ``user``: the texts as JSON strings (one text, one encoding).
    """
    answer = json.dumps(result, sort_keys=True).encode()
    digest = hashlib.blake2b(digest_size=16)
    for part in (system, user, answer):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


CleanExample = tuple[str, str, dict[str, Any], str, dict[str, str]]


def _clean(
    candidate: dict[str, Any], key: str, dismissed_by_run: Dismissed, report: DatasetReport
) -> CleanExample | None:
    """Dismissed issues out, secrets redacted, ungrounded issues out; None when nothing is left.

    The example as (system, user, result, result as JSON, metadata as ExampleMetadata dumps it).
    """
    result, user = candidate["result"], candidate["user"]
    issues: list[Any] = list(result.get("issues", []))
    had_issues = bool(issues)
    meta = dict(candidate["metadata"])  # ExampleMetadata.model_dump(): field order kept
    dismissed = dismissed_by_run.get((meta["trace_id"], meta["span_id"]), [])
    if dismissed:
        kept = [i for i in issues if not _is_dismissed(i, dismissed)]
        report.issues_dismissed += len(issues) - len(kept)
        if had_issues and not kept:
            report.dropped_all_dismissed += 1
            return None
        issues = kept
    result = {**result, "issues": issues}
    if report.redaction:
        redactor = Redactor()
        redactor.learn(user)
        redactor.learn("\n".join(_strings(result)))
        if redactor.count:
            user = redactor.apply(user)
            result = _redact_value(result, redactor)
            report.secrets_redacted += redactor.count
            report.examples_redacted += 1
    code = code_of(user)
    grounded = [i for i in result["issues"] if snippet_grounded(i.get("issue_snippet"), code)]
    report.issues_ungrounded += len(result["issues"]) - len(grounded)
    if had_issues and not grounded:
        report.dropped_ungrounded += 1
        return None
    result["issues"] = grounded
    DiagnosticResult.model_validate(result)  # still valid: only whole issues were removed
    meta["file"] = key
    assistant = answer_json(result)
    return candidate["system"], user, result, assistant, meta


def _is_dismissed(issue: dict[str, Any], dismissed: list[tuple[str, str]]) -> bool:
    return any(
        issue.get("issue_snippet") == snippet and (not message or issue.get("message") == message)
        for snippet, message in dismissed
    )


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def _redact_value(value: Any, redactor: Redactor) -> Any:
    if isinstance(value, str):
        return redactor.apply(value)
    if isinstance(value, list):
        return [_redact_value(v, redactor) for v in value]
    if isinstance(value, dict):
        return {k: _redact_value(v, redactor) for k, v in value.items()}
    return value


def exit_with_parent(parent_alive: Connection, lifeline: Connection) -> None:
    """A worker's initializer: end the worker when the process that owns the pool is gone.

    A killed owner never tells its pool, and a worker waiting for work would wait forever. The
    owner holds the write end of a pipe (``lifeline``) and never writes: when it ends, however
    (SIGKILL included), the read end here sees end-of-file. That holds whatever the start method
    made the worker's parent (with forkserver it is the fork server, not the owner).
    """
    lifeline.close()  # a forked worker inherited the owner's write end: only the owner keeps it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the owner's cleanup handler, if forked

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            parent_alive.recv_bytes()  # nothing is ever sent: returns at the owner's end
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
