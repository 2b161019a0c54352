"""The local backend end to end: the server, its model host, the tiny MLX model."""

from __future__ import annotations

from pathlib import Path

from ai_lsp_tune.traces import genai, otlp
from ai_lsp_tune.traces.telemetry import default_trace_file
from tests.lsp_session import start_session, stop_session


async def test_tiny_local_model_answers_through_the_host_and_is_recorded(
    tmp_path: Path, tiny_model: Path, isolated_home: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    s = await start_session(
        workspace,
        env={"AI_LSP_HOME": str(isolated_home), "AI_LSP_MODEL": str(tiny_model)},
        init_options={"aiLsp": {"debounceMs": 0, "maxTokens": 24}},
    )
    try:
        uri = s.open("a.py", "def f(items):\n    return items[0]\n")
        # A random-init model, decoded under the answer grammar: a valid (empty) result.
        diagnostics = await s.wait_for_diagnostics(uri, timeout_s=90)
        assert all(d.source == "ai-lsp" for d in diagnostics)
        assert not [m for m in s.client.messages if m.type.value == 1]  # no error shown
    finally:
        await stop_session(s)

    spans = list(otlp.read_spans([default_trace_file(workspace)], otlp.ReadReport()))
    (analysis,) = [sp for sp in spans if genai.is_analysis_span(sp.name, sp.attributes)]
    record = genai.analysis_from_attributes(analysis.attributes)
    assert record.model == str(tiny_model)
    assert record.provider == "mlx"
    assert record.document_name == "a.py"
    assert record.input_tokens and record.input_tokens > 42  # the system prompt is in there
    assert 1 <= (record.output_tokens or 0) <= 24
    assert record.valid and record.attempts == 1 and record.error is None
