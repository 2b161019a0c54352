"""The job's requests to the served model, the one owner of which model serves.

The job never changes the served model or the workspace's model registry itself: it asks the
served model (``serving/served_model.py``) to remember a new model, to keep only the newest
ones, to serve a listed model or to roll back, and says what happened in the editor's log.
"""

from __future__ import annotations

import logging

from lsprotocol import types as lsp

from ai_lsp_tune.server.finetune.context import EditorLink, FinetuneOptions, JobContext
from ai_lsp_tune.server.finetune.states import RunRecord
from ai_lsp_tune.serving.registry import ModelEntry, now_iso

logger = logging.getLogger(__name__)


async def remember(ctx: JobContext, record: RunRecord) -> None:
    """Add a run's new model to the workspace's model history (served or not), with the gate's
    verdict and the metrics of the model served then (the list shows the base's from them)."""
    if record.candidate_model is None:
        return
    await ctx.served_model().remember(
        ModelEntry(
            path=record.candidate_model,
            run_id=record.run_id,
            base_model=record.base_model,
            created_at=now_iso(),
            examples=record.examples,
            metrics=record.metrics_after,
            baseline_model=record.baseline_model,
            baseline_metrics=record.metrics_before,
            gate=record.gate,
        )
    )


async def retain(ctx: JobContext, record: RunRecord, options: FinetuneOptions) -> None:
    """Keep the newest ``finetune.keepModels`` fine-tuned models; a failure only logs."""
    # The served model itself never deletes what it serves or would roll back to.
    protect = {record.base_model, options.configured_model, options.settings.base_model}
    try:
        await ctx.served_model().retain(
            options.settings.keep_models, protect=protect, runs_dir=ctx.runs_dir
        )
    except OSError as exc:
        logger.warning("cannot delete old fine-tuned models: %s", exc)


async def use_model(ls: EditorLink, ctx: JobContext, path: str) -> str:
    """Serve ``path``; the old model keeps serving if it fails to load."""
    await ctx.served_model().use(path)
    ls.window_log_message(
        lsp.LogMessageParams(type=lsp.MessageType.Info, message=f"now serving {path}")
    )
    return f"Now serving {ctx.name_of(path)}"


async def rollback(ls: EditorLink, ctx: JobContext) -> str:
    """Serve the served model's parent (down its lineage); return the line that says where it
    landed, or, at a base model, that there is nothing to roll back to (news, not an error)."""
    from ai_lsp_tune.serving.served_model import NoPreviousModel  # serving's machinery: lazily

    served = ctx.served_model()
    try:
        landed = await served.rollback()
    except NoPreviousModel:
        name = ctx.name_of(served.current_path)
        return f"No previous model to roll back to: {name} serves, the start of its lineage"
    said = f"Rolled back: now serving {landed}"
    ls.window_log_message(lsp.LogMessageParams(type=lsp.MessageType.Info, message=said))
    return f"Rolled back to {ctx.name_of(landed)}"
