"""Workspace commands that close the loop: fine-tune, cancel, status, use a model, roll back.

Handlers are small: they validate their arguments, find the job slot in ``ls.state`` and
delegate to the job (``job.py``), which asks the served model for any change of model.
Refusals come back as a JSON-RPC error whose message says what to do; paths must lie inside
the workspace or the server's data dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException

from ai_lsp_tune import blas, paths
from ai_lsp_tune.models.resolve import gguf_note, is_gguf
from ai_lsp_tune.server import commands
from ai_lsp_tune.server.commands import (
    FinetuneArguments,
    InvalidArguments,
    ModelUseArguments,
    NoArguments,
    parse_arguments,
)
from ai_lsp_tune.server.finetune.context import (
    FinetuneOptions,
    JobBusy,
    JobContext,
    NoLocalModel,
    PathNotAllowed,
    resolve_allowed_path,
)
from ai_lsp_tune.server.finetune.job import FinetuneJob
from ai_lsp_tune.server.finetune.model_list import find_listed, model_list, model_name
from ai_lsp_tune.server.finetune.states import resumable
from ai_lsp_tune.server.language_server import AiLspServer
from ai_lsp_tune.server.settings import DEFAULT_LANGUAGES, FINETUNE_REFUSED
from ai_lsp_tune.serving.adapters import adapter_base
from ai_lsp_tune.traces.otlp import TraceInputError, expand_trace_paths

logger = logging.getLogger(__name__)

FINETUNE_USAGE = (
    'no argument or one object {"traces": [paths], "resume": bool, "force": bool, '
    '"continueFromServed": bool}'
)
MODEL_USE_USAGE = f"[modelPath] (a path from {commands.MODEL_LIST})"


class CommandRefused(JsonRpcException):
    """The command cannot run now or with these arguments; the message says why."""

    CODE = lsp.LSPErrorCodes.RequestFailed.value


async def start(ls: AiLspServer, *args: Any) -> dict[str, Any]:
    job = await _job(ls)
    options = _finetune_options(ls, args)
    invalid = [p for p in ls.state.setting_problems if p.endswith(FINETUNE_REFUSED)]
    if invalid and not job.active:
        problem = invalid[0].removesuffix("; " + FINETUNE_REFUSED)
        raise CommandRefused(f"invalid setting {problem}; fix it to fine-tune")
    if not job.active and not options.extra_traces and not await job.ctx.own_traces():
        raise CommandRefused(
            f"no traces to learn from yet: the server records its analyses to "
            f"{ls.state.trace_file}; use the editor with telemetry on for a while, or pass "
            '{"traces": [paths]} or set "aiLsp.finetune.extraTraces"'
        )
    with _refusals():
        run_id = job.start(options)
    return {
        "runId": run_id,
        "state": job.state.value,
        "progressToken": job.progress_token,
        "message": job.started_message(),
    }


_NOT_CANCELLED = {
    "cancelling": "The fine-tune is already being cancelled; it stops at its next step",
    "swapping": "The fine-tuned model is being swapped in and cannot be cancelled; roll back "
    "once it is serving to return to the previous model",
}


def cancel(ls: AiLspServer, *args: Any) -> dict[str, Any]:
    parse_arguments(commands.FINETUNE_CANCEL, NoArguments, args, "no arguments")
    job = _made_job(ls)
    cancelled = bool(job is not None and job.cancel())
    state = job.state.value if job is not None else "idle"
    if not cancelled:
        message = _NOT_CANCELLED.get(
            state, "No fine-tune is running, so there is nothing to cancel"
        )
        ls.window_log_message(lsp.LogMessageParams(type=lsp.MessageType.Info, message=message))
    else:
        message = "Cancelling the fine-tune; the next run resumes from its checkpoint"
    return {"cancelled": cancelled, "state": state, "message": message}


async def status(ls: AiLspServer, *args: Any) -> dict[str, Any]:
    parse_arguments(commands.FINETUNE_STATUS, NoArguments, args, "no arguments")
    job = await _job(ls, wait_backend=False)
    trace_file = ls.state.trace_file
    settings = ls.state.settings
    wire = job.status(starts_fresh=_starts_fresh(ls, job)).wire()
    served = wire.get("servedModel")
    note = None
    if isinstance(served, str) and served.lower().endswith(".gguf"):
        note = await asyncio.to_thread(gguf_note, Path(served).expanduser())
    return {
        **wire,
        "servedModelNote": note,  # a served GGUF's conversion: K-quants' memory, no template
        # what is in effect, for :checkhealth and status views
        "backend": settings.backend,
        "configuredModel": settings.model,
        "languages": list(settings.languages or DEFAULT_LANGUAGES),  # the ones analysed
        "traceFile": str(trace_file),
        "traceFileBytes": trace_file.stat().st_size if trace_file.is_file() else None,
        "blas": blas.status().describe(),  # what a local model's CPU matmuls run on
        # the last answers' issues whose snippet is not in the code (not shown), per file
        "issuesNotInCode": {d.name: d.unplaced for d in ls.state.documents.values() if d.unplaced},
    }


async def list_models(ls: AiLspServer, *args: Any) -> dict[str, Any]:
    parse_arguments(commands.MODEL_LIST, NoArguments, args, "no arguments")
    rows = _model_rows(ls)
    serving = next((r for r in rows if r["serving"]), None)
    now = f"; serving {serving['label']}" if serving else ""
    return {"models": rows, "message": f"{_plural(len(rows), 'model')}{now}"}


async def use_model(ls: AiLspServer, *args: Any) -> dict[str, Any]:
    wanted = parse_arguments(commands.MODEL_USE, ModelUseArguments, args, MODEL_USE_USAGE)
    listed = find_listed(_model_rows(ls), wanted.model_path)
    if listed is None:
        _allowed(ls, wanted.model_path)  # outside the workspace and data dir: refused as such
        raise InvalidArguments(
            f"{_shown(args)[1:-1]} is not one of this workspace's models; pick a path that "
            f"{commands.MODEL_LIST} returns (the base model or a fine-tune)"
        )
    local = Path(listed)
    loadable = (local / "config.json").is_file() or (local.is_file() and is_gguf(local))
    if local.is_absolute() and not loadable and not adapter_base(listed):
        raise CommandRefused(
            f"{listed} is not an MLX model folder (it has no config.json), a .gguf file "
            "nor a LoRA adapter"
        )
    job = await _job(ls)
    with _refusals():
        message = await job.use_model(listed)
    return {**job.status().wire(), "message": message}


async def rollback(ls: AiLspServer, *args: Any) -> dict[str, Any]:
    parse_arguments(commands.MODEL_ROLLBACK, NoArguments, args, "no arguments")
    job = await _job(ls)
    with _refusals():
        message = await job.rollback()
    return {**job.status().wire(), "message": message}


def _starts_fresh(ls: AiLspServer, job: FinetuneJob) -> str | None:
    """Why the next run would not resume the last, cancelled one (settings changed since)."""
    served = ls.state.served_model
    try:
        options = _finetune_options(ls, ())
        return resumable(job.record, options, served.current_path if served else None)[1]
    except (ValueError, JsonRpcException):  # a setting the run itself will refuse
        return None


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _model_rows(ls: AiLspServer) -> list[dict[str, Any]]:
    settings = ls.state.settings
    served = ls.state.served_model
    return model_list(
        ls.state.registry,
        base=settings.finetune.base_model or settings.model,
        serving=served.current_path if served else None,
    )


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """Turn the job's expected refusals into a CommandRefused with the same message."""
    from ai_lsp_tune.serving.runner import ModelLoadError
    from ai_lsp_tune.serving.served_model import NoPreviousModel

    try:
        yield
    except (JobBusy, NoLocalModel, NoPreviousModel, ModelLoadError, ValueError) as exc:
        raise CommandRefused(str(exc)) from exc


