"""``model.use`` on a fine-tune whose weights were deleted: refused before "Now serving", and the
model served before keeps answering (it once said "Now serving X" over the old weights)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ai_lsp_tune import paths
from ai_lsp_tune.server.commands import FINETUNE_STATUS, MODEL_USE
from tests.helpers.raw_lsp import RawServer

pytestmark = pytest.mark.slow


def test_a_listed_fine_tune_without_weights_is_refused_and_the_old_model_serves(
    tmp_path: Path, isolated_home: Path, tiny_model: Path
) -> None:
    workspace = tmp_path / "project"
    workspace.mkdir()
    state = paths.workspace_dir(workspace)
    fine_tune = state / "finetune" / "runs" / "r1" / "output" / "model"
    shutil.copytree(tiny_model, fine_tune)
    for weights in fine_tune.glob("*.safetensors"):
        weights.unlink()  # config.json and tokenizer stay: it looks like a model folder
    (state / "models.json").write_text(
        json.dumps({"version": 2, "models": [{"path": str(fine_tune), "run_id": "r1"}]})
    )
    server = RawServer({"AI_LSP_HOME": str(isolated_home)}, tmp_path / "server.log")
    try:
        server.initialize(workspace, {"aiLsp": {"backend": "local", "model": str(tiny_model)}})
        server.wait_until_ready()

        answer = server.command(MODEL_USE, str(fine_tune))

        assert "error" in answer, answer
        assert "weights" in answer["error"]["message"], answer
        assert server.command(FINETUNE_STATUS)["result"]["servedModel"] == str(tiny_model)
        assert not [m for m in server.shown() if m.lower().startswith("now serving")]
    finally:
        server.kill()
