"""The CLI's training console and the editor's progress read a run in the same words."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from ai_lsp_tune.cli.train_view import _View, metrics_table
from ai_lsp_tune.server.finetune.progress import (
    ProgressMeter,
    ProgressStep,
    describe_change,
    format_progress,
)
from ai_lsp_tune.server.finetune.train_step import progress_step
from ai_lsp_tune.training.evaluate import EvalMetrics
from ai_lsp_tune.training.protocol import PHASES, EvaluatingEvent, TrainingEvent, at


def test_a_training_step_reads_the_same_in_the_terminal_and_in_the_editor() -> None:
    event = TrainingEvent(
        iteration=20, total=60, train_loss=0.843, val_loss=1.2, tokens_per_sec=1234.0,
        eta_s=170.0, fraction=at("training", 20 / 60),
    )  # fmt: skip
    console = Console(file=io.StringIO())
    progress = Progress(console=console)
    view = _View(progress, console)
    view(event)
    terminal = progress.tasks[0].fields["stats"]

    step = progress_step(event)
    assert step is not None
    editor = format_progress(ProgressMeter().worker(step), step)
    assert terminal == "loss 0.84 · val 1.20 · 1.2k tok/s · ETA 3 min"
    assert editor.endswith(f"training 20/60 · {terminal}")


def test_the_terminal_table_names_the_metrics_as_the_editor_message_does(tmp_path: Path) -> None:
    before = EvalMetrics(
        n=8, valid_json_rate=0.5, schema_valid_rate=0.25, grounded_rate=0.25, snippet_f1=0.1,
        val_loss=6.0, unconstrained_valid_json_rate=0.0,
    )  # fmt: skip
    after = before.model_copy(update={"valid_json_rate": 1.0, "snippet_f1": 0.72})
    console = Console(file=io.StringIO(), width=200)
    console.print(metrics_table(before, after))
    table = console.file.getvalue()  # type: ignore[attr-defined]
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in table.splitlines()]
    message = describe_change(before.model_dump(), after.model_dump())
    said = re.findall(r"([^·(]+?) (\S+) → (\S+)", message)  # "valid JSON 50% → 100%"
    assert len(said) == 6
    for label, old, new in said:
        assert [label.strip(), old, new] in rows, f"{label}: {old} → {new} not in\n{table}"


def test_a_step_without_an_overall_fraction_is_placed_in_the_workers_own_phase_band() -> None:
    """The editor's guess for such a step uses the phase bands the worker reports by."""
    meter = ProgressMeter()
    done = meter.worker(ProgressStep("training", iteration=60, total=60))
    low, high = PHASES["training"]
    assert done == int(5 + 85 * high)
    assert meter.worker(ProgressStep("training", iteration=30, total=60)) == done  # never back
    assert ProgressMeter().worker(ProgressStep("training", iteration=0, total=60)) == int(
        5 + 85 * low
    )


def test_evaluating_counts_examples_and_says_which_pass() -> None:
    """Under constrained decoding each example is answered twice (as written, as served)."""
    said = []
    for done in (0, 8, 10, 16):
        event = EvaluatingEvent(stage="after", done=done, total=16, examples=8)
        step = progress_step(event)
        assert step is not None
        said.append(format_progress(50, step))
    assert said == [
        "50% · evaluating 0/8 · new model, pass 1 of 2",
        "50% · evaluating 0/8 · new model, pass 2 of 2",
        "50% · evaluating 2/8 · new model, pass 2 of 2",
        "50% · evaluating 8/8 · new model, pass 2 of 2",
    ]
    once = progress_step(EvaluatingEvent(stage="before", done=3, total=8, examples=8))
    assert once is not None and format_progress(9, once) == "9% · evaluating 3/8 · served model"


def test_the_terminal_counts_evaluated_examples_as_the_editor_does() -> None:
    """'3/8 examples · pass 2 of 2' in the terminal where the editor says 'evaluating 3/8 ·
    new model, pass 2 of 2' (was '11/16 prompts': answers, not examples)."""
    console = Console(file=io.StringIO())
    progress = Progress(console=console)
    view = _View(progress, console)
    event = EvaluatingEvent(stage="after", done=11, total=16, examples=8)
    view(event)
    terminal = progress.tasks[0].fields["stats"]
    step = progress_step(event)
    assert step is not None
    assert terminal == "3/8 examples · pass 2 of 2"
    assert format_progress(50, step) == "50% · evaluating 3/8 · new model, pass 2 of 2"
    view(EvaluatingEvent(stage="before", done=3, total=8, examples=8))
    assert progress.tasks[0].fields["stats"] == "3/8 examples"
