"""What `prepare-dataset` did, step by step: the counts users check before training."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

if TYPE_CHECKING:  # rich is imported when a report is shown, not by every dataset user
    from rich.console import Group

SPLITS = ("train", "valid", "test")


class DatasetReport(BaseModel):
    """Counts of every reading and cleaning step; written to ``stats.json``."""

    # reading
    files: int = 0
    bytes_read: int = 0
    lines: int = 0
    requests: int = 0  # lines that are OTLP trace requests
    lines_skimmed: int = 0  # requests counted by byte search, only their run spans decoded
    spans: int = 0
    skipped_lines: dict[str, int] = Field(default_factory=dict)
    malformed_spans: int = 0
    problems: list[str] = Field(default_factory=list)  # the first few, with file:line
    unusable_files: list[str] = Field(default_factory=list)
    # agent runs
    agent_runs: int = 0
    runs_by_format: dict[str, int] = Field(default_factory=dict)
    no_final_result: int = 0
    error_status: int = 0
    with_final_result: int = 0
    scrubbed: int = 0
    invalid_result: int = 0
    invalid_text: int = 0  # unpaired surrogates (escaped in the JSON): no UTF-8 can hold them
    usable: int = 0  # runs with a final result that is a DiagnosticResult, prompt intact
    # cleaning
    feedback_spans: int = 0
    issues_dismissed: int = 0
    dropped_all_dismissed: int = 0
    issues_ungrounded: int = 0
    dropped_ungrounded: int = 0
    secrets_redacted: int = 0
    examples_redacted: int = 0
    redaction: bool = True
    duplicates: int = 0
    examples: int = 0
    # length
    max_seq_length: int = 2048
    token_counter: str = "estimate"
    over_max_seq_length: int = 0
    cropped: int = 0  # over-long examples cropped to windows of their code
    crop_windows: int = 0  # the examples those became
    too_long_to_crop: int = 0  # an issue snippet alone longer than the budget: left out
    longest_tokens: int = 0
    # outputs
    splits: dict[str, int] = Field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    split_files: dict[str, int] = Field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    split_note: str = ""  # why the split is not by source file, when it is not
    output_file: str | None = None
    output_dir: str | None = None

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped_lines.values())


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
