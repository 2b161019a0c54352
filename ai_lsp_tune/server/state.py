"""The one object that owns the server's state: settings, backend (served model), documents, job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from lsprotocol import types as lsp

from ai_lsp_tune import paths
from ai_lsp_tune.schema import SuggestedFix
from ai_lsp_tune.server.settings import (
    Settings,
    merge,
    settings_from_env,
    unwrap_section,
    validate_settings,
)
from ai_lsp_tune.serving.backend import Backend, LocalBackend, RemoteBackend
from ai_lsp_tune.serving.registry import ModelRegistry
from ai_lsp_tune.serving.runner import ModelLoadError
from ai_lsp_tune.serving.served_model import ServedModel
from ai_lsp_tune.shorten import NAME_CHARS, shorten
from ai_lsp_tune.traces.telemetry import Telemetry, default_trace_file

log = logging.getLogger(__name__)

Notify = Callable[[str, str], None]  # (level: "error"|"warning"|"info", message)


class JobSlot(Protocol):
    """The fine-tune job as the state sees it (``server/finetune/job.py``): stopped at shutdown."""

    async def stop(self) -> None: ...


@dataclass
class PublishedIssue:
    """A diagnostic we published, with what the code actions and feedback spans need."""

    id: str
    diagnostic: lsp.Diagnostic
    snippet: str
    message: str
    start: int
    end: int
    fixes: list[tuple[SuggestedFix, int, int]]  # fix, target start, target end (offsets)
    trace_id: str
    span_id: str


@dataclass
class DocumentState:
    """What the server tracks per open document."""

    uri: str
    language: str
    text: str = ""
    version: int | None = None
    task: asyncio.Task[None] | None = None
    pending_text: str | None = None  # the text the running analysis looks at
    answer_at: float = 0.0  # loop time its debounce ends (the model is asked then)
    analysed_text: str | None = None  # the text the published diagnostics belong to
    issues: dict[str, PublishedIssue] = field(default_factory=dict)
    unplaced: int = 0  # issues of the last answer whose snippet is not in the code (not shown)
    unusable_shown: int | None = None  # the version whose unusable answer the user was told of
    too_large_shown: bool = False  # the "over aiLsp.maxDocumentBytes" message, once per document
    # Issues the user dismissed, as (snippet, message, occurrence): not shown again after edits
    dismissed: set[tuple[str, str, int]] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]


LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def readable_text(text: str) -> str:
    """A document's text with lone UTF-16 surrogates (JSON allows ``"\\ud800"``; no UTF-8
    text can hold one) replaced by U+FFFD, one for one: positions and offsets stay the same."""
    return LONE_SURROGATE.sub("\ufffd", text)


class ServerState:
    """Settings, the analysis backend, documents, the fine-tune job slot, the workspace dir."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        self.init_options: dict[str, Any] = {}
        self.client_name: str | None = None  # clientInfo.name: "Neovim", "Visual Studio Code", ...
        self.settings, self.setting_problems = validate_settings(settings_from_env(self.environ))
        self.workspace_root: str | None = None
        self.workspace_dir = paths.workspace_dir(None)
        self.registry = ModelRegistry(self.workspace_dir)  # read here; the served model writes it
        self.telemetry = Telemetry.disabled()
        self.documents: dict[str, DocumentState] = {}
        self.dismissed: dict[str, set[tuple[str, str, int]]] = {}  # by URI: a reopen keeps them
        self.backend: Backend | None = None
        self.backend_error: str | None = None
        self.job: JobSlot | None = None  # the fine-tune job, made by its first command
        # Called when what answers changes (another backend or model): open documents are
        # analysed again, not left with the old model's diagnostics until the next edit.
        self.on_model_changed: Callable[[], None] | None = None
        self._backend_task: asyncio.Task[None] | None = None
        # (model, problem) pairs the user was told of: a fallback is shown once, not per analysis
        self.model_problems_shown: set[tuple[str, str]] = set()

    # --- settings -------------------------------------------------------------------------
    def initialize(self, workspace_root: str | None, init_options: Any) -> list[str]:
        """Take the workspace and ``initializationOptions``; return problems to show the user."""
        self.workspace_root = workspace_root
        self.workspace_dir = paths.workspace_dir(workspace_root)
        self.registry = ModelRegistry(self.workspace_dir)
        self.init_options = unwrap_section(init_options)
        self.settings, self.setting_problems = self._resolve({})
        self.telemetry = Telemetry.configure(
            enabled=self.settings.telemetry, trace_file=self.trace_file
        )
        return self.setting_problems

    def _resolve(self, changed: Mapping[str, Any]) -> tuple[Settings, list[str]]:
        # A null in a change is a setting the user removed: back to the environment or default,
        # not to the start-up value (VS Code's Settings UI deletes a key reset to its default).
        removed = {k for k, v in changed.items() if v is None}
        removed_finetune = {k for k, v in _finetune(changed).items() if v is None}
        init = {k: v for k, v in self.init_options.items() if k not in removed}
        if removed_finetune and isinstance(init.get("finetune"), dict):
            init["finetune"] = {
                k: v for k, v in init["finetune"].items() if k not in removed_finetune
            }
        kept = {k: v for k, v in changed.items() if v is not None}
        if "finetune" in kept:
            kept["finetune"] = {k: v for k, v in _finetune(kept).items() if v is not None}
        return validate_settings(merge(settings_from_env(self.environ), init, kept))

    @property
    def trace_file(self) -> Path:
        if self.settings.trace_file:
            return Path(self.settings.trace_file).expanduser()
        return default_trace_file(self.workspace_root)

    async def change_settings(self, changed: Any, notify: Notify) -> list[str]:
        """Apply ``workspace/didChangeConfiguration``; restart what the change concerns."""
        new, problems = self._resolve(unwrap_section(changed))
        old, self.settings = self.settings, new
        self.setting_problems = problems
        if (old.telemetry, old.trace_file) != (new.telemetry, new.trace_file):
            self.telemetry.shutdown()
            self.telemetry = Telemetry.configure(enabled=new.telemetry, trace_file=self.trace_file)
        if old.backend != new.backend or (
            new.backend == "remote" and old.remote_model != new.remote_model
        ):
            # One task from stop to start: an analysis that arrives meanwhile waits for the new one.
            switch = self._switch_backend(self._backend_task, notify)
            self._backend_task = asyncio.create_task(switch, name="backend-switch")
        elif new.backend == "local" and old.model != new.model:
            await self._switch_local_model(new.model, notify)
        return problems

    # --- backend --------------------------------------------------------------------------
    @property
    def served_model(self) -> ServedModel | None:
        """The local served model (swap/rollback go through it); None for a remote backend."""
        return self.backend.served if isinstance(self.backend, LocalBackend) else None

    def start_backend(self, notify: Notify) -> None:
        """Start the backend in the background; analyses wait for it."""
        self._backend_task = asyncio.create_task(self._start_backend(notify), name="backend-start")

    async def wait_backend(self) -> Backend | None:
        if self._backend_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._backend_task)
        return self.backend

    async def _switch_backend(self, previous: asyncio.Task[None] | None, notify: Notify) -> None:
        """Stop the backend in use (or its start), then start the one the settings name."""
        if previous is not None:
            previous.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await previous
        if self.backend is not None:
            backend, self.backend = self.backend, None
            await backend.close()
        await self._start_backend(notify)

    async def _start_backend(self, notify: Notify) -> None:
        self.backend_error = None
        # A damaged registry was set aside when read; its writes that fail warn from now on.
        self.registry.on_problem = lambda message: notify("warning", message)
        while self.registry.problems:
            notify("warning", self.registry.problems.pop(0))
        settings = self.settings
        if settings.backend == "remote":
            try:
                # Importing pydantic-ai takes seconds: never on the event loop, and never on
                # a thread an exit waits for (the editor kills a server 2 s after ``exit``).
                self.backend = await in_daemon_thread(RemoteBackend, settings.remote_model)
                self._model_changed()
            except Exception as exc:
                self._backend_failed(
                    notify,
                    f"ai-lsp: cannot use the remote model '{settings.remote_model}': {exc}. "
                    'Set "aiLsp.remoteModel" to a pydantic-ai model such as '
                    '"openai-chat:gpt-4o" and give its API key in the environment.',
                )
            return

        def fallback(model: str, exc: ModelLoadError) -> None:
            notify(
                "warning",
                f"ai-lsp: the fine-tuned model {model} failed to load "
                f"({exc.message}); serving {settings.model} instead.",
            )

        try:
            served = await ServedModel.for_workspace(
                settings.model, self.registry, on_fallback=fallback
            )
        except ModelLoadError as exc:
            log.error("the local model %s did not load: %s", exc.model, exc.message)
            self._backend_failed(notify, local_model_error(exc))
            return
        self.backend = LocalBackend(served, constrained=lambda: self.settings.constrained_decoding)
        served.on_switched = lambda _path: self._model_changed()
        log.info("serving %s", served.current_path)
        self._model_changed()
        await _warn_gguf(served.current_path, notify)

    def _model_changed(self) -> None:
        if self.on_model_changed is not None:
            self.on_model_changed()

    def _backend_failed(self, notify: Notify, message: str) -> None:
        self.backend = None
        self.backend_error = message
        log.error("%s", message)
        notify("error", message)

    async def _switch_local_model(self, model: str, notify: Notify) -> None:
        served = self.served_model
        if served is None:
            await self.stop_backend()
            self.start_backend(notify)
            return
        try:
            await served.configure(model)
            notify("info", f"ai-lsp: now serving {model}.")
            await _warn_gguf(served.current_path, notify)
        except ModelLoadError as exc:
            name = shorten(Path(served.current_path).name or served.current_path, 40)
            notify("error", f"{local_model_error(exc)}; still serving {name}")

    async def stop_backend(self) -> None:
        if self._backend_task is not None:
            self._backend_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._backend_task
            self._backend_task = None
        if self.backend is not None:
            backend, self.backend = self.backend, None
            await backend.close()

    # --- lifecycle ------------------------------------------------------------------------
    async def shutdown(self) -> None:
        """Cancel analyses, stop model hosts, flush spans."""
        if self.job is not None:  # stop the training worker first: no orphan process
            await self.job.stop()
        for document in self.documents.values():
            if document.task is not None:
                document.task.cancel()
        await self.stop_backend()
        self.telemetry.shutdown()


