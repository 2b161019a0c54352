"""A fine-tune job's states, the transitions between them, and what is remembered of a run.

The job slot holds at most one run. Every transition goes through ``check_transition`` so a
bug shows as a clear error instead of a job stuck in an impossible state, and the last run's
record is written atomically to the workspace's data dir so ``status`` survives a restart and
a cancelled run can be resumed.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic.alias_generators import to_camel

from ai_lsp_tune.files import atomic_write_text
from ai_lsp_tune.hyperparams import Hyperparameters, same_run
from ai_lsp_tune.server.finetune.context import FinetuneOptions
from ai_lsp_tune.server.settings import CamelModel
from ai_lsp_tune.state_files import UnreadableStateFile, read_state_file

logger = logging.getLogger(__name__)


class JobState(enum.StrEnum):
    IDLE = "idle"  # no run yet in this workspace
    PREPARING = "preparing"  # traces -> dataset (in a thread)
    TRAINING = "training"  # the worker: loading, training, evaluating, fusing
    SWAPPING = "swapping"  # gate passed; the model host loads the new model
    CANCELLING = "cancelling"  # asked to stop; the worker is saving its checkpoint
    SUCCEEDED = "succeeded"  # the new model serves
    REJECTED = "rejected"  # the new model scored worse; the old one keeps serving
    CANCELLED = "cancelled"
    FAILED = "failed"


ACTIVE_STATES = frozenset(
    {JobState.PREPARING, JobState.TRAINING, JobState.SWAPPING, JobState.CANCELLING}
)
FINAL_STATES = frozenset(
    {JobState.IDLE, JobState.SUCCEEDED, JobState.REJECTED, JobState.CANCELLED, JobState.FAILED}
)
_STOPS = {JobState.CANCELLING, JobState.FAILED}
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    **{state: frozenset({JobState.PREPARING}) for state in FINAL_STATES},
    JobState.PREPARING: frozenset({JobState.TRAINING, *_STOPS}),
    JobState.TRAINING: frozenset({JobState.SWAPPING, JobState.REJECTED, *_STOPS}),
    # A swap is not cancellable: the model host finishes loading, then routing flips once.
    JobState.SWAPPING: frozenset({JobState.SUCCEEDED, JobState.FAILED}),
    JobState.CANCELLING: frozenset({JobState.CANCELLED, JobState.FAILED}),
}


class InvalidTransition(RuntimeError):
    """A job tried to move between two states that are not connected: a bug, not user error."""


def check_transition(old: JobState, new: JobState) -> None:
    """Raise InvalidTransition unless ``old -> new`` is an edge of the job's state machine."""
    if new not in TRANSITIONS[old]:
        raise InvalidTransition(f"fine-tune job cannot go from {old} to {new}")


class RunRecord(CamelModel):
    """What a run did, kept after it ends (``<workspace data dir>/finetune/last_run.json``)."""

    run_id: str
    state: JobState
    phase: str | None = None
    reason: str | None = Field(default=None, description="Why it failed, was refused or cancelled.")
    started_at: float
    finished_at: float | None = None
    run_dir: str
    base_model: str
    baseline_model: str | None = Field(
        default=None, description="The model served when it started."
    )
    candidate_model: str | None = None
    examples: dict[str, int] | None = Field(default=None, description="Examples per split.")
    metrics_before: dict[str, Any] | None = None
    metrics_after: dict[str, Any] | None = None
    gate: str | None = Field(
        default=None, description="passed | failed | forced | too few test examples"
    )
    test_examples: int | None = Field(
        default=None, description="How many test examples the gate's decision rests on."
    )
    swapped: bool = False
    resumable: bool = Field(default=False, description="A cancelled run left a checkpoint.")
    summary: str | None = Field(default=None, description="The line that ended its progress.")
    notes: list[str] = Field(default_factory=list, description="The worker's warnings.")
    inputs: dict[str, Any] | None = Field(
        default=None, description="Model, trace sources and hyper-parameters it was started with."
    )


class ProgressSnapshot(CamelModel):
    percentage: int
    message: str
    fields: dict[str, Any] | None = None  # as in ``$/progress``'s ``aiLsp`` (progress_fields)


class FinetuneStatus(CamelModel):
    """The answer of ``ai-lsp.finetune.status``."""

    state: JobState
    phase: str | None = None
    run_id: str | None = None
    progress: ProgressSnapshot | None = None
    last_run: RunRecord | None = None
    served_model: str | None = None
    previous_model: str | None = None
    message: str = ""


# The settings that shape what a run trains; a checkpoint is resumed only when they match.
TRAINING_SETTINGS = same_run()
# A run recorded before a hyper-parameter existed trained with its default.
_DEFAULTS = {to_camel(k): v for k, v in Hyperparameters().hyperparameters().items()}


def run_inputs(options: FinetuneOptions, base_model: str) -> dict[str, Any]:
    """What a run is made of: base model, trace sources, hyper-parameters."""
    settings = options.settings
    inputs: dict[str, Any] = {to_camel(k): getattr(settings, k) for k in TRAINING_SETTINGS}
    inputs["baseModel"] = base_model
    inputs["extraTraces"] = sorted(str(p) for p in options.extra_traces)
    return inputs


def changed_inputs(before: dict[str, Any] | None, now: dict[str, Any]) -> str:
    """``numLayers 16 → 2, baseModel a → b``; empty when nothing changed (or nothing known)."""
    if before is None:
        return ""
    before = _DEFAULTS | before
    return ", ".join(
        f"{key} {before.get(key)} → {value}" if key != "extraTraces" else "extraTraces"
        for key, value in now.items()
        if before.get(key) != value
    )


def resumable(
    last: RunRecord | None, options: FinetuneOptions, serving: str | None
) -> tuple[RunRecord | None, str | None]:
    """The cancelled run to resume, or None and why the run starts fresh instead."""
    if not (options.resume and last and last.state == JobState.CANCELLED and last.resumable):
        return None, None
    base = options.base_model(serving) or ""
    changed = changed_inputs(last.inputs, run_inputs(options, base))
    if changed:
        return None, f"the settings changed since the cancelled run ({changed})"
    if not Path(last.run_dir).is_dir():
        return None, "the cancelled run's folder is gone"
    return last, None


def load_record(path: Path) -> RunRecord | None:
    """The last run's record, or None when there is none. UnreadableStateFile (a copy kept
    beside it) when it cannot be read: the next run starts afresh."""
    return read_state_file(path, RunRecord.model_validate_json)


def save_record(path: Path, record: RunRecord) -> None:
    """Write the record through a temp file and a rename."""
    atomic_write_text(path, record.model_dump_json(indent=2))


class RecordFile:
    """``last_run.json``: a damaged one is set aside with a warning; a write that fails (disk
    full, read-only) warns once, and the run goes on (status answers from memory)."""

    def __init__(self, path: Path, notify: Callable[[str, str], None]) -> None:
        self.path = path
        self._notify = notify
        self._write_failed = False

    def load(self) -> RunRecord | None:
        try:
            return load_record(self.path)
        except UnreadableStateFile as exc:
            self._notify("warning", f"ai-lsp: the last fine-tune's record {exc}.")
            return None

    def save(self, record: RunRecord) -> None:
        try:
            save_record(self.path, record)
        except OSError as exc:
            logger.warning("cannot write %s: %s", self.path, exc)
            if not self._write_failed:
                self._notify(
                    "warning",
                    f"ai-lsp: cannot write {self.path} ({exc.strerror or exc}); the fine-tune "
                    "goes on and its status is kept until the server stops.",
                )
            self._write_failed = True
        else:
            self._write_failed = False
