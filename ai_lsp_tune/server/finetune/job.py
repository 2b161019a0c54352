"""Fine-tune on my traces: the job that closes the loop while the server keeps answering.

traces (own export + extra files) -> dataset (``dataset_step``, a child process) -> TrainingRunner
(``train_step``, a worker: train, evaluate candidate and served model on the test split, fuse) ->
the gate (``gate``) -> the served model swaps it in (``swaps``, the registry's only writer) -> a
message with metrics and "Roll back" (``messages``); ``flow`` runs those steps in order. Here: one
run at a time, its state in its record; every change is visible; a failure ends the progress
with its reason, the old model serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from lsprotocol import types as lsp

from ai_lsp_tune.hyperparams import misfit, setting
from ai_lsp_tune.server.finetune import swaps
from ai_lsp_tune.server.finetune.context import (
    Cancellable,
    EditorLink,
    FinetuneOptions,
    JobBusy,
    JobContext,
    new_run_id,
)
from ai_lsp_tune.server.finetune.dataset_step import DatasetStep
from ai_lsp_tune.server.finetune.flow import run_flow
from ai_lsp_tune.server.finetune.messages import (
    TITLE,
    FollowUps,
    started_message,
    status_line,
)
from ai_lsp_tune.server.finetune.progress import (
    ProgressChannel,
    ProgressMeter,
    ProgressStep,
    format_progress,
    progress_fields,
)
from ai_lsp_tune.server.finetune.states import (
    ACTIVE_STATES,
    FINAL_STATES,
    TRANSITIONS,
    FinetuneStatus,
    JobState,
    ProgressSnapshot,
    RecordFile,
    RunRecord,
    check_transition,
    resumable,
    run_inputs,
)

logger = logging.getLogger(__name__)


STOP_TIMEOUT_S = 5.0
_END_KIND = {
    JobState.FAILED: lsp.MessageType.Error,
    JobState.REJECTED: lsp.MessageType.Warning,
}
# The end of the progress in a few words (``aiLsp.outcome``); the summary line says the rest.
_OUTCOME = {
    JobState.SUCCEEDED: "now serving the fine-tuned model",
    JobState.REJECTED: "kept the current model",
    JobState.CANCELLED: "cancelled",
    JobState.FAILED: "failed",
}


class FinetuneJob:
    """The job slot: at most one run; its progress and its record (which holds its state)."""

    def __init__(self, ls: EditorLink, ctx: JobContext) -> None:
        self._ls = ls
        self.ctx = ctx
        self._record_file = RecordFile(ctx.record_path, ls.notify_user)
        self.record: RunRecord | None = self._record_file.load()
        if self.record is not None and self.record.state in ACTIVE_STATES:
            self.record.state = JobState.FAILED  # the server died mid-run: that run is over
            self.record.reason = "the server stopped while this run was active"
        self.meter = ProgressMeter()
        self._message: str | None = None
        self._fields: dict[str, Any] | None = None  # the structured side of ``_message``
        self._progress: ProgressChannel | None = None
        self._task: asyncio.Task[None] | None = None
        self.runner: Cancellable | None = None
        self.dataset = DatasetStep(
            lambda step, fraction: self.report(step, self.meter.preparing(fraction)),
            live=lambda: self.state == JobState.PREPARING,
        )
        self.cancel_requested = False
        self._resumed = False
        self._fresh_because: str | None = None
        self.follow_ups = FollowUps(ls, ctx.show_message_request)

    # --- the commands' side ----------------------------------------------------------------
    @property
    def state(self) -> JobState:
        return self.record.state if self.record is not None else JobState.IDLE

    @property
    def phase(self) -> str | None:
        return self.record.phase if self.record is not None else None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def progress_token(self) -> str | None:
        """The work-done progress token of the current (or last) attempt."""
        return self._progress.token if self._progress is not None else None

    def start(self, options: FinetuneOptions) -> str:
        """Begin a run in the background and return its id at once."""
        if self.active and self.record is not None:
            can_cancel = self.state in (JobState.PREPARING, JobState.TRAINING)
            raise JobBusy(
                f"a fine-tune is already in progress (run {self.record.run_id}, "
                f"{self._message or self.state}); "
                f"{'cancel it first or ' if can_cancel else ''}wait for it to finish"
            )
        serving = self.ctx.served_model().current_path
        resumed, self._fresh_because = resumable(self.record, options, serving)
        self._resumed = resumed is not None
        run_id = resumed.run_id if resumed else new_run_id()
        run_dir = Path(resumed.run_dir) if resumed else self.ctx.runs_dir / run_id
        base_model = options.base_model(serving)
        if not base_model:
            raise ValueError(
                'no model to fine-tune: set "aiLsp.finetune.baseModel" or "aiLsp.model"'
            )
        # Against the model's config.json (no load), before the dataset is even prepared.
        problem = misfit(base_model, options.settings.model_dump(), setting)
        if problem:
            raise ValueError(problem)
        self.record = RunRecord(
            run_id=run_id,
            state=self.state,
            started_at=time.time(),
            run_dir=str(run_dir),
            base_model=base_model,
            baseline_model=serving,
            examples=resumed.examples if resumed else None,
            inputs=run_inputs(options, base_model),
        )
        self.meter = ProgressMeter()
        self.cancel_requested = False
        token = f"ai-lsp.finetune/{run_id}/{secrets.token_hex(3)}"  # unique per attempt
        self._progress = ProgressChannel(self._ls, token, TITLE, self.cancel)
        self.transition(JobState.PREPARING, phase="preparing")
        self._task = asyncio.create_task(self._run(options, resume=resumed is not None))
        return run_id

    def cancel(self) -> bool:
        """Ask the run to stop (the worker keeps a checkpoint); False when nothing can stop."""
        if self.state not in (JobState.PREPARING, JobState.TRAINING):
            return False
        self.cancel_requested = True
        self.transition(JobState.CANCELLING)
        self.dataset.cancel()
        if self.runner is not None:
            self.runner.cancel()
        return True

    async def stop(self) -> None:
        """Server shutdown: stop the worker and wait for it, so no process is left behind."""
        if self._task is None or self._task.done():
            return
        self.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT_S)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    def status(self, *, starts_fresh: str | None = None) -> FinetuneStatus:
        """The JSON of ``ai-lsp.finetune.status`` (``starts_fresh``: why a checkpoint is not)."""
        served = self.ctx.served()
        progress = None
        if self.active and self._message is not None:
            progress = ProgressSnapshot(
                percentage=self.meter.percentage, message=self._message, fields=self._fields
            )
        serving = served.current_path if served else None
        return FinetuneStatus(
            state=self.state,
            phase=self.phase if self.active else None,
            run_id=self.record.run_id if self.record else None,
            progress=progress,
            last_run=self.record,
            served_model=serving,
            previous_model=served.previous_path if served else None,
            message=status_line(
                self.record, self.active, self._message, serving, self.ctx.name_of, starts_fresh
            ),
        )

    def started_message(self) -> str:
        """The reply to ``ai-lsp.finetune``: which run, from which model."""
        assert self.record is not None
        return started_message(
            self.record, resumed=self._resumed, fresh_because=self._fresh_because
        )

    # --- the run ---------------------------------------------------------------------------
    def transition(self, new: JobState, *, phase: str | None = None, reason: str = "") -> None:
        record = self.record
        assert record is not None  # a run's transitions follow ``start``
        check_transition(record.state, new)
        why = f" ({reason})" if reason else ""
        logger.info("fine-tune %s: %s -> %s%s", record.run_id, record.state, new, why)
        record.state = new
        if phase is not None:
            record.phase = phase
        if reason:
            record.reason = reason
        self._save()

    @property
    def run_id(self) -> str:
        return self.record.run_id if self.record else "-"

    def _save(self) -> None:
        if self.record is None:
            return
        self._record_file.save(self.record)

    def report(self, step: ProgressStep, percentage: int, *, cancellable: bool = True) -> None:
        self._message = format_progress(percentage, step)
        self._fields = progress_fields(percentage, step, self._message)
        if self._progress is not None:
            self._progress.report(
                percentage,
                self._message,
                phase=step.phase,
                cancellable=cancellable,
                fields=self._fields,
            )

    async def _run(self, options: FinetuneOptions, *, resume: bool) -> None:
        assert self._progress is not None and self.record is not None
        summary = "stopped"
        try:
            note = f"starting fresh: {self._fresh_because}" if self._fresh_because else None
            begun = f"0% · preparing the dataset{f' ({note})' if note else ''}"
            step = ProgressStep("preparing", note=note)
            await self._progress.begin(begun, fields=progress_fields(0, step, begun))
            summary = await run_flow(self, options, resume=resume)
        except asyncio.CancelledError:
            summary = "stopped: the server is shutting down"
            self.finish(JobState.CANCELLED, summary)
            raise
        except Exception as exc:
            logger.exception("fine-tune %s failed", self.run_id)
            summary = f"failed: {exc}"
            self.finish(JobState.FAILED, str(exc))
        finally:
            self.runner = None
            if self.record is not None:
                self.record.finished_at = time.time()
                self.record.summary = summary
                self._save()
            # A cancel has no follow-up message: its end state is shown, not only the bar's end.
            outcome = _OUTCOME.get(self.state, str(self.state))
            self._progress.end(
                summary,
                kind=_END_KIND.get(self.state, lsp.MessageType.Info),
                show=self.state == JobState.CANCELLED,
                fields=progress_fields(
                    self.meter.percentage, ProgressStep(str(self.state)), summary, outcome=outcome
                ),
            )

    def finish(self, state: JobState, reason: str) -> None:
        """Move to a final state from wherever the run stands (cancel and failure paths)."""
        if self.state in FINAL_STATES:
            logger.warning("fine-tune %s already ended (%s): %s", self.run_id, self.state, reason)
            return
        if state == JobState.CANCELLED and self.state in (JobState.PREPARING, JobState.TRAINING):
            self.transition(JobState.CANCELLING)
        if state not in TRANSITIONS[self.state]:
            state = JobState.FAILED
        self.transition(state, reason=reason)

    async def use_model(self, path: str) -> str:
        """Serve ``path`` (one change of model at a time); the old one stays if it cannot load."""
        self._refuse_while_swapping()
        return await swaps.use_model(self._ls, self.ctx, path)

    async def use_anyway(self, record: RunRecord) -> str:
        """The user overrode the gate: the run's model serves; its record and status say so."""
        assert record.candidate_model is not None
        await self.use_model(record.candidate_model)
        record.state, record.swapped, record.gate = JobState.SUCCEEDED, True, "used anyway"
        record.reason, record.summary = None, "used anyway: now serving the fine-tuned model"
        self._record_file.save(record)
        await swaps.remember(self.ctx, record)  # the model list marks it "used anyway"
        self.follow_ups.after_swap(record.metrics_before, record.metrics_after, self.rollback)
        return ""  # the follow-up says it, with its metrics and "Roll back"

    async def rollback(self) -> str:
        """Serve the model served before this one; return the line that says so."""
        self._refuse_while_swapping()
        return await swaps.rollback(self._ls, self.ctx)

    def _refuse_while_swapping(self) -> None:
        if self.state == JobState.SWAPPING:
            raise JobBusy("a fine-tuned model is being swapped in right now; try again shortly")
