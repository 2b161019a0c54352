"""Find and load the base model, turning every failure into one clear sentence."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ai_lsp_tune.training.channel import WorkerError


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") != 1 or os.sep != "/"


def resolve_model(name: str) -> Path:
    """A local folder for ``name``: the folder itself, or the hub snapshot (cached or fetched)."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise WorkerError("bad_model", f"Model {name} is a file; pass the model's folder.")
        return path
    if _looks_like_path(name):
        raise WorkerError(
            "model_not_found",
            f"No model folder at {path}; pass an MLX model folder or a Hugging Face name "
            "such as mlx-community/gemma-2-2b-it-4bit.",
        )
    from huggingface_hub import snapshot_download
    from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS

    try:
        return Path(snapshot_download(name, allow_patterns=DEFAULT_ALLOW_PATTERNS))
    except Exception as exc:
        reason = _hub_failure(exc)
        raise WorkerError(
            "model_not_found",
            f"Model {name} is not a local folder and could not be downloaded from the Hugging "
            f"Face Hub ({reason}); download it once while online "
            f"(`hf download {name}`) or pass a local folder with --model-name /path/to/model.",
        ) from exc


def _hub_failure(exc: Exception) -> str:
    """Why a hub download failed, in a few words."""
    name = type(exc).__name__
    if name in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        return "offline, and it is not in the local Hugging Face cache"
    if name in ("RepositoryNotFoundError", "GatedRepoError"):
        return "no such repository, or it needs a login"
    if "connect" in str(exc).lower() or "resolve" in str(exc).lower():
        return "no network connection to the hub"
    return name


def load_model(name: str) -> tuple[Any, Any, dict[str, Any], Path]:
    """(model, tokenizer, config, local folder) of a base model."""
    from mlx_lm import load

    path = resolve_model(name)
    if not (path / "config.json").exists():
        raise WorkerError(
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
        raise WorkerError(
            "bad_model",
            f"Model folder {path} is incomplete or corrupt ({type(exc).__name__}: {reason}); "
            "re-download it or point --model-name at a complete MLX model.",
        ) from exc
    return model, tokenizer, config, path
