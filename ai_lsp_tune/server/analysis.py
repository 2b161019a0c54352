"""Debounced analyses of open documents, and publishing their diagnostics.

A newer edit cancels the older analysis (and its generation in the model host); an analysis
whose document changed meanwhile never publishes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from lsprotocol import types

from ai_lsp_tune.schema import DiagnosticResult
from ai_lsp_tune.server import windowed
from ai_lsp_tune.server.placement import LineIndex
from ai_lsp_tune.server.retry import AnalysisOutcome, analyze
from ai_lsp_tune.server.settings import DEFAULT_LANGUAGES
from ai_lsp_tune.server.state import DocumentState, PublishedIssue
from ai_lsp_tune.serving.backend import Backend
from ai_lsp_tune.serving.protocol import ChatMessage
from ai_lsp_tune.traces import genai
from ai_lsp_tune.traces.telemetry import span_ids

if TYPE_CHECKING:
    from ai_lsp_tune.server.language_server import AiLspServer

log = logging.getLogger(__name__)

SOURCE = "ai-lsp"
SEVERITY = {
    "error": types.DiagnosticSeverity.Error,
    "warning": types.DiagnosticSeverity.Warning,
    "info": types.DiagnosticSeverity.Information,
    "hint": types.DiagnosticSeverity.Hint,
}


def schedule(
    ls: AiLspServer, document: DocumentState, *, debounce: bool = True, save: bool = False
) -> None:
    """(Re)start the analysis of ``document`` after the debounce delay. A save analyses at once,
    a text analysed before too (the user asked); an edit back to the analysed text republishes
    its diagnostics for the new version (the editor sees the answer is current)."""
    state = ls.state
    if document.language not in (state.settings.languages or DEFAULT_LANGUAGES):
        return
    text = document.text
    if _too_large(ls, document, text):
        return
    running = document.task is not None and not document.task.done()
    now = asyncio.get_running_loop().time()
    if running and text == document.pending_text and not (save and now < document.answer_at):
        return  # on its way: e.g. didSave right after the didChange that started it
    if running and document.task is not None:
        document.task.cancel()
    if text == document.analysed_text and not save:
        document.pending_text = None
        republish(ls, document, document.version)
        return
    delay = state.settings.debounce_ms / 1000 if debounce else 0.0
    document.pending_text, document.answer_at = text, now + delay
    document.task = asyncio.create_task(
        _run(ls, document, text, document.version, delay), name=f"analyse {document.uri}"
    )


def reanalyse_all(ls: AiLspServer) -> None:
    """Another model answers now: analyse every open document again, at once (an analysis
    running on the old model is dropped)."""
    for document in ls.state.documents.values():
        if document.task is not None and not document.task.done():
            document.task.cancel()
        document.task, document.pending_text, document.analysed_text = None, None, None
        schedule(ls, document, debounce=False)


def _too_large(ls: AiLspServer, document: DocumentState, text: str) -> bool:
    """Over ``maxDocumentBytes``: not sent to the model; the user is told once per document."""
    limit = ls.state.settings.max_document_bytes
    if len(text) <= limit // 4:
        return False  # a character is at most 4 UTF-8 bytes: most texts need no encoding
    if len(text) <= limit and len(text.encode("utf-8", "replace")) <= limit:
        return False
    if document.task is not None:
        document.task.cancel()
    document.pending_text = None
    if document.issues or document.analysed_text is not None:
        document.issues, document.analysed_text = {}, None
        republish(ls, document, document.version)  # an older, smaller text's diagnostics mislead
    if not document.too_large_shown:
        document.too_large_shown = True
        ls.notify_user(
            "warning",
            f"ai-lsp: {document.name} is larger than {limit:,} bytes and is not analysed; "
            'raise "aiLsp.maxDocumentBytes" to analyse it.',
        )
    return True


def is_current(ls: AiLspServer, document: DocumentState, text: str) -> bool:
    """Still the open document's text, and still this analysis's turn."""
    return (
        ls.state.documents.get(document.uri) is document
        and document.text == text
        and document.task is asyncio.current_task()
    )


async def _run(
    ls: AiLspServer, document: DocumentState, text: str, version: int | None, delay: float
) -> None:
    try:
        await asyncio.sleep(delay)
        backend = await ls.state.wait_backend()
        if backend is None or not is_current(ls, document, text):
            return
        prompts = windowed.prompts_for(
            ls.state.settings, backend, document.language, document.name, text
        )
        answers = await asyncio.gather(
            *(_analyse(ls, backend, document, text, prompt.user, version) for prompt in prompts)
        )
        if not is_current(ls, document, text):
            log.debug("dropping a stale analysis of %s", document.uri)
            return
        document.analysed_text = text
        if len(prompts) == 1 and prompts[0].window is None:
            publish(ls, document, text, version, *answers[0])
        else:
            windows = [(p.window.start_offset, p.window.end_offset) for p in prompts if p.window]
            publish_windows(ls, document, text, version, list(zip(answers, windows, strict=True)))
    except asyncio.CancelledError:
        log.debug("analysis of %s cancelled by a newer edit", document.uri)
        raise
    except Exception as exc:  # never crash the server on one bad analysis
        log.exception("analysis of %s failed", document.uri)
        ls.window_log_message(
            types.LogMessageParams(
                type=types.MessageType.Warning, message=f"ai-lsp: analysis failed: {exc}"
            )
        )


async def _analyse(
    ls: AiLspServer,
    backend: Backend,
    document: DocumentState,
    text: str,
    user: str,
    version: int | None,
) -> tuple[DiagnosticResult | None, str, str]:
    state, telemetry = ls.state, ls.state.telemetry
    messages = [
        ChatMessage(role="system", content=backend.system_prompt),
        ChatMessage(role="user", content=user),
    ]
    model, provider = backend.model_name, backend.provider
    with telemetry.analysis_span() as span:
        outcome = await analyze(
            backend,
            messages,
            state.settings.max_tokens,
            on_attempt=lambda: telemetry.attempt_span(model, provider),
        )
        completions = [a.completion for a in outcome.attempts]
        telemetry.finish_analysis(
            span,
            genai.AnalysisRecord(
                model=model,
                provider=provider,
                system=backend.system_prompt,
                user=user,
                output=outcome.result.to_json() if outcome.result else outcome.final_text,
                valid=outcome.result is not None,
                document_uri=document.uri,
                language=document.language,
                document_name=document.name,
                input_tokens=_total(c.input_tokens for c in completions),
                output_tokens=_total(c.output_tokens for c in completions),
                error=outcome.error if outcome.result is None else None,
                attempts=len(outcome.attempts),
            ),
        )
        trace_id, span_id = span_ids(span)
    for problem, message in (
        (outcome.grammar_problem, grammar_fallback_message),
        (outcome.template_problem, template_fallback_message),
    ):
        if problem and (model, problem) not in state.model_problems_shown:
            state.model_problems_shown.add((model, problem))
            _warn(ls, message(model, problem))
    if outcome.result is None:
        _warn_unusable(ls, document, version, outcome)
    return outcome.result, trace_id, span_id


def grammar_fallback_message(model: str, problem: str) -> str:
    """The one warning a user sees when answers cannot be constrained to the schema."""
    return (
        f"ai-lsp: constrained decoding is off for {model}: {problem}. Answers are decoded "
        "unconstrained and may be unusable; choose another aiLsp.model, or set "
        "aiLsp.constrainedDecoding to false to stop asking for it."
    )


def template_fallback_message(model: str, problem: str) -> str:
    """The one warning a user sees when the model cannot be prompted as a chat."""
    return (
        f"ai-lsp: {model}: {problem}; its answers may be poor. Choose an instruction-tuned "
        "aiLsp.model (one whose tokenizer_config.json has a chat_template)."
    )


def _warn_unusable(
    ls: AiLspServer, document: DocumentState, version: int | None, outcome: AnalysisOutcome
) -> None:
    """Tell the user (once per document version) that an analysis produced nothing usable."""
    if outcome.cut_at is not None:
        message = (
            f"ai-lsp: no diagnostics for {document.name}: the answer was cut at "
            f"maxTokens={outcome.cut_at}; raise aiLsp.maxTokens."
        )
    else:
        message = (
            f"ai-lsp: the model's answer for {document.name} was not a valid DiagnosticResult "
            f"after {len(outcome.attempts)} attempts ({outcome.error}); no diagnostics."
        )
    log.warning("%s", message)
    ls.window_log_message(types.LogMessageParams(type=types.MessageType.Warning, message=message))
    shown = version if version is not None else -1
    if document.unusable_shown != shown:
        document.unusable_shown = shown
        _warn(ls, message)


def _warn(ls: AiLspServer, message: str) -> None:
    ls.window_show_message(types.ShowMessageParams(type=types.MessageType.Warning, message=message))


def _total(values: object) -> int | None:
    numbers = [v for v in values if isinstance(v, int)]  # type: ignore[attr-defined]
    return sum(numbers) if numbers else None


def publish(
    ls: AiLspServer,
    document: DocumentState,
    text: str,
    version: int | None,
    result: DiagnosticResult | None,
    trace_id: str,
    span_id: str,
) -> None:
    """Place every issue's snippet and publish the diagnostics (none when there is no result)."""
    index = LineIndex(text, ls.workspace.position_encoding)
    document.issues = {}
    _said_unplaced(document, _place(document, index, result, trace_id, span_id))
    republish(ls, document, version)


