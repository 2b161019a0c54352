"""Drive the real ``ai-lsp serve`` process over stdio with pytest-lsp's client."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Union

from lsprotocol import types
from pygls.protocol import default_converter
from pytest_lsp import LanguageClient, client_capabilities
from pytest_lsp.client import DEFAULT_CLIENT_FEATURES, register_lsp_features

SERVER_COMMAND = [sys.executable, "-m", "ai_lsp_tune.cli", "serve", "--log-level", "DEBUG"]


class Session:
    """A started server, its client, and every diagnostics notification it sent, in order."""

    def __init__(self, client: LanguageClient, workspace: Path) -> None:
        self.client = client
        self.workspace = workspace
        self.published: list[types.PublishDiagnosticsParams] = []
        self.progress_values: dict[str, list[Any]] = {}  # $/progress values as sent, by token
        self.versions: dict[str, int] = {}

    def uri(self, name: str) -> str:
        return (self.workspace / name).as_uri()

    def open(self, name: str, text: str, language: str = "python") -> str:
        uri = self.uri(name)
        self.versions[uri] = 1
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id=language, version=1, text=text
                )
            )
        )
        return uri

    def replace_all(self, uri: str, text: str) -> None:
        """A whole-document change, as an editor sends it."""
        self.versions[uri] += 1
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(
                    uri=uri, version=self.versions[uri]
                ),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)],
            )
        )

    def apply_edit(self, uri: str, edit: types.TextEdit) -> None:
        """Apply a code action's edit the way an editor does: an incremental didChange."""
        self.versions[uri] += 1
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(
                    uri=uri, version=self.versions[uri]
                ),
                content_changes=[
                    types.TextDocumentContentChangePartial(range=edit.range, text=edit.new_text)
                ],
            )
        )

    def diagnostics_sent(self, uri: str) -> list[Sequence[types.Diagnostic]]:
        return [p.diagnostics for p in self.published if p.uri == uri]

    async def wait_for(
        self, predicate: Callable[[], Any], *, timeout_s: float = 20.0, what: str = "condition"
    ) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")

    async def wait_for_diagnostics(
        self, uri: str, *, count: int = 1, timeout_s: float = 60.0
    ) -> Sequence[types.Diagnostic]:
        """The diagnostics of the ``count``-th publication for ``uri``.

        The first one waits for the backend to start (pydantic-ai and openai take ~4 s of CPU
        to import; 20 s and more on a loaded 2-core machine), hence the generous limit."""
        sent = await self.wait_for(
            lambda: len(self.diagnostics_sent(uri)) >= count and self.diagnostics_sent(uri),
            timeout_s=timeout_s,
            what=f"publication #{count} for {uri}",
        )
        return sent[count - 1]


def _converter() -> Any:
    """pygls's converter, except that a CodeAction carrying a command stays a CodeAction.

    lsprotocol's client-side hook reads any object with a ``command`` key as a Command; editors
    tell them apart by ``typeof command === "string"``, and so do we.
    """
    converter = default_converter()

    def code_action_or_command(obj: Any, _: type) -> types.Command | types.CodeAction:
        if isinstance(obj.get("command"), str):
            return converter.structure(obj, types.Command)
        return converter.structure(obj, types.CodeAction)

    converter.register_structure_hook(
        Union[types.Command, types.CodeAction],  # noqa: UP007 (the exact key lsprotocol uses)
        code_action_or_command,
    )
    return converter


async def start_session(
    workspace: Path,
    *,
    env: dict[str, str] | None = None,
    init_options: dict[str, Any] | None = None,
    capabilities: types.ClientCapabilities | None = None,
    client_name: str | None = None,
) -> Session:
    """Start ``ai-lsp serve`` and initialize it with ``workspace`` as the root."""
    client = LanguageClient(converter_factory=_converter)
    features = dict(DEFAULT_CLIENT_FEATURES)
    session = Session(client, workspace)
    default_publish = features[types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS]

    def publish(client: LanguageClient, params: types.PublishDiagnosticsParams) -> None:
        session.published.append(params)
        default_publish(client, params)

    features[types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS] = publish
    default_progress = features[types.PROGRESS]

    def progress(client: LanguageClient, params: types.ProgressParams) -> None:
        # As sent: pytest-lsp's typed reports keep only the standard fields.
        session.progress_values.setdefault(str(params.token), []).append(params.value)
        default_progress(client, params)

    features[types.PROGRESS] = progress
    register_lsp_features(client, features)
    await client.start_io(*SERVER_COMMAND, env={**os.environ, **(env or {})})
    await client.initialize_session(
        types.InitializeParams(
            capabilities=capabilities or client_capabilities("visual-studio-code"),
            root_uri=workspace.as_uri(),
            initialization_options=init_options,
            client_info=types.ClientInfo(name=client_name) if client_name else None,
        )
    )
    return session


async def stop_session(session: Session) -> None:
    await session.client.shutdown_session()
    await session.client.stop()
