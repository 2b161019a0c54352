"""Fine-tuning end to end with the tiny model: it learns, it resumes, it fails clearly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from ai_lsp_tune.cli.demo import sample_analyses
from ai_lsp_tune.dataset.prepare import prepare_dataset
from ai_lsp_tune.schema import parse_diagnostic_result
from ai_lsp_tune.training.protocol import ErrorEvent, TrainingEvent, TrainRequest, WorkerEvent
from ai_lsp_tune.training.runner import TrainingRunner, run_training
from tests.helpers.trace_recorder import (
    CODE,
    FAR_APART,
    FAR_APART_ANSWER,
    Recorder,
    answer,
    issue,
)
from tests.helpers.training import fast_request, write_splits

pytestmark = pytest.mark.training


def test_fine_tuning_teaches_the_tiny_model_the_answer_format(
    tiny_model: Path, tmp_path: Path
) -> None:
    dataset = write_splits(tmp_path / "data", 60, 8, 20)
    request = fast_request(tiny_model, tmp_path, dataset, num_epochs=8, eval_max_tokens=64)
    events: list[WorkerEvent] = []
    outcome = run_training(request, events.append)

    assert outcome.status == "done", outcome.event
    done = outcome.event
    assert done.phase == "done" and done.before and done.after
    # Random init: no JSON at all on its own (under the grammar every answer is valid anyway).
    assert done.before.unconstrained_valid_json_rate is not None
    assert done.before.unconstrained_valid_json_rate <= 0.1
    assert done.after.schema_valid_rate >= 0.9
    assert done.after.val_loss < done.before.val_loss  # type: ignore[operator]
    vals = [e.val_loss for e in events if isinstance(e, TrainingEvent) and e.val_loss]
    assert vals[-1] < vals[0] / 2
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["metrics"]["before"]["schema_valid_rate"] == done.before.schema_valid_rate
    assert run["metrics"]["after"]["schema_valid_rate"] == done.after.schema_valid_rate
    unconstrained = run["metrics"]["after"]["unconstrained_valid_json_rate"]
    assert unconstrained == done.after.unconstrained_valid_json_rate
    assert run["iterations"] == 120  # ceil(60 * 8 / 4)
    assert run["examples"] == {"train": 60, "valid": 8, "test": 20}
    assert sorted(os.listdir(tmp_path / "out")) == ["adapters", "model", "run.json"]
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir() if p.is_dir())

    # The published model is an ordinary mlx-lm model that answers in the learned format.
    from mlx_lm import generate, load

    from ai_lsp_tune.prompts import prompt_tokens

    model, tokenizer = load(str(tmp_path / "out" / "model"))
    sample = sample_analyses(1, seed=99)[0]
    prompt = prompt_tokens(tokenizer, sample.system, sample.user)
    parse_diagnostic_result(generate(model, tokenizer, prompt=prompt, max_tokens=64))


def test_evaluating_only_as_served_answers_each_test_prompt_once(
    tiny_model: Path, tmp_path: Path
) -> None:
    """eval_unconstrained false (the real demo): no free answers, one pass, the rate unknown."""
    dataset = write_splits(tmp_path / "data", 8, 4, 6)
    request = fast_request(
        tiny_model, tmp_path, dataset, num_epochs=1, eval_max_tokens=24, eval_unconstrained=False
    )
    events: list[WorkerEvent] = []
    outcome = run_training(request, events.append)

    assert outcome.status == "done", outcome.event
    done = outcome.event
    assert done.phase == "done" and done.before and done.after
    assert done.before.unconstrained_valid_json_rate is None
    assert done.before.schema_valid_rate == 1.0  # answered, under the grammar
    assert {(e.total, e.examples) for e in events if e.phase == "evaluating"} == {(6, 6)}


def _validation_the_training_never_teaches(n_valid: int, folder: Path) -> Path:
    """Splits whose validation answers use messages the training answers never use: their
    loss falls, then stops falling, so the best validation comes before the last step."""
    dataset = write_splits(folder, 8, n_valid, 2)
    rows = [json.loads(line) for line in (dataset / "valid.jsonl").read_text().splitlines()]
    for row in rows:
        result = json.loads(row["messages"][2]["content"])
        for number, found in enumerate(result["issues"]):
            found["message"] = f"zq{number} vex plok quirt {number * 7} blorf"
        row["messages"][2]["content"] = json.dumps(result)
    (dataset / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dataset


def test_keep_last_adapter_publishes_the_last_step_not_the_best_validation(
    tiny_model: Path, tmp_path: Path
) -> None:
    """The real demo's choice: the last validation loss is worse than the best one, and the
    last step's adapter is still the one published, because it was asked for."""
    dataset = _validation_the_training_never_teaches(4, tmp_path / "data")
    request = fast_request(tiny_model, tmp_path, dataset, num_epochs=3, keep_last_adapter=True)
    outcome = run_training(request, lambda _: None)

    assert outcome.status == "done", outcome.event
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    history = run["val_loss_history"]
    assert min(loss for _, loss in history) < history[-1][1], history  # the best was earlier
    assert run["best_iteration"] == run["iterations"] == outcome.event.best_iteration
    assert run["best_val_loss"] == pytest.approx(history[-1][1], abs=1e-4)
    assert (run["published_adapter"], run["adapter_choice"]) == ("last", "requested")


