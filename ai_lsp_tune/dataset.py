"""Trace files -> a clean training set: ``dataset.json`` and mlx-lm ``train/valid/test.jsonl``.

Streaming passes keep memory flat: the first reads the traces and writes every usable agent run
to a private temp file (remembering only small things: document URIs by span id, dismissed
feedback, source files); the second cleans each candidate (dismissed issues, secrets, snippet
grounding, duplicates, length) into dataset.json; the third writes the mlx-lm splits. Outputs
are written to temp names and renamed, so earlier outputs survive any failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel

from ai_lsp_tune.dataset_report import SPLITS, DatasetReport
from ai_lsp_tune.files import PRIVATE_FILE_MODE, atomic_writer, publish_dir
from ai_lsp_tune.redact import Redactor
from ai_lsp_tune.schema import DiagnosticResult, InvalidModelOutput, parse_diagnostic_result
from ai_lsp_tune.tokens import TokenCounter, estimate_counter
from ai_lsp_tune.traces import genai, otlp
from ai_lsp_tune.traces.agent_runs import AgentRun, agent_run_from_span, parse_user_prompt
from ai_lsp_tune.traces.skim import skim_and_decode

SPLIT_FILES = {split: f"{split}.jsonl" for split in SPLITS}
STATS_FILE = "stats.json"
_OUR_FILES = {*SPLIT_FILES.values(), STATS_FILE}
_URI_ATTRIBUTES = (genai.DOCUMENT_URI, "uri")  # ours; the original ai-lsp's analyze_document


class NoUsableTraces(ValueError):
    """Nothing in the traces could become a training example; the message says why."""

    def __init__(self, message: str, report: DatasetReport) -> None:
        super().__init__(message)
        self.report = report


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


def prepare_dataset(
    traces: list[Path],
    *,
    output_file: Path | None,
    output_dir: Path | None,
    max_seq_length: int = 2048,
    redact: bool = True,
    tokenizer: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> DatasetReport:
    """Read ``traces`` (files, folders, .gz) and write the cleaned dataset; return the counts.

    Raises otlp.TraceInputError for a missing input, NoUsableTraces when no example came out
    (earlier outputs are then left untouched), ValueError for an output folder we must not
    replace, and tokens.TokenizerUnavailable when ``tokenizer`` cannot be loaded.
    """
    if max_seq_length <= 0:
        raise ValueError(f"--max-seq-length must be positive, got {max_seq_length}")
    if output_dir is not None:
        _check_output_dir(output_dir)
    files = otlp.expand_trace_paths(traces)
    counter = estimate_counter() if tokenizer is None else TokenCounter.load(tokenizer)
    report = DatasetReport(max_seq_length=max_seq_length, redaction=redact)
    report.token_counter = counter.name
    # Temp files live beside the outputs, so the final renames stay on one file system.
    work_parent = (output_dir or output_file or Path("dataset")).resolve().parent
    work_parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".ai-lsp-dataset.", dir=work_parent))  # 0700
    dataset_tmp: Path | None = None
    try:
        state = _collect(files, work / "candidates.jsonl", report, on_progress)
        if report.usable == 0:
            raise NoUsableTraces(_nothing_usable(report), report)
        if output_file is not None:
            output_file.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{output_file.name}.", dir=output_file.parent)
            os.close(fd)
            dataset_tmp = Path(name)
        staging = work / "splits" if output_dir is not None else None
        cleaned = dataset_tmp or work / "dataset.json"
        _write_outputs(state, cleaned, staging, counter, report)
        if report.examples == 0:
            raise NoUsableTraces(_nothing_usable(report), report)
        if output_file is not None and dataset_tmp is not None:
            os.replace(dataset_tmp, output_file)
            report.output_file = str(output_file)
        if staging is not None and output_dir is not None:
            report.output_dir = str(output_dir)
            _write_json(staging / STATS_FILE, report.model_dump(mode="json"))
            publish_dir(staging, output_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if dataset_tmp is not None:
            dataset_tmp.unlink(missing_ok=True)
    return report


class _Collected:
    """Small things remembered from the first pass (never the examples themselves)."""

    def __init__(self, candidates: Path) -> None:
        self.candidates = candidates
        self.uri_by_span: dict[str, str] = {}
        self.dismissed: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self.file_keys: list[tuple[str, str, str]] = []  # (own uri, parent span, name)


def _collect(
    files: list[Path],
    candidates: Path,
    report: DatasetReport,
    on_progress: Callable[[int, int], None] | None,
) -> _Collected:
    state = _Collected(candidates)
    read = otlp.ReadReport()
    total = sum(_size(f) for f in files)
    formats: Counter[str] = Counter()
    unfinished = 0  # runs in skimmed lines; summed here, as pydantic's setattr is slow

    def skim(line: bytes) -> tuple[int, list[otlp.RawSpan]] | None:
        nonlocal unfinished
        skimmed = skim_and_decode(line)
        if skimmed is None:
            return None
        if skimmed.runs:
            unfinished += skimmed.runs
            formats[skimmed.run_format.value] += skimmed.runs
        if skimmed.uris:
            state.uri_by_span.update(skimmed.uris)
        return skimmed.spans, skimmed.decoded

    progress = _progress(on_progress, total)
    with _private_writer(candidates) as out:
        for span in otlp.read_spans(files, read, on_progress=progress, skim=skim):
            attrs = span.attributes
            run = agent_run_from_span(span)
            if run is None:
                if genai.is_feedback_span(span.name, attrs):
                    _remember_feedback(state, attrs, report)
                    continue
                uri = next((attrs[k] for k in _URI_ATTRIBUTES if isinstance(attrs.get(k), str)), "")
                if uri and span.span_id:
                    state.uri_by_span[span.span_id] = uri
                continue
            report.agent_runs += 1
            formats[run.format.value] += 1
            result = _usable_result(run, report)
            if result is None:
                continue
            report.usable += 1
            state.file_keys.append((run.document_uri, run.parent_span_id, run.document_name))
            out.write(json.dumps(_candidate(run, result), ensure_ascii=False) + "\n")
    report.agent_runs += unfinished
    report.no_final_result += unfinished
    report.runs_by_format = dict(formats)
    _copy_read_report(read, report)
    return state


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
    try:
        parse_diagnostic_result(run.output)
    except InvalidModelOutput:
        report.invalid_result += 1
        return None
    value = json.loads(run.output)
    return value if isinstance(value, dict) else None


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


def _remember_feedback(state: _Collected, attrs: dict[str, Any], report: DatasetReport) -> None:
    try:
        feedback = genai.feedback_from_attributes(attrs)
    except ValueError:
        return
    report.feedback_spans += 1
    if feedback.kind == "dismissed":
        key = (feedback.analysis_trace_id, feedback.analysis_span_id)
        state.dismissed.setdefault(key, []).append((feedback.issue_snippet, feedback.message))


def _write_outputs(
    state: _Collected,
    cleaned_path: Path,
    staging: Path | None,
    counter: TokenCounter,
    report: DatasetReport,
) -> None:
    """Pass 2 cleans candidates into ``cleaned_path`` (dataset.json) and puts the examples that
    fit ``max_seq_length`` aside in chat form; pass 3 copies those lines into the splits."""
    uris = state.uri_by_span
    keys = [uri or uris.get(parent, "") or name for uri, parent, name in state.file_keys]
    fitting: list[str] = []  # per example put aside: its source file
    seen: set[bytes] = set()
    aside = state.candidates.with_name("fitting.jsonl")
    with _private_writer(cleaned_path) as out, _private_writer(aside) as fits_out:
        for candidate, key in zip(_read_candidates(state.candidates), keys, strict=True):
            example = _clean(candidate, key, state, report)
            if example is None:
                continue
            digest = _content_digest(example)
            if digest in seen:
                report.duplicates += 1
                continue
            seen.add(digest)
            report.examples += 1
            out.write(example.model_dump_json() + "\n")
            messages = example.messages()
            tokens = counter.count(messages)
            if tokens > report.longest_tokens:
                report.longest_tokens = tokens
            if tokens > report.max_seq_length:
                report.over_max_seq_length += 1
            else:
                fitting.append(key)
                fits_out.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
    split_of = assign_splits(set(fitting))
    files_in: dict[str, set[str]] = {s: set() for s in SPLITS}
    for key in fitting:
        report.splits[split_of[key]] += 1
        files_in[split_of[key]].add(key)
    report.split_files = {s: len(files_in[s]) for s in SPLITS}
    if staging is None:
        return
    staging.mkdir(mode=0o700)
    with contextlib.ExitStack() as stack:
        split_out = {
            split: stack.enter_context(_private_writer(staging / name))
            for split, name in SPLIT_FILES.items()
        }
        with aside.open(encoding="utf-8", newline="\n") as lines:
            for key, line in zip(fitting, lines, strict=True):
                split_out[split_of[key]].write(line)


def _content_digest(example: Example) -> bytes:
    """Equal for examples with equal parsed content (0.x writes spaced JSON, 2.x compact)."""
    answer = json.dumps(json.loads(example.assistant), sort_keys=True)
    digest = hashlib.blake2b(digest_size=16)
    for part in (example.system, example.user, answer):
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.digest()


def _clean(
    candidate: dict[str, Any], key: str, state: _Collected, report: DatasetReport
) -> Example | None:
    """Dismissed issues out, secrets redacted, ungrounded issues out; None when nothing is left."""
    result, user = candidate["result"], candidate["user"]
    issues: list[Any] = list(result.get("issues", []))
    had_issues = bool(issues)
    meta = ExampleMetadata.model_validate(candidate["metadata"])
    dismissed = state.dismissed.get((meta.trace_id, meta.span_id), [])
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
    parts = parse_user_prompt(user)
    code = parts.code if parts else user
    grounded = [i for i in result["issues"] if _grounded(i, code)]
    report.issues_ungrounded += len(result["issues"]) - len(grounded)
    if had_issues and not grounded:
        report.dropped_ungrounded += 1
        return None
    result["issues"] = grounded
    DiagnosticResult.model_validate(result)  # still valid: only whole issues were removed
    meta.file = key
    assistant = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
    return Example(system=candidate["system"], user=user, assistant=assistant, metadata=meta)


def _grounded(issue: dict[str, Any], code: str) -> bool:
    snippet = issue.get("issue_snippet")
    return isinstance(snippet, str) and bool(snippet) and snippet in code


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


def assign_splits(files: set[str]) -> dict[str, str]:
    """train/valid/test per source file, from a hash of its path (80/10/10), never random.

    With few files the hash alone may leave train or valid empty; then the file whose hash lies
    nearest is moved, so the outcome still depends only on the set of files.
    """

    def bucket(key: str) -> int:
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 100

    split_of = {
        f: "train" if bucket(f) < 80 else "valid" if bucket(f) < 90 else "test" for f in files
    }
    members = {s: sorted((f for f in files if split_of[f] == s), key=bucket) for s in SPLITS}
    if not members["train"] and files:
        donor = max(SPLITS[1:], key=lambda s: len(members[s]))
        split_of[members[donor].pop(0)] = "train"
        members["train"] = [f for f in files if split_of[f] == "train"]
    if not members["valid"] and len(files) >= 2:
        donor = "train" if len(members["train"]) >= 2 else "test"
        if members[donor]:
            split_of[members[donor].pop()] = "valid"
    return split_of


def load_examples(path: Path) -> dict[str, list[Example]]:
    """Examples by split from a split folder, or from a dataset.json split the same way."""
    if path.is_dir():
        return {
            split: [_from_messages(m) for m in _json_lines(path / name)]
            for split, name in SPLIT_FILES.items()
        }
    examples = [Example.model_validate(row) for row in _json_lines(path)]
    split_of = assign_splits({e.source_file() for e in examples})
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for example in examples:
        out[split_of[example.source_file()]].append(example)
    return out


def _from_messages(row: dict[str, Any]) -> Example:
    by_role = {m["role"]: m["content"] for m in row["messages"]}
    return Example(
        system=by_role.get("system", ""), user=by_role["user"], assistant=by_role["assistant"]
    )


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not a JSON line ({exc.msg})") from exc


def _read_candidates(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


@contextlib.contextmanager
def _private_writer(path: Path) -> Iterator[IO[str]]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
        yield handle


def _write_json(path: Path, value: Any) -> None:
    with atomic_writer(path) as handle:
        json.dump(value, handle, indent=2)
        handle.write("\n")


def _check_output_dir(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output-dir {output_dir} is a file; pass a folder name")
    if output_dir.is_dir():
        foreign = sorted(p.name for p in output_dir.iterdir() if p.name not in _OUR_FILES)
        if foreign:
            raise ValueError(
                f"--output-dir {output_dir} holds other files ({', '.join(foreign[:3])}); "
                "it is replaced as a whole, so pass a new or dataset-only folder"
            )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _progress(
    on_progress: Callable[[int, int], None] | None, total: int
) -> Callable[[int], None] | None:
    if on_progress is None:
        return None
    done = 0

    def advance(raw_bytes: int) -> None:
        nonlocal done
        done += raw_bytes
        on_progress(done, total)

    return advance


def _copy_read_report(read: otlp.ReadReport, report: DatasetReport) -> None:
    report.files = read.files
    report.bytes_read = read.bytes_read
    report.lines = read.lines
    report.requests = read.requests
    report.lines_skimmed = read.skimmed
    report.spans = read.spans
    report.skipped_lines = dict(read.skipped)
    report.malformed_spans = read.bad_spans
    report.problems = [str(p) for p in read.problems]
    report.unusable_files = read.unusable_files


def _nothing_usable(report: DatasetReport) -> str:
    """One sentence saying why no example came out, pointing at the likely cause."""
    if report.requests == 0:
        where = "; ".join(report.unusable_files[:3]) or f"{report.files} file(s)"
        return (
            f"No OTLP trace data found ({where}); expected OTLP JSON lines as the "
            "OpenTelemetry Collector's file exporter writes them."
        )
    if report.agent_runs == 0:
        return (
            f"Read {report.spans} spans but found no agent run ('agent run' or "
            "'invoke_agent' spans of pydantic-ai, or ai-lsp analysis spans); was pydantic-ai "
            "instrumentation on when they were recorded?"
        )
    if report.usable == 0:
        return (
            f"Found {report.agent_runs} agent runs but none is usable: "
            f"{report.no_final_result} without a final result, {report.error_status} failed, "
            f"{report.scrubbed} scrubbed by logfire, {report.invalid_result} not a "
            "DiagnosticResult."
        )
    return (
        f"All {report.usable} usable runs were removed by cleaning (issues dismissed "
        "by the user or not found in the code, or duplicates)."
    )
