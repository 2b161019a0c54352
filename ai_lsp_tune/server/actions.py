"""Quick fixes and Dismiss for our diagnostics, and the feedback spans they produce."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lsprotocol import types

from ai_lsp_tune.server import commands
from ai_lsp_tune.server.analysis import SOURCE, republish
from ai_lsp_tune.server.placement import LineIndex
from ai_lsp_tune.server.state import DocumentState, PublishedIssue
from ai_lsp_tune.traces import genai

if TYPE_CHECKING:
    from ai_lsp_tune.server.language_server import AiLspServer

log = logging.getLogger(__name__)


def code_actions(ls: AiLspServer, params: types.CodeActionParams) -> list[types.CodeAction]:
    """One quick fix per suggested fix, and a Dismiss, for each of our diagnostics in range."""
    document = ls.state.documents.get(params.text_document.uri)
    if document is None or not document.issues:
        return []
    index: LineIndex | None = None
    actions: list[types.CodeAction] = []
    for diagnostic in params.context.diagnostics:
        issue = _issue_of(document, diagnostic)
        if issue is None:
            continue
        if issue.fixes and index is None:
            index = LineIndex(document.analysed_text or "", ls.workspace.position_encoding)
        for number, (fix, start, end) in enumerate(issue.fixes):
            assert index is not None
            edit = types.TextEdit(range=index.range(start, end), new_text=fix.replacement_snippet)
            actions.append(
                types.CodeAction(
                    title=fix.title,
                    kind=types.CodeActionKind.QuickFix,
                    diagnostics=[diagnostic],
                    is_preferred=number == 0,
                    edit=types.WorkspaceEdit(changes={document.uri: [edit]}),
                )
            )
        actions.append(
            types.CodeAction(
                title=f"Dismiss: {_short(issue.message)}",
                kind=types.CodeActionKind.QuickFix,
                diagnostics=[diagnostic],
                command=types.Command(
                    title="Dismiss this AI diagnostic",
                    command=commands.DISMISS,
                    arguments=[document.uri, issue.id],
                ),
            )
        )
    return actions


def dismiss(ls: AiLspServer, uri: str, issue_id: str) -> bool:
    """Remove one diagnostic and record that the user dismissed it."""
    document = ls.state.documents.get(uri)
    issue = document.issues.pop(issue_id, None) if document else None
    if document is None or issue is None:
        log.info("nothing to dismiss for %s %s", uri, issue_id)
        return False
    _feedback(ls, "dismissed", document, issue)
    occurrence = int(issue.id.rsplit(":", 1)[-1])  # the id ends with the occurrence number
    document.dismissed.add((issue.snippet, issue.message, occurrence))
    republish(ls, document)
    return True


def detect_applied_fixes(ls: AiLspServer, document: DocumentState, old: str, new: str) -> None:
    """A change that replaced a flagged snippet by its fix text is a fix applied."""
    if old != document.analysed_text:
        return  # offsets of our issues refer to the analysed text only
    for issue in list(document.issues.values()):
        for fix, start, end in issue.fixes:
            replacement = fix.replacement_snippet
            if len(new) != len(old) - (end - start) + len(replacement):
                continue
            cut = start + len(replacement)
            if (
                new[start:cut] == replacement
                and new[:start] == old[:start]
                and new[cut:] == old[end:]
            ):
                _feedback(ls, "fix_applied", document, issue)
                document.issues.pop(issue.id, None)
                break


def _feedback(
    ls: AiLspServer, kind: genai.FeedbackKind, document: DocumentState, issue: PublishedIssue
) -> None:
    ls.state.telemetry.record_feedback(
        genai.FeedbackRecord(
            kind=kind,
            analysis_trace_id=issue.trace_id,
            analysis_span_id=issue.span_id,
            issue_snippet=issue.snippet,
            message=issue.message,
            document_uri=document.uri,
        )
    )
    log.info("%s: %r in %s", kind, issue.snippet, document.uri)


def _issue_of(document: DocumentState, diagnostic: types.Diagnostic) -> PublishedIssue | None:
    if diagnostic.source != SOURCE or not isinstance(diagnostic.data, dict):
        return None
    return document.issues.get(str(diagnostic.data.get("id")))


def _short(message: str, limit: int = 60) -> str:
    first = message.strip().splitlines()[0] if message.strip() else "AI diagnostic"
    return first if len(first) <= limit else first[: limit - 1] + "…"
