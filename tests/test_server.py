"""The language server over stdio with a scripted remote model (a fake OpenAI endpoint)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types

from ai_lsp_tune.server.commands import DISMISS, FINETUNE_STATUS
from tests.helpers.lsp_session import Session, start_session, stop_session
from tests.helpers.scripted_openai import (
    Answer,
    ScriptedEndpoint,
    answers,
    remote_env,
    scripted_endpoint,
)

# Every test here talks to the language server over stdio (~5 s of CPU a start here); tests
# that change no setting share one server (shared_session), on the module's event loop.
pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

CODE = (
    'label = "naïve 😀"; total = price * qty\n'
    "for i in range(len(xs)):\n"
    "    total = price * qty\n"
    'msg = "héllo 😀😀 wörld"; x = eval(data)\n'
)
ANSWER = {
    "issues": [
        {
            "issue_snippet": "price * qty",
            "severity": "warning",
            "message": "Total ignores the discount.",
        },
        {
            "issue_snippet": "range(len(xs)):\n    total",
            "severity": "info",
            "message": "Iterate over xs directly.",
        },
        {
            "issue_snippet": "eval(data)",
            "severity": "error",
            "message": "eval on untrusted data runs arbitrary code.",
            "suggested_fixes": [
                {
                    "title": "Use ast.literal_eval",
                    "target_snippet": "eval(data)",
                    "replacement_snippet": "ast.literal_eval(data)",
                }
            ],
        },
    ]
}


@pytest.fixture(scope="module")
def shared_endpoint() -> Iterator[ScriptedEndpoint]:
    with scripted_endpoint(answers({})) as ep:
        yield ep


@pytest.fixture
def endpoint(shared_endpoint: ScriptedEndpoint) -> ScriptedEndpoint:
    """The module's endpoint, as new: no script, no requests (each test sets its own)."""
    shared_endpoint.script = answers({})
    shared_endpoint.requests.clear()
    return shared_endpoint


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_session(
    tmp_path_factory: pytest.TempPathFactory, shared_endpoint: ScriptedEndpoint
) -> AsyncIterator[Session]:
    """One server for the tests that only open their own files and read what comes back (each
    file name is used by one test): a start costs ~5 s of CPU here, mostly importing pydantic-ai."""
    root = tmp_path_factory.mktemp("shared-server")
    workspace = root / "project"
    workspace.mkdir()
    s = await start_session(
        workspace,
        env=remote_env(shared_endpoint, root / "home"),
        init_options={
            "aiLsp": {"backend": "remote", "remoteModel": "openai-chat:teacher", "debounceMs": 50}
        },
    )
    yield s
    await stop_session(s)


@pytest.fixture
def session(shared_session: Session, endpoint: ScriptedEndpoint) -> Session:
    return shared_session


@pytest_asyncio.fixture(loop_scope="module")
async def own_session(
    tmp_path: Path, endpoint: ScriptedEndpoint, isolated_home: Path
) -> AsyncIterator[Session]:
    """A server of the test's own, for a test that changes its settings."""
    workspace = tmp_path / "project"
    workspace.mkdir()
    s = await start_session(
        workspace,
        env=remote_env(endpoint, isolated_home),
        init_options={
            "aiLsp": {"backend": "remote", "remoteModel": "openai-chat:teacher", "debounceMs": 50}
        },
    )
    yield s
    await stop_session(s)


def pos(line: int, character: int) -> types.Position:
    return types.Position(line=line, character=character)


async def code_actions(
    session: Session, uri: str, at: types.Range, diagnostics: list[types.Diagnostic]
) -> Sequence[types.Command | types.CodeAction] | None:
    """What the editor asks for when the user opens the quick-fix menu at ``at``."""
    return await session.client.text_document_code_action_async(
        types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=at,
            context=types.CodeActionContext(diagnostics=diagnostics),
        )
    )


async def test_every_occurrence_is_placed_in_utf16_positions(
    session: Session, endpoint: ScriptedEndpoint
) -> None:
    endpoint.script = answers({"price": json.dumps(ANSWER)})
    uri = session.open("shop.py", CODE)

    diagnostics = await session.wait_for_diagnostics(uri)

    placed = sorted((d.range.start.line, d.range.start.character, d.message) for d in diagnostics)
    by_message = {}
    for d in diagnostics:
        by_message.setdefault(d.message, []).append(d)
    assert [(d.range.start, d.range.end) for d in by_message["Total ignores the discount."]] == [
        (pos(0, 28), pos(0, 39)),  # after "😀": two UTF-16 units
        (pos(2, 12), pos(2, 23)),
    ]
    (loop,) = by_message["Iterate over xs directly."]
    assert (loop.range.start, loop.range.end) == (pos(1, 9), pos(2, 9))  # multi-line snippet
    (unsafe,) = by_message["eval on untrusted data runs arbitrary code."]
    assert (unsafe.range.start, unsafe.range.end) == (pos(3, 30), pos(3, 40))
    assert len(placed) == 4
    assert {d.source for d in diagnostics} == {"ai-lsp"}
    assert unsafe.severity == types.DiagnosticSeverity.Error
    assert loop.severity == types.DiagnosticSeverity.Information
    # the original prompts, word for word
    request = endpoint.requests[-1]
    assert request.system_text.startswith("You are an AI code analyzer")
    assert (
        request.user_texts[0]
        == f"Analyze this python code for issues:\n\n```python\n{CODE}\n```\n\nFile: shop.py"
    )


