"""A user's first fine-tunes: few analyses, long files. Everything recorded reaches training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ai_lsp_tune.cli.app import app
from ai_lsp_tune.dataset.prepare import prepare_dataset
from ai_lsp_tune.prompts import parse_user_prompt
from tests.helpers.recorded_traces import TraceFacts
from tests.helpers.trace_recorder import CODE, Recorder, answer, issue


def split_rows(folder: Path) -> dict[str, list[dict[str, str]]]:
    return {
        split: [
            {m["role"]: m["content"] for m in json.loads(line)["messages"]}
            for line in (folder / f"{split}.jsonl").open()
        ]
        for split in ("train", "valid", "test")
    }


def test_every_example_of_a_trace_file_reaches_the_splits(
    tmp_path: Path, trace_file: TraceFacts
) -> None:
    report = prepare_dataset(
        [trace_file.path], output_file=tmp_path / "dataset.json", output_dir=tmp_path / "splits"
    )
    assert report.examples == trace_file.examples
    assert report.over_max_seq_length == trace_file.over_max_seq_length
    assert (report.cropped, report.too_long_to_crop) == (trace_file.over_max_seq_length, 0)
    rows = [row for rows in split_rows(tmp_path / "splits").values() for row in rows]
    assert len(rows) == 1 + report.crop_windows and all(report.splits.values())
    assert {parse_user_prompt(r["user"]).name for r in rows} == trace_file.names  # type: ignore[union-attr]
    for row in rows:
        code = parse_user_prompt(row["user"]).code  # type: ignore[union-attr]
        assert all(i["issue_snippet"] in code for i in json.loads(row["assistant"])["issues"])


def test_too_few_files_for_a_test_split_hold_out_examples_instead(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "traces" / "t.jsonl")
    for n in range(6):  # two files, three versions of each
        code = CODE + f"value = {n}\n"
        recorder.analysis(code=code, output=answer(issue("len(xs)")), uri=f"file:///p/m{n % 2}.py")
    recorder.close()
    report = prepare_dataset(
        [tmp_path / "traces"], output_file=tmp_path / "d.json", output_dir=tmp_path / "splits"
    )
    assert report.splits == {"train": 4, "valid": 1, "test": 1}
    assert "held out" in report.split_note
    rows = split_rows(tmp_path / "splits")
    assert {s: len(r) for s, r in rows.items()} == report.splits


@pytest.mark.training
def test_pipeline_completes_on_a_one_analysis_history(tmp_path: Path, tiny_model: Path) -> None:
    recorder = Recorder(tmp_path / "traces" / "ai-lsp-otel.jsonl")
    long_code = "".join(f"def f{n}(x):\n    return x + {n}\n\n" for n in range(300))
    recorder.analysis(code=long_code + CODE, output=answer(issue("len(xs)")))
    recorder.close()
    result = CliRunner().invoke(
        app,
        [
            *("finetune", "pipeline", str(tmp_path / "traces")),
            *("--model-name", str(tiny_model), "--num-layers", "-1"),
            *("--output-dir", str(tmp_path / "model")),
            *("--dataset-file", str(tmp_path / "dataset.json")),
            *("--dataset-dir", str(tmp_path / "dataset"), "--max-seq-length", "1024"),
        ],
    )
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "cropped to windows" in output
    assert "Only 1 example(s): all in train" in output
    assert "Lowered --batch-size from 2 to 1" in output
    run = json.loads((tmp_path / "model" / "run.json").read_text())
    assert run["examples"] == {"train": 1, "valid": 0, "test": 0}
    assert run["hyperparameters"]["batch_size"] == 1
    assert run["best_iteration"] == run["iterations"]  # no validation: the last adapter
    assert run["evaluated_on"] == "train"
