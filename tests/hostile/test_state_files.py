"""Damaged workspace state files (the model registry, the last fine-tune's record) cannot sink
the server: each is set aside with one warning naming it, and the configured model is served.

Binary, truncated, of another schema, a folder, a FIFO: once, a binary ``models.json`` failed
``initialize`` with a traceback, a truncated one was silently replaced by an empty registry, a
folder left the server with no model host and no word why, a FIFO hung ``initialize`` for ever,
and a binary ``last_run.json`` failed every fine-tune command until it was deleted by hand.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ai_lsp_tune import paths
from ai_lsp_tune.server.commands import FINETUNE_STATUS, MODEL_LIST
from ai_lsp_tune.serving.registry import ModelRegistry
from tests.helpers.raw_lsp import RawServer

WARNING = 2
BINARY = b"\x00\xff\xfe\x89PNG\r\n\x1a\n" + bytes(range(256))
TRUNCATED = b'{"version": 2, "trail": ["/models/ft-1", "/mod'
WRONG_SCHEMA = b'{"version": 2, "trail": {"not": "a list"}, "models": 7}'


def _write(content: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(content)


DAMAGE: dict[str, Callable[[Path], None]] = {
    "binary": _write(BINARY),
    "truncated": _write(TRUNCATED),
    "wrong schema": _write(WRONG_SCHEMA),
    "a folder": lambda path: path.mkdir(),
    "a FIFO": lambda path: os.mkfifo(path),
}
KEEPS_A_COPY = {"binary": BINARY, "truncated": TRUNCATED, "wrong schema": WRONG_SCHEMA}


def _damage(path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    DAMAGE[kind](path)


def _copies(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.unreadable-*"))


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_registry_is_set_aside_with_one_problem_and_history_is_kept(
    tmp_path: Path, kind: str
) -> None:
    registry_file = tmp_path / "models.json"
    _damage(registry_file, kind)
    opened: list[ModelRegistry] = []
    reader = threading.Thread(target=lambda: opened.append(ModelRegistry(tmp_path)), daemon=True)
    reader.start()
    reader.join(timeout=60)  # a FIFO opened for reading blocks until a writer comes
    assert opened, "reading the registry hangs"
    registry = opened[0]

    assert len(registry.problems) == 1 and str(registry_file) in registry.problems[0]
    assert registry.served is None
    if kind in KEEPS_A_COPY:
        assert [c.read_bytes() for c in _copies(registry_file)] == [KEEPS_A_COPY[kind]]
    registry.set_configured("/models/base")  # the server goes on; a folder only warns again once
    assert registry.configured == "/models/base"
    assert len(registry.problems) == 1


def test_a_registry_that_cannot_be_written_warns_once_and_keeps_the_change(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "workspace")
    (tmp_path / "workspace").write_text("a file where the workspace folder should be")
    registry.set_configured("/models/base")
    registry.record_swap(served="/models/ft-1", previous="/models/base")
    assert registry.served == "/models/ft-1" and registry.previous == "/models/base"
    assert len(registry.problems) == 1 and "models.json" in registry.problems[0]


# --- the real server ---------------------------------------------------------------------------
@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    return root


@pytest.fixture
def local_server(
    tmp_path: Path, isolated_home: Path, tiny_model: Path
) -> Iterator[Callable[[Path], RawServer]]:
    started: list[RawServer] = []

    def start(workspace: Path) -> RawServer:
        server = RawServer(
            {"AI_LSP_HOME": str(isolated_home)}, tmp_path / f"server-{len(started)}.log"
        )
        started.append(server)
        answer = server.initialize(
            workspace, {"aiLsp": {"backend": "local", "model": str(tiny_model)}}
        )
        assert "result" in answer, answer
        server.wait_until_ready()
        return server

    yield start
    for server in started:
        server.kill()


def _warnings_naming(server: RawServer, name: str) -> list[str]:
    return [m for m in server.shown(WARNING) if name in m]


@pytest.mark.slow
@pytest.mark.parametrize("kind", DAMAGE)
def test_the_server_serves_the_configured_model_over_a_damaged_registry(
    local_server: Callable[[Path], RawServer], workspace: Path, tiny_model: Path, kind: str
) -> None:
    registry_file = paths.workspace_dir(workspace) / "models.json"
    _damage(registry_file, kind)

    server = local_server(workspace)

    status = server.command(FINETUNE_STATUS)["result"]
    assert status["servedModel"] == str(tiny_model)
    assert "result" in server.command(MODEL_LIST)
    server.drain(0.5)
    assert len(_warnings_naming(server, "models.json")) == 1, server.shown()
    assert "Traceback" not in server.log_text()
    if kind in KEEPS_A_COPY:
        assert [c.read_bytes() for c in _copies(registry_file)] == [KEEPS_A_COPY[kind]]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["binary", "truncated", "a folder", "a FIFO"])
def test_fine_tune_commands_answer_over_a_damaged_last_run_record(
    local_server: Callable[[Path], RawServer], workspace: Path, kind: str
) -> None:
    record = paths.workspace_dir(workspace) / "finetune" / "last_run.json"
    _damage(record, kind)

    server = local_server(workspace)

    for _ in range(2):
        answer = server.command(FINETUNE_STATUS)
        assert answer.get("result", {}).get("state") == "idle", answer
    server.drain(0.5)
    assert len(_warnings_naming(server, "last_run.json")) == 1, server.shown()
    if kind in KEEPS_A_COPY:
        assert [c.read_bytes() for c in _copies(record)] == [KEEPS_A_COPY[kind]]
