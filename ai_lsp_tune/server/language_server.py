"""``AiLspServer``: the pygls ``LanguageServer`` that owns the server's state and our stdio framing.

Its features and commands are registered in ``server/features.py``; handler modules (analysis,
actions, fine-tune commands) take it as their ``ls`` argument.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Mapping
from typing import BinaryIO

from lsprotocol import types
from pygls.io_ import StdoutWriter
from pygls.lsp.server import LanguageServer

from ai_lsp_tune import __version__
from ai_lsp_tune.server.jsonrpc import AiLspProtocol
from ai_lsp_tune.server.logs import log_to_client
from ai_lsp_tune.server.settings import in_client_terms
from ai_lsp_tune.server.state import ServerState
from ai_lsp_tune.server.stdio import FrameReader, stdin_chunks
from ai_lsp_tune.shorten import EDITOR_MESSAGE_CHARS, shorten

log = logging.getLogger(__name__)

_LEVELS = {
    "error": types.MessageType.Error,
    "warning": types.MessageType.Warning,
    "info": types.MessageType.Info,
}


class AiLspServer(LanguageServer):
    """The ai-lsp language server; everything it knows lives in ``self.state``."""

    protocol: AiLspProtocol

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__(
            "ai-lsp",
            __version__,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
            protocol_cls=AiLspProtocol,
        )
        self.state = ServerState(environ)
        self.exit_code = 0  # the LSP spec's: 1 when ``exit`` came without ``shutdown`` first

    def start_io(self, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
        """Serve over stdio with our framing (``server/stdio.py``) until exit or end of input."""
        self._stop_event = threading.Event()
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        try:
            asyncio.run(self._serve_stdio(stdin or sys.stdin.buffer))
        except BrokenPipeError:
            log.warning("the client closed its end of the connection; exiting")
        except SystemExit as exc:  # pygls's ``exit``: 0 after ``shutdown``, else 1
            self.exit_code = exc.code if isinstance(exc.code, int) else 0
        except KeyboardInterrupt:
            pass
        finally:
            self.shutdown()

    async def _serve_stdio(self, stdin: BinaryIO) -> None:
        frames = FrameReader(stdin_chunks(stdin, asyncio.get_running_loop()))
        try:
            while self._stop_event is None or not self._stop_event.is_set():
                body = await frames.next_body()
                if body is None:
                    log.info("the client closed stdin; exiting")
                    break
                try:
                    if not self.protocol.receive(body):
                        frames.reject(body)
                except Exception:  # a bug in one message's handling must not end the server
                    log.exception("could not handle a message")
        finally:  # however the loop ends, the model host and the training worker go with it
            await self.state.shutdown()

    def window_show_message(self, params: types.ShowMessageParams) -> None:
        """Every message a person reads names settings as they write them in their editor."""
        params.message = in_client_terms(params.message, self.state.client_name)
        super().window_show_message(params)

    async def window_show_message_request_async(
        self, params: types.ShowMessageRequestParams
    ) -> types.MessageActionItem | None:
        params.message = in_client_terms(params.message, self.state.client_name)
        return await super().window_show_message_request_async(params)

    def notify_user(self, level: str, message: str) -> None:
        """Show a message to the user (and log it whole): errors, invalid settings, model
        changes. A popup holds one short line: a longer message is cut, the log has it all."""
        shown = message
        if len(message) > EDITOR_MESSAGE_CHARS:
            shown = shorten(message) + " (more in the server log)"
        self.window_show_message(
            types.ShowMessageParams(type=_LEVELS.get(level, types.MessageType.Info), message=shown)
        )
        getattr(log, level if level in ("error", "warning") else "info")("%s", message)


def connect_logs(ls: AiLspServer) -> None:
    """From now on, log records reach the editor as window/logMessage at their level."""

    def send(kind: int, text: str) -> None:
        ls.window_log_message(types.LogMessageParams(type=types.MessageType(kind), message=text))

    log_to_client(send, asyncio.get_running_loop())
