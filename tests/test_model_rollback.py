"""From the editor: the model list reads as names, and "Roll back" steps down the lineage.

The real server over stdio with the tiny model; a workspace that made two fine-tunes of it (as
after two runs), serving the second. The user picks the first in the model list, then rolls
back: the first's parent, the base, serves (not the second, served in between); a rollback at
the base says there is nothing to roll back to, as news, not an error.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ai_lsp_tune import paths
from ai_lsp_tune.server import commands
from ai_lsp_tune.serving.registry import REGISTRY_FILE, ModelEntry, RegistryState
from tests.helpers.finetune_story import start_student
from tests.helpers.lsp_session import stop_session

pytestmark = [pytest.mark.model, pytest.mark.slow]


async def test_roll_back_after_use_lands_on_the_parent_and_says_where(
    tmp_path: Path, isolated_home: Path, tiny_model: Path
) -> None:
    workspace = tmp_path / "project"
    workspace.mkdir()
    runs = [tmp_path / "runs" / run / "output" / "model" for run in ("r1", "r2")]
    for folder in runs:
        shutil.copytree(tiny_model, folder)  # the same weights: a swap in place, quick
    made = [
        ModelEntry(
            path=str(folder),
            run_id=folder.parts[-3],
            base_model=str(tiny_model),
            created_at=f"2026-12-03T{9 + i:02d}:00:00+00:00",
            metrics={"issue_f1": 0.5, "n": 8},
            gate="passed",
        )
        for i, folder in enumerate(runs)
    ]
    trail = [str(tiny_model), str(runs[0]), str(runs[1])]
    state = RegistryState(configured=str(tiny_model), trail=trail, models=made)
    registry_file = paths.workspace_dir(workspace) / REGISTRY_FILE
    registry_file.parent.mkdir(parents=True)
    registry_file.write_text(state.model_dump_json())

    student = await start_student(workspace, isolated_home, tiny_model)
    try:
        await student.wait_status(
            lambda s: s["servedModel"] == str(runs[1]), timeout_s=120, what="the second fine-tune"
        )
        rows = (await student.command(commands.MODEL_LIST))["models"]
        labels = [row["label"] for row in rows]
        assert labels[0] == f"{tiny_model.name} (base model)"
        assert labels[1] != labels[2]
        assert all(x.startswith(f"{tiny_model.name} fine-tune · ") for x in labels[1:])

        used = await student.command(commands.MODEL_USE, str(runs[0]))
        assert used["message"] == f"Now serving {labels[1]}"
        assert used["previousModel"] == str(tiny_model)  # where a rollback would land

        rolled = await student.command(commands.MODEL_ROLLBACK)
        assert rolled["servedModel"] == str(tiny_model)  # its parent, not the second fine-tune
        assert rolled["message"] == f"Rolled back to {labels[0]}"

        again = await student.command(commands.MODEL_ROLLBACK)  # an answer, not an error
        assert again["servedModel"] == str(tiny_model)
        assert again["message"].startswith("No previous model to roll back to: ")
        assert json.loads(registry_file.read_text())["trail"][-1] == str(tiny_model)
    finally:
        await stop_session(student.session)
