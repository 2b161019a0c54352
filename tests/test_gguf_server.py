"""From the editor: `model` set to a GGUF file, "Fine-tune on my traces" swaps in the fine-tune,
and the model list and status name the GGUF the user gave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ai_lsp_tune.server import commands
from tests.helpers.finetune_story import QUICK, record_teacher_traces, start_student
from tests.helpers.gguf_files import gguf_of
from tests.helpers.lsp_session import stop_session

pytestmark = [pytest.mark.training, pytest.mark.model, pytest.mark.slow]


async def test_a_fine_tune_of_a_gguf_from_the_editor_swaps_it_in(
    tmp_path: Path, isolated_home: Path, tiny_model_word_split: Path
) -> None:
    (tmp_path / "models").mkdir()
    source = gguf_of(tiny_model_word_split, tmp_path / "models" / "tiny.Q8_0.gguf", "Q8_0")
    workspace = tmp_path / "project"
    workspace.mkdir()
    await record_teacher_traces(workspace, isolated_home, files=8)
    student = await start_student(workspace, isolated_home, source, **QUICK, force=True)
    try:
        ready = await student.wait_status(
            lambda s: s["servedModel"] is not None, timeout_s=180, what="the GGUF to be served"
        )
        assert ready["servedModel"] == str(source)
        listed = await student.command(commands.MODEL_LIST)
        assert str(source) in json.dumps(listed)
        started = await student.command(commands.FINETUNE)
        reports = await student.wait_ended(started["progressToken"], timeout_s=420)
        assert "now serving the fine-tuned model" in reports[-1].message, reports[-1].message
        status = await student.status()
        assert status["state"] == "succeeded" and status["lastRun"]["swapped"] is True
        assert status["previousModel"] == str(source)
        rolled = await student.command(commands.MODEL_ROLLBACK)
        assert rolled["servedModel"] == str(source)
    finally:
        await stop_session(student.session)
