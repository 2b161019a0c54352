"""The real server with a remote backend on a scripted endpoint, for hostile tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.raw_lsp import SETTINGS, RawServer
from tests.helpers.scripted_openai import Answer, ScriptedEndpoint, remote_env, scripted_endpoint

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


@pytest.fixture(scope="module")
def refusing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RawServer]:
    """One server for a module's requests that it must refuse and that change nothing: refused
    one after another, it keeps serving; it must exit cleanly when stdin closes at the end."""
    root = tmp_path_factory.mktemp("refusing")
    (root / "project").mkdir()
    with scripted_endpoint(lambda request: EMPTY) as endpoint:
        # Its own requests' ids start above those the tests write by hand (7, 77).
        env = remote_env(endpoint, root / "home")
        server = RawServer(env, root / "server.log", first_id=1000)
        try:
            assert "result" in server.initialize(root / "project", SETTINGS)
            server.wait_until_ready()
            yield server
            server.close_stdin_and_wait(timeout_s=30)
            assert "Traceback" not in server.log_text(), server.log_text()[-3000:]
        finally:
            server.kill()
