"""One owner of the served model: changes that arrive together end in one consistent state.

The served model changes from the editor's settings (``aiLsp.model``), from a rollback or a
"use this model" command, and from a fine-tune's swap. Whatever order they arrive in, the model
that serves afterwards is the one the workspace's registry says a restart would serve.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ai_lsp_tune.server.state import ServerState
from ai_lsp_tune.serving.registry import ModelRegistry
from ai_lsp_tune.serving.served_model import NoPreviousModel
from tests.helpers.models import same_shape_model


@pytest.mark.model
@pytest.mark.parametrize("first", ["settings", "rollback"])
async def test_a_model_setting_changed_during_a_rollback_leaves_one_served_model(
    tiny_model: Path, tmp_path: Path, first: str
) -> None:
    tuned = same_shape_model(tiny_model, tmp_path / "fine-tuned", seed=1)
    other = same_shape_model(tiny_model, tmp_path / "other", seed=2)
    workspace = tmp_path / "project"
    workspace.mkdir()
    state = ServerState({"AI_LSP_MODEL": str(tiny_model), "AI_LSP_TELEMETRY": "false"})
    state.initialize(str(workspace), None)
    told: list[str] = []
    state.start_backend(lambda level, message: told.append(message))
    try:
        served = await state.wait_backend() and state.served_model
        assert served is not None and served.current_path == str(tiny_model), told
        await served.swap(str(tuned))  # a fine-tune serves; a rollback goes back to the base

        changes = [
            state.change_settings({"model": str(other)}, lambda _, message: told.append(message)),
            served.rollback(),
        ]
        if first == "rollback":
            changes.reverse()
        outcomes = await asyncio.gather(*changes, return_exceptions=True)

        now = served.current_path
        # The setting is applied last or first; either way the user's model serves at the end,
        # and a rollback that came after it has nothing to go back to.
        assert now == str(other), (outcomes, told)
        rolled = outcomes[1] if first == "settings" else outcomes[0]
        assert not isinstance(rolled, Exception) or isinstance(rolled, NoPreviousModel), rolled
        # What serves now is what a restarted server would serve, and nothing to roll back to.
        registry = ModelRegistry(state.workspace_dir)
        assert registry.model_to_serve(str(other)) == now
        assert served.previous_path is None and registry.previous is None
    finally:
        await state.shutdown()
