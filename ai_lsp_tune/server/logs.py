"""Server logging: stderr or a file, never stdout (stdout carries the LSP messages)."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path


def setup_logging(log_file: Path | None = None, level: str = "INFO") -> None:
    """Send our logs (and pygls's warnings) to ``log_file`` or stderr."""
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("ai_lsp_tune").setLevel(level.upper())
    rpc = logging.getLogger("pygls.protocol.json_rpc")
    if not any(isinstance(f, ExpectedRefusals) for f in rpc.filters):
        rpc.addFilter(ExpectedRefusals())
    if not any(isinstance(f, LateCancels) for f in rpc.filters):
        rpc.addFilter(LateCancels())


class ExpectedRefusals(logging.Filter):
    """pygls logs every error answer at ERROR with a traceback; a refusal raised on purpose (an
    error the user is answered with: bad arguments, a model that cannot be used) is one INFO line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from pygls.exceptions import JsonRpcException, JsonRpcInternalError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, JsonRpcException) and not isinstance(exc, JsonRpcInternalError):
            record.msg, record.args = "refused (%s): %s", (exc.code, exc.message)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


class LateCancels(logging.Filter):
    """An editor cancels requests it no longer needs (code actions, hovers as the cursor moves);
    one answered just before its ``$/cancelRequest`` arrived is no longer known to pygls, which
    warns. The race is harmless (the answer was sent and is ignored), so it is logged at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == 'Cancel notification for unknown message id "%s"':
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger("ai_lsp_tune").isEnabledFor(logging.DEBUG)
        return True


class ClientLogHandler(logging.Handler):
    """Log records as ``window/logMessage`` at their own level (editors show them as such).

    Records from other threads are handed to the event loop; a record logged while one is
    being sent (pygls logging its own send) is dropped instead of recursing.
    """

    def __init__(self, send: Callable[[int, str], None], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._send = send
        self._loop = loop
        self._sending = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._sending, "active", False):
            return
        kind = _MESSAGE_TYPES.get(record.levelno, 4 if record.levelno < logging.INFO else 1)
        text = self.format(record)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._deliver(kind, text)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._deliver, kind, text)

    def _deliver(self, kind: int, text: str) -> None:
        self._sending.active = True
        try:
            self._send(kind, text)
        except Exception:  # the connection is gone: nowhere left to log to
            pass
        finally:
            self._sending.active = False


_MESSAGE_TYPES = {logging.ERROR: 1, logging.CRITICAL: 1, logging.WARNING: 2, logging.INFO: 3}


def log_to_client(send: Callable[[int, str], None], loop: asyncio.AbstractEventLoop) -> None:
    """Once the client is connected our logs go to it; stderr is kept for start-up only.

    A ``--log-file`` keeps receiving everything too.
    """
    root = logging.getLogger()
    handler = ClientLogHandler(send, loop)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    kept = [
        h
        for h in root.handlers
        if not (isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is sys.stderr)
    ]
    root.handlers[:] = [*kept, handler]