Answer = tuple[DiagnosticResult | None, str, str]  # result, trace id, span id


def publish_windows(
    ls: AiLspServer,
    document: DocumentState,
    text: str,
    version: int | None,
    answers: list[tuple[Answer, tuple[int, int]]],
) -> None:
    """Publish the answers for windows (string offsets) of a long document: each issue placed
    inside its window, an issue found again in an overlap shown once."""
    index = LineIndex(text, ls.workspace.position_encoding)
    document.issues = {}
    placed: set[tuple[str, int, int]] = set()
    unplaced = []
    for (result, trace_id, span_id), within in answers:
        unplaced += _place(document, index, result, trace_id, span_id, within, placed)
    _said_unplaced(document, unplaced)
    republish(ls, document, version)


def _said_unplaced(document: DocumentState, snippets: list[str]) -> None:
    """Issues whose snippet is not in the code cannot be shown: the log says so (the editor's
    output), and the status counts them (``issuesNotInCode``)."""
    document.unplaced = len(snippets)
    if snippets:
        shown = ", ".join(repr(s[:40]) for s in snippets[:3]) + (", …" if len(snippets) > 3 else "")
        log.info(
            "%d issue%s of the answer for %s not shown: the snippet is not in the code (%s)",
            len(snippets),
            "" if len(snippets) == 1 else "s",
            document.name,
            shown,
        )


