"""The training commands as a user runs them: `ai-lsp demo`, bad options."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ai_lsp_tune import blas
from ai_lsp_tune.cli.app import app


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--learning-rate", "-1", "--learning-rate"),
        ("--learning-rate", "nan", "--learning-rate"),
        ("--num-layers", "0", "invalid --num-layers"),
        ("--batch-size", "0", "--batch-size"),
        ("--lora-rank", "5000", "--lora-rank"),
        ("--max-seq-length", "8", "--max-seq-length"),
        ("--max-batch-tokens", "8", "--max-batch-tokens"),
        ("--max-batch-tokens", "100", "--max-batch-tokens 100 is less than --max-seq-length 2048"),
    ],
)
def test_bad_hyperparameters_are_refused_before_training(
    tmp_path: Path, option: str, value: str, message: str
) -> None:
    (tmp_path / "dataset.json").write_text("")
    result = CliRunner().invoke(
        app, ["finetune", "train", str(tmp_path / "dataset.json"), option, value]
    )
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize(
    ("flags", "keep_last"),
    [([], None), (["--keep-last-adapter"], True), (["--keep-best-adapter"], False)],
    ids=["neither-auto", "last", "best"],
)
def test_the_adapter_flags_choose_and_neither_leaves_it_to_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str], keep_last: bool | None
) -> None:
    """The request the worker would get: the flag pair's choice, or unset (auto)."""
    import ai_lsp_tune.cli.app as cli

    requests = []
    monkeypatch.setattr(cli, "_run_train", lambda request, launch: requests.append(request))
    monkeypatch.setattr(cli, "_local_tokenizer", lambda model_name: None)
    (tmp_path / "dataset.json").write_text("")
    result = CliRunner().invoke(app, ["finetune", "train", str(tmp_path / "dataset.json"), *flags])
    assert result.exit_code == 0, result.output
    assert [r.keep_last_adapter for r in requests] == [keep_last]


@pytest.mark.parametrize("command", ["train", "pipeline"])
def test_a_lora_rank_the_model_cannot_take_is_refused_before_any_work(
    tmp_path: Path, tiny_model: Path, command: str
) -> None:
    """Checked against the model's config.json: no dataset written, no model loaded."""
    (tmp_path / "traces.jsonl").write_text("")
    source = "traces.jsonl" if command == "pipeline" else "dataset.json"
    result = CliRunner().invoke(
        app,
        [
            "finetune", command, str(tmp_path / source),
            "--model-name", str(tiny_model), "--lora-rank", "512",
            "--dataset-file" if command == "pipeline" else "--output-dir",
            str(tmp_path / "out.json"),
        ],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert (
        "--lora-rank 512 is more than the hidden size 96 of "
        f"{tiny_model}, the most a LoRA update of its layers can use; set --lora-rank to 96 or less"
    ) in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "out.json").exists()


@pytest.mark.training
def test_the_smoke_demo_runs_offline_and_shows_learning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its worker is offered every core (a foreground run finding them free) and, for the tiny
    model, runs on one: more would be slower (``blas.fit_to_model``)."""
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setattr(blas, "foreground_threads", lambda: len(os.sched_getaffinity(0)))
    result = CliRunner().invoke(app, ["demo", "--smoke", "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "smoke test" in result.output
    assert "--model-name mlx-community/gemma-2-2b-it-4bit\n" in result.output
    run = json.loads((tmp_path / "finetuned-model" / "run.json").read_text())
    assert run["blas"]["name"] == blas.status().name  # OpenBLAS on a Linux CPU
    if run["blas"]["name"].startswith("OpenBLAS"):
        assert run["blas"]["threads"] == 1
        if len(os.sched_getaffinity(0)) > 1:
            assert run["blas"]["threads_from"] == "one: a model of hidden size 96 is too small"
    before, after = run["metrics"]["before"], run["metrics"]["after"]
    assert before["unconstrained_valid_json_rate"] < 0.2  # on its own, without the grammar
    assert after["schema_valid_rate"] >= 0.9
    assert after["val_loss"] < before["val_loss"]


@pytest.mark.slow
@pytest.mark.training
@pytest.mark.parametrize(
    ("flag", "adapter"),
    [
        ("--eval-unconstrained", "--keep-best-adapter"),
        ("--no-eval-unconstrained", "--keep-last-adapter"),
    ],
)
def test_the_unconstrained_pass_can_be_skipped_from_the_cli(
    tiny_model: Path, tmp_path: Path, flag: str, adapter: str
) -> None:
    """--no-eval-unconstrained (as the real demo evaluates): the answers as served only, so the
    unconstrained JSON rate is not measured, in run.json and in the table; and the adapter the
    run published (the demo keeps the last) is the one asked for."""
    from tests.helpers.training import write_splits

    dataset = write_splits(tmp_path / "data", 4, 2, 2)
    result = CliRunner().invoke(
        app,
        [
            "finetune", "train", str(dataset), "--model-name", str(tiny_model),
            "--output-dir", str(tmp_path / "out"), "--num-epochs", "1", "--batch-size", "4",
            "--num-layers", "1", "--eval-max-examples", "2", "--eval-max-tokens", "16", flag,
            adapter,
        ],
        env={"COLUMNS": "120"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    measured = flag == "--eval-unconstrained"
    published = adapter.removeprefix("--keep-").removesuffix("-adapter")
    assert (run["published_adapter"], run["adapter_choice"]) == (published, "requested")
    which = "best-validation" if published == "best" else "last step's"
    assert f"Published:   the {which} adapter (requested)" in result.output
    for stage in ("before", "after"):
        rate = run["metrics"][stage]["unconstrained_valid_json_rate"]
        assert (rate is not None) is measured, (stage, rate)
        assert run["metrics"][stage]["schema_valid_rate"] == 1.0  # answered as served either way
    row = next(line for line in result.output.splitlines() if "unconstrained JSON" in line)
    cells = [cell.strip() for cell in row.split("│") if cell.strip()][1:]
    assert (cells == ["-", "-"]) is not measured, row
