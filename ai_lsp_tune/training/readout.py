"""What the training worker reports: versioned pydantic events, one JSON object per line.

The worker writes them on a dedicated pipe (never stdout: mlx-lm prints there); the parent
reads them with ``WORKER_EVENTS``. ``fraction`` is the share of the whole run done (0..1).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from ai_lsp_tune.training.evaluate import EvalMetrics
from ai_lsp_tune.wire import LineReader, WireMessage

EVENT_PROTOCOL_VERSION = 1

ErrorKind = Literal[
    "model_not_found",  # neither a local folder nor downloadable
    "bad_model",  # the folder is incomplete, corrupt or of an unsupported type
    "bad_dataset",  # missing, empty, unreadable, or nothing short enough
    "bad_hyperparameter",  # e.g. more layers than the model has
    "bad_request",  # e.g. --resume with no matching checkpoint
    "busy",  # another run writes the same output dir
    "oom",  # out of memory
    "disk_full",  # no space left where the run writes (its partial folder is removed)
    "disk_full",  # no space left where the run writes (its partial folder is removed)
    "distributed",  # a rank died, a host is unreachable, or the ranks' versions differ
    "crashed",  # anything else, including a killed worker
]


class _Event(WireMessage):
    v: int = EVENT_PROTOCOL_VERSION
    fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    elapsed_s: float = 0.0
    message: str = ""


class LoadingEvent(_Event):
    phase: Literal["loading"] = "loading"


class WarningEvent(_Event):
    """Something the user should know that does not stop the run (e.g. skipped examples)."""

    phase: Literal["warning"] = "warning"
    count: int | None = None


class EvaluatingEvent(_Event):
    phase: Literal["evaluating"] = "evaluating"
    stage: Literal["before", "after"]
    done: int = 0
    total: int = 0  # answers: each example is answered twice under constrained decoding
    examples: int = 0  # so the editor counts examples, not answers


class TrainingEvent(_Event):
    phase: Literal["training"] = "training"
    iteration: int
    total: int
    train_loss: float | None = None
    val_loss: float | None = None
    best_val_loss: float | None = None
    learning_rate: float | None = None
    tokens_per_sec: float | None = None  # prompt + answer tokens, padding excluded
    trained_tokens: int = 0
    peak_memory_gb: float | None = None
    eta_s: float | None = None


class PausedEvent(_Event):
    """Made by the parent, never sent: the worker has been stopped (SIGSTOP) a while."""

    phase: Literal["paused"] = "paused"
    pid: int


class FusingEvent(_Event):
    phase: Literal["fusing"] = "fusing"


class DoneEvent(_Event):
    phase: Literal["done"] = "done"
    output_dir: Path
    model_path: Path
    run_json: Path
    before: EvalMetrics | None = None
    after: EvalMetrics | None = None
    best_iteration: int = 0
    iterations: int = 0


class ErrorEvent(_Event):
    phase: Literal["error"] = "error"
    kind: ErrorKind


class CancelledEvent(_Event):
    phase: Literal["cancelled"] = "cancelled"
    checkpoint_iteration: int | None = None  # None: stopped before any checkpoint
    checkpoint_dir: Path | None = None


WorkerEvent = Annotated[
    LoadingEvent
    | WarningEvent
    | EvaluatingEvent
    | TrainingEvent
    | PausedEvent
    | FusingEvent
    | DoneEvent
    | ErrorEvent
    | CancelledEvent,
    Field(discriminator="phase"),
]
FinalEvent = DoneEvent | ErrorEvent | CancelledEvent

WORKER_EVENTS: LineReader[WorkerEvent] = LineReader(
    "the training worker", EVENT_PROTOCOL_VERSION, TypeAdapter(WorkerEvent)
)


# Share of the whole run each phase is given in ``fraction``.
PHASES = {"loading": (0.0, 0.05), "before": (0.05, 0.15), "training": (0.15, 0.85),
          "fusing": (0.85, 0.9), "after": (0.9, 1.0)}  # fmt: skip


def at(phase: str, done: float = 0.0) -> float:
    """``fraction`` of the run at ``done`` (0..1) through ``phase``."""
    start, end = PHASES[phase]
    return round(start + (end - start) * min(max(done, 0.0), 1.0), 4)


# --- How a training step reads: the CLI's console and the editor's progress both say it so ---
def format_rate(tokens_per_sec: float) -> str:
    """``1.2k tok/s`` / ``850 tok/s``."""
    if tokens_per_sec >= 1000:
        return f"{tokens_per_sec / 1000:.1f}k tok/s"
    return f"{tokens_per_sec:.0f} tok/s"


def format_eta(seconds: float) -> str:
    """``ETA 40 s`` / ``ETA 3 min`` / ``ETA 1 h 5 min``: coarse, as a person reads it."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"ETA {math.ceil(seconds)} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"ETA {minutes} min"
    return f"ETA {minutes // 60} h {minutes % 60} min"


def training_readout(
    *,
    train_loss: float | None = None,
    val_loss: float | None = None,
    tokens_per_sec: float | None = None,
    eta_s: float | None = None,
    iteration: int | None = None,
    total: int | None = None,
) -> list[str]:
    """``["loss 0.84", "val 0.91", "1.2k tok/s", "ETA 3 min"]``: what is known, no ETA once
    the last step is reached."""
    parts = []
    if train_loss is not None:
        parts.append(f"loss {train_loss:.2f}")
    if val_loss is not None:
        parts.append(f"val {val_loss:.2f}")
    if tokens_per_sec:
        parts.append(format_rate(tokens_per_sec))
    last_step = iteration is not None and bool(total) and iteration >= (total or 0)
    if eta_s is not None and not last_step:
        parts.append(format_eta(eta_s))
    return parts


def evaluating_count(event: EvaluatingEvent) -> tuple[int, int, str]:
    """``(3, 8, "pass 2 of 2")``: examples done of the examples, and which pass where
    constrained decoding answers each example twice ("" for one pass); the CLI and the editor
    both count this way, not answers ("11/16")."""
    done, total = event.done, event.total
    if not (event.examples and total > event.examples):
        return done, total, ""
    passes = total // event.examples
    at_pass = min(done // event.examples, passes - 1)
    return done - at_pass * event.examples, event.examples, f"pass {at_pass + 1} of {passes}"