def _roots(ls: AiLspServer) -> list[Path]:
    """The data dir, and the workspace when it is a project (not ``/`` nor the home folder)."""
    roots = [paths.data_dir()]
    root = ls.state.workspace_root
    if root and paths.is_project_root(root):
        roots.insert(0, Path(root))
    return roots


def _allowed(ls: AiLspServer, raw: str, *, elsewhere: str | None = None) -> Path:
    root = ls.state.workspace_root
    base = Path(root) if root else None
    try:
        return resolve_allowed_path(raw, roots=_roots(ls), base=base, elsewhere=elsewhere)
    except PathNotAllowed as exc:
        message = str(exc)
        if root and not paths.is_project_root(root):
            message += (
                f" (the workspace {root} is the file system root or your home folder, "
                "not a project: open a project folder to use paths in it)"
            )
        raise InvalidArguments(message) from exc


def _shown(args: tuple[Any, ...]) -> str:
    """Arguments as a message shows them: never a 5,000-character path in full."""
    text = repr(list(args))
    return text if len(text) <= 200 else text[:200] + "...]"


def _finetune_options(ls: AiLspServer, args: tuple[Any, ...]) -> FinetuneOptions:
    """``[]`` or ``[{"traces": [...], "resume": true, "force": false}]``."""
    settings = ls.state.settings.finetune
    arguments = parse_arguments(commands.FINETUNE, FinetuneArguments, args, FINETUNE_USAGE)
    extra = _trace_files(ls, arguments.traces)
    base = Path(ls.state.workspace_root) if ls.state.workspace_root else Path.cwd()
    # extraTraces come from the user's own settings: resolved, not confined.
    extra += [(base / Path(t).expanduser()).resolve() for t in settings.extra_traces]
    if arguments.force is not None:
        settings = settings.model_copy(update={"force": arguments.force})
    return FinetuneOptions(
        settings=settings,
        extra_traces=extra,
        resume=arguments.resume,
        eval_max_tokens=ls.state.settings.max_tokens,
        constrained_decoding=ls.state.settings.constrained_decoding,
        configured_model=ls.state.settings.model,
        continue_from_served=arguments.continue_from_served,
    )


