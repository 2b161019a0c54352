"""What `prepare-dataset` did, step by step: the counts users check before training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from ai_lsp_tune import hyperparams

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
    local_answers: int = 0  # usable analyses answered by our own local model, not a teacher
    local_answers_left_out: int = 0  # of those: not confirmed, and not --include-local-answers
    local_answers_confirmed: int = 0  # kept by default: the user applied a fix from them
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
    max_seq_length: int = hyperparams.default("max_seq_length")
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


Emphasis = Literal["", "bold", "warn", "good"]  # how a screen may set a row or a note apart


@dataclass(frozen=True)
class ReportRow:
    """One step of the funnel from trace lines to examples, as a screen shows it."""

    step: str  # indented by two spaces per level under the step it belongs to
    count: int
    note: str = ""
    emphasis: Emphasis = ""


@dataclass(frozen=True)
class ReportNote:
    """A sentence under the table: skipped input, what was left out, where the files went."""

    text: str
    emphasis: Emphasis = ""


KEEP_LOCAL_ANSWERS_CLI = "pass --include-local-answers to keep them"
KEEP_LOCAL_ANSWERS_EDITOR = 'set "aiLsp.finetune.includeLocalAnswers" to true to keep them'


def local_answers_note(report: DatasetReport, keep: str = KEEP_LOCAL_ANSWERS_CLI) -> str:
    """What was left out for being the local model's own answers, and how to keep them; empty
    when nothing was. ``keep`` says it where the user is (a CLI flag, an editor setting)."""
    count = report.local_answers_left_out
    if not count:
        return ""
    analyses = "analysis" if count == 1 else "analyses"
    return f"{count} {analyses} answered by the local model left out; {keep}"


def nothing_usable(report: DatasetReport, keep_local: str = KEEP_LOCAL_ANSWERS_CLI) -> str:
    """One sentence saying why no example came out, pointing at the likely cause; ``keep_local``
    says how to keep the local model's answers where the user is (CLI or editor)."""
    if report.requests == 0:
        where = "; ".join(report.unusable_files[:3]) or f"{report.files} file(s)"
        return (
            f"No OTLP trace data found ({where}); expected OTLP JSON lines as the "
            "OpenTelemetry Collector's file exporter writes them."
        )
    if report.agent_runs == 0:
        return (
            f"Read {report.spans} spans but found no agent run ('agent run' or "
            "'invoke_agent' spans of pydantic-ai, or ai-lsp analysis spans); was pydantic-ai "
            "instrumentation on when they were recorded?"
        )
    if report.usable == 0:
        return (
            f"Found {report.agent_runs} agent runs but none is usable: "
            f"{report.no_final_result} without a final result, {report.error_status} failed, "
            f"{report.scrubbed} scrubbed by logfire, {report.invalid_result} not a "
            "DiagnosticResult"
            + (f", {report.invalid_text} not valid Unicode." if report.invalid_text else ".")
        )
    local = report.local_answers_left_out
    if local == report.usable:
        return (
            f"All {report.usable} usable analyses were answered by the local model, and were "
            f"left out so that it does not learn to repeat itself; {keep_local}, or record "
            "analyses with a teacher (the remote backend)."
        )
    return (
        f"All {report.usable} usable runs were removed"
        + (f": {local} answered by the local model ({keep_local}), the others" if local else "")
        + " by cleaning (issues dismissed by the user or not found in the code, or duplicates)."
    )


def report_rows(report: DatasetReport) -> list[ReportRow]:
    """The funnel from trace lines to examples, and what went into which split."""
    rows: list[ReportRow] = []

    def row(step: str, count: int, note: str = "", emphasis: Emphasis = "") -> None:
        rows.append(ReportRow(step, count, note, emphasis))

    row("trace files read", report.files, f"{report.bytes_read / 2**20:.1f} MiB")
    row("lines", report.lines)
    for reason, count in sorted(report.skipped_lines.items()):
        row(f"  skipped: {reason}", count, emphasis="warn")
    if report.malformed_spans:
        row("  malformed spans skipped", report.malformed_spans, emphasis="warn")
    row("spans", report.spans)
    formats = ", ".join(f"{n} {fmt}" for fmt, n in sorted(report.runs_by_format.items()))
    row("agent runs", report.agent_runs, formats, "bold")
    row("  no final result", report.no_final_result, "cancelled, unfinished or failed")
    row("  error status", report.error_status, "failed after answering")
    row("runs with a final result", report.with_final_result, emphasis="bold")
    row("  scrubbed by logfire", report.scrubbed, "prompt or answer replaced: unusable")
    row("  result not a DiagnosticResult", report.invalid_result)
    if report.invalid_text:
        row("  text not valid Unicode", report.invalid_text, "unpaired surrogates", "warn")
    if report.local_answers_left_out or report.local_answers_confirmed:
        row(
            "  local model's own answers",
            report.local_answers_left_out,
            "left out (--include-local-answers keeps them)",
            "warn" if report.local_answers_left_out else "",
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
    row("examples", report.examples, report.output_file or "", "good")
    counter = "estimated" if report.token_counter == "estimate" else report.token_counter
    row(
        f"  longer than {report.max_seq_length} tokens",
        report.over_max_seq_length,
        f"{counter}; longest {report.longest_tokens}",
    )
    if report.over_max_seq_length:
        row("    cropped to windows", report.cropped, f"{report.crop_windows} window examples")
        left_out: Emphasis = "warn" if report.too_long_to_crop else ""
        row("    left out", report.too_long_to_crop, "an issue snippet over the limit", left_out)
    for split in SPLITS:
        files = report.split_files.get(split, 0)
        row(f"  {split}", report.splits.get(split, 0), f"{files} source file(s)")
    return rows


def report_notes(report: DatasetReport) -> list[ReportNote]:
    """What a user should read under the table: skipped input, left-out answers, a split
    without validation examples, where the files are."""
    notes: list[ReportNote] = []
    if report.problems:
        lines = "\n".join(f"  {p}" for p in report.problems)
        more = report.skipped_total + report.malformed_spans - len(report.problems)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        notes.append(ReportNote(f"Skipped input:\n{lines}{tail}", "warn"))
    if report.local_answers_left_out:
        notes.append(ReportNote(local_answers_note(report), "warn"))
    if report.split_note:
        notes.append(ReportNote(report.split_note, "warn"))
    elif report.examples and not report.splits.get("valid"):
        in_splits = sum(report.splits.values())
        files = sum(report.split_files.values())
        notes.append(
            ReportNote(
                f"No validation examples: the {in_splits} example(s) in the splits come from "
                f"{files} source file(s), and a file's examples stay in one split. Record "
                "analyses of more files (or raise --max-seq-length) before training.",
                "warn",
            )
        )
    if report.output_dir:
        notes.append(ReportNote(f"mlx-lm splits and stats.json in {report.output_dir}"))
    return notes
