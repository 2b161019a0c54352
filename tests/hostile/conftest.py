"""The real server with a remote backend on a scripted endpoint, for hostile tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.raw_lsp import SETTINGS, RawServer
from tests.helpers.scripted_openai import Answer, ScriptedEndpoint, scripted_endpoint

EMPTY = Answer('{"issues": []}')


@pytest.fixture
def endpoint() -> Iterator[ScriptedEndpoint]:
    with scripted_endpoint(lambda request: EMPTY) as ep:
        yield ep


@pytest.fixture
def start(
    tmp_path: Path, endpoint: ScriptedEndpoint, isolated_home: Path
) -> Iterator[Callable[..., RawServer]]:
    """Start servers (remote backend on the scripted endpoint); all are killed at the end."""
    started: list[RawServer] = []

    def start_server(env: dict[str, str] | None = None) -> RawServer:
        server = RawServer(
            {
                "OPENAI_BASE_URL": endpoint.base_url,
                "OPENAI_API_KEY": "test-key",
                "AI_LSP_HOME": str(isolated_home),
                **(env or {}),
            },
            tmp_path / f"server-{len(started)}.log",
        )
        started.append(server)
        return server

    yield start_server
    for server in started:
        server.kill()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    return root


@pytest.fixture
def server(start: Callable[..., RawServer], workspace: Path) -> RawServer:
    server = start()
    assert "result" in server.initialize(workspace, SETTINGS)
    server.wait_until_ready()
    return server
