"""Which model a workspace serves, persisted so a restarted server serves it again."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ValidationError

from ai_lsp_tune.files import atomic_write_text

log = logging.getLogger(__name__)

REGISTRY_FILE = "models.json"


class RegistryState(BaseModel):
    version: int = 1
    served: str | None = None
    previous: str | None = None
    configured: str | None = None  # the ``model`` setting when ``served`` was recorded
    updated_at: str | None = None


class ModelRegistry:
    """The served and previous model paths of one workspace (``<workspace_dir>/models.json``)."""

    def __init__(self, workspace_dir: Path) -> None:
        self.path = workspace_dir / REGISTRY_FILE
        self._state = self._load()

    @property
    def served(self) -> str | None:
        return self._state.served

    @property
    def previous(self) -> str | None:
        return self._state.previous

    def model_to_serve(self, configured: str) -> str:
        """The swapped-in model, unless the user has configured another model since."""
        if self.served and self._state.configured in (None, configured):
            return self.served
        if self._state.configured != configured:
            self._save(RegistryState(configured=configured))
        return configured

    def record_swap(self, served: str, previous: str | None) -> None:
        """Remember that ``served`` replaced ``previous``."""
        self._save(
            RegistryState(served=served, previous=previous, configured=self._state.configured)
        )

    def set_configured(self, configured: str) -> None:
        """The user chose ``configured`` in their settings; it is what is served now."""
        self._save(self._state.model_copy(update={"configured": configured}))

    def _save(self, state: RegistryState) -> None:
        state.updated_at = datetime.now(UTC).isoformat(timespec="seconds")
        atomic_write_text(self.path, json.dumps(state.model_dump(), indent=2) + "\n")
        self._state = state

    def _load(self) -> RegistryState:
        try:
            return RegistryState.model_validate_json(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return RegistryState()
        except (OSError, ValidationError) as exc:
            log.warning("ignoring unreadable model registry %s: %s", self.path, exc)
            return RegistryState()
