"""The server exits promptly on the client's ``exit`` (after ``shutdown``), even while a worker
thread is still busy: VS Code kills a server that is not gone 2 s after ``exit`` (and logs
``Server process exited with signal SIGKILL`` on every "Restart server")."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

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


def _hosts_serving(model: Path) -> list[int]:
    """Model host processes (``ai_lsp_tune.serving.worker --model <model>``) still alive."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ai_lsp_tune.serving.worker" in argv and str(model).encode() in argv:
            found.append(int(proc.name))
    return found


@pytest.mark.model
def test_exit_while_the_model_host_loads_stops_the_host_and_exits(
    tmp_path: Path, tiny_model: Path, isolated_home: Path
) -> None:
    """shutdown + exit right after initialize, while the local model is still loading: the
    server stops its model host (no orphan) and exits promptly with code 0."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    env = {"AI_LSP_HOME": str(isolated_home), "AI_LSP_MODEL": str(tiny_model)}
    server = RawServer(env, tmp_path / "server.log")
    try:
        server.initialize(workspace, {"aiLsp": {"backend": "local", "debounceMs": 0}})
        server.request("shutdown")
        server.notify("exit", None)
        try:
            code = server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                "the server was still running 15 s after exit:\n" + server.log_text()[-2000:]
            ) from None
        assert code == 0, server.log_text()[-2000:]
        assert not _hosts_serving(tiny_model), "a model host outlived the server"
    finally:
        server.kill()


def test_exit_without_shutdown_ends_with_code_1_as_the_lsp_spec_says(
    tmp_path: Path, isolated_home: Path
) -> None:
    """A client that skips ``shutdown`` (a crash path) sees the error code; one that asks first
    sees 0 (the test above)."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    env = {"AI_LSP_HOME": str(isolated_home), "OPENAI_API_KEY": "unused"}
    server = RawServer(env, tmp_path / "server.log")
    settings = {"backend": "remote", "remoteModel": "openai-chat:teacher", "debounceMs": 0}
    try:
        server.initialize(workspace, {"aiLsp": settings})
        server.notify("exit", None)
        assert server.process.wait(timeout=30) == 1, server.log_text()[-2000:]
        assert "Traceback" not in server.log_text()
    finally:
        server.kill()
