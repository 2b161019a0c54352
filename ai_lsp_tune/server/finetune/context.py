"""What a fine-tune job is given: its options, its view of the server, and its argument rules.

Kept apart from the job itself so handlers and tests can use them without the job's machinery.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from lsprotocol import types as lsp
from pygls.progress import Progress

from ai_lsp_tune.server.finetune.model_list import short_path
from ai_lsp_tune.server.settings import FinetuneSettings
from ai_lsp_tune.serving.adapters import adapter_base
from ai_lsp_tune.serving.registry import ModelEntry

MAX_PATH_BYTES, MAX_NAME_BYTES = 4096, 255  # Linux's PATH_MAX and NAME_MAX


class PathNotAllowed(ValueError):
    """A command argument points outside the workspace and the server's data dir."""


class JobBusy(RuntimeError):
    """A second fine-tune was asked for while one runs."""


class EditorLink(Protocol):
    """What the job asks of the language server (``server.language_server.AiLspServer``): to
    show and log messages, and to report work-done progress."""

    def window_show_message(self, params: lsp.ShowMessageParams) -> None: ...

    def window_log_message(self, params: lsp.LogMessageParams) -> None: ...

    def notify_user(self, level: str, message: str) -> None: ...

    @property
    def work_done_progress(self) -> Progress: ...


class Cancellable(Protocol):
    """A worker the job may stop mid-run (``training.runner.TrainingRunner``)."""

    def cancel(self) -> None: ...


class ModelSlot(Protocol):
    """What the job asks of the served model (``serving.served_model.ServedModel``), the one
    owner of which model serves and of the workspace's model registry."""

    @property
    def current_path(self) -> str | None: ...

    @property
    def previous_path(self) -> str | None: ...

    async def swap(self, model: str) -> None: ...

    async def use(self, path: str) -> None: ...

    async def rollback(self) -> str: ...

    async def remember(self, entry: ModelEntry) -> None: ...

    async def retain(self, keep: int, *, protect: set[str | None], runs_dir: Path) -> list[str]: ...


def resolve_allowed_path(
    raw: str, *, roots: list[Path], base: Path | None, elsewhere: str | None = None
) -> Path:
    """A path or file URI from a command argument, resolved; refused outside ``roots`` (the
    refusal says ``elsewhere``: how else to use such a file, first).

    Relative paths are taken from ``base`` (the workspace root). Symlinks are resolved first,
    so a link inside the workspace cannot point the server at files outside it.
    """
    text = raw.strip()
    if not text:
        raise PathNotAllowed("empty path argument")
    if text.startswith("file://"):
        text = unquote(urlparse(text).path)
    shown = repr(raw) if len(raw) <= 120 else repr(raw[:120]) + "..."
    if "\0" in text:
        raise PathNotAllowed(f"{shown} contains a NUL character; no file name can")
    if len(os.fsencode(text)) > MAX_PATH_BYTES or any(
        len(os.fsencode(part)) > MAX_NAME_BYTES for part in Path(text).parts
    ):
        raise PathNotAllowed(f"{shown} is too long to be a path")
    path = Path(text).expanduser()
    if not path.is_absolute():
        if base is None:
            raise PathNotAllowed(f"{shown} is relative and no workspace folder is open")
        path = base / path
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise PathNotAllowed(f"{shown} cannot be resolved: {exc}") from exc
    for root in roots:
        if resolved.is_relative_to(root.resolve()):
            return resolved
    allowed = " or ".join(str(root) for root in roots)
    advice = (
        f"{elsewhere}, or use a path under {allowed}"
        if elsewhere
        else f"use a path under {allowed}"
    )
    raise PathNotAllowed(f"{shown} is outside the workspace and the server's data dir; {advice}")


@dataclass
class FinetuneOptions:
    """One run's choices: settings, plus what the command's argument added."""

    settings: FinetuneSettings
    extra_traces: list[Path] = field(default_factory=list)
    resume: bool = True
    eval_max_tokens: int = 512  # the served model's answer budget (``maxTokens``)
    constrained_decoding: bool = True  # as the server decodes (``constrainedDecoding``)
    configured_model: str | None = None  # the ``model`` setting: the default base model
    continue_from_served: bool = False  # train on top of the served model instead of the base

    def base_model(self, serving: str | None) -> str | None:
        """What this run trains from: ``baseModel``, else the served or the configured model."""
        if self.settings.base_model:
            return _existing(self.settings.base_model, "aiLsp.finetune.baseModel")
        if self.continue_from_served or self.settings.continue_from_served:
            if adapter_base(serving):  # training would need base + adapter fused first
                raise ValueError(
                    "the served model is a LoRA adapter (aiLsp.finetune.fuse false), which "
                    "aiLsp.finetune.continueFromServed cannot train on; set "
                    "aiLsp.finetune.baseModel, or set aiLsp.finetune.fuse true and fine-tune again"
                )
            return serving
        return self.configured_model or serving


class NoLocalModel(RuntimeError):
    """Fine-tuning, swapping and rolling back need the local backend."""


@dataclass
class JobContext:
    """What the job reads from the server: its workspace, its traces, the served model.

    The job never changes the served model nor writes the model registry itself: it asks the
    served model (``ModelSlot``), which does both under its one lock.
    """

    data_dir: Path  # the workspace's folder in the server's data dir
    served: Callable[[], ModelSlot | None]  # None while the remote backend is in use
    own_traces: Callable[[], Awaitable[list[Path]]]  # flushes pending spans first
    show_message_request: Callable[[lsp.ShowMessageRequestParams], Awaitable[Any]]
    name_of: Callable[[str | None], str] = short_path  # a model's readable name for messages

    @property
    def record_path(self) -> Path:
        return self.data_dir / "finetune" / "last_run.json"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "finetune" / "runs"

    def served_model(self) -> ModelSlot:
        """The served local model, or a clear error when there is none."""
        served = self.served()
        if served is None:
            raise NoLocalModel(
                "no local model is being served (the remote backend is in use, or the local "
                'model failed to load); set "aiLsp.backend" to "local" first'
            )
        return served


def new_run_id() -> str:
    """Sortable and unique enough: ``20250101-120102-3fa2``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def _existing(model: str, setting: str) -> str:
    """``model`` when it is a hub name or a folder that exists; else refused at once, naming
    the setting (not minutes later, by the training worker, naming a CLI flag)."""
    local = os.path.isabs(model) or model.startswith(("./", "../", "~"))
    if local and not Path(model).expanduser().is_dir():
        raise ValueError(f"{setting}: no model folder at {model}; set it to an MLX model folder")
    return model
