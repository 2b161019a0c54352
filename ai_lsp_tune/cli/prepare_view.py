"""`prepare-dataset` on a terminal: a progress bar while traces are read, then the report table."""

from __future__ import annotations

import errno
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ai_lsp_tune import hyperparams
from ai_lsp_tune.dataset.report import SPLITS, DatasetReport, local_answers_note

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


def render_report(report: DatasetReport) -> Group:
    """A rich table of the funnel from trace lines to examples, and what went where."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title="prepare-dataset", show_header=True, header_style="bold")
    table.add_column("step")
    table.add_column("count", justify="right")
    table.add_column("note", style="dim")

    def row(step: str, count: int, note: str = "", *, style: str = "") -> None:
        table.add_row(step, str(count), note, style=style)

    row("trace files read", report.files, f"{report.bytes_read / 2**20:.1f} MiB")
    row("lines", report.lines)
    for reason, count in sorted(report.skipped_lines.items()):
        row(f"  skipped: {reason}", count, style="yellow")
    if report.malformed_spans:
        row("  malformed spans skipped", report.malformed_spans, style="yellow")
    row("spans", report.spans)
    formats = ", ".join(f"{n} {fmt}" for fmt, n in sorted(report.runs_by_format.items()))
    row("agent runs", report.agent_runs, formats, style="bold")
    row("  no final result", report.no_final_result, "cancelled, unfinished or failed")
    row("  error status", report.error_status, "failed after answering")
    row("runs with a final result", report.with_final_result, style="bold")
    row("  scrubbed by logfire", report.scrubbed, "prompt or answer replaced: unusable")
    row("  result not a DiagnosticResult", report.invalid_result)
    if report.invalid_text:
        row("  text not valid Unicode", report.invalid_text, "unpaired surrogates", style="yellow")
    if report.local_answers_left_out or report.local_answers_confirmed:
        row(
            "  local model's own answers",
            report.local_answers_left_out,
            "left out (--include-local-answers keeps them)",
            style="yellow" if report.local_answers_left_out else "",
        )
        if report.local_answers_confirmed:
            row("  local model's answers kept", report.local_answers_confirmed, "a fix applied")
    elif report.local_answers:
        row("  local model's own answers", report.local_answers, "kept (--include-local-answers)")
    if report.feedback_spans:
        row("  issues dismissed by the user", report.issues_dismissed, "removed from targets")
        row("  examples left without issues", report.dropped_all_dismissed, "dropped")
    row("  issues not found in the code", report.issues_ungrounded, "removed from targets")
    row("  examples left without issues", report.dropped_ungrounded, "dropped")
    redaction = "" if report.redaction else "off (--no-redact)"
    row("  secrets redacted", report.secrets_redacted, redaction)
    row("  duplicates", report.duplicates, "same parsed content; dropped")
    row("examples", report.examples, report.output_file or "", style="bold green")
    counter = "estimated" if report.token_counter == "estimate" else report.token_counter
    row(
        f"  longer than {report.max_seq_length} tokens",
        report.over_max_seq_length,
        f"{counter}; longest {report.longest_tokens}",
    )
    if report.over_max_seq_length:
        row("    cropped to windows", report.cropped, f"{report.crop_windows} window examples")
        style = "yellow" if report.too_long_to_crop else ""
        row("    left out", report.too_long_to_crop, "an issue snippet over the limit", style=style)
    for split in SPLITS:
        files = report.split_files.get(split, 0)
        row(f"  {split}", report.splits.get(split, 0), f"{files} source file(s)")
    parts: list[Table | Text] = [table]
    if report.problems:
        lines = "\n".join(f"  {p}" for p in report.problems)
        more = report.skipped_total + report.malformed_spans - len(report.problems)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        parts.append(Text(f"Skipped input:\n{lines}{tail}", style="yellow"))
    if report.local_answers_left_out:
        parts.append(Text(local_answers_note(report), style="yellow"))
    in_splits = sum(report.splits.values())
    if report.split_note:
        parts.append(Text(report.split_note, style="yellow"))
    elif report.examples and not report.splits.get("valid"):
        files = sum(report.split_files.values())
        parts.append(
            Text(
                f"No validation examples: the {in_splits} example(s) in the splits come from "
                f"{files} source file(s), and a file's examples stay in one split. Record "
                "analyses of more files (or raise --max-seq-length) before training.",
                style="yellow",
            )
        )
    if report.output_dir:
        parts.append(Text(f"mlx-lm splits and stats.json in {report.output_dir}"))
    return Group(*parts)
