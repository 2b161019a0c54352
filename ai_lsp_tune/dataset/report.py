"""What `prepare-dataset` did, step by step: the counts users check before training."""

from __future__ import annotations

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
