"""A prepared dataset read back by training: the mlx-lm split folder, or dataset.json split by file.

The split of an example depends only on its source file (a hash), never on chance, so a
file's code is not trained on and tested on at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ai_lsp_tune.dataset.example import Example
from ai_lsp_tune.dataset.report import SPLITS

SPLIT_FILES = {split: f"{split}.jsonl" for split in SPLITS}


STATS_FILE = "stats.json"


def assign_splits(files: set[str]) -> dict[str, str]:
    """train/valid/test per source file, from a hash of its path (80/10/10), never random.

    With few files the hash alone may leave train or valid empty; then the file whose hash lies
    nearest is moved, so the outcome still depends only on the set of files.
    """

    def bucket(key: str) -> int:
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 100

    split_of = {
        f: "train" if bucket(f) < 80 else "valid" if bucket(f) < 90 else "test" for f in files
    }
    members = {s: sorted((f for f in files if split_of[f] == s), key=bucket) for s in SPLITS}
    if not members["train"] and files:
        donor = max(SPLITS[1:], key=lambda s: len(members[s]))
        split_of[members[donor].pop(0)] = "train"
        members["train"] = [f for f in files if split_of[f] == "train"]
    if not members["valid"] and len(files) >= 2:
        donor = "train" if len(members["train"]) >= 2 else "test"
        if members[donor]:
            split_of[members[donor].pop()] = "valid"
    return split_of


MIN_HELD_OUT = 3  # fewer examples all train: one for validation and one for test at least


def split_examples(keys: list[str]) -> tuple[list[str], str]:
    """The split of each example (``keys``: their source files), and a note when the split is
    not by file: when keeping files apart would leave validation or test empty, examples are
    held out instead (a few, by a hash); with fewer than MIN_HELD_OUT, all train."""
    split_of = assign_splits(set(keys))
    by_file = [split_of[key] for key in keys]
    if not keys or {"valid", "test"} <= set(by_file):
        return by_file, ""
    count, files = len(keys), len(set(keys))
    if count < MIN_HELD_OUT:
        return ["train"] * count, (
            f"Only {count} example(s): all in train, so no validation (the last adapter is "
            "kept) and no test examples; record more analyses for a measured fine-tune."
        )
    held = max(1, count // 10)
    order = sorted(range(count), key=lambda i: hashlib.sha256(f"{keys[i]}\0{i}".encode()).digest())
    splits = ["train"] * count
    for rank, index in enumerate(order[: 2 * held]):
        splits[index] = "valid" if rank < held else "test"
    return splits, (
        f"{files} source file(s) cannot fill train, validation and test apart, so {held} "
        f"example(s) each were held out for validation and test instead (a file's code may be "
        "in two splits)."
    )


def load_examples(path: Path) -> dict[str, list[Example]]:
    """Examples by split from a split folder, or from a dataset.json split the same way."""
    if path.is_dir():
        return {
            split: [_from_messages(m) for m in _json_lines(path / name)]
            for split, name in SPLIT_FILES.items()
        }
    examples = [Example.model_validate(row) for row in _json_lines(path)]
    splits, _ = split_examples([e.source_file() for e in examples])
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for example, split in zip(examples, splits, strict=True):
        out[split].append(example)
    return out


def _from_messages(row: dict[str, Any]) -> Example:
    by_role = {m["role"]: m["content"] for m in row["messages"]}
    return Example(
        system=by_role.get("system", ""), user=by_role["user"], assistant=by_role["assistant"]
    )


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not a JSON line ({exc.msg})") from exc