async def test_quick_fix_applies_and_dismiss_removes(
    session: Session, endpoint: ScriptedEndpoint
) -> None:
    endpoint.script = answers({"price": json.dumps(ANSWER)})
    uri = session.open("fix.py", CODE)
    diagnostics = await session.wait_for_diagnostics(uri)
    unsafe = next(d for d in diagnostics if "eval" in d.message)

    actions = await code_actions(session, uri, unsafe.range, [unsafe])
    assert actions is not None
    titles = [a.title for a in actions if isinstance(a, types.CodeAction)]
    assert titles[0] == "Use ast.literal_eval"
    assert titles[1].startswith("Dismiss")
    fix = actions[0]
    assert isinstance(fix, types.CodeAction) and fix.edit and fix.edit.changes
    (edit,) = fix.edit.changes[uri]
    assert edit.new_text == "ast.literal_eval(data)"
    assert (edit.range.start, edit.range.end) == (pos(3, 30), pos(3, 40))

    # Dismiss another diagnostic: it disappears, the others stay.
    total = next(d for d in diagnostics if d.message.startswith("Total"))
    actions = await code_actions(session, uri, total.range, [total])
    assert actions is not None
    (dismiss,) = [a for a in actions if isinstance(a, types.CodeAction) and a.command]
    assert dismiss.command is not None and dismiss.command.command == DISMISS
    await session.client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=DISMISS, arguments=dismiss.command.arguments)
    )
    remaining = await session.wait_for_diagnostics(uri, count=2)
    assert len(remaining) == 3
    assert total.range not in [d.range for d in remaining]

    # Apply the fix as the editor would: the code changes and is analysed again; the model
    # flags the same things, and the dismissed one stays dismissed.
    session.apply_edit(uri, edit)
    fixed = CODE.replace("eval(data)", "ast.literal_eval(data)")
    await session.wait_for(
        lambda: any(fixed in t for r in endpoint.requests for t in r.user_texts),
        what="the fixed code to be analysed",
    )
    after_edit = await session.wait_for_diagnostics(uri, count=3)
    totals = [d for d in after_edit if d.message.startswith("Total")]
    assert [d.range.start for d in totals] == [pos(2, 12)], after_edit


async def test_closing_a_file_keeps_its_issues_in_the_problems_list(
    session: Session, endpoint: ScriptedEndpoint
) -> None:
    endpoint.script = answers({"price": json.dumps(ANSWER)})
    uri = session.open("closed.py", CODE)
    shown = len(await session.wait_for_diagnostics(uri))
    assert shown > 0
    session.client.text_document_did_close(
        types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
    )
    # A request after the close is answered after it was handled: nothing cleared the issues.
    await session.client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=FINETUNE_STATUS)
    )
    assert [len(sent) for sent in session.diagnostics_sent(uri)] == [shown]


async def test_newer_edit_cancels_the_stale_analysis(
    session: Session, endpoint: ScriptedEndpoint
) -> None:
    stale = {"issues": [{"issue_snippet": "slow", "severity": "warning", "message": "STALE"}]}
    fresh = {"issues": [{"issue_snippet": "fast", "severity": "warning", "message": "FRESH"}]}
    endpoint.script = answers(
        {"slow": json.dumps(stale), "fast": json.dumps(fresh)}, delays={"slow": 1.5}
    )
    uri = session.open("race.py", "slow = 1\n")
    await session.wait_for(lambda: endpoint.requests, what="the slow analysis to start")
    # A burst of edits inside the debounce window: one analysis, of the last text.
    for n in range(5):
        session.replace_all(uri, f"fast = {n}\n")
    diagnostics = await session.wait_for_diagnostics(uri)
    assert [d.message for d in diagnostics] == ["FRESH"]
    await asyncio.sleep(1.8)  # the slow answer has arrived by now, and must not be shown
    assert all(d.message != "STALE" for sent in session.diagnostics_sent(uri) for d in sent)
    analysed = [r.user_texts[0] for r in endpoint.requests]
    assert sum("fast = " in t for t in analysed) == 1 and "fast = 4" in analysed[-1]


