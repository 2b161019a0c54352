"""A fine-tune run's flow, step by step: the dataset (a child process), the training worker,
the gate, the swap. ``job.py`` holds the slot, the record and the progress; this module, what a
run does with them, in order. Returns the line that ends the progress.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Protocol

from ai_lsp_tune.dataset.runner import PreparationFailed
from ai_lsp_tune.server.finetune import swaps
from ai_lsp_tune.server.finetune.context import Cancellable, FinetuneOptions, JobContext
from ai_lsp_tune.server.finetune.dataset_step import DatasetStep
from ai_lsp_tune.server.finetune.gate import judge
from ai_lsp_tune.server.finetune.messages import FollowUps
from ai_lsp_tune.server.finetune.progress import ProgressMeter, ProgressStep, describe_change
from ai_lsp_tune.server.finetune.states import JobState, RunRecord
from ai_lsp_tune.server.finetune.train_step import (
    TrainOutcome,
    launch_of,
    remove_stale_partials,
    train_candidate,
)
from ai_lsp_tune.training.protocol import TrainRequest

logger = logging.getLogger("ai_lsp_tune.server.finetune.job")  # one log name for a run


class FlowJob(Protocol):
    """The job slot as a run's flow sees it (``job.FinetuneJob``): its record, its progress, its
    state changes, the worker it may cancel, and what the follow-up messages offer."""

    ctx: JobContext
    record: RunRecord | None
    meter: ProgressMeter
    dataset: DatasetStep
    runner: Cancellable | None
    cancel_requested: bool
    follow_ups: FollowUps

    @property
    def run_id(self) -> str: ...

    def transition(self, new: JobState, *, phase: str | None = None, reason: str = "") -> None: ...

    def finish(self, state: JobState, reason: str) -> None: ...

    def report(self, step: ProgressStep, percentage: int, *, cancellable: bool = True) -> None: ...

    async def use_anyway(self, record: RunRecord) -> str: ...

    async def rollback(self) -> str: ...


async def run_flow(job: FlowJob, options: FinetuneOptions, *, resume: bool) -> str:
    """The run itself; returns the line that ends the progress."""
    record = job.record
    assert record is not None
    run_dir = Path(record.run_dir)
    dataset_dir = run_dir / "dataset"
    if not resume:
        stale = await asyncio.to_thread(remove_stale_partials, job.ctx.runs_dir, run_dir)
        if stale:
            logger.info("removed the partial outputs of earlier runs: %s", stale)
        try:
            await _prepare(job, options, dataset_dir)
        except PreparationFailed as exc:
            if not job.cancel_requested:
                raise
            logger.info("preparation stopped: %s", exc)
    else:
        job.report(ProgressStep("preparing", note="resuming"), job.meter.preparing(1.0))
    if job.cancel_requested:
        job.finish(JobState.CANCELLED, "before training started")
        return "Fine-tune cancelled before training started; the next run starts over"

    job.transition(JobState.TRAINING, phase="loading")
    outcome = await _train(job, options, dataset_dir, run_dir / "output", resume)
    if job.cancel_requested or outcome.cancelled:
        record.resumable = outcome.checkpoint_kept
        if outcome.checkpoint_kept:
            job.finish(JobState.CANCELLED, "the next run resumes from its checkpoint")
            at = job.meter.percentage
            return f"Fine-tune cancelled at {at}%; the next run resumes from its checkpoint"
        job.finish(JobState.CANCELLED, "before the first checkpoint")
        return "Fine-tune cancelled before its first checkpoint; the next run starts over"
    if outcome.error is not None:
        job.finish(JobState.FAILED, outcome.error)
        return f"failed: {outcome.error}; still serving {record.baseline_model}"

    record.candidate_model = str(outcome.model_path)
    record.metrics_before, record.metrics_after = outcome.metrics_before, outcome.metrics_after
    why = judge(record, options.settings, not_worse=outcome.not_worse)
    await swaps.remember(job.ctx, record)
    change = describe_change(record.metrics_before, record.metrics_after)
    if why is not None:
        job.transition(JobState.REJECTED, reason=f"{why}; not swapped")
        await swaps.retain(job.ctx, record, options)
        job.follow_ups.after_rejection(why, record, lambda: job.use_anyway(record))
        return f"Kept the current model: {why} ({change})"

    job.transition(JobState.SWAPPING, phase="swapping")
    job.report(
        ProgressStep("swapping", note="loading the new model"),
        job.meter.swapping(0.1),
        cancellable=False,
    )
    try:
        await job.ctx.served_model().swap(record.candidate_model)
    except Exception as exc:
        reason = f"the new model failed to load ({exc}); still serving {record.baseline_model}"
        job.transition(JobState.FAILED, reason=reason)
        return f"failed: {reason}"
    record.swapped = True
    job.meter.finish()
    job.transition(JobState.SUCCEEDED, phase="done")
    await swaps.retain(job.ctx, record, options)
    job.follow_ups.after_swap(record.metrics_before, record.metrics_after, job.rollback)
    return f"100% · now serving the fine-tuned model ({change})"


async def _prepare(job: FlowJob, options: FinetuneOptions, dataset_dir: Path) -> None:
    assert job.record is not None
    traces = [*await job.ctx.own_traces(), *options.extra_traces]
    job.record.examples, note = await job.dataset.run(
        traces,
        dataset_dir,
        base_model=job.record.base_model,
        max_seq_length=options.settings.max_seq_length,
        include_local_answers=options.settings.include_local_answers,
    )
    if note:
        logger.info("fine-tune %s: %s", job.run_id, note)
        job.record.notes.append(note)


async def _train(
    job: FlowJob, options: FinetuneOptions, dataset_dir: Path, output_dir: Path, resume: bool
) -> TrainOutcome:
    assert job.record is not None

    def on_step(step: ProgressStep) -> None:
        if job.record is not None:
            job.record.phase = step.phase
        job.report(step, job.meter.worker(step), cancellable=True)

    def on_runner(runner: Cancellable) -> None:
        job.runner = runner
        if job.cancel_requested:
            runner.cancel()

    request = TrainRequest(
        **options.settings.hyperparameters(),  # aiLsp.finetune.*, bounds checked there
        dataset=dataset_dir,
        model_name=job.record.base_model,
        baseline_model=job.record.baseline_model,
        output_dir=output_dir,
        resume=resume,
        eval_max_tokens=options.eval_max_tokens,
        constrained_decoding=options.constrained_decoding,
    )

    def on_warning(message: str) -> None:
        logger.warning("fine-tune %s: %s", job.run_id, message)  # the editor's log too
        if job.record is not None:
            job.record.notes.append(message)

    launch = launch_of(options.settings)  # finetune.hosts: the worker through mlx.launch
    return await train_candidate(
        request, on_step=on_step, on_runner=on_runner, on_warning=on_warning, launch=launch
    )
