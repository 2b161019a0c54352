"""From the editor: "Export model for Ollama / llama.cpp" writes a run's fine-tune as a GGUF with
a Modelfile beside it and answers one line naming the file and the ``ollama create`` command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from ai_lsp_tune.server import commands
from tests.helpers.lsp_session import Session, start_session, stop_session

pytestmark = [pytest.mark.slow]

SETTINGS = {"aiLsp": {"backend": "remote", "remoteModel": "test"}}


async def _export(session: Session, *args: Any) -> Any:
    return await session.client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=commands.MODEL_EXPORT, arguments=list(args))
    )


async def test_export_writes_a_gguf_and_modelfile_and_names_the_ollama_command(
    tmp_path: Path, tiny_model_word_split: Path
) -> None:
    workspace = tmp_path / "project"
    run = workspace / "runs" / "my-fine-tune"
    shutil.copytree(tiny_model_word_split, run / "model")
    (run / "run.json").write_text(json.dumps({"base_model": str(tiny_model_word_split)}))
    session = await start_session(workspace, init_options=SETTINGS)
    try:
        out = workspace / "ollama" / "mine.gguf"
        result = await _export(session, {"modelPath": str(run), "out": str(out), "type": "Q8_0"})
        assert out.read_bytes()[:4] == b"GGUF"
        assert (out.parent / "Modelfile").read_text().startswith("FROM ./mine.gguf\n")
        assert sorted(p.name for p in out.parent.iterdir()) == ["Modelfile", "mine.gguf"]
        message = result["message"]
        assert "\n" not in message and str(out) in message
        assert "ollama create my-fine-tune -f Modelfile" in message
        # the editor showed progress while it ran, ending with the same line
        exports = [r for t, r in session.client.progress_reports.items() if "export" in t]
        assert len(exports) == 1 and isinstance(exports[0][0], types.WorkDoneProgressBegin)
        assert isinstance(exports[0][-1], types.WorkDoneProgressEnd)
        assert exports[0][-1].message == message
        # nothing served (a remote backend) and nothing named: one line saying what to pass
        with pytest.raises(JsonRpcException, match="No model is being served"):
            await _export(session)
        # a run that kept only its adapter: one line saying so, nothing written
        shutil.rmtree(run / "model")
        with pytest.raises(
            JsonRpcException, match=r"kept only its LoRA adapter.*aiLsp\.finetune\.fuse true"
        ):
            await _export(session, {"modelPath": str(run), "out": str(workspace / "b.gguf")})
        assert not (workspace / "b.gguf").exists()
        # outside the workspace and the data dir: refused before any work
        with pytest.raises(JsonRpcException, match="outside"):
            await _export(session, {"modelPath": str(tiny_model_word_split)})
    finally:
        await stop_session(session)
