"""Inside the worker: the event channel to the parent and the exceptions that end a run.

Kept apart from ``worker`` (which runs as ``__main__``) so every module raises and catches
the same classes.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from ai_lsp_tune.training.events import ErrorKind, WorkerEvent
from ai_lsp_tune.wire import encode_line


class WorkerError(Exception):
    """A failure with a kind and a one-sentence message for the user."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message


class Cancelled(Exception):
    """The run was asked to stop and saved a checkpoint."""


class EventChannel:
    """Writes events on the inherited pipe; a closed pipe (parent gone) stops the run."""

    def __init__(self, fd: int, stop: threading.Event) -> None:
        self._fd = fd
        self._stop = stop
        self._lock = threading.Lock()
        self._closed = False
        self.started = time.monotonic()
        self.last_checkpoint: tuple[int, Path] | None = None  # (iteration, folder)

    def emit(self, event: WorkerEvent, *, final: bool = False) -> None:
        event = event.model_copy(update={"elapsed_s": round(time.monotonic() - self.started, 3)})
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self._fd, encode_line(event))
            except (BrokenPipeError, OSError):
                self._stop.set()
            if final:
                self._closed = True