async def test_an_edit_back_to_the_analysed_text_is_answered_at_once_for_its_version(
    session: Session, endpoint: ScriptedEndpoint
) -> None:
    """Typed and undone within the debounce: the diagnostics of that text are published again
    for the new version (an editor's "analysing…" ends), and the model is not asked again."""
    found = {"issues": [{"issue_snippet": "fast", "severity": "warning", "message": "FOUND"}]}
    endpoint.script = answers({"fast": json.dumps(found)})
    uri = session.open("back.py", "fast = 1\n")
    await session.wait_for_diagnostics(uri)
    asked = len(endpoint.requests)
    session.replace_all(uri, "fast = 12\n")  # version 2
    session.replace_all(uri, "fast = 1\n")  # version 3: the analysed text again
    latest = await session.wait_for(
        lambda: [p for p in session.published if p.uri == uri and p.version == 3],
        what="the diagnostics of version 3",
    )
    assert [d.message for d in latest[-1].diagnostics] == ["FOUND"]
    await asyncio.sleep(0.5)  # past the debounce of version 2: it was dropped, never asked
    assert len(endpoint.requests) == asked


async def test_invalid_output_retries_once_with_the_error_then_publishes_nothing(
    session: Session, endpoint: ScriptedEndpoint
) -> None:
    endpoint.script = answers({"bad": "Sure! Here are the issues: none"})
    uri = session.open("bad.py", "bad = 1\n")

    assert list(await session.wait_for_diagnostics(uri)) == []
    assert len(endpoint.requests) == 2
    retry = endpoint.requests[1]
    assert "not valid JSON" in retry.user_texts[-1]
    warning = await session.wait_for(
        lambda: [
            m for m in session.client.log_messages if "not a valid DiagnosticResult" in m.message
        ],
        what="a warning in the log",
    )
    assert warning[0].type == types.MessageType.Warning
    shown = [m.message for m in session.client.messages if "bad.py" in m.message]
    assert len(shown) == 1 and "not a valid DiagnosticResult after 2 attempts" in shown[0]

    # A retry that succeeds is used.
    good = {"issues": [{"issue_snippet": "ok", "severity": "hint", "message": "fine now"}]}
    endpoint.script = answers({"ok": ['{"issues": [{"severity": "hint"}]}', json.dumps(good)]})
    uri2 = session.open("ok.py", "ok = 2\n")
    diagnostics = await session.wait_for_diagnostics(uri2)
    assert [d.message for d in diagnostics] == ["fine now"]
    assert "issues.0.issue_snippet" in endpoint.requests[-1].user_texts[-1]


async def test_an_answer_cut_at_max_tokens_is_shown_once_per_version_and_not_retried(
    session: Session, endpoint: ScriptedEndpoint
) -> None:
    cut = '{"issues": [{"issue_snippet": "long = 1", "severity": "warning", "message": "Thi'
    endpoint.script = lambda request: Answer(cut, finish_reason="length")
    uri = session.open("long.py", "long = 1\n")
    assert list(await session.wait_for_diagnostics(uri)) == []
    session.replace_all(uri, "long = 2\n")
    assert list(await session.wait_for_diagnostics(uri, count=2)) == []

    assert len(endpoint.requests) == 2  # one per version: the same budget would cut a retry
    expected = (
        "ai-lsp: no diagnostics for long.py: the answer was cut at maxTokens=1024; "
        "raise aiLsp.maxTokens."
    )
    shown = [m for m in session.client.messages if "long.py" in m.message]
    assert [(m.type, m.message) for m in shown] == [(types.MessageType.Warning, expected)] * 2


async def test_settings_change_is_applied_and_invalid_values_are_shown(
    own_session: Session, endpoint: ScriptedEndpoint
) -> None:
    own_session.client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(
            settings={"aiLsp": {"remoteModel": "openai-chat:student", "debounceMs": "soon"}}
        )
    )
    message = await own_session.wait_for(
        lambda: [m for m in own_session.client.messages if "debounceMs" in m.message],
        what="the invalid setting to be shown",
    )
    assert message[0].type == types.MessageType.Warning
    own_session.open("after.py", "x = 1\n")
    await own_session.wait_for(lambda: endpoint.requests, what="an analysis")
    assert endpoint.requests[-1].model == "student"


async def test_languages_setting_limits_what_is_analysed(
    own_session: Session, endpoint: ScriptedEndpoint
) -> None:
    own_session.client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"aiLsp": {"languages": ["rust"]}})
    )
    await asyncio.sleep(0.2)
    own_session.open("skip.py", "x = 1\n")
    rust = own_session.open("main.rs", "fn main() {}\n", language="rust")
    await own_session.wait_for_diagnostics(rust)
    assert [r.user_texts[0].split("\n")[0] for r in endpoint.requests] == [
        "Analyze this rust code for issues:"
    ]