def _place(
    document: DocumentState,
    index: LineIndex,
    result: DiagnosticResult | None,
    trace_id: str,
    span_id: str,
    within: tuple[int, int] | None = None,
    placed: set[tuple[str, int, int]] | None = None,
) -> list[str]:
    """Put each issue on its snippet's occurrences; return the snippets found nowhere."""
    text = index.text
    unplaced = []
    for number, issue in enumerate(result.issues if result else []):
        occurrences = [
            o
            for o in index.occurrences(issue.issue_snippet)
            if within is None or (within[0] <= o.start and o.end <= within[1])
        ]
        if not occurrences:
            unplaced.append(issue.issue_snippet)
        for occurrence_number, occurrence in enumerate(occurrences):
            if placed is not None:
                if (issue.issue_snippet, occurrence.start, occurrence.end) in placed:
                    continue
                placed.add((issue.issue_snippet, occurrence.start, occurrence.end))
            if (issue.issue_snippet, issue.message, occurrence_number) in document.dismissed:
                continue
            issue_id = f"{span_id}:{number}:{occurrence_number}"
            fixes = []
            for fix in issue.suggested_fixes or []:
                target = _fix_target(text, fix.target_snippet, occurrence.start, occurrence.end)
                if target is not None:
                    fixes.append((fix, *target))
            diagnostic = types.Diagnostic(
                range=occurrence.range,
                message=issue.message,
                severity=SEVERITY[issue.severity],
                source=SOURCE,
                data={"id": issue_id},
            )
            document.issues[issue_id] = PublishedIssue(
                id=issue_id,
                diagnostic=diagnostic,
                snippet=issue.issue_snippet,
                message=issue.message,
                start=occurrence.start,
                end=occurrence.end,
                fixes=fixes,
                trace_id=trace_id,
                span_id=span_id,
            )
    return unplaced


def republish(ls: AiLspServer, document: DocumentState, version: int | None = None) -> None:
    ls.text_document_publish_diagnostics(
        types.PublishDiagnosticsParams(
            uri=document.uri,
            version=version,
            diagnostics=[issue.diagnostic for issue in document.issues.values()],
        )
    )


def _fix_target(text: str, target: str, start: int, end: int) -> tuple[int, int] | None:
    """Where a fix applies: the occurrence of its target overlapping the issue, else the nearest."""
    if not target:
        return None
    best: tuple[int, int] | None = None
    position = text.find(target, max(0, start - len(target)))
    if position != -1 and position <= end:
        return position, position + len(target)
    for found in _all(text, target):
        if best is None or abs(found - start) < abs(best[0] - start):
            best = (found, found + len(target))
    return best


def _all(text: str, needle: str) -> list[int]:
    found, position = [], text.find(needle)
    while position != -1:
        found.append(position)
        position = text.find(needle, position + 1)
    return found
