"""Server settings: a default for every field, camelCase on the wire, env vars for the CLI.

Sources, later ones winning: defaults < environment (``AI_LSP_MODEL``, ``DEBOUNCE_MS``, ...) <
``initializationOptions`` < ``workspace/didChangeConfiguration``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

DEFAULT_MODEL = "mlx-community/gemma-2-2b-it-4bit"  # the original tool's default


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class FinetuneSettings(_Camel):
    base_model: str | None = Field(
        None, description="Model to fine-tune; default: the model being served."
    )
    extra_traces: list[str] = Field(
        default_factory=list, description="More trace files or folders to learn from."
    )
    num_epochs: int = Field(3, ge=1, description="Passes over the training split.")
    batch_size: int = Field(2, ge=1, description="Examples per step.")
    learning_rate: float = Field(1e-5, gt=0, description="Adam learning rate for LoRA.")
    max_seq_length: int = Field(2048, ge=16, description="Longer examples are skipped.")
    lora_rank: int = Field(8, ge=1, description="Rank of the LoRA adapters.")
    num_layers: int = Field(16, ge=-1, description="Layers to adapt (-1: all).")
    force: bool = Field(False, description="Swap even when the new model scores worse.")


class Settings(_Camel):
    backend: Literal["local", "remote"] = Field(
        "local", description="local: an MLX model served here; remote: a pydantic-ai model."
    )
    model: str = Field(DEFAULT_MODEL, description="Local MLX model: a path or a hub name.")
    remote_model: str = Field(
        "google-gla:gemini-2.5-flash", description="pydantic-ai model string for backend=remote."
    )
    debounce_ms: int = Field(1000, ge=0, description="Wait after the last edit before analysing.")
    max_tokens: int = Field(1024, ge=16, description="Longest answer the model may write.")
    languages: list[str] = Field(
        default_factory=list, description="Language ids to analyse; empty means all."
    )
    telemetry: bool = Field(True, description="Record analyses as OpenTelemetry spans.")
    trace_file: str | None = Field(
        None, description="Trace export file; default: in the data dir, per workspace."
    )
    finetune: FinetuneSettings = Field(default_factory=FinetuneSettings)
