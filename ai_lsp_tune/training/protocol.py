"""What the parent and the training worker say: versioned pydantic messages, one JSON object each.

The parent passes one ``TrainRequest`` on the worker's command line (``--request``, read with
``TRAIN_REQUESTS``): one pydantic model shared by the CLI, the language server and the worker;
its hyper-parameters (bounds, defaults, help) are ``Hyperparameters``'s, and it adds what a run
needs besides: the dataset, the model, where to publish, resuming and evaluation. The worker
answers with events on a dedicated pipe (never stdout: mlx-lm prints there), read with
``WORKER_EVENTS``; ``fraction`` is the share of the whole run done (0..1).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, TypeAdapter, field_validator

from ai_lsp_tune.hyperparams import DEFAULT_MODEL, Hyperparameters
from ai_lsp_tune.training.evaluate import EvalMetrics
from ai_lsp_tune.training.packing import PAD_TO
from ai_lsp_tune.wire import LineReader, WireMessage

REQUEST_VERSION = 1  # of the JSON the worker gets on its command line


class TrainRequest(Hyperparameters):
    """A fine-tuning run; defaults are the original ai-lsp tool's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: Path = Field(description="dataset.json (JSON lines) or a prepared split folder.")
    model_name: str = Field(
        default=DEFAULT_MODEL, description="Base model: a local folder or hub name."
    )
    output_dir: Path = Field(
        Path("finetuned-model"), description="Gets model/, adapters/ and run.json."
    )
    lora_scale: float = Field(default=20.0, gt=0, description="LoRA scale (mlx-lm's default).")
    resume: bool = Field(
        default=False, description="Continue from the checkpoint of an interrupted run."
    )
    baseline_model: str | None = Field(
        default=None, description="Model whose 'before' metrics are measured; default: model_name."
    )
    eval_max_tokens: int = Field(
        default=512, ge=8, description="Longest greedy answer in evaluation."
    )
    constrained_decoding: bool = Field(
        default=True,
        description="Evaluate answers decoded under the DiagnosticResult grammar, as served.",
    )
    eval_unconstrained: bool = Field(
        default=True,
        description="Also answer each test prompt without the grammar (the 'unconstrained JSON' "
        "rate); false: only as served, which halves the evaluation (an untrained model's free "
        "answers run to eval_max_tokens).",
    )
    keep_last_adapter: bool | None = Field(
        default=None,
        description="true: publish the last step's adapter (as mlx_lm lora does); false: the "
        "one of the best validation loss; null (auto): the best only when its validation loss "
        "is surely lower than the last's, paired over the validation files "
        "(training/adapter_choice.py).",
    )
    eval_max_examples: int = Field(
        default=50, ge=0, description="Test prompts answered greedily before and after (0: skip)."
    )
    eval_every: int | None = Field(
        default=None, ge=1, description="Iterations between validations; default: about 8 per run."
    )
    val_batches: int = Field(
        default=25, ge=-1, description="Validation batches; -1 for the whole split."
    )
    checkpoint_every_s: float = Field(
        default=60.0, gt=0, description="Seconds between checkpoints."
    )
    v: int = Field(default=REQUEST_VERSION, description="Version of this request's format.")

    @field_validator("lora_scale")
    @classmethod
    def _finite_scale(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("val_batches")
    @classmethod
    def _val_batches(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be at least 1, or -1 for the whole split")
        return value

    @property
    def batch_token_budget(self) -> int:
        """``max_batch_tokens``, or a budget that holds ``batch_size`` of the longest examples."""
        if self.max_batch_tokens is not None:
            return self.max_batch_tokens
        return self.batch_size * PAD_TO * math.ceil(self.max_seq_length / PAD_TO)

    def resolved(self) -> TrainRequest:
        """The same request with absolute paths (the worker may run elsewhere)."""
        return self.model_copy(
            update={
                "dataset": self.dataset.expanduser().resolve(),
                "output_dir": self.output_dir.expanduser().resolve(),
            }
        )

    @property
    def partial_dir(self) -> Path:
        """Where a run is built (and its checkpoint kept) before it is published."""
        return self.output_dir.with_name(f".{self.output_dir.name}.partial")


# The worker reads its ``--request`` with it.
TRAIN_REQUESTS: LineReader[TrainRequest] = LineReader(
    "the training request", REQUEST_VERSION, TrainRequest
)


# --- the worker's events -------------------------------------------------------------------------
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
    published_adapter: Literal["best", "last"] | None = None
    adapter_choice: str = ""  # why that one, in a line (``adapter_choice``)


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