def test_by_default_a_run_keeps_its_best_adapter_only_when_surely_better_and_says_why(
    tiny_model: Path, tmp_path: Path
) -> None:
    """Six validation windows, one file each: the best validation loss comes before the last
    step, but not lower on enough files to be sure, so the last adapter is published and
    run.json (and the done event) say so with the difference the validation measured."""
    dataset = _validation_the_training_never_teaches(6, tmp_path / "data")
    request = fast_request(tiny_model, tmp_path, dataset, num_epochs=3)
    assert request.keep_last_adapter is None  # auto
    outcome = run_training(request, lambda _: None)

    assert outcome.status == "done", outcome.event
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    history = run["val_loss_history"]
    best_step, best = min(history, key=lambda point: point[1])
    assert best_step < run["iterations"], history
    assert run["published_adapter"] == "last"
    assert run["best_iteration"] == run["iterations"]  # the published adapter's
    reason = run["adapter_choice"]
    assert reason.startswith(f"auto: last; best (step {best_step}) not surely lower (Δ +"), reason
    # Δ: the last's loss minus the best's, from the same windows the validation averaged
    delta = float(reason.split("Δ ")[1].split(" ")[0])
    assert delta == pytest.approx(history[-1][1] - best, abs=2e-3)
    assert reason.endswith("over 6 files)")
    done = outcome.event
    assert done.phase == "done"
    assert (done.published_adapter, done.adapter_choice) == ("last", reason)


def test_the_original_dataset_json_format_trains(tiny_model: Path, tmp_path: Path) -> None:
    dataset = tmp_path / "dataset.json"
    rows = [
        {"system": s.system, "user": s.user, "assistant": s.assistant}
        for s in sample_analyses(30, seed=2)
    ]
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    request = fast_request(
        tiny_model, tmp_path, dataset, num_epochs=1, eval_max_examples=2, eval_max_tokens=16
    )
    outcome = run_training(request)
    assert outcome.status == "done", outcome.event
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert sum(run["examples"].values()) == 30
    assert run["examples"]["train"] >= 20


