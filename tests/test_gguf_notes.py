"""What converting a GGUF means for the user reaches them, not only the log: a GGUF without a
chat template (or with K-quants dequantized) gets one line in the CLI and one editor warning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from lsprotocol import types
from typer.testing import CliRunner

from ai_lsp_tune.cli.app import app
from tests.helpers.finetune_story import start_student
from tests.helpers.gguf_files import gguf_of
from tests.helpers.lsp_session import stop_session

NO_TEMPLATE = "templateless.gguf: it has no chat template (tokenizer.chat_template)"


def _templateless_gguf(model: Path, tmp_path: Path) -> Path:
    folder = shutil.copytree(model, tmp_path / "templateless")
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.pop("chat_template", None)
    config_file.write_text(json.dumps(config))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    return gguf_of(folder, tmp_path / "templateless.gguf")


def test_the_cli_says_in_one_line_that_a_gguf_has_no_chat_template(
    tmp_path: Path, tiny_model_word_split: Path
) -> None:
    source = _templateless_gguf(tiny_model_word_split, tmp_path)
    traces = tmp_path / "traces.jsonl"
    traces.write_text("")  # the run stops there; the note came first
    result = CliRunner().invoke(
        app,
        [
            *("finetune", "pipeline", str(traces), "--model-name", str(source)),
            *("--output-dir", str(tmp_path / "out"), "--dataset-dir", str(tmp_path / "ds")),
            *("--dataset-file", str(tmp_path / "dataset.json")),
        ],
    )
    notes = [line for line in result.output.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and NO_TEMPLATE in notes[0], result.output


@pytest.mark.model
@pytest.mark.slow
async def test_the_editor_warns_once_that_the_served_gguf_has_no_chat_template(
    tmp_path: Path, isolated_home: Path, tiny_model_word_split: Path
) -> None:
    source = _templateless_gguf(tiny_model_word_split, tmp_path)
    workspace = tmp_path / "project"
    workspace.mkdir()
    student = await start_student(workspace, isolated_home, source)
    try:
        await student.wait_status(
            lambda s: s["servedModel"] is not None, timeout_s=180, what="the GGUF to be served"
        )

        def warnings() -> list[str]:
            return [
                m.message
                for m in student.client.messages
                if m.type == types.MessageType.Warning and NO_TEMPLATE in m.message
            ]

        await student.session.wait_for(
            lambda: bool(warnings()), timeout_s=30, what="the GGUF warning"
        )
        assert len(warnings()) == 1 and "\n" not in warnings()[0]
        # :checkhealth shows it too, from the status
        assert NO_TEMPLATE in (await student.status())["servedModelNote"]
    finally:
        await stop_session(student.session)


def test_the_note_joins_the_memory_of_dequantized_k_quants_and_a_missing_template(
    tmp_path: Path,
) -> None:
    from ai_lsp_tune.models.resolve import SOURCE_FILE, gguf_note

    folder = tmp_path / "converted"
    folder.mkdir()
    kquants = "2 tensors in Q4_K, Q6_K were dequantized to float16 (12 MiB in memory)"
    (folder / SOURCE_FILE).write_text(json.dumps({"file": "x", "note": kquants + "."}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}"}))
    assert gguf_note(Path("mine.Q4_K_M.gguf"), folder) == f"mine.Q4_K_M.gguf: {kquants}."
    (folder / "tokenizer_config.json").write_text("{}")
    note = gguf_note(Path("mine.Q4_K_M.gguf"), folder)
    assert note is not None and note.startswith(f"mine.Q4_K_M.gguf: {kquants}; it has no chat")
