"""Hostile datasets and options for `train`: refused early, clearly, without touching the
previous model; what a run publishes is private."""

from __future__ import annotations

import json
import stat
from importlib.metadata import PackageNotFoundError
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ai_lsp_tune
from ai_lsp_tune.cli.app import app
from ai_lsp_tune.cli.demo import sample_analyses
from ai_lsp_tune.training import publish
from ai_lsp_tune.training.data import TokenizedSplit
from ai_lsp_tune.training.evaluate import EvalMetrics
from ai_lsp_tune.training.loop import TrainResult
from ai_lsp_tune.training.protocol import EvaluatingEvent, TrainRequest, WarningEvent, WorkerEvent
from ai_lsp_tune.training.runner import run_training
from tests.helpers.training import fast_request, write_splits

PLAIN = "just text"


def _rows(n: int, *, plain: set[int] | None = None, seed: int = 3) -> list[dict[str, str]]:
    """``n`` analyses as system/user/assistant rows; those at ``plain`` answer in plain text."""
    rows = []
    for i, s in enumerate(sample_analyses(n, seed=seed)):
        answer = PLAIN if plain is None or i in plain else s.assistant
        rows.append({"system": s.system, "user": s.user, "assistant": answer})
    return rows


def _dataset(tmp_path: Path, layout: str, rows: list[dict[str, str]]) -> Path:
    """``rows`` as the original tool's dataset.json, or as a prepared split folder."""
    if layout == "dataset.json":
        path = tmp_path / "dataset.json"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path
    folder = tmp_path / "splits"
    folder.mkdir()
    bounds = {"train": rows[:-2], "valid": rows[-2:-1], "test": rows[-1:]}
    for split, part in bounds.items():
        lines = []
        for r in part:
            roles = ("system", "user", "assistant")
            lines.append(json.dumps({"messages": [{"role": k, "content": r[k]} for k in roles]}))
        (folder / f"{split}.jsonl").write_text("".join(line + "\n" for line in lines))
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("layout", ["dataset.json", "split folder"])
def test_plain_text_answers_fail_clearly_and_keep_the_previous_model(
    tiny_model: Path, tmp_path: Path, layout: str
) -> None:
    dataset = _dataset(tmp_path, layout, _rows(8))
    out = tmp_path / "finetuned-model"
    (out / "model").mkdir(parents=True)
    (out / "model" / "model.safetensors").write_bytes(b"the previous, good model")
    (out / "run.json").write_text('{"previous": true}\n')
    previous = _snapshot(out)

    result = CliRunner().invoke(
        app,
        ["finetune", "train", str(dataset), "--model-name", str(tiny_model),
         "--output-dir", str(out), "--num-layers", "-1", "--num-epochs", "1"],
    )  # fmt: skip

    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert "error:" in said and "DiagnosticResult" in said and "8 examples" in said, said
    assert "Traceback" not in result.output
    assert _snapshot(out) == previous


@pytest.mark.training  # the worker loads the model before it checks the rank
@pytest.mark.slow
@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"lora_rank": 512}, "--lora-rank 512"),  # the tiny model has a hidden size of 96
    ],
)
def test_bad_hyperparameters_fail_before_any_evaluation(
    tiny_model: Path, tmp_path: Path, options: dict[str, Any], needle: str
) -> None:
    dataset = write_splits(tmp_path / "data", 8, 2, 2)
    request = fast_request(
        tiny_model, tmp_path, dataset, num_epochs=1, eval_max_tokens=16, **options
    )
    events: list[WorkerEvent] = []
    outcome = run_training(request, events.append)

    assert outcome.status == "error", outcome.event
    assert outcome.event.phase == "error" and outcome.event.kind == "bad_hyperparameter"
    assert needle in outcome.event.message
    assert not [e for e in events if isinstance(e, EvaluatingEvent)]
    assert not (tmp_path / "out").exists()


def _private(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


@pytest.mark.training
def test_a_run_skips_invalid_answers_and_publishes_private_files(
    tiny_model: Path, tmp_path: Path
) -> None:
    dataset = _dataset(tmp_path, "dataset.json", _rows(24, plain={0, 5, 9}))
    request = fast_request(
        tiny_model, tmp_path, dataset, num_epochs=1, eval_max_examples=2, eval_max_tokens=16
    )
    events: list[WorkerEvent] = []
    outcome = run_training(request, events.append)
    assert outcome.status == "done", outcome.event

    warnings = [e for e in events if isinstance(e, WarningEvent) and e.count == 3]
    assert warnings and "DiagnosticResult" in warnings[0].message
    out = tmp_path / "out"
    run = json.loads((out / "run.json").read_text())
    assert sum(run["skipped_invalid_answer"].values()) == 3
    assert sum(run["examples"].values()) == 21
    for path in [out, *out.rglob("*")]:
        assert _private(path) == ("0o700" if path.is_dir() else "0o600"), path


def test_run_json_is_written_when_the_package_has_no_installed_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = publish.version

    def from_a_source_tree(name: str) -> str:
        if name == "ai-lsp-tune":
            raise PackageNotFoundError(name)
        return installed(name)

    monkeypatch.setattr(publish, "version", from_a_source_tree)
    metrics = EvalMetrics(
        n=1, valid_json_rate=1, schema_valid_rate=1, grounded_rate=1, snippet_f1=1
    )
    trained = TrainResult(1, 1, 0.5, {}, 10, 1.0, 0.1)
    path = publish.write_run_json(
        tmp_path / "run.json",
        request=TrainRequest(dataset=tmp_path / "d.json"),
        model_path=tmp_path,
        dataset_hash="0" * 64,
        data={"tokens": {"train": TokenizedSplit([([1, 2, 3], 1)])}, "invalid_answers": {}},
        trained=trained,
        before=metrics,
        after=metrics,
        eval_split="train",
        started=0.0,
    )
    run = json.loads(path.read_text())
    assert run["versions"]["ai-lsp-tune"] == ai_lsp_tune.__version__
    assert _private(path) == "0o600"