@pytest.mark.parametrize(
    ("given", "limit"), [("split folder", 1024), ("split folder", 512), ("dataset.json", 512)]
)
def test_examples_are_cropped_once_a_split_folders_rows_are_trained_as_written(
    tiny_model: Path, tmp_path: Path, given: str, limit: int
) -> None:
    """prepare-dataset crops a long file into 2 windows for --max-seq-length 1024 with the
    model's tokenizer; a run at 1024 trains every row as written. At 512 only what is over 512
    is cropped (and said why): the 2 windows of the split folder, the whole file in dataset.json;
    nothing is left out."""
    recorder = Recorder(tmp_path / "traces" / "ai-lsp-otel.jsonl")
    for n in range(12):
        code = CODE + f"value = {n}\n"
        recorder.analysis(code=code, output=answer(issue("len(xs)")), uri=f"file:///p/m{n}.py")
    recorder.analysis(code=FAR_APART, output=FAR_APART_ANSWER, uri="file:///p/long.py")
    recorder.close()
    report = prepare_dataset(
        [tmp_path / "traces"],
        output_file=tmp_path / "dataset.json",
        output_dir=tmp_path / "splits",
        max_seq_length=1024,
        tokenizer=str(tiny_model),
    )
    assert (report.examples, report.cropped, report.crop_windows) == (13, 1, 2)
    assert sum(report.splits.values()) == 14  # 12 short examples and the long file's 2 windows
    dataset = tmp_path / ("splits" if given == "split folder" else "dataset.json")
    request = fast_request(
        tiny_model, tmp_path, dataset, num_epochs=1, eval_max_examples=1, eval_max_tokens=8,
        max_seq_length=limit,
    )  # fmt: skip
    events: list[WorkerEvent] = []
    outcome = run_training(request, events.append)
    assert outcome.status == "done", outcome.event
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    trained, cropped = sum(run["examples"].values()), sum(run["cropped_too_long"].values())
    assert sum(run["skipped_too_long"].values()) == 0
    warnings = [e.message for e in events if e.phase == "warning" and "Cropped" in e.message]
    if limit == 1024:  # every row as prepare-dataset wrote it, none cropped again
        assert (trained, cropped, warnings) == (14, 0, [])
    elif given == "split folder":  # each window over 512 cropped to a smaller one, said why
        assert (trained, cropped) == (14, 2)
        assert warnings == ["Cropped 2 of 14 examples longer than --max-seq-length 512 tokens "
                            "to windows of their code around their issues (the splits' windows "
                            "were sized for a larger --max-seq-length or with the token estimate, "
                            "not the model's tokenizer)."]  # fmt: skip
    else:  # dataset.json holds the file whole: cropped once, on load
        assert cropped == 1 and trained > 13
        assert warnings == ["Cropped 1 of 13 examples longer than --max-seq-length 512 tokens "
                            "to windows of their code around their issues."]  # fmt: skip


async def test_cancel_keeps_a_checkpoint_and_resume_continues(
    tiny_model: Path, tmp_path: Path
) -> None:
    dataset = write_splits(tmp_path / "data", 40, 4, 4)
    request = fast_request(
        tiny_model, tmp_path, dataset, num_epochs=4, eval_max_examples=2, eval_max_tokens=16
    )
    cancelled_at: list[float] = []

    def on_event(event: WorkerEvent) -> None:
        if isinstance(event, TrainingEvent) and event.iteration >= 12 and not cancelled_at:
            cancelled_at.append(time.monotonic())
            runner.cancel()

    runner = TrainingRunner(request, on_event)
    outcome = await runner.run()

    assert outcome.status == "cancelled", outcome.event
    assert outcome.event.phase == "cancelled"
    assert outcome.event.checkpoint_iteration is not None
    # Stopped at a step boundary after the cancel, well before the 40 steps of the run; counted
    # in steps, not seconds, so a loaded machine cannot make it flaky.
    assert 12 <= outcome.event.checkpoint_iteration < 40
    assert not (tmp_path / "out").exists()  # nothing half-published

    seen: list[int] = []
    resume = request.model_copy(update={"resume": True})

    def record(event: WorkerEvent) -> None:
        if isinstance(event, TrainingEvent) and event.train_loss is not None:
            seen.append(event.iteration)

    outcome = await TrainingRunner(resume, record).run()
    assert outcome.status == "done", outcome.event
    assert seen[0] >= 13  # continued one after the checkpoint (>= 12), not restarted
    assert seen[-1] == 40  # ceil(40 * 4 / 4)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["iterations"] == 40


