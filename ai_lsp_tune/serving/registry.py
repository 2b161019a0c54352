"""Which model a workspace serves, and every model it has made, persisted across restarts.

Only the served model (``serving/served_model.py``) writes it, under its one lock.

``trail`` is the order models were served in (the last one serves now; a restart serves it).
``models`` describes each fine-tuned model (run, base model, dataset size, metrics, the gate's
verdict). A rollback steps down the lineage: from a fine-tune to the model it was trained from,
whatever was served in between; from a model the workspace did not make, to the one served
before it; never below the base.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ai_lsp_tune.files import atomic_write_text
from ai_lsp_tune.state_files import UnreadableStateFile, read_state_file

log = logging.getLogger(__name__)

REGISTRY_FILE = "models.json"


class ModelEntry(BaseModel):
    """One fine-tuned model this workspace made."""

    path: str
    run_id: str | None = None
    base_model: str | None = None
    created_at: str | None = None
    examples: dict[str, int] | None = Field(default=None, description="Examples per split.")
    metrics: dict[str, Any] | None = None
    baseline_model: str | None = Field(default=None, description="The model served then.")
    baseline_metrics: dict[str, Any] | None = Field(
        default=None, description="The served model's metrics on the same test split."
    )
    gate: str | None = Field(default=None, description="The gate's verdict (``RunRecord.gate``).")


class RegistryState(BaseModel):
    version: int = 2
    served: str | None = None
    previous: str | None = None
    configured: str | None = None  # the ``model`` setting when ``served`` was recorded
    trail: list[str] = Field(default_factory=list)  # served in this order; the last serves now
    models: list[ModelEntry] = Field(default_factory=list)
    updated_at: str | None = None


def _parent(state: RegistryState, path: str | None) -> str | None:
    """Where a rollback from ``path`` lands: the model it was fine-tuned from; for a model the
    workspace did not make, the one served before it; None for a base model."""
    entry = next((m for m in state.models if m.path == path), None)
    if path is None or entry is not None:
        return entry.base_model if entry is not None else None
    if path == state.configured or any(m.base_model == path for m in state.models):
        return None
    trail = state.trail
    return trail[-2] if len(trail) >= 2 and trail[-1] == path else None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ModelRegistry:
    """The served models and model history of one workspace (``<workspace_dir>/models.json``)."""

    def __init__(self, workspace_dir: Path) -> None:
        self.path = workspace_dir / REGISTRY_FILE
        self.problems: list[str] = []  # for the user: read once, then drained by the server
        self.on_problem: Callable[[str], None] = self.problems.append
        self._write_failed = False
        self._state = self._load()

    @property
    def served(self) -> str | None:
        return self._state.trail[-1] if self._state.trail else None

    @property
    def previous(self) -> str | None:
        """Where a rollback lands (the served model's parent in the lineage)."""
        return _parent(self._state, self.served)

    @property
    def trail(self) -> list[str]:
        return list(self._state.trail)

    @property
    def models(self) -> list[ModelEntry]:
        return list(self._state.models)

    def lineage(self, path: str | None) -> list[str]:
        """``path``, its parent, its grandparent... down to a base: where rollbacks from it land
        (a chain of ``continueFromServed`` runs; a cycle in a hand-edited file ends it)."""
        chain: list[str] = []
        while path is not None and path not in chain:
            chain.append(path)
            path = _parent(self._state, path)
        return chain

    def entry(self, path: str) -> ModelEntry | None:
        return next((m for m in self._state.models if m.path == path), None)

    @property
    def configured(self) -> str | None:
        return self._state.configured

    def model_to_serve(self, configured: str) -> str:
        """The swapped-in model, unless the user has configured another model since."""
        if self.served and self._state.configured in (None, configured):
            return self.served
        return configured

    def start_serving(self, configured: str) -> str:
        """A server starts: the model it serves; a model configured since forgets the trail."""
        if self.served and self._state.configured in (None, configured):
            return self.served
        if self._state.configured != configured:
            self.set_configured(configured)
        return configured

    def record_swap(self, served: str, previous: str | None) -> None:
        """Remember that ``served`` replaced ``previous``."""
        trail = list(self._state.trail) or ([previous] if previous else [])
        if previous and trail[-1] != previous:
            trail.append(previous)
        if trail[-1:] != [served]:
            trail.append(served)
        self._save(self._state.model_copy(update={"trail": trail}))

    def record_rollback(self) -> None:
        """The served model's parent serves again (the trail drops the step it undoes)."""
        parent = self.previous
        if parent is None:
            return
        trail = self._state.trail
        rolled = trail[:-1] if trail[-2:-1] == [parent] else [*trail, parent]
        self._save(self._state.model_copy(update={"trail": rolled}))

    def set_configured(self, configured: str) -> None:
        """The user chose ``configured`` in their settings; it is what is served now."""
        self._save(self._state.model_copy(update={"configured": configured, "trail": []}))

    def record_model(self, entry: ModelEntry) -> None:
        """Add (or update) a fine-tuned model in the history."""
        models = [m for m in self._state.models if m.path != entry.path] + [entry]
        self._save(self._state.model_copy(update={"models": models}))

    def prune(self, keep: int, *, protect: set[str], runs_dir: Path) -> list[str]:
        """Delete all but the ``keep`` newest fine-tuned models (never ``protect``); return them.

        Only a model inside ``runs_dir`` is deleted (its whole run folder); others are kept. The
        served model's whole lineage stays: rollbacks step down it, one parent at a time.
        """
        protect = protect | set(self.lineage(self.served))
        runs = runs_dir.resolve()
        old = self._state.models[: max(len(self._state.models) - keep, 0)]
        doomed: list[str] = []
        for entry in old:
            model = Path(entry.path).resolve()
            if entry.path in protect or not model.is_relative_to(runs) or model == runs:
                continue
            run_folder = runs / model.relative_to(runs).parts[0]
            shutil.rmtree(run_folder, ignore_errors=True)
            log.info("deleted the old fine-tuned model %s (keeping %d)", entry.path, keep)
            doomed.append(entry.path)
        if doomed:
            models = [m for m in self._state.models if m.path not in doomed]
            trail = [p for p in self._state.trail if p not in doomed]
            self._save(self._state.model_copy(update={"models": models, "trail": trail}))
        return doomed

    def _save(self, state: RegistryState) -> None:
        state.updated_at = now_iso()
        state.served = state.trail[-1] if state.trail else None
        state.previous = _parent(state, state.served)
        self._state = state  # kept in memory whatever happens to the file
        try:
            atomic_write_text(self.path, json.dumps(state.model_dump(), indent=2) + "\n")
        except OSError as exc:  # disk full, read-only, a folder in its place: serving goes on
            log.warning("cannot write the model registry %s: %s", self.path, exc)
            if not self._write_failed:
                self.on_problem(
                    f"ai-lsp: cannot write {self.path} ({exc.strerror or exc}); the models "
                    "served are remembered until the server stops. Free space or fix the file."
                )
            self._write_failed = True
        else:
            self._write_failed = False

    def _load(self) -> RegistryState:
        try:
            state = read_state_file(self.path, RegistryState.model_validate_json)
        except UnreadableStateFile as exc:
            log.warning("%s", exc)
            self._write_failed = self.path.is_dir()  # told once: writes fail as long as it is
            self.on_problem(f"ai-lsp: the model registry {exc}; serving the configured model.")
            return RegistryState()
        if state is None:
            return RegistryState()
        if not state.trail and state.served:  # version 1: only served and previous
            state.trail = [p for p in (state.previous, state.served) if p]
        return state
