"""Load a model by the name the user gave, turning every failure into one clear sentence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ai_lsp_tune.models.errors import ModelError
from ai_lsp_tune.models.resolve import resolve_model


def load_model(name: str) -> tuple[Any, Any, dict[str, Any], Path]:
    """(model, tokenizer, config, local folder) of a hub name, model folder or GGUF file."""
    from mlx_lm import load

    path = resolve_model(name)
    if not (path / "config.json").exists():
        raise ModelError(
            "bad_model",
            f"Model folder {path} has no config.json, so it is not an MLX model; "
            "pass a complete model folder (config.json, *.safetensors, tokenizer files).",
        )
    try:
        model, tokenizer, config = load(str(path), return_config=True)  # type: ignore[misc]
    except MemoryError:
        raise
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelError(
            "bad_model",
            f"Model folder {path} is incomplete or corrupt ({type(exc).__name__}: {reason}); "
            "re-download it or point --model-name at a complete MLX model.",
        ) from exc
    return model, tokenizer, config, path
