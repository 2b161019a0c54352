"""An OTel SDK span exporter that writes OTLP JSON lines exactly like the Collector's file exporter.

One ExportTraceServiceRequest per line (hex ids, 64-bit ints as strings, enums as numbers), so
`prepare-dataset` reads our own traces and a Collector's with the same code. The file is 0600 (it
holds source code), each batch is one ``write`` on an ``O_APPEND`` descriptor under an advisory
lock on the file, and it is size-rotated to ``name-<UTC timestamp>.jsonl`` backups (the Collector's
lumberjack naming), so several processes can share one trace file safely.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ai_lsp_tune.files import PRIVATE_FILE_MODE

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 50 * 2**20
DEFAULT_BACKUPS = 5
_BACKUP_TIME_FORMAT = "%Y-%m-%dT%H-%M-%S"  # + ".mmm", as lumberjack names backups


def spans_to_otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """The ExportTraceServiceRequest for ``spans`` as the Collector's JSON marshaler writes it."""
    # protobuf takes a few hundred ms to import: here it is paid on the span processor's thread,
    # at the first export, not by the language server's start (``initialize`` sets up telemetry).
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    request = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    for resource_spans in request.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                _hex_ids(span)
                for link in span.get("links", []):
                    _hex_ids(link)
    return request


def _hex_ids(item: dict[str, Any]) -> None:
    # protobuf's JSON mapping writes bytes as base64; OTLP/JSON wants lowercase hex ids.
    for key in ("traceId", "spanId", "parentSpanId"):
        if key in item:
            item[key] = base64.b64decode(item[key]).hex()


def backup_name(path: Path, when: datetime) -> Path:
    """``dir/name-2025-01-31T12-00-00.000.jsonl``: the Collector's rotated-backup name."""
    stamp = when.strftime(_BACKUP_TIME_FORMAT) + f".{when.microsecond // 1000:03d}"
    return path.with_name(f"{path.stem}-{stamp}{path.suffix}")


def backups_of(path: Path) -> list[Path]:
    """The rotated backups of ``path``, oldest first (their names sort by time)."""
    prefix, suffix = f"{path.stem}-", path.suffix
    found = [
        p
        for p in path.parent.glob(f"{prefix}*{suffix}")
        if p.name[len(prefix) : len(prefix) + 1].isdigit()
    ]
    return sorted(found)


class OtlpJsonFileSpanExporter(SpanExporter):
    """Append spans to ``path`` as OTLP JSON lines; rotate at ``max_bytes``, keep ``backups``.

    Use it behind a ``BatchSpanProcessor``. Errors (disk full, permissions) are logged and
    reported to the SDK as a failed export; they never propagate into the traced code.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backups: int = DEFAULT_BACKUPS,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if backups < 0:
            raise ValueError(f"backups must be zero or more, got {backups}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            request = spans_to_otlp_json(spans)
            line = (json.dumps(request, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
            with self._thread_lock:
                fd = self._locked_fd()
                try:
                    size = os.fstat(fd).st_size
                    if size > 0 and size + len(line) > self.max_bytes:
                        self._rotate()  # others waiting on the old file's lock reopen the path
                        fd = self._current_fd()
                    _write_all(fd, line)
                finally:
                    with contextlib.suppress(OSError):
                        fcntl.flock(fd, fcntl.LOCK_UN)
        except Exception:  # an exporter must never raise into the instrumented program
            log.exception("could not write spans to %s", self.path)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # every export is a completed write(2); nothing is buffered here

    def shutdown(self) -> None:
        with self._thread_lock:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _locked_fd(self) -> int:
        """Our descriptor for ``path``, exclusively locked, and still the file at ``path``."""
        while True:
            fd = self._current_fd()
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self._is_current(fd):
                return fd
            fcntl.flock(fd, fcntl.LOCK_UN)  # rotated away while we waited: reopen

    def _is_current(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def _current_fd(self) -> int:
        """Our descriptor for ``path``, reopened when another process has rotated it away."""
        if self._fd is not None:
            if self._is_current(self._fd):
                return self._fd
            os.close(self._fd)
            self._fd = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(
            self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE
        )
        return self._fd

    def _rotate(self) -> None:
        """Rename the full file to a backup while still holding its lock, then let go of it."""
        target = backup_name(self.path, datetime.now(UTC))
        while target.exists():  # two rotations in one millisecond (rotations are serialised)
            target = target.with_name(f"{target.stem}0{target.suffix}")
        os.replace(self.path, target)
        if self._fd is not None:
            os.close(self._fd)  # releases the lock: waiting writers now see a new file
            self._fd = None
        if self.backups == 0:
            target.unlink(missing_ok=True)
        for old in backups_of(self.path)[: -self.backups or None]:
            old.unlink(missing_ok=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
