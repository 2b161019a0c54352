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
    fused = tmp_path / "model" / "model"
    # exported for llama.cpp / Ollama, then imported again: the same greedy answer
    exported = tmp_path / "ollama" / "fine-tune.gguf"
    result = CliRunner().invoke(
        app,
        ["finetune", "export", str(tmp_path / "model"), "--gguf", str(exported), "--type", "F32"],
    )
    assert result.exit_code == 0, result.output
    assert _greedy(str(exported)) == _greedy(str(fused))
    modelfile = (exported.parent / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./fine-tune.gguf\n")
    assert "<|im_start|>{{ .Role }}" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile


def _greedy(model_name: str, steps: int = 12) -> list[int]:
    import mlx.core as mx

    from ai_lsp_tune.models.load import load_model

    model, tokenizer, _, _ = load_model(model_name)
    chat = [{"role": "user", "content": CODE}]
    tokens = list(tokenizer.apply_chat_template(chat, add_generation_prompt=True))
    prompt = len(tokens)
    for _ in range(steps):
        tokens.append(int(mx.argmax(model(mx.array([tokens]))[0, -1]).item()))
    return tokens[prompt:]


def test_export_refuses_a_folder_that_is_no_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["finetune", "export", str(tmp_path), "--gguf", str(tmp_path / "m.gguf")]
    )
    assert result.exit_code == 1
    assert "neither a run's output folder (run.json) nor a model folder" in result.output
    assert not (tmp_path / "m.gguf").exists()


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
