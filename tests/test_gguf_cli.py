"""A user fine-tunes the GGUF file they already have, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ai_lsp_tune.cli.app import app
from ai_lsp_tune.models.resolve import gguf_source
from tests.helpers.gguf_files import gguf_of
from tests.helpers.trace_recorder import CODE, Recorder, answer, issue


@pytest.mark.training
@pytest.mark.slow
def test_pipeline_fine_tunes_a_gguf_and_names_it_in_run_json(
    tmp_path: Path, tiny_model_word_split: Path
) -> None:
    source = gguf_of(tiny_model_word_split, tmp_path / "my-model.Q8_0.gguf", "Q8_0")
    recorder = Recorder(tmp_path / "traces" / "ai-lsp-otel.jsonl")
    for n in range(4):
        recorder.analysis(code=CODE + f"value = {n}\n", output=answer(issue("len(xs)")))
    recorder.close()
    result = CliRunner().invoke(
        app,
        [
            *("finetune", "pipeline", str(tmp_path / "traces")),
            *("--model-name", str(source), "--num-layers", "-1", "--num-epochs", "1"),
            *("--output-dir", str(tmp_path / "model")),
            *("--dataset-file", str(tmp_path / "dataset.json")),
            *("--dataset-dir", str(tmp_path / "dataset")),
        ],
    )
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "model" / "run.json").read_text())
    assert run["base_model"] == str(source)
    assert gguf_source(Path(run["base_model_path"])) == str(source)
    adapter = json.loads((tmp_path / "model" / "adapters" / "adapter_config.json").read_text())
    assert adapter["model"] == str(source.resolve())
    assert (tmp_path / "model" / "model" / "config.json").is_file()


def test_a_broken_gguf_is_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "traces.jsonl").write_text("")
    broken = tmp_path / "model.gguf"
    broken.write_bytes(b"GGUF\x03\x00\x00\x00")
    result = CliRunner().invoke(
        app,
        [
            *("finetune", "pipeline", str(tmp_path / "traces.jsonl")),
            *("--model-name", str(broken), "--dataset-file", str(tmp_path / "out.json")),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "is not a complete GGUF model file" in " ".join(result.output.split())
    assert not (tmp_path / "out.json").exists()
