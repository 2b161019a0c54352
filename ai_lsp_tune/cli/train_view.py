"""The CLI's view of a training run: a rich progress bar with loss and ETA, then a summary."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ai_lsp_tune.training.distributed import Launch, launched_rank
from ai_lsp_tune.training.evaluate import (
    METRIC_LABELS,
    EvalMetrics,
    f1_summary,
    format_metric,
)
from ai_lsp_tune.training.protocol import TrainRequest, WorkerEvent
from ai_lsp_tune.training.readout import evaluating_count, training_readout
from ai_lsp_tune.training.runner import RunOutcome, run_training

EXIT_ERROR, EXIT_CANCELLED = 1, 130
_LABELS = {
    "loading": "Loading",
    "evaluating": "Evaluating",
    "training": "Training",
    "fusing": "Fusing",
    "done": "Done",
}


class _View:
    def __init__(self, progress: Progress, console: Console) -> None:
        self.progress = progress
        self.console = console
        self.task = progress.add_task("Starting", total=1000, stats="")
        self.train_loss: float | None = None
        self.val_loss: float | None = None

    def __call__(self, event: WorkerEvent) -> None:
        if event.phase in ("warning", "paused"):  # paused: the bar stays where it was
            self.console.print(f"[yellow]warning:[/yellow] {event.message}", highlight=False)
            return
        if event.phase in ("error", "cancelled"):
            return  # reported after the bar closes
        stats = ""
        label = _LABELS.get(event.phase, event.phase.capitalize())
        if event.phase == "evaluating":
            label = f"Evaluating ({event.stage})"
            done, total, at_pass = evaluating_count(event)
            stats = " · ".join([f"{done}/{total} examples"] + ([at_pass] if at_pass else []))
        elif event.phase == "training":
            self.train_loss = event.train_loss if event.train_loss is not None else self.train_loss
            self.val_loss = event.val_loss if event.val_loss is not None else self.val_loss
            label = f"Training {event.iteration}/{event.total}"
            readout = training_readout(
                train_loss=self.train_loss,
                val_loss=self.val_loss,
                tokens_per_sec=event.tokens_per_sec,
                eta_s=event.eta_s,
                iteration=event.iteration,
                total=event.total,
            )
            stats = " · ".join(readout)
        self.progress.update(
            self.task, completed=event.fraction * 1000, description=label, stats=stats
        )


def train_with_progress(request: TrainRequest, launch: Launch | None = None) -> RunOutcome:
    """Run the request in a worker with a progress bar (on stderr); Ctrl-C cancels it."""
    errors = Console(stderr=True)
    rank = launched_rank()
    if rank:  # a rank other than 0 under mlx.launch: rank 0 shows the progress
        return run_training(request)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=errors) as progress:
        outcome = run_training(request, _View(progress, errors), launch=launch)
    return outcome


def metrics_table(before: EvalMetrics | None, after: EvalMetrics | None) -> Table:
    """Before/after metrics side by side."""
    table = Table(title="Test-split metrics (greedy answers)")
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")

    def cell(metrics: EvalMetrics | None, name: str, percent: bool) -> str:
        value = getattr(metrics, name, None) if metrics else None
        return "-" if value is None else format_metric(value, percent)

    for name, label, percent in METRIC_LABELS:
        table.add_row(label, cell(before, name, percent), cell(after, name, percent))
    n = after.n if after else before.n if before else 0
    files = after.test_files if after else before.test_files if before else 0
    table.caption = f"{n} test prompts from {files} files"
    if after is not None and after.f1_difference is not None:
        table.caption += f"; after − before: {f1_summary(after).partition('(')[2].rstrip(')')}"
    return table


def report_outcome(outcome: RunOutcome, console: Console) -> int:
    """Print how the run ended; return the exit code."""
    errors = Console(stderr=True)
    event = outcome.event
    rank = launched_rank()
    if event.phase == "done" and rank:
        errors.print(event.message, highlight=False)
        return 0
    if event.phase == "cancelled" and rank:
        errors.print(f"[yellow]Cancelled[/yellow] rank {rank}; rank 0 keeps the checkpoint.")
        return EXIT_CANCELLED
    if event.phase == "done":
        console.print(metrics_table(event.before, event.after))
        if event.published_adapter is not None:
            which = "best-validation" if event.published_adapter == "best" else "last step's"
            console.print(
                f"Published:   the {which} adapter ({event.adapter_choice})", highlight=False
            )
        if event.model_path != event.output_dir / "adapters":  # --no-fuse: no fused model
            console.print(f"Fused model: [bold]{event.model_path}[/bold]", highlight=False)
        console.print(f"Adapters:    {event.output_dir / 'adapters'}", highlight=False)
        console.print(f"Run record:  {event.run_json}", highlight=False)
        return 0
    if event.phase == "cancelled":
        where = (
            f"checkpoint at iteration {event.checkpoint_iteration} kept; add --resume to continue"
            if event.checkpoint_iteration is not None
            else "no checkpoint yet"
        )
        errors.print(f"[yellow]Cancelled[/yellow] ({where}).", highlight=False)
        return EXIT_CANCELLED
    errors.print(f"[bold red]error:[/bold red] {event.message}", highlight=False)
    if event.kind == "crashed" and outcome.log_tail:
        errors.print("\n".join(outcome.log_tail[-15:]), highlight=False, markup=False)
    return EXIT_ERROR
