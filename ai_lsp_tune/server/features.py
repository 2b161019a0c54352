"""The language server: ``server``, with every feature and command registered on it.

Handlers are small: they read ``ls.state`` and delegate to ``analysis`` (diagnostics),
``actions`` (quick fixes, dismissals) and ``finetune.handlers`` (fine-tune and model commands).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
from typing import Any

from lsprotocol import types
from pygls.uris import to_fs_path

from ai_lsp_tune import blas
from ai_lsp_tune.server import actions, analysis, commands
from ai_lsp_tune.server.finetune import handlers as finetune
from ai_lsp_tune.server.finetune import model_export
from ai_lsp_tune.server.language_server import AiLspServer, connect_logs
from ai_lsp_tune.server.settings import SETTINGS_SECTION
from ai_lsp_tune.server.state import DocumentState, readable_text

server = AiLspServer()
logger = logging.getLogger(__name__)


@server.feature(types.INITIALIZE)
def initialize(ls: AiLspServer, params: types.InitializeParams) -> None:
    root = params.root_uri or (
        params.workspace_folders[0].uri if params.workspace_folders else None
    )
    root_path = to_fs_path(root) if root else params.root_path
    ls.state.client_name = params.client_info.name if params.client_info else None
    for problem in ls.state.initialize(root_path, params.initialization_options):
        ls.notify_user("warning", f"ai-lsp: invalid setting {problem}.")


@server.feature(types.INITIALIZED)
def initialized(ls: AiLspServer, params: types.InitializedParams) -> None:
    connect_logs(ls)
    logger.info("MLX's CPU matmuls run on: %s", blas.status().describe())  # the editor's output
    ls.state.on_model_changed = lambda: analysis.reanalyse_all(ls)
    ls.state.start_backend(ls.notify_user)


@server.feature(types.SHUTDOWN)
async def shutdown(ls: AiLspServer, params: None) -> None:
    await ls.state.shutdown()


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
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


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: AiLspServer, params: types.DidOpenTextDocumentParams) -> None:
    item = params.text_document
    text = readable_text(item.text)
    document = DocumentState(
        uri=item.uri,
        language=item.language_id,
        text=text,
        version=item.version,
        dismissed=ls.state.dismissed.setdefault(item.uri, set()),
    )
    ls.state.documents[item.uri] = document
    analysis.schedule(ls, document)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: AiLspServer, params: types.DidChangeTextDocumentParams) -> None:
    document = ls.state.documents.get(params.text_document.uri)
    if document is None:
        return
    old, new = document.text, readable_text(ls.workspace.get_text_document(document.uri).source)
    document.text, document.version = new, params.text_document.version
    actions.detect_applied_fixes(ls, document, old, new)
    analysis.schedule(ls, document)


@server.feature(types.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: AiLspServer, params: types.DidSaveTextDocumentParams) -> None:
    document = ls.state.documents.get(params.text_document.uri)
    if document is not None:
        analysis.schedule(ls, document, debounce=False, save=True)


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: AiLspServer, params: types.DidCloseTextDocumentParams) -> None:
    """Stop analysing it; its issues stay in the Problems list, as a linter's do."""
    document = ls.state.documents.pop(params.text_document.uri, None)
    if document is not None and document.task is not None:
        document.task.cancel()


@server.feature(
    types.TEXT_DOCUMENT_CODE_ACTION,
    types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.QuickFix]),
)
def code_action(ls: AiLspServer, params: types.CodeActionParams) -> list[types.CodeAction]:
    return actions.code_actions(ls, params)


@server.command(commands.DISMISS)
def dismiss(ls: AiLspServer, *args: Any) -> bool:
    usage = "[documentUri, diagnosticId]"
    dismissed = commands.parse_arguments(commands.DISMISS, commands.DismissArguments, args, usage)
    return actions.dismiss(ls, dismissed.document_uri, dismissed.diagnostic_id)


server.command(commands.FINETUNE)(finetune.start)
server.command(commands.FINETUNE_CANCEL)(finetune.cancel)
server.command(commands.FINETUNE_STATUS)(finetune.status)
server.command(commands.MODEL_LIST)(finetune.list_models)
server.command(commands.MODEL_USE)(finetune.use_model)
server.command(commands.MODEL_ROLLBACK)(finetune.rollback)
server.command(commands.MODEL_EXPORT)(model_export.export_model)


def _can_pull_configuration(ls: AiLspServer) -> bool:
    workspace = ls.client_capabilities.workspace
    return bool(workspace and workspace.configuration)


def run_stdio() -> None:
    """Serve over stdin/stdout until the client says exit."""
    server.start_io()
    leave_now(server.exit_code)


def leave_now(code: int = 0) -> None:
    """End the process as the interpreter would, less its teardown of every module and object:
    0.7 s of CPU per exit here (pydantic-ai, OpenTelemetry, ...), out of the 2 s an editor gives
    a server after ``exit``. The model host, worker and spans were closed by the shutdown."""
    for thread in threading.enumerate():  # as at exit: wait for threads that are not daemons
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # logging's flush and close among them
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(ValueError, OSError):  # the LSP writer closed stdout
            stream.flush()
    os._exit(code)


def run_tcp(host: str, port: int) -> None:
    """Serve one client over TCP (for debugging with an editor attached by hand)."""
    server.start_tcp(host, port)
