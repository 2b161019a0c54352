"""Where ai-lsp-tune keeps its files: per-user data (traces, models) and cache (tiny model).

``AI_LSP_HOME`` moves everything under one folder (tests and sandboxes use it).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import platformdirs

APP_NAME = "ai-lsp-tune"


def data_dir() -> Path:
    """The user's data dir: trace exports, fine-tuned models, server state."""
    home = os.environ.get("AI_LSP_HOME")
    return Path(home) / "data" if home else Path(platformdirs.user_data_dir(APP_NAME))


def cache_dir() -> Path:
    """The user's cache dir: the locally built tiny smoke-test model."""
    home = os.environ.get("AI_LSP_HOME")
    return Path(home) / "cache" if home else Path(platformdirs.user_cache_dir(APP_NAME))


def workspace_dir(workspace_root: str | Path | None) -> Path:
    """A per-workspace folder in the data dir, named after the workspace and a hash of its path."""
    if workspace_root is None:
        return data_dir() / "workspaces" / "default"
    root = Path(workspace_root).resolve()
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return data_dir() / "workspaces" / f"{root.name or 'root'}-{digest}"


def is_project_root(workspace_root: str | Path) -> bool:
    """Whether a workspace root is a project: not the file system root, the home folder or above.

    Command arguments may name paths in a project; a client that opens ``/`` or ``~`` as its
    workspace would otherwise let them reach every file the user can read.
    """
    root = Path(workspace_root).resolve()
    try:
        home = Path.home().resolve()
    except RuntimeError:  # no home folder known: only the file system root is excluded
        return root != Path(root.anchor)
    return root != Path(root.anchor) and not home.is_relative_to(root)
