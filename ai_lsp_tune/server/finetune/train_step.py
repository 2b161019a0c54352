"""The job's side of the training worker: its events to progress, its errors in editor terms.

The worker (``training/worker.py``, a separate process) trains, evaluates the candidate and
the served model on the test split, and fuses; this module turns its events into progress
steps and its final event into a ``TrainOutcome`` the job's gate reads.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ai_lsp_tune.hyperparams import flag, setting
from ai_lsp_tune.server.finetune.context import Cancellable
from ai_lsp_tune.server.finetune.progress import ProgressStep, metrics_dict
from ai_lsp_tune.server.settings import FinetuneSettings
from ai_lsp_tune.training import protocol
from ai_lsp_tune.training.distributed import Launch, hostfile_hosts
from ai_lsp_tune.training.evaluate import EvalMetrics, not_worse
from ai_lsp_tune.training.protocol import TrainRequest
from ai_lsp_tune.training.readout import evaluating_count


@dataclass
class TrainOutcome:
    """How the worker's run ended, as the job needs it."""

    cancelled: bool = False
    checkpoint_kept: bool = False
    error: str | None = None
    model_path: Path | None = None
    metrics_before: dict[str, Any] | None = None
    metrics_after: dict[str, Any] | None = None
    not_worse: bool = False


# The worker speaks CLI flags (``--num-layers``); in the editor they are settings.
_FLAG_TO_SETTING = {flag(name): setting(name) for name in FinetuneSettings.model_fields} | {
    "--model-name": "aiLsp.model (or aiLsp.finetune.baseModel)"
}
_FLAG = re.compile("|".join(re.escape(flag) for flag in sorted(_FLAG_TO_SETTING, key=len)[::-1]))


def editor_terms(text: str) -> str:
    """A worker message with each CLI flag named as the editor setting that sets it."""
    return _FLAG.sub(lambda m: _FLAG_TO_SETTING[m.group(0)], text)


def progress_step(event: protocol.WorkerEvent) -> ProgressStep | None:
    """A worker event as a progress step; None for final events and warnings."""
    if isinstance(event, protocol.TrainingEvent):
        return ProgressStep(
            "training",
            iteration=event.iteration,
            total=event.total,
            train_loss=event.train_loss,
            val_loss=event.val_loss,
            tokens_per_sec=event.tokens_per_sec,
            eta_s=event.eta_s,
            fraction=event.fraction,
        )
    if isinstance(event, protocol.EvaluatingEvent):
        stage = "served model" if event.stage == "before" else "new model"
        done, total, at_pass = evaluating_count(event)  # "8/8, pass 2 of 2", not "16/16"
        if at_pass:
            stage += f", {at_pass}"
        return ProgressStep(
            "evaluating",
            iteration=done,
            total=total or None,
            fraction=event.fraction,
            note=stage,
        )
    if isinstance(event, protocol.PausedEvent):  # no ETA while it cannot move
        return ProgressStep("paused", note=f"the training worker (pid {event.pid}) is stopped")
    if isinstance(event, protocol.LoadingEvent | protocol.FusingEvent):
        return ProgressStep(event.phase, fraction=event.fraction)
    return None


def outcome_of(final: protocol.FinalEvent) -> TrainOutcome:
    """The worker's final event (the runner makes one up for a dead worker) as an outcome."""
    if isinstance(final, protocol.DoneEvent):
        before, after = final.before, final.after
        passed = _gate(after, before)
        return TrainOutcome(
            model_path=final.model_path,
            metrics_before=metrics_dict(before),
            metrics_after=metrics_dict(after),
            not_worse=passed,
        )
    if isinstance(final, protocol.CancelledEvent):
        return TrainOutcome(cancelled=True, checkpoint_kept=final.checkpoint_iteration is not None)
    return TrainOutcome(error=f"{editor_terms(final.message)} ({final.kind})")


def _gate(after: EvalMetrics | None, before: EvalMetrics | None) -> bool:
    """Not worse than the served model on the test split; unmeasured means not proven."""
    if after is None or before is None:
        return False
    return not_worse(after, before)


def launch_of(settings: FinetuneSettings) -> Launch | None:
    """``finetune.hosts``/``hostfile``/``backend`` as an mlx.launch spec (None: this machine)."""
    if not settings.hosts and not settings.hostfile:
        return None
    hostfile = Path(settings.hostfile).expanduser().resolve() if settings.hostfile else None
    where = "aiLsp.finetune.hosts or aiLsp.finetune.hostfile"
    return Launch(hosts=settings.hosts, hostfile=hostfile, backend=settings.backend, where=where)


async def train_candidate(
    request: TrainRequest,
    *,
    on_step: Callable[[ProgressStep], None],
    on_runner: Callable[[Cancellable], None],
    on_warning: Callable[[str], None] | None = None,
    launch: Launch | None = None,
) -> TrainOutcome:
    """Run the worker to its end; ``on_runner`` gets the runner so the job can cancel it."""
    from ai_lsp_tune.training.runner import TrainingRunner

    if launch is not None and launch.hostfile is not None:
        try:
            hostfile_hosts(launch.hostfile)
        except (OSError, ValueError, AttributeError) as exc:
            return TrainOutcome(
                error=f"aiLsp.finetune.hostfile {launch.hostfile} is not an mlx.launch hostfile "
                f"({exc}); fix it or clear the setting."
            )

    def on_event(event: protocol.WorkerEvent) -> None:
        if isinstance(event, protocol.WarningEvent) and on_warning is not None:
            on_warning(editor_terms(event.message))
        step = progress_step(event)
        if step is not None:
            on_step(step)

    # Analyses and requests come first: the worker runs at the lowest priority, far below the
    # model host (nice 10); it still has every core the editor leaves idle.
    env = {**os.environ, "AI_LSP_WORKER_NICE": os.environ.get("AI_LSP_WORKER_NICE", "19")}
    runner = TrainingRunner(request, on_event=on_event, env=env, launch=launch)
    on_runner(runner)
    result = await runner.run()  # never raises for worker errors; a dead worker is an error
    return outcome_of(result.event)


_LOCK_FLAGS = os.O_WRONLY | os.O_CREAT


def remove_stale_partials(runs_dir: Path, keep: Path) -> list[Path]:
    """Partial outputs of runs that failed or were killed (each run has its own folder, so no
    later run reuses them); a run still holding its lock (another server) is left alone."""
    removed = []
    for run_dir in runs_dir.iterdir() if runs_dir.is_dir() else ():
        partial = TrainRequest(dataset=run_dir, output_dir=run_dir / "output").partial_dir
        if run_dir == keep or not partial.is_dir():
            continue
        lock_path = partial.with_name(".output.lock")
        with contextlib.suppress(OSError), open(os.open(lock_path, _LOCK_FLAGS, 0o600)) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # OSError: a run writes there
            shutil.rmtree(partial, ignore_errors=True)
            removed.append(partial)
    return removed
