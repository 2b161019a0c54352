"""Read a dataset (the original dataset.json or a prepared split folder) into train/valid/test."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ai_lsp_tune.dataset import SPLIT_FILES, Example, load_examples


class BadDataset(ValueError):
    """The dataset cannot be used; the message is one sentence saying why and what to do."""


def load_splits(path: Path) -> dict[str, list[Example]]:
    """``{"train": [...], "valid": [...], "test": [...]}`` (dataset.json is split by file)."""
    if not path.exists():
        raise BadDataset(
            f"Dataset {path} does not exist; create it with `ai-lsp finetune prepare-dataset`."
        )
    if path.is_dir() and not any((path / name).exists() for name in SPLIT_FILES.values()):
        raise BadDataset(
            f"Folder {path} has no train.jsonl, valid.jsonl or test.jsonl; pass dataset.json or "
            "the folder written by `ai-lsp finetune prepare-dataset --output-dir`."
        )
    try:
        return load_examples(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BadDataset(f"Cannot read dataset {path}: {reason}.") from exc


def dataset_sha256(path: Path) -> str:
    """A hash of the dataset's bytes (the split files of a folder), for run.json and resume."""
    digest = hashlib.sha256()
    names = sorted(SPLIT_FILES.values())
    files = [path / n for n in names if (path / n).exists()] if path.is_dir() else [path]
    for file in files:
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()