def _trace_files(ls: AiLspServer, traces: list[str]) -> list[Path]:
    """The trace files named, a folder as the files in it: each confined after its links are
    resolved (a link in a workspace folder cannot reach a file outside it)."""
    # A command's paths are confined; the user's own settings may name any file.
    named = [_allowed(ls, t, elsewhere="list it in aiLsp.finetune.extraTraces") for t in traces]
    missing = [str(p) for p in named if not p.exists()]
    if missing:
        listed = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise CommandRefused(f"{commands.FINETUNE}: no such trace file or folder: {listed}")
    files: list[Path] = []
    for path in named:
        if not path.is_dir():
            files.append(path)
            continue
        try:
            found = expand_trace_paths([path])
        except TraceInputError as exc:
            raise CommandRefused(f"{commands.FINETUNE}: {exc}") from exc
        files += [_allowed(ls, str(file)) for file in found]
    return files


async def _job(ls: AiLspServer, *, wait_backend: bool = True) -> FinetuneJob:
    """The job slot, created on first use (after ``initialize`` fixed the workspace)."""
    if wait_backend:
        await ls.state.wait_backend()
    job = _made_job(ls)
    if job is None or job.ctx.data_dir != ls.state.workspace_dir:
        job = FinetuneJob(ls, _context(ls))
        ls.state.job = job
    return job


def _made_job(ls: AiLspServer) -> FinetuneJob | None:
    """The job slot if a command made it (the state holds it as a ``JobSlot``)."""
    job = ls.state.job
    return job if isinstance(job, FinetuneJob) else None


def _context(ls: AiLspServer) -> JobContext:
    async def own_traces() -> list[Path]:
        from ai_lsp_tune.traces.exporter import backups_of

        telemetry = ls.state.telemetry
        await asyncio.to_thread(telemetry.flush)  # spans still buffered belong in the dataset
        trace_file = ls.state.trace_file
        files = [*backups_of(trace_file), trace_file]
        return [f for f in files if f.exists()]

    async def show_message_request(params: lsp.ShowMessageRequestParams) -> Any:
        return await ls.window_show_message_request_async(params)

    def name_of(path: str | None) -> str:
        settings = ls.state.settings
        base = settings.finetune.base_model or settings.model
        return model_name(path, ls.state.registry.models, base=base)

    return JobContext(
        data_dir=ls.state.workspace_dir,
        served=lambda: ls.state.served_model,
        own_traces=own_traces,
        show_message_request=show_message_request,
        name_of=name_of,
    )
