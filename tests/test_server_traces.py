"""A session's own trace export: spans recorded, and prepare-dataset gives back its examples."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from lsprotocol import types

from ai_lsp_tune.dataset.prepare import prepare_dataset
from ai_lsp_tune.dataset.reader import load_examples
from ai_lsp_tune.prompts import LOCAL_SYSTEM_PROMPT, user_prompt
from ai_lsp_tune.schema import DiagnosticResult
from ai_lsp_tune.server.commands import DISMISS
from ai_lsp_tune.traces import genai, otlp
from ai_lsp_tune.traces.telemetry import default_trace_file
from tests.helpers.lsp_session import start_session, stop_session
from tests.helpers.scripted_openai import answers, remote_env, scripted_endpoint

# Every test here starts the language server over stdio: ~10 s each on the 2-core machine.
pytestmark = pytest.mark.slow

ORDERS = "def total(order):\n    return order.price * order.qty\n"
AUTH = "def login(user, password):\n    return password == user.password\n"
BROKEN = "def broken():\n    pass\n"
ORDERS_ANSWER = {
    "issues": [
        {"issue_snippet": "order.qty", "severity": "warning", "message": "qty may be negative."}
    ]
}
AUTH_ANSWER = {
    "issues": [
        {
            "issue_snippet": "password == user.password",
            "severity": "error",
            "message": "Plain-text password comparison is not constant-time.",
            "suggested_fixes": [
                {
                    "title": "Use hmac.compare_digest",
                    "target_snippet": "password == user.password",
                    "replacement_snippet": "hmac.compare_digest(password, user.password)",
                }
            ],
        },
        {"issue_snippet": "login", "severity": "info", "message": "No rate limiting."},
    ]
}


def spans_in(trace_file: Path) -> list[otlp.Span]:
    return list(otlp.read_spans([trace_file], otlp.ReadReport()))


async def test_trace_file_round_trips_to_the_sessions_examples(
    tmp_path: Path, isolated_home: Path
) -> None:
    workspace = tmp_path / "shop"
    workspace.mkdir()
    script = answers(
        {
            "hmac": '{"issues": []}',  # the fixed code (first matching marker wins)
            "order.qty": json.dumps(ORDERS_ANSWER),
            "login": json.dumps(AUTH_ANSWER),
            "broken": "no",
        }
    )
    with scripted_endpoint(script) as endpoint:
        s = await start_session(
            workspace,
            env=remote_env(endpoint, isolated_home),
            init_options={
                "backend": "remote",
                "remoteModel": "openai-chat:teacher",
                "debounceMs": 0,
            },
        )
        try:
            orders = s.open("orders.py", ORDERS)
            auth = s.open("auth.py", AUTH)
            s.open("broken.py", BROKEN)
            await s.wait_for_diagnostics(orders)
            auth_diagnostics = await s.wait_for_diagnostics(auth)
            await s.wait_for(lambda: len(endpoint.requests) == 4, what="all analyses")
            # The user dismisses "No rate limiting." and applies the hmac fix.
            rate = next(d for d in auth_diagnostics if d.message == "No rate limiting.")
            await s.client.workspace_execute_command_async(
                types.ExecuteCommandParams(command=DISMISS, arguments=[auth, rate.data["id"]])
            )
            unsafe = next(
                d for d in auth_diagnostics if d.severity == types.DiagnosticSeverity.Error
            )
            actions = await s.client.text_document_code_action_async(
                types.CodeActionParams(
                    text_document=types.TextDocumentIdentifier(uri=auth),
                    range=unsafe.range,
                    context=types.CodeActionContext(diagnostics=[unsafe]),
                )
            )
            fix = actions[0]  # type: ignore[index]
            assert isinstance(fix, types.CodeAction) and fix.edit and fix.edit.changes
            s.apply_edit(auth, fix.edit.changes[auth][0])
            await s.wait_for(lambda: len(endpoint.requests) == 5, what="the fixed file's analysis")
        finally:
            await stop_session(s)  # shutdown flushes the batch processor

    trace_file = default_trace_file(workspace)
    assert stat.S_IMODE(trace_file.stat().st_mode) == 0o600
    spans = spans_in(trace_file)
    feedback = [
        genai.feedback_from_attributes(sp.attributes)
        for sp in spans
        if genai.is_feedback_span(sp.name, sp.attributes)
    ]
    assert sorted((f.kind, f.issue_snippet) for f in feedback) == [
        ("dismissed", "login"),
        ("fix_applied", "password == user.password"),
    ]
    analyses = [sp for sp in spans if genai.is_analysis_span(sp.name, sp.attributes)]
    assert len(analyses) == 4  # orders, auth, broken (invalid), auth after the fix
    children = [sp for sp in spans if sp.parent_span_id in {a.span_id for a in analyses}]
    assert {c.name for c in children} == {"chat openai-chat:teacher"}

    report = prepare_dataset([trace_file], output_file=tmp_path / "dataset.json", output_dir=None)
    examples = [e for split in load_examples(tmp_path / "dataset.json").values() for e in split]
    got = {(e.user, json.dumps(json.loads(e.assistant), sort_keys=True)) for e in examples}

    def expected(code: str, name: str, answer: dict) -> tuple[str, str]:
        result = DiagnosticResult.model_validate(answer).model_dump()
        return user_prompt("python", code, name), json.dumps(result, sort_keys=True)

    auth_kept = {"issues": AUTH_ANSWER["issues"][:1]}  # the dismissed issue is not a target
    fixed = AUTH.replace(
        "password == user.password", "hmac.compare_digest(password, user.password)"
    )
    assert got == {
        expected(ORDERS, "orders.py", ORDERS_ANSWER),
        expected(AUTH, "auth.py", auth_kept),
        expected(fixed, "auth.py", {"issues": []}),
    }
    assert {e.system for e in examples} == {LOCAL_SYSTEM_PROMPT}  # what a local model is served
    assert report.examples == 3
