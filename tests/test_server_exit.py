"""The server exits promptly on the client's ``exit`` (after ``shutdown``), even while a worker
thread is still busy: VS Code kills a server that is not gone 2 s after ``exit`` (and logs
``Server process exited with signal SIGKILL`` on every "Restart server")."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from tests.helpers.raw_lsp import RawServer

# Importing pydantic-ai (the remote backend, built on a worker thread at start) takes 5-12 s on
# a loaded machine; this makes it take 60 s, so the test does not depend on the machine's speed.
_SLOW_PYDANTIC_AI = """
import sys, time

class _SlowPydanticAi:
    def find_spec(self, name, path=None, target=None):
        if name == "pydantic_ai":
            time.sleep(60)
        return None

sys.meta_path.insert(0, _SlowPydanticAi())
"""


def test_exit_right_after_initialize_does_not_wait_for_the_remote_backends_import(
    tmp_path: Path, isolated_home: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SLOW_PYDANTIC_AI)
    env = {
        "AI_LSP_HOME": str(isolated_home),
        "PYTHONPATH": str(site),
        "OPENAI_API_KEY": "unused",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",  # never asked: the server exits first
    }
    server = RawServer(env, tmp_path / "server.log")
    settings = {"backend": "remote", "remoteModel": "openai-chat:teacher", "debounceMs": 0}
    try:
        server.initialize(workspace, {"aiLsp": settings})
        server.request("shutdown")
        server.notify("exit", None)
        try:
            code = server.process.wait(timeout=15)  # the import alone takes 60 s here
        except subprocess.TimeoutExpired:
            raise AssertionError(
                "the server was still running 15 s after exit:\n" + server.log_text()[-2000:]
            ) from None
        assert code == 0, server.log_text()[-2000:]
    finally:
        server.kill()


def test_work_on_a_daemon_thread_returns_its_result_or_raises_its_error() -> None:
    """The remote backend is built this way: a bad ``aiLsp.remoteModel`` still reaches the
    user as the error its constructor raised."""
    from ai_lsp_tune.server.state import in_daemon_thread

    def build(name: str) -> str:
        if name == "bad":
            raise ValueError(f"unknown model {name!r}")
        return name.upper()

    async def both() -> tuple[str, str]:
        built = await in_daemon_thread(build, "good")
        try:
            await in_daemon_thread(build, "bad")
        except ValueError as exc:
            return built, str(exc)
        return built, "no error"

    assert asyncio.run(both()) == ("GOOD", "unknown model 'bad'")