def _corrupt_copy(tiny_model: Path, target: Path) -> Path:
    target.mkdir()
    for item in tiny_model.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    (target / "model.safetensors").write_bytes(b"\x00" * 64)
    return target


@pytest.mark.parametrize(
    ("case", "kind", "needle"),
    [
        ("corrupt_weights", "bad_model", "incomplete or corrupt"),
        ("no_config", "bad_model", "no config.json"),
        ("hub_offline", "model_not_found", "--model-name /path/to/model"),
        ("empty_dataset", "bad_dataset", "has no examples"),
        ("all_too_long", "bad_dataset", "--max-seq-length"),
    ],
)
def test_bad_input_gets_one_clear_error(
    tiny_model: Path, tmp_path: Path, case: str, kind: str, needle: str
) -> None:
    dataset = write_splits(tmp_path / "data", 8, 2, 2)
    options: dict[str, object] = {"model_name": str(tiny_model), "num_layers": -1}
    if case == "corrupt_weights":
        options["model_name"] = str(_corrupt_copy(tiny_model, tmp_path / "broken"))
    elif case == "no_config":
        (tmp_path / "empty-model").mkdir()
        options["model_name"] = str(tmp_path / "empty-model")
    elif case == "hub_offline":
        options["model_name"] = "mlx-community/not-cached-anywhere-4bit"
    elif case == "empty_dataset":
        dataset = tmp_path / "dataset.json"
        dataset.write_text("")
    elif case == "all_too_long":
        options["max_seq_length"] = 16
    request = TrainRequest(dataset=dataset, output_dir=tmp_path / "out", **options)  # type: ignore[arg-type]
    outcome = run_training(request)
    assert outcome.status == "error"
    assert isinstance(outcome.event, ErrorEvent)
    assert outcome.event.kind == kind
    assert needle in outcome.event.message
    assert outcome.event.message.count(". ") == 0  # one sentence
    assert not (tmp_path / "out").exists()


async def test_a_killed_worker_is_reported_not_awaited_forever(
    tiny_model: Path, tmp_path: Path
) -> None:
    dataset = write_splits(tmp_path / "data", 8, 2, 2)
    request = TrainRequest(dataset=dataset, model_name=str(tiny_model), output_dir=tmp_path / "o")

    def kill_on_first_event(event: WorkerEvent) -> None:
        assert runner._process is not None
        os.kill(runner._process.pid, signal.SIGKILL)

    runner = TrainingRunner(request, kill_on_first_event)
    outcome = await asyncio.wait_for(runner.run(), timeout=30)
    assert outcome.status == "error"
    assert isinstance(outcome.event, ErrorEvent)
    assert outcome.event.kind == "oom"  # SIGKILL: most likely the OOM killer
    assert "SIGKILL" in outcome.event.message


def test_more_layers_than_the_model_has_adapts_all_of_them_and_says_so(
    tiny_model: Path, tmp_path: Path
) -> None:
    dataset = write_splits(tmp_path / "data", 8, 2, 2)
    request = fast_request(
        tiny_model, tmp_path, dataset, num_epochs=1, eval_max_tokens=16, num_layers=16
    )
    events: list[WorkerEvent] = []
    outcome = run_training(request, events.append)
    assert outcome.status == "done", outcome.event  # the tiny model has 2 layers
    said = [e.message for e in events if e.phase == "warning" and "num_layers" in e.message]
    assert said == ["num_layers 16 is more than the 2 layers of " + str(tiny_model)
                    + ": adapting all 2 layers"]  # fmt: skip
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["hyperparameters"]["num_layers"] == 2
    assert run["notes"] == said
