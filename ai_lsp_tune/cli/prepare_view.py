"""`prepare-dataset` on a terminal: a progress bar while traces are read, then the report table."""

from __future__ import annotations

import errno
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ai_lsp_tune import hyperparams
from ai_lsp_tune.dataset.report import DatasetReport, report_notes, report_rows

if TYPE_CHECKING:
    from rich.console import Group


def run_prepare_dataset(
    traces: list[Path],
    *,
    output_file: Path | None,
    output_dir: Path | None,
    max_seq_length: int = hyperparams.default("max_seq_length"),
    redact: bool = True,
    tokenizer: str | None = None,
    include_local_answers: bool = False,
) -> DatasetReport:
    """prepare-dataset with a progress bar and the report table; exit code 2 on bad input."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from ai_lsp_tune.dataset import prepare as dataset
    from ai_lsp_tune.files import sigterm_cleans_up
    from ai_lsp_tune.tokens import TokenizerUnavailable
    from ai_lsp_tune.traces.otlp import TraceInputError

    console, errors = Console(), Console(stderr=True)
    columns = ("{task.description}", BarColumn(), DownloadColumn(), TimeRemainingColumn())
    try:
        # Drawn from the progress callback, not by rich's refresh thread: with no other thread
        # running, the worker processes for large inputs can be forked (see dataset/pool.py).
        with (
            sigterm_cleans_up(),
            Progress(*columns, console=errors, transient=True, auto_refresh=False) as progress,
        ):
            task = progress.add_task("Reading traces", total=None)
            drawn = [0.0]

            def on_progress(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)
                if time.monotonic() - drawn[0] >= 0.1 or done >= total:
                    drawn[0] = time.monotonic()
                    progress.refresh()

            report = dataset.prepare_dataset(
                traces,
                output_file=output_file,
                output_dir=output_dir,
                max_seq_length=max_seq_length,
                redact=redact,
                tokenizer=tokenizer,
                on_progress=on_progress,
                include_local_answers=include_local_answers,
            )
    except dataset.NoUsableTraces as exc:
        console.print(render_report(exc.report))
        errors.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except (TraceInputError, TokenizerUnavailable, ValueError) as exc:
        errors.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except dataset.DatasetNotWritten as exc:
        hint = "free some space there" if exc.error.errno == errno.ENOSPC else "check the folder"
        errors.print(
            f"[bold red]error:[/bold red] {exc}; {hint} or pass --output-file and --output-dir "
            "elsewhere",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    console.print(render_report(report))
    return report


# How the terminal sets the report's rows and notes apart.
STYLES = {"": "", "bold": "bold", "warn": "yellow", "good": "bold green"}


def render_report(report: DatasetReport) -> Group:
    """``dataset.report``'s rows and notes as a rich table and the lines under it."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title="prepare-dataset", show_header=True, header_style="bold")
    table.add_column("step")
    table.add_column("count", justify="right")
    table.add_column("note", style="dim")
    for row in report_rows(report):
        table.add_row(row.step, str(row.count), row.note, style=STYLES[row.emphasis])
    notes = [Text(note.text, style=STYLES[note.emphasis]) for note in report_notes(report)]
    return Group(table, *notes)
