"""Stream spans out of OTLP JSON-lines files, as the OpenTelemetry Collector's file exporter writes.

One ExportTraceServiceRequest per line (``resourceSpans -> scopeSpans -> spans``). Files are read
line by line with a bounded line length, so memory stays flat however large the input; ``.gz``
files (the Collector's compressed backups) are decompressed on the fly. Every line that cannot be
used is skipped and counted in a ``ReadReport`` with its file and line number: nothing raises on
bad input.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import zlib
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from ai_lsp_tune.traces.spans import BadField, RawSpan, Span, decode_span, raw_spans

DEFAULT_MAX_LINE_BYTES = 32 * 2**20
TRACE_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".gz")
_GZIP_MAGIC = b"\x1f\x8b"
_DRAIN_CHUNK = 1 << 20
_READ_BUFFER = 1 << 20  # trace lines are long: a bigger buffer makes readline copy less
MAX_LISTED_PROBLEMS = 20

# Reasons a line is skipped (the keys of ReadReport.skipped).
BLANK = "blank line"
TOO_LONG = "line too long"
NOT_UTF8 = "not UTF-8"
MALFORMED = "malformed JSON"
TRUNCATED = "truncated last line"
NOT_OTLP = "not an OTLP trace request"
BAD_SPAN = "malformed span"
UNREADABLE = "unreadable file"


Skim = Callable[[bytes], tuple[int, list[RawSpan]] | None]


class TraceInputError(ValueError):
    """A trace path given by the user does not exist or holds no trace files."""


@dataclass
class Problem:
    """A skipped line (or file), for the report: where and why."""

    path: str
    line: int
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class ReadReport:
    """What the reader saw: counts add up (``lines == requests + sum(skipped.values())``)."""

    files: int = 0
    empty_files: int = 0
    bytes_read: int = 0
    lines: int = 0
    requests: int = 0
    spans: int = 0
    skimmed: int = 0  # requests taken over by the caller's ``skim``
    skipped: Counter[str] = field(default_factory=Counter)
    bad_spans: int = 0
    problems: list[Problem] = field(default_factory=list)
    unusable_files: list[str] = field(default_factory=list)

    def skip(self, path: Path, line: int, reason: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        self._list(path, line, reason, detail)

    def bad_span(self, path: Path, line: int, detail: str) -> None:
        """A span that cannot be used (its line's other spans can)."""
        self.bad_spans += 1
        self._list(path, line, BAD_SPAN, detail)

    def _list(self, path: Path, line: int, reason: str, detail: str) -> None:
        if len(self.problems) < MAX_LISTED_PROBLEMS:
            self.problems.append(Problem(str(path), line, reason, detail))


def expand_trace_paths(paths: Iterable[Path]) -> list[Path]:
    """Files to read: given files as they are, folders searched for trace files (backups first).

    Raises TraceInputError for a path that does not exist, is not a regular file or folder, or
    is a folder with no trace file.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                (
                    p
                    for p in path.rglob("*")
                    if p.is_file()
                    and not p.name.startswith(".")
                    and p.name.lower().endswith(TRACE_SUFFIXES)
                ),
                key=_chronological,
            )
            if not found:
                raise TraceInputError(
                    f"no trace files (*.jsonl, *.json, *.gz) in folder {path}; "
                    "pass the Collector's output folder or the trace files themselves"
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():  # reading a pipe or /dev/zero would wait or go on for ever
            raise TraceInputError(
                f"{path} is not a regular file (a pipe, a device or a socket); "
                "pass trace files (.jsonl, .jsonl.gz) or folders of them"
            )
        else:
            raise TraceInputError(f"trace file not found: {path}")
    return files


_BACKUP_STAMP = re.compile(r"-(\d{4}-\d{2}-\d{2}T[\d.-]+)(?=\.)")


def _chronological(path: Path) -> tuple[str, str, int, str]:
    # "name-<timestamp>.jsonl" backups sort before "name.jsonl", oldest first.
    match = _BACKUP_STAMP.search(path.name)
    if match:
        base = path.name[: match.start()] + path.name[match.end() :]
        return (str(path.parent), base.removesuffix(".gz"), 0, match.group(1))
    return (str(path.parent), path.name.removesuffix(".gz"), 1, "")


def read_spans(
    paths: Iterable[Path],
    report: ReadReport,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    on_progress: Callable[[int], None] | None = None,
    skim: Skim | None = None,
) -> Iterator[Span]:
    """Every span in ``paths`` (already expanded files), in file order; problems go to ``report``.

    ``on_progress`` is called with the number of on-disk bytes consumed since its last call.
    ``skim`` may take over a raw line the caller needs only a few spans of: it returns the
    line's span count and the spans it decoded itself (the line is then counted as a request
    and only those spans are yielded), or None to have the line parsed as usual.
    """
    for path in paths:
        report.files += 1
        requests_before = report.requests
        lines = yield from read_range(
            path, report, max_line_bytes=max_line_bytes, on_progress=on_progress, skim=skim
        )
        note_file(path, report, lines, report.requests - requests_before)


def note_file(path: Path, report: ReadReport, lines: int, requests: int) -> None:
    """After a whole file was read (``lines`` lines, ``requests`` of them OTLP): is it usable?"""
    if lines == 0 and requests == 0:
        report.empty_files += 1
        report.unusable_files.append(f"{path}: empty file")
    elif requests == 0:
        report.unusable_files.append(f"{path}: no OTLP trace data in {lines} line(s)")


def is_gzip(path: Path) -> bool:
    """Whether ``path`` starts like a gzip file (read as a stream, never split)."""
    try:
        with open(path, "rb") as raw:
            return raw.read(2) == _GZIP_MAGIC
    except OSError:
        return False


def line_boundaries(path: Path, every: int) -> list[int]:
    """Offsets about ``every`` bytes apart where a line starts (0 first): where to split a file.

    Only for plain files; each offset is found by reading from the guess to the next newline.
    """
    bounds = [0]
    with open(path, "rb") as raw:
        size = os.fstat(raw.fileno()).st_size
        guess = every
        while guess < size:
            raw.seek(guess)
            at = guess
            while True:
                block = raw.read(_DRAIN_CHUNK)
                if not block:
                    return bounds  # no newline after the guess: the rest is one line
                newline = block.find(b"\n")
                if newline != -1:
                    at += newline + 1
                    break
                at += len(block)
            if at >= size:
                break
            bounds.append(at)
            guess = at + every
    return bounds


def read_range(
    path: Path,
    report: ReadReport,
    *,
    start: int = 0,
    end: int | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    on_progress: Callable[[int], None] | None = None,
    skim: Skim | None = None,
) -> Generator[Span, None, int]:
    """The spans of the lines from byte ``start`` (a line start) to ``end`` (None: the end).

    Line numbers in problems count from ``start``; returns the number of lines read. A range
    other than the whole file is only for plain files; ``.gz`` files are read whole.
    """
    lineno, position = 0, start
    try:
        with _open(path) as (handle, raw):
            if start:
                raw.seek(start)
            limit = None if end is None else end - start
            for lineno, line, size in _lines(handle, max_line_bytes, limit):
                report.lines += 1
                report.bytes_read += size
                if on_progress is not None:
                    now = raw.tell()
                    on_progress(now - position)
                    position = now
                if line is None:
                    report.skip(path, lineno, TOO_LONG, f"{size / 2**20:.1f} MiB")
                    continue
                skimmed = skim(line) if skim is not None else None
                if skimmed is not None:
                    count, decoded = skimmed
                    report.requests += 1
                    report.spans += count - len(decoded)
                    report.skimmed += 1
                    if decoded:
                        yield from _decoded_spans(decoded, path, lineno, report)
                    continue
                request = _parse_line(path, lineno, line, report)
                if request is not None:
                    report.requests += 1
                    yield from _spans_of(request, path, lineno, report)
    except (OSError, EOFError, zlib.error) as exc:  # unreadable, corrupt or cut-off gzip
        report.skip(path, lineno + 1, UNREADABLE, str(exc) or type(exc).__name__)
        report.lines += 1
    return lineno


@contextlib.contextmanager
def _open(path: Path) -> Iterator[tuple[IO[bytes], IO[bytes]]]:
    """(lines source, raw file): the raw file's position measures progress, also for .gz."""
    with open(path, "rb", buffering=_READ_BUFFER) as raw:
        if raw.read(2) == _GZIP_MAGIC:
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield cast(IO[bytes], unzipped), raw
        else:
            raw.seek(0)
            yield raw, raw


