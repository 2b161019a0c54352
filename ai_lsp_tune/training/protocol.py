"""What to train: one pydantic model shared by the CLI, the language server and the worker.

Its hyper-parameters (bounds, defaults, help) are ``Hyperparameters``'s; this adds what a run
needs besides: the dataset, the model, where to publish, resuming and evaluation.
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import ConfigDict, Field, field_validator

from ai_lsp_tune.hyperparams import DEFAULT_MODEL, Hyperparameters
from ai_lsp_tune.training.packing import PAD_TO
from ai_lsp_tune.wire import LineReader

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
