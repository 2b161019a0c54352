"""The language server: one pygls ``LanguageServer`` whose handlers read ``ls.state`` and delegate.

``create_server()`` builds it and registers every feature and command; the fine-tune commands
live in ``server/finetune_commands.py`` and are registered through its ``register(ls)``.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import threading
from collections.abc import Mapping
from typing import Any, BinaryIO

from lsprotocol import types
from pygls.io_ import StdoutWriter
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from ai_lsp_tune import __version__
from ai_lsp_tune.config import SETTINGS_SECTION
from ai_lsp_tune.server import actions, analysis, commands
from ai_lsp_tune.server.protocol import AiLspProtocol
from ai_lsp_tune.server.state import DocumentState, ServerState
from ai_lsp_tune.server.stdio import FrameReader, stdin_chunks

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

    def start_io(self, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
        """Serve over stdio with our framing (``server/stdio.py``) until exit or end of input."""
        self._stop_event = threading.Event()
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        try:
            asyncio.run(self._serve_stdio(stdin or sys.stdin.buffer))
        except BrokenPipeError:
            log.warning("the client closed its end of the connection; exiting")
        except (KeyboardInterrupt, SystemExit):
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

    def notify_user(self, level: str, message: str) -> None:
        """Show a message to the user (and log it): errors, invalid settings, model changes."""
        self.window_show_message(
            types.ShowMessageParams(
                type=_LEVELS.get(level, types.MessageType.Info), message=message
            )
        )
        getattr(log, level if level in ("error", "warning") else "info")("%s", message)


def connect_logs(ls: AiLspServer) -> None:
    """From now on, log records reach the editor as window/logMessage at their level."""
    from ai_lsp_tune.server.logs import log_to_client

    def send(kind: int, text: str) -> None:
        ls.window_log_message(types.LogMessageParams(type=types.MessageType(kind), message=text))

    log_to_client(send, asyncio.get_running_loop())


def create_server(environ: Mapping[str, str] | None = None) -> AiLspServer:
    """The server with all its features and commands registered."""
    ls = AiLspServer(environ)
    _register_features(ls)
    _register_optional_commands(ls)
    return ls


def _can_pull_configuration(ls: AiLspServer) -> bool:
    workspace = ls.client_capabilities.workspace
    return bool(workspace and workspace.configuration)


def _register_optional_commands(ls: AiLspServer) -> None:
    try:
        module = importlib.import_module("ai_lsp_tune.server.finetune.commands")
    except ModuleNotFoundError as exc:
        if exc.name != "ai_lsp_tune.server.finetune.commands":
            raise
        log.debug("fine-tune commands not available")
        return
    module.register(ls)


def _register_features(ls: AiLspServer) -> None:
    @ls.feature(types.INITIALIZE)
    def initialize(ls: AiLspServer, params: types.InitializeParams) -> None:
        root = params.root_uri or (
            params.workspace_folders[0].uri if params.workspace_folders else None
        )
        root_path = to_fs_path(root) if root else params.root_path
        for problem in ls.state.initialize(root_path, params.initialization_options):
            ls.notify_user("warning", f"ai-lsp: invalid setting {problem}.")

    @ls.feature(types.INITIALIZED)
    def initialized(ls: AiLspServer, params: types.InitializedParams) -> None:
        connect_logs(ls)
        ls.state.start_backend(ls.notify_user)

    @ls.feature(types.SHUTDOWN)
    async def shutdown(ls: AiLspServer, params: None) -> None:
        await ls.state.shutdown()

    @ls.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(
        ls: AiLspServer, params: types.DidChangeConfigurationParams
    ) -> None:
        settings = params.settings
        if not settings and _can_pull_configuration(ls):
            # A client that only signals "something changed" is asked for our section.
            pulled = await ls.workspace_configuration_async(
                types.ConfigurationParams(items=[types.ConfigurationItem(section=SETTINGS_SECTION)])
            )
            settings = pulled[0] if pulled else None
        for problem in await ls.state.change_settings(settings, ls.notify_user):
            ls.notify_user("warning", f"ai-lsp: invalid setting {problem}.")

    @ls.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: AiLspServer, params: types.DidOpenTextDocumentParams) -> None:
        item = params.text_document
        document = DocumentState(
            uri=item.uri, language=item.language_id, text=item.text, version=item.version
        )
        ls.state.documents[item.uri] = document
        analysis.schedule(ls, document)

    @ls.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: AiLspServer, params: types.DidChangeTextDocumentParams) -> None:
        document = ls.state.documents.get(params.text_document.uri)
        if document is None:
            return
        old, new = document.text, ls.workspace.get_text_document(document.uri).source
        document.text, document.version = new, params.text_document.version
        actions.detect_applied_fixes(ls, document, old, new)
        analysis.schedule(ls, document)

    @ls.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: AiLspServer, params: types.DidSaveTextDocumentParams) -> None:
        document = ls.state.documents.get(params.text_document.uri)
        if document is not None:
            analysis.schedule(ls, document, debounce=False)

    @ls.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: AiLspServer, params: types.DidCloseTextDocumentParams) -> None:
        document = ls.state.documents.pop(params.text_document.uri, None)
        if document is not None and document.task is not None:
            document.task.cancel()
        ls.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[])
        )

    @ls.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.QuickFix]),
    )
    def code_action(ls: AiLspServer, params: types.CodeActionParams) -> list[types.CodeAction]:
        return actions.code_actions(ls, params)

    @ls.command(commands.DISMISS)
    def dismiss(ls: AiLspServer, *args: Any) -> bool:
        if len(args) != 2 or not all(isinstance(a, str) for a in args):
            raise commands.InvalidArguments(
                f"{commands.DISMISS} takes [documentUri, diagnosticId], got {list(args)!r:.200}"
            )
        return actions.dismiss(ls, args[0], args[1])


def run_stdio() -> None:
    """Serve over stdin/stdout until the client says exit."""
    create_server().start_io()


def run_tcp(host: str, port: int) -> None:
    """Serve one client over TCP (for debugging with an editor attached by hand)."""
    create_server().start_tcp(host, port)


__all__ = ["AiLspServer", "create_server", "run_stdio", "run_tcp"]
