"""Read a dataset (the original dataset.json or a prepared split folder) into train/valid/test."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ai_lsp_tune.dataset.example import Example
from ai_lsp_tune.dataset.reader import SPLIT_FILES, load_examples
from ai_lsp_tune.schema import InvalidModelOutput, parse_diagnostic_result


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


@dataclass
class InvalidAnswers:
    """Examples skipped because their answer is not a DiagnosticResult (the server's schema)."""

    by_split: dict[str, int] = field(default_factory=dict)
    first_reason: str = ""  # why the first one failed, e.g. "not valid JSON: ..."

    @property
    def total(self) -> int:
        return sum(self.by_split.values())


def drop_invalid_answers(
    splits: dict[str, list[Example]],
) -> tuple[dict[str, list[Example]], InvalidAnswers]:
    """The examples whose answer validates as a DiagnosticResult, and a count of the rest.

    A model trained on other answers (plain text, another JSON shape) would learn to write
    what the language server then refuses.
    """
    kept: dict[str, list[Example]] = {}
    invalid = InvalidAnswers()
    for name, examples in splits.items():
        kept[name] = []
        for example in examples:
            try:
                parse_diagnostic_result(example.assistant)
            except (InvalidModelOutput, RecursionError) as exc:
                reason = exc.reason if isinstance(exc, InvalidModelOutput) else "nested too deeply"
                invalid.by_split[name] = invalid.by_split.get(name, 0) + 1
                invalid.first_reason = invalid.first_reason or reason
                continue
            kept[name].append(example)
    return kept, invalid


def dataset_sha256(path: Path) -> str:
    """A hash of the dataset's bytes (the split files of a folder), for run.json and resume."""
    digest = hashlib.sha256()
    names = sorted(SPLIT_FILES.values())
    files = [path / n for n in names if (path / n).exists()] if path.is_dir() else [path]
    for file in files:
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()