T = TypeVar("T")


async def in_daemon_thread(fn: Callable[..., T], *args: Any) -> T:
    """``asyncio.to_thread`` on a daemon thread: the process's exit never waits for it, where
    it waits for the default executor's threads (a 10 s import held the server past the 2 s an
    editor gives it after ``exit``, and the editor killed it). For work whose result is useless
    once the server exits: it is simply dropped."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(settle: Callable[[Any], None], value: Any) -> None:
        def settle_if_awaited() -> None:
            if not future.done():  # not cancelled meanwhile
                settle(value)

        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits for it
            loop.call_soon_threadsafe(settle_if_awaited)

    def work() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # delivered to the awaiting task, raised there
            deliver(future.set_exception, exc)
        else:
            deliver(future.set_result, result)

    threading.Thread(target=work, name=f"ai-lsp-{fn.__name__}", daemon=True).start()
    return await future


def _finetune(settings: Mapping[str, Any]) -> dict[str, Any]:
    nested = settings.get("finetune")
    return dict(nested) if isinstance(nested, Mapping) else {}


def local_model_error(exc: ModelLoadError) -> str:
    """The one message a user sees when the local model cannot be loaded: the setting first,
    then the model and the reason's first line (short: the log has the whole error)."""
    first = (exc.message.strip().splitlines() or [""])[0]
    reason = shorten(first.replace(f"'{exc.model}'", "it").replace(exc.model, "it"), 70)
    return (
        f'ai-lsp: set "aiLsp.model" (or AI_LSP_MODEL) to a local MLX model folder: '
        f"{shorten(exc.model, NAME_CHARS // 2)!r} did not load ({reason})"
    )


async def _warn_gguf(served: str, notify: Notify) -> None:
    """One warning when the model served is a GGUF whose conversion cost memory (K-quants
    dequantized) or that has no chat template: the host converted it and noted why."""
    from ai_lsp_tune.models.resolve import gguf_note

    source = Path(served).expanduser()
    if source.suffix.lower() != ".gguf":
        return
    note = await asyncio.to_thread(gguf_note, source)
    if note:
        notify("warning", f"ai-lsp: {note}")
