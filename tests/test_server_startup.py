"""What the language server process loads at start: with the local backend, neither MLX (the
model host computes) nor pydantic-ai and its provider SDKs (the remote backend) — seconds of
CPU on every start of every editor."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers.raw_lsp import RawServer

pytestmark = pytest.mark.model  # the local backend starts a model host

# The real `ai-lsp serve`, run as `python -m ai_lsp_tune.cli serve` does; at exit (after the
# client's `exit`) it writes the names of the modules it imported.
_SERVE_AND_LIST_MODULES = """
import atexit, runpy, sys
listing = sys.argv[1]
def _write():
    with open(listing, "w") as out:
        out.write("\\n".join(sorted(sys.modules)))
atexit.register(_write)
sys.argv = [sys.argv[0], "serve", "--log-level", "INFO"]
runpy.run_module("ai_lsp_tune.cli", run_name="__main__")
"""

NOT_IN_THE_SERVER = ("mlx", "mlx_lm", "pydantic_ai", "openai", "transformers")


def test_the_server_with_the_local_backend_imports_neither_mlx_nor_pydantic_ai(
    tmp_path: Path, tiny_model: Path, isolated_home: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    listed = tmp_path / "modules.txt"
    command = [sys.executable, "-c", _SERVE_AND_LIST_MODULES, str(listed)]
    env = {"AI_LSP_HOME": str(isolated_home), "AI_LSP_MODEL": str(tiny_model)}
    server = RawServer(env, tmp_path / "server.log", command)
    try:
        server.initialize(workspace, {"aiLsp": {"backend": "local", "debounceMs": 0}})
        server.wait_until_ready(timeout_s=120)  # the model host has loaded the model
        assert not server.shown(1), server.shown(1)  # no error: the local backend is in use
        server.request("shutdown")
        server.notify("exit", None)
        assert server.process.wait(timeout=30) == 0
    finally:
        server.kill()
    modules = listed.read_text().split()
    assert "ai_lsp_tune.server.features" in modules  # the list is the server's
    loaded = sorted({m.split(".")[0] for m in modules} & set(NOT_IN_THE_SERVER))
    assert not loaded, f"the language server imported {loaded} (only other processes need them)"
