"""What to train: one pydantic model shared by the CLI, the language server and the worker."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ai_lsp_tune.config import DEFAULT_MODEL
from ai_lsp_tune.hyperparams import bounded, check_num_layers


class TrainRequest(BaseModel):
    """A fine-tuning run; defaults are the original ai-lsp tool's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: Path = Field(description="dataset.json (JSON lines) or a prepared split folder.")
    model_name: str = Field(
        default=DEFAULT_MODEL, description="Base model: a local folder or hub name."
    )
    output_dir: Path = Field(
        Path("finetuned-model"), description="Gets model/, adapters/ and run.json."
    )
    num_epochs: Annotated[int, bounded("num_epochs")] = Field(
        default=3, description="Passes over the training split."
    )
    batch_size: Annotated[int, bounded("batch_size")] = Field(
        default=2, description="Examples per step."
    )
    learning_rate: Annotated[float, bounded("learning_rate")] = Field(
        default=1e-5, description="Adam learning rate."
    )
    max_seq_length: Annotated[int, bounded("max_seq_length")] = Field(
        default=2048, description="Longer examples are skipped."
    )
    lora_rank: Annotated[int, bounded("lora_rank")] = Field(
        default=8, description="Rank of the LoRA adapters."
    )
    lora_scale: float = Field(default=20.0, gt=0, description="LoRA scale (mlx-lm's default).")
    num_layers: Annotated[int, bounded("num_layers")] = Field(
        default=16, description="Last layers to adapt; -1 for all."
    )
    grad_checkpoint: bool = Field(
        default=False,
        description="Recompute each layer's activations in the backward pass: less memory for "
        "long examples, slower steps.",
    )
    resume: bool = Field(
        default=False, description="Continue from the checkpoint of an interrupted run."
    )
    seed: int = Field(default=0, ge=0, description="Seed for LoRA init and batch order.")
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

    @field_validator("learning_rate", "lora_scale")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    _layers = field_validator("num_layers")(check_num_layers)

    @field_validator("val_batches")
    @classmethod
    def _val_batches(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be at least 1, or -1 for the whole split")
        return value

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
