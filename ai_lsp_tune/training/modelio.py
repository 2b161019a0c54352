"""The trainer's side of model loading: ``models.load`` with its errors as worker errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ai_lsp_tune.models.errors import ModelError
from ai_lsp_tune.models.load import load_model as load_any_model
from ai_lsp_tune.training.channel import WorkerError


def load_model(name: str) -> tuple[Any, Any, dict[str, Any], Path]:
    """(model, tokenizer, config, local folder) of a base model."""
    try:
        return load_any_model(name)
    except ModelError as exc:
        raise WorkerError(exc.kind, exc.message) from exc
