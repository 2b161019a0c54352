"""Checkpoints of an interrupted run: adapters, best adapters, optimizer state, progress.

A checkpoint folder is built beside its final place and renamed, so a run killed while
saving keeps the previous checkpoint whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from ai_lsp_tune.files import atomic_write_text, publish_dir
from ai_lsp_tune.training.adapter_choice import Published
from ai_lsp_tune.training.evaluate import EvalMetrics
from ai_lsp_tune.training.protocol import TrainRequest

if TYPE_CHECKING:
    import mlx.core as mx

CHECKPOINT_VERSION = 1
_ARRAYS = ("adapters", "best_adapters", "optimizer")


class CheckpointState(BaseModel):
    version: int = CHECKPOINT_VERSION
    fingerprint: str
    iteration: int
    total: int
    best_iteration: int = 0
    best_val_loss: float | None = None
    trained_tokens: int = 0
    train_seconds: float = 0.0
    val_history: list[tuple[int, float]] = []
    # The best validation's per-example (loss sum, answer tokens): the adapter choice pairs
    # them with the last step's (``adapter_choice``); None in a checkpoint from before it.
    best_window_losses: list[tuple[float, int]] | None = None
    published_adapter: Published = "best"  # decided at the end of training (``adapter_choice``)
    adapter_choice: str = ""
    train_history: list[tuple[int, float]] = []
    before: EvalMetrics | None = None


def fingerprint(request: TrainRequest, dataset_hash: str) -> str:
    """What must match for a checkpoint to be resumed: model, data and hyper-parameters."""
    keys = ["model_name", "num_epochs", "batch_size", "learning_rate", "max_seq_length",
            "lora_rank", "lora_scale", "num_layers", "seed"]  # fmt: skip
    material = {k: getattr(request, k) for k in keys} | {"dataset": dataset_hash}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def save_checkpoint(
    folder: Path, state: CheckpointState, arrays: dict[str, dict[str, mx.array]]
) -> None:
    """Write a whole checkpoint (``arrays`` keyed by adapters/best_adapters/optimizer)."""
    import mlx.core as mx

    staging = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in _ARRAYS:
        if arrays.get(name):
            mx.save_safetensors(str(staging / f"{name}.safetensors"), arrays[name])
    atomic_write_text(staging / "state.json", state.model_dump_json(indent=1))
    publish_dir(staging, folder)


def load_checkpoint(
    folder: Path,
) -> tuple[CheckpointState, dict[str, dict[str, mx.array]]] | None:
    """The checkpoint in ``folder``, or None when there is none (or it is unreadable)."""
    import mlx.core as mx

    try:
        state = CheckpointState.model_validate_json((folder / "state.json").read_text())
        arrays: dict[str, dict[str, mx.array]] = {}
        for name in _ARRAYS:
            file = folder / f"{name}.safetensors"
            arrays[name] = dict(mx.load(str(file))) if file.exists() else {}  # type: ignore[arg-type]
    except (OSError, ValueError, RuntimeError):
        return None
    if state.version != CHECKPOINT_VERSION:
        return None
    return state, arrays
