"""Inside the worker: the event channel to the parent and the exceptions that end a run.

Kept apart from ``worker`` (which runs as ``__main__``) so every module raises and catches
the same classes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ai_lsp_tune.training.protocol import ErrorKind, WorkerEvent
from ai_lsp_tune.wire import LineWriter


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
        self._events = LineWriter.to_fd(fd)
        self._stop = stop
        self._lock = threading.Lock()
        self._closed = False
        self.started = time.monotonic()
        self.last_checkpoint: tuple[int, Path] | None = None  # (iteration, folder)
        self.shares_stdout = fd == 1  # under our mlx.launch every rank's stdout is merged
        self._progress = True

    def follow(self, leader: bool) -> None:
        """Ranks other than 0 report only how they ended, and nothing on a shared stdout."""
        if not leader:
            self._progress = False
            self._closed = self.shares_stdout

    def emit(self, event: WorkerEvent, *, final: bool = False) -> None:
        event = event.model_copy(update={"elapsed_s": round(time.monotonic() - self.started, 3)})
        with self._lock:
            if self._closed or not (final or self._progress):
                return
            try:
                self._events.send(event)
            except (BrokenPipeError, OSError):
                self._stop.set()
            if final:
                self._closed = True