async def test_invalid_initialization_options_are_shown_then_defaults_apply(
    tmp_path: Path, endpoint: ScriptedEndpoint, isolated_home: Path
) -> None:
    s = await start_session(
        tmp_path,
        env=remote_env(endpoint, isolated_home),
        init_options={
            "backend": "remote",
            "remoteModel": "openai-chat:teacher",
            "maxTokens": -1,
            "finetune": {"loraRank": 100000},
        },
    )
    try:
        shown = await s.wait_for(
            lambda: [m for m in s.client.messages if "maxTokens" in m.message],
            what="the invalid maxTokens to be shown",
        )
        assert "aiLsp.maxTokens" in shown[0].message
        assert "using the default" in shown[0].message
        (rank,) = [m.message for m in s.client.messages if "loraRank" in m.message]
        assert "aiLsp.finetune.loraRank: Input should be less than or equal to 4096" in rank
        assert rank.endswith("fine-tunes are refused until it is fixed.")  # no silent default
        uri = s.open("a.py", "x = 1\n")
        assert list(await s.wait_for_diagnostics(uri, timeout_s=40)) == []
    finally:
        await stop_session(s)


@pytest.mark.model
@pytest.mark.parametrize(
    ("client_name", "setting"),
    [("Visual Studio Code", "aiLsp.model"), ("Neovim", "settings.model")],
)
async def test_unloadable_local_model_is_explained_and_the_server_stays_up(
    tmp_path: Path, isolated_home: Path, client_name: str, setting: str
) -> None:
    """One short line that names the setting first, as the user writes it in their editor."""
    s = await start_session(
        tmp_path,
        env={"AI_LSP_HOME": str(isolated_home), "HF_HUB_OFFLINE": "1"},
        init_options={"model": "mlx-community/no-such-model-4bit"},
        client_name=client_name,
    )
    try:
        shown = await s.wait_for(
            lambda: [m for m in s.client.messages if m.type == types.MessageType.Error],
            timeout_s=60,
            what="an error message about the model",
        )
        assert len(shown) == 1
        assert "mlx-community/no-such-model-4bit" in shown[0].message
        message = shown[0].message
        assert f'set "{setting}" (or AI_LSP_MODEL)' in message, message
        assert len(message) <= 200 and "\n" not in message, message
        uri = s.open("a.py", "x = 1\n")
        actions = await code_actions(s, uri, types.Range(start=pos(0, 0), end=pos(0, 1)), [])
        assert list(actions or []) == []
    finally:
        await stop_session(s)


async def test_telemetry_off_records_nothing(
    tmp_path: Path, endpoint: ScriptedEndpoint, isolated_home: Path
) -> None:
    from ai_lsp_tune.traces.telemetry import default_trace_file

    s = await start_session(
        tmp_path,
        env={**remote_env(endpoint, isolated_home), "AI_LSP_TELEMETRY": "false"},
        init_options={"backend": "remote", "remoteModel": "openai-chat:teacher", "debounceMs": 0},
    )
    try:
        uri = s.open("a.py", "x = 1\n")
        await s.wait_for_diagnostics(uri)
    finally:
        await stop_session(s)
    assert endpoint.requests
    assert not default_trace_file(tmp_path).parent.exists()


async def test_a_setting_reset_to_its_default_reaches_the_server(
    tmp_path: Path, endpoint: ScriptedEndpoint, isolated_home: Path
) -> None:
    """VS Code's Settings UI deletes a key set back to its default; the extension sends it as
    null: the server goes back to the default, not to the value it started with."""
    from ai_lsp_tune.hyperparams import DEFAULT_MODEL
    from ai_lsp_tune.server.commands import FINETUNE_STATUS

    start = {"backend": "remote", "remoteModel": "openai-chat:teacher", "model": "/models/mine"}
    s = await start_session(tmp_path, env=remote_env(endpoint, isolated_home), init_options=start)

    async def status() -> dict:
        return await s.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=FINETUNE_STATUS)
        )

    try:
        assert (await status())["configuredModel"] == "/models/mine"
        s.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(
                settings={"aiLsp": {**start, "model": None, "finetune": {"force": None}}}
            )
        )
        for _ in range(100):  # the notification is handled before (or soon after) the request
            now = await status()
            if now["configuredModel"] != "/models/mine":
                break
            await asyncio.sleep(0.1)
        assert now["configuredModel"] == DEFAULT_MODEL and now["backend"] == "remote"
        assert not [m for m in s.client.messages if "invalid setting" in m.message]
    finally:
        await stop_session(s)
