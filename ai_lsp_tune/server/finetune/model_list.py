"""The workspace's models as the editors see them: the list and short paths (read-only).

The base model comes first, then every fine-tuned model in the order it was made (with its run,
base model, dataset size and metrics); ``serving`` marks the one answering now.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ai_lsp_tune.serving.registry import ModelEntry, ModelRegistry


def short_path(path: str | None) -> str:
    """``~/…/runs/<id>/output/model`` for a long path; hub names and short paths unchanged."""
    if not path:
        return "-"
    p = Path(path)
    if not p.is_absolute():
        return path
    home = Path.home()
    head = "~" if p.is_relative_to(home) else ""
    parts = p.relative_to(home).parts if head else p.parts[1:]
    tail = parts[parts.index("runs") :] if "runs" in parts else parts[-2:]
    if len(tail) >= len(parts):
        return f"{head}/{'/'.join(parts)}" if parts else (head or "/")
    return f"{head}/…/{'/'.join(tail)}"


def model_list(
    registry: ModelRegistry | None, *, base: str, serving: str | None
) -> list[dict[str, Any]]:
    """The rows of ``ai-lsp.model.list``: the base, then the fine-tuned models, oldest first."""
    entries = [ModelEntry(path=base)]
    if registry is not None:
        entries += [e for e in registry.models if e.path != base]
        known = {e.path for e in entries}
        entries += [ModelEntry(path=p) for p in dict.fromkeys(registry.trail) if p not in known]
    return [
        {
            "path": e.path,
            "runId": e.run_id,
            "baseModel": e.base_model,
            "createdAt": e.created_at,
            "examples": e.examples,
            "metrics": _headline(e.metrics),
            "serving": e.path == serving,
            "label": describe_model(e, base=base),
        }
        for e in entries
    ]


def _headline(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """The metrics without per-file counts and answers (kept in run.json, not for lists)."""
    if metrics is None:
        return None
    return {k: v for k, v in metrics.items() if k not in ("files", "answers")}


def describe_model(entry: ModelEntry, *, base: str) -> str:
    """One line for a picker: what the model is, without its full path."""
    if entry.path == base:
        return f"base model {short_path(base)}"
    if entry.run_id:
        return f"fine-tune {entry.run_id} (from {short_path(entry.base_model)})"
    return short_path(entry.path)


def find_listed(rows: list[dict[str, Any]], raw: str) -> str | None:
    """The listed path ``raw`` names (as given, or as the same file resolved), else None."""
    for row in rows:
        if row["path"] == raw:
            return str(row["path"])
    try:
        candidate = Path(raw).expanduser()
        if candidate.is_absolute():
            for row in rows:
                listed = Path(row["path"])
                if listed.is_absolute() and listed.resolve() == candidate.resolve():
                    return str(row["path"])
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop: not a listed path
        return None
    return None
