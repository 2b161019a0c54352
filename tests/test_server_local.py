"""The local backend end to end: the server, its model host, the tiny MLX model."""

from __future__ import annotations

from pathlib import Path

import pytest
from lsprotocol import types

from ai_lsp_tune import blas
from ai_lsp_tune.schema import DiagnosticResult
from ai_lsp_tune.server import commands
from ai_lsp_tune.traces import genai, otlp
from ai_lsp_tune.traces.telemetry import default_trace_file
from tests.helpers.lsp_session import start_session, stop_session
from tests.helpers.scripted_openai import Answer, scripted_endpoint

pytestmark = pytest.mark.model


async def test_tiny_local_model_answers_through_the_host_and_is_recorded(
    tmp_path: Path, tiny_model_word_split: Path, isolated_home: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    s = await start_session(
        workspace,
        env={"AI_LSP_HOME": str(isolated_home), "AI_LSP_MODEL": str(tiny_model_word_split)},
        init_options={"aiLsp": {"debounceMs": 0, "maxTokens": 64}},
    )
    code = "x = [1, 2, 3]\nprint(x[3])\n"
    try:
        uri = s.open("a3.py", code)
        # A random-init model, decoded under the answer grammar: a valid result. This one (its
        # tokenizer splits words first, as real ones do), asked with the local system prompt,
        # names an issue at ",", which is in the code, so the editor shows it (at each ",").
        diagnostics = await s.wait_for_diagnostics(uri, timeout_s=90)
        assert not [m for m in s.client.messages if m.type.value == 1]  # no error shown
        # The model host's log reaches the editor's log at its own level (an editor shows a
        # server's raw stderr as errors).
        host = [(m.type, m.message) for m in s.client.log_messages if "host[" in m.message]
        assert any(
            kind == types.MessageType.Info and "answer grammar compiled" in text
            for kind, text in host
        ), host
        assert all(kind != types.MessageType.Error for kind, _ in host), host
    finally:
        await stop_session(s)

    spans = list(otlp.read_spans([default_trace_file(workspace)], otlp.ReadReport()))
    (analysis,) = [sp for sp in spans if genai.is_analysis_span(sp.name, sp.attributes)]
    record = genai.analysis_from_attributes(analysis.attributes)
    assert record.model == str(tiny_model_word_split)
    assert record.provider == "mlx"
    assert record.document_name == "a3.py"
    assert record.input_tokens and record.input_tokens > 42  # the system prompt is in there
    assert 1 <= (record.output_tokens or 0) <= 64
    assert record.valid and record.attempts == 1 and record.error is None
    # What the editor shows is the recorded answer, placed where its snippets are in the code.
    assert record.output is not None
    issues = DiagnosticResult.model_validate_json(record.output).issues
    lines = code.splitlines(keepends=True)
    shown = [
        (lines[d.range.start.line][d.range.start.character : d.range.end.character], d.message)
        for d in diagnostics
    ]
    expected = [
        (i.issue_snippet, i.message)
        for i in issues
        if i.issue_snippet  # an empty snippet points nowhere: not shown
        for _ in range(code.count(i.issue_snippet))
    ]
    assert diagnostics and all(d.source == "ai-lsp" for d in diagnostics)
    assert shown == expected


async def test_switching_the_backend_updates_the_running_server_in_place(
    tmp_path: Path, tiny_model: Path, isolated_home: Path
) -> None:
    """aiLsp.backend local -> remote over didChangeConfiguration: no new server process, and
    the open documents are analysed again by the new backend."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    empty = '{"issues": []}'
    with scripted_endpoint(lambda request: Answer(empty)) as endpoint:
        s = await start_session(
            workspace,
            env={
                "AI_LSP_HOME": str(isolated_home),
                "AI_LSP_MODEL": str(tiny_model),
                "OPENAI_BASE_URL": endpoint.base_url,
                "OPENAI_API_KEY": "test-key",
            },
            init_options={"aiLsp": {"debounceMs": 0, "maxTokens": 24}},
        )
        try:
            a_py = s.open("a.py", "x = 1\n")
            await s.wait_for_diagnostics(a_py, timeout_s=90)
            before = await s.client.workspace_execute_command_async(
                types.ExecuteCommandParams(command=commands.FINETUNE_STATUS)
            )
            assert before["backend"] == "local" and not endpoint.requests
            # What the local model computes on: in the status (:checkhealth) and the output log.
            assert before["blas"] == blas.status().describe()
            said = f"MLX's CPU matmuls run on: {blas.status().describe()}"
            assert any(said in m.message for m in s.client.log_messages)
            server_pid = s.client._server.pid  # type: ignore[union-attr]
            s.client.workspace_did_change_configuration(
                types.DidChangeConfigurationParams(
                    settings={"aiLsp": {"backend": "remote", "remoteModel": "openai-chat:t"}}
                )
            )
            # Opened at once: its analysis waits for the new backend (it was dropped before).
            await s.wait_for_diagnostics(s.open("b.py", "y = 2\n"), timeout_s=30)
            # The open a.py is analysed again by the new backend, with no edit.
            await s.wait_for_diagnostics(a_py, count=2, timeout_s=30)
            analysed = sorted(r.user_texts[0].rsplit("File: ", 1)[-1] for r in endpoint.requests)
            assert analysed == ["a.py", "b.py"] and {r.model for r in endpoint.requests} == {"t"}
            after = await s.client.workspace_execute_command_async(
                types.ExecuteCommandParams(command=commands.FINETUNE_STATUS)
            )
            assert after["backend"] == "remote"
            assert s.client._server.pid == server_pid  # type: ignore[union-attr]
            assert s.client._server.returncode is None  # type: ignore[union-attr]
        finally:
            await stop_session(s)
