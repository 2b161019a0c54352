"""The workspace's models as the editors see them: the list, their names, short paths (read-only).

The base model comes first, then every fine-tuned model in the order it was made (with its run,
base model, dataset size and metrics); ``serving`` marks the one answering now. Each row carries
what a picker shows, ready to display: ``label`` (the base's name and the local date) and
``detail`` (issue F1 with its interval, val loss, the gate's verdict), so no editor formats
metrics itself.
"""

from __future__ import annotations

from datetime import datetime
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
    made = registry.models if registry is not None else []
    rows = []
    for e in entries:
        metrics = e.metrics if e.run_id else _measured_as_baseline(made, e.path)
        rows.append(
            {
                "path": e.path,
                "runId": e.run_id,
                "baseModel": e.base_model,
                "createdAt": e.created_at,
                "examples": e.examples,
                "metrics": _headline(metrics),
                "gate": e.gate,
                "serving": e.path == serving,
                "label": model_name(e.path, made, base=base),
                "detail": _detail(metrics, e.gate),
            }
        )
    labels = [row["label"] for row in rows]
    for row, e in zip(rows, entries, strict=True):  # made the same minute: the seconds differ
        if labels.count(row["label"]) > 1 and (when := _local_time(e.created_at, "%S")):
            row["label"] = f"{row['label']}:{when}"
    return rows


def _measured_as_baseline(made: list[ModelEntry], path: str) -> dict[str, Any] | None:
    """A model's metrics from the latest run that evaluated it as the served model."""
    measured = [m for m in made if m.baseline_model == path and m.baseline_metrics]
    return measured[-1].baseline_metrics if measured else None


def model_name(path: str | None, made: list[ModelEntry], *, base: str | None = None) -> str:
    """A readable name: ``tiny-model (base model)``, ``tiny-model fine-tune · Dec 3 14:05``."""
    if not path:
        return "-"
    entry = next((m for m in made if m.path == path), None)
    if entry is None:
        return f"{_stem(path)} (base model)" if path == base else _stem(path)
    root, seen = entry, {entry.path}
    while (parent := next((m for m in made if m.path == root.base_model), None)) is not None:
        if parent.path in seen:  # a damaged registry: never loop
            break
        root, seen = parent, seen | {parent.path}
    when = _local_time(entry.created_at)
    return f"{_stem(root.base_model or path)} fine-tune" + (f" · {when}" if when else "")


def _stem(path: str) -> str:
    """A model's own name: its folder or file name, or a hub name's last part."""
    return Path(path.rstrip("/")).name or path


def _local_time(iso: str | None, form: str | None = None) -> str | None:
    """``Dec 3 14:05`` in the user's time zone, from the registry's UTC time."""
    try:
        when = datetime.fromisoformat(iso).astimezone() if iso else None
    except ValueError:
        return None
    if when is None:
        return None
    return when.strftime(form) if form else f"{when:%b} {when.day} {when:%H:%M}"


_GATE_MARKS = {
    "failed": "not swapped in: it scored worse",
    "too few test examples": "not swapped in: too few test examples to judge",
    "used anyway": "used anyway, over the gate",
}


def _detail(metrics: dict[str, Any] | None, gate: str | None) -> str:
    """``issue F1 0.42 (change +0.10..+0.31) · val loss 1.35 · 8 test examples · …``."""
    metrics = metrics or {}
    parts = []
    if isinstance(f1 := metrics.get("issue_f1"), int | float):
        low, high = metrics.get("f1_difference_low"), metrics.get("f1_difference_high")
        interval = low is not None and high is not None
        change = f" (change {low:+.2f}..{high:+.2f})" if interval else ""
        parts.append(f"issue F1 {f1:.2f}{change}")
    if isinstance(loss := metrics.get("val_loss"), int | float):
        parts.append(f"val loss {loss:.2f}")
    # Under constrained decoding every answer fits the schema: 100 % says nothing.
    rate = metrics.get("schema_valid_rate")
    if isinstance(rate, int | float) and metrics.get("unconstrained_valid_json_rate") is None:
        parts.append(f"schema-valid {rate:.0%}")
    if isinstance(n := metrics.get("n"), int) and parts:
        parts.append(f"{n} test example{'' if n == 1 else 's'}")
    if gate in _GATE_MARKS:
        parts.append(_GATE_MARKS[gate])
    return " · ".join(parts) or "not evaluated yet"


def _headline(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """The metrics without per-file counts and answers (kept in run.json, not for lists)."""
    if metrics is None:
        return None
    return {k: v for k, v in metrics.items() if k not in ("files", "answers")}


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