def _lines(
    handle: IO[bytes], max_line_bytes: int, limit: int | None = None
) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, line or None when longer than the limit, size in bytes).

    Stops after ``limit`` bytes (at the end of the line that reaches it) when one is given.
    """
    lineno, consumed = 0, 0
    while limit is None or consumed < limit:
        line = handle.readline(max_line_bytes + 1)
        if not line:
            return
        lineno += 1
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            size = len(line)
            while True:  # drain the rest of the line without keeping it
                chunk = handle.readline(_DRAIN_CHUNK)
                size += len(chunk)
                if not chunk or chunk.endswith(b"\n"):
                    break
            consumed += size
            yield lineno, None, size
        else:
            consumed += len(line)
            yield lineno, line, len(line)


def _parse_line(path: Path, lineno: int, line: bytes, report: ReadReport) -> dict[str, Any] | None:
    if not line.strip():
        report.skip(path, lineno, BLANK)
        return None
    try:
        value = json.loads(line)
    except UnicodeDecodeError as exc:
        report.skip(path, lineno, NOT_UTF8, f"byte {exc.start}")
        return None
    except json.JSONDecodeError as exc:
        reason = MALFORMED if line.endswith(b"\n") else TRUNCATED
        report.skip(path, lineno, reason, f"{exc.msg} at char {exc.pos}")
        return None
    except (RecursionError, ValueError) as exc:
        report.skip(path, lineno, MALFORMED, type(exc).__name__)
        return None
    if not isinstance(value, dict) or not isinstance(value.get("resourceSpans"), list):
        report.skip(path, lineno, NOT_OTLP, "no resourceSpans")
        return None
    return value


def _spans_of(
    request: dict[str, Any], path: Path, lineno: int, report: ReadReport
) -> Iterator[Span]:
    return _decoded_spans(raw_spans(request), path, lineno, report)


def _decoded_spans(
    decoded: Iterable[RawSpan], path: Path, lineno: int, report: ReadReport
) -> Iterator[Span]:
    source = f"{path}:{lineno}"
    for raw, scope_name, scope_version in decoded:
        try:
            span = decode_span(raw, scope_name, scope_version, source)
        except BadField as exc:
            report.bad_span(path, lineno, str(exc))
            continue
        except KeyError as exc:
            report.bad_span(path, lineno, f"no {exc.args[0]}")
            continue
        except (TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
            report.bad_span(path, lineno, type(exc).__name__)
            continue
        report.spans += 1
        yield span
