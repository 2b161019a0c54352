"""Hostile input to the real ``ai-lsp serve`` over stdio, written as raw bytes.

Broken frames, malformed requests, a second ``initialize``, a workspace of ``/`` or the home
folder, and huge documents: each must get a clear answer, and the server must keep serving and
exit by itself once its stdin closes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ai_lsp_tune.server.commands import DISMISS, FINETUNE, FINETUNE_STATUS, MODEL_USE
from tests.helpers.raw_lsp import (
    BROKEN_FRAMES,
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    SETTINGS,
    RawServer,
    error_code,
    error_message,
    frame,
    open_document,
    published,
)
from tests.helpers.scripted_openai import ScriptedEndpoint

# Every test here talks to the language server over stdio (~10 s a start on the 2-core machine);
# requests it must refuse share one server per module (refusing_server); others start their own.
pytestmark = pytest.mark.slow
WARNING = 2


def assert_exits_cleanly(server: RawServer) -> None:
    # A server left running by a vanished editor is the bug; how fast it goes is not a test
    # (it takes ~2 s here, and more with a dozen processes on two cores: 5 s was flaky).
    server.close_stdin_and_wait(timeout_s=30)
    log = server.log_text()
    assert "Traceback" not in log, log[-3000:]


# --- framing -------------------------------------------------------------------------------------


@pytest.fixture
def starting_server(start: Callable[..., RawServer], workspace: Path) -> RawServer:
    """An initialized server whose remote backend may still be starting, as an editor's first
    frames find it: framing never waits for the backend, and not waiting for it saves ~3 s of
    CPU a test here (importing pydantic-ai, cut short by the exit)."""
    server = start()
    assert "result" in server.initialize(workspace, SETTINGS)
    return server


@pytest.mark.parametrize("broken", BROKEN_FRAMES)
def test_after_a_broken_frame_later_requests_are_answered(
    starting_server: RawServer, broken: str
) -> None:
    server = starting_server
    bad = server.request_message("workspace/executeCommand", {"command": FINETUNE_STATUS})
    good = server.request_message("workspace/executeCommand", {"command": FINETUNE_STATUS})
    server.send_bytes(BROKEN_FRAMES[broken](json.dumps(bad).encode()) + frame(good))
    assert server.response(good["id"], timeout_s=10)["result"]["state"] == "idle"
    assert server.command(FINETUNE_STATUS)["result"]["state"] == "idle"
    assert "result" in server.request("shutdown")
    server.notify("exit", None)
    assert_exits_cleanly(server)


def test_the_server_exits_when_stdin_closes_in_the_middle_of_a_frame(
    starting_server: RawServer,
) -> None:
    server = starting_server
    server.send_bytes(b'Content-Length: 500\r\n\r\n{"jsonrpc": "2.0", "id": 99, "meth')
    assert_exits_cleanly(server)


@pytest.mark.model
def test_a_vanished_client_takes_the_server_and_its_model_host_with_it(
    start: Callable[..., RawServer], workspace: Path, tiny_model: Path
) -> None:
    server = start({"AI_LSP_MODEL": str(tiny_model)})
    server.initialize(workspace, {"aiLsp": {"debounceMs": 0}})
    server.wait_until_ready()
    hosts = children(server.process.pid)
    assert hosts, "no model host was started"
    assert_exits_cleanly(server)  # no shutdown, no exit: stdin just closes
    assert not [pid for pid in hosts if alive(pid)], "the model host outlived the server"


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "stat").read_text().split(") ")[1].split()[
                1
            ] == str(pid):
                found.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return found


# --- malformed requests --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"jsonrpc": "2.0", "id": 7, "method": 5}, INVALID_REQUEST),
        (
            {"jsonrpc": "2.0", "id": 7, "method": "textDocument/codeAction", "params": "x"},
            INVALID_REQUEST,
        ),
        ({"jsonrpc": "1.0", "id": 7, "method": "shutdown"}, INVALID_REQUEST),
        (
            {
                "jsonrpc": "2.0",
                "id": 7,
                "method": "textDocument/codeAction",
                "params": {"textDocument": 5},
            },
            INVALID_PARAMS,
        ),
    ],
    ids=["method is a number", "params is a string", "jsonrpc 1.0", "params of the wrong shape"],
)
def test_a_malformed_request_is_answered_with_its_error(
    refusing_server: RawServer, message: dict[str, Any], code: int
) -> None:
    server = refusing_server
    server.responses.pop(7, None)
    server.send(message)
    assert error_code(server.response(7)) == code
    assert server.command(FINETUNE_STATUS)["result"]["state"] == "idle"


def test_a_body_that_is_not_utf8_is_a_parse_error_for_its_id(refusing_server: RawServer) -> None:
    server = refusing_server
    server.responses.pop(7, None)
    body = b'{"jsonrpc": "2.0", "id": 7, "method": "workspace/executeCommand", "params": '
    body += b'{"command": "ai-lsp.dismiss", "arguments": ["\xff\xfe", "x"]}}'
    server.send_bytes(frame(body))
    assert error_code(server.response(7)) == PARSE_ERROR
    assert server.command(FINETUNE_STATUS)["result"]["state"] == "idle"


def test_a_request_whose_id_is_an_object_is_invalid(refusing_server: RawServer) -> None:
    server = refusing_server
    server.responses.pop(None, None)
    message = {"jsonrpc": "2.0", "id": {"n": 7}, "method": "workspace/executeCommand"}
    server.send({**message, "params": {"command": FINETUNE_STATUS}})
    assert error_code(server.response(None)) == INVALID_REQUEST
    assert server.command(FINETUNE_STATUS)["result"]["state"] == "idle"


@pytest.mark.parametrize(
    ("command", "arguments"),
    [
        (DISMISS, [1, 2]),
        (DISMISS, ["file:///x.py"]),
        (DISMISS, ["file:///x.py", {"id": "d1"}]),
        (MODEL_USE, ["models/a\x00b"]),
        (MODEL_USE, ["m" * 5000]),
        (MODEL_USE, [{"path": "models/a"}]),
        (FINETUNE, [{"traces": ["traces/a\x00b.jsonl"]}]),
        (FINETUNE, [{"traces": ["t" * 5000]}]),
        (FINETUNE, [{"traces": "traces.jsonl"}]),
    ],
    ids=lambda value: repr(value)[:40],
)
def test_bad_command_arguments_are_invalid_params_logged_without_a_traceback(
    refusing_server: RawServer, command: str, arguments: list[Any]
) -> None:
    server = refusing_server
    logged_before = len(server.log_text())
    answer = server.command(command, *arguments)
    assert error_code(answer) == INVALID_PARAMS, answer
    assert server.command(FINETUNE_STATUS)["result"]["state"] == "idle"
    log = server.log_text()[logged_before:]
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


# --- the workspace root --------------------------------------------------------------------------
def outside_folders(base: Path) -> tuple[Path, Path]:
    """A model folder and a trace file that a command must not reach."""
    model = base / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    traces = base / "secret-traces.jsonl"
    traces.write_text("{}\n")
    return model, traces


def assert_confined(server: RawServer, model: Path, traces: Path) -> None:
    assert "outside the workspace" in error_message(server.command(MODEL_USE, str(model)))
    refused = server.command(FINETUNE, {"traces": [str(traces)]})
    assert "outside the workspace" in error_message(refused)


def test_a_second_initialize_is_refused_and_the_workspace_stays(
    refusing_server: RawServer, tmp_path: Path
) -> None:
    server = refusing_server
    model, traces = outside_folders(tmp_path / "outside")
    again = server.request(
        "initialize", {"processId": None, "rootUri": "file:///", "capabilities": {}}
    )
    assert error_code(again) == INVALID_REQUEST
    assert "already initialized" in error_message(again)
    assert_confined(server, model, traces)


@pytest.mark.parametrize("root", ["filesystem root", "home folder"])
def test_a_root_of_slash_or_home_confines_commands_to_the_data_dir(
    start: Callable[..., RawServer], tmp_path: Path, isolated_home: Path, root: str
) -> None:
    home = tmp_path / "home"
    model, traces = outside_folders(home / "code")
    server = start({"HOME": str(home)})
    server.initialize("file:///" if root == "filesystem root" else home.as_uri(), SETTINGS)
    server.wait_until_ready()
    assert_confined(server, model, traces)
    data_model, _ = outside_folders(isolated_home / "data" / "models" / "mine")
    message = error_message(server.command(MODEL_USE, str(data_model)))
    # The path itself is allowed; it is refused only because it is not one of the workspace's
    # models (ai-lsp.model.list).
    assert "outside the workspace" not in message and "not one of this workspace's" in message
    assert_exits_cleanly(server)


# --- huge documents -----------------------------------------------------------------------------


def test_a_document_over_the_size_limit_is_not_analysed_and_the_user_is_told_once(
    server: RawServer, workspace: Path, endpoint: ScriptedEndpoint
) -> None:
    big_uri, small_uri = (workspace / "big.py").as_uri(), (workspace / "small.py").as_uri()
    big_text = "# BIGDOC\n" + "x = 1\n" * 200_000  # 1.2 MB, over the 1 MB default
    open_document(server, big_uri, big_text)
    open_document(server, small_uri, "# SMALLDOC\nx = 1\n")
    server.wait_for(lambda: published(server, small_uri), what="the small file's diagnostics")
    server.notify(
        "textDocument/didChange",
        {
            "textDocument": {"uri": big_uri, "version": 2},
            "contentChanges": [{"text": big_text + "y = 2\n"}],
        },
    )
    server.drain(1.0)
    assert not [r for r in endpoint.requests if "BIGDOC" in "".join(r.user_texts)]
    warnings = [m for m in server.shown(WARNING) if "aiLsp.maxDocumentBytes" in m]
    assert len(warnings) == 1 and "big.py" in warnings[0], server.shown()
    assert_exits_cleanly(server)


def test_the_document_size_limit_is_a_setting(
    start: Callable[..., RawServer], workspace: Path, endpoint: ScriptedEndpoint
) -> None:
    server = start()
    server.initialize(workspace, {"aiLsp": {**SETTINGS["aiLsp"], "maxDocumentBytes": 2000}})
    server.wait_until_ready()
    uri, small_uri = (workspace / "mid.py").as_uri(), (workspace / "small.py").as_uri()
    open_document(server, uri, "# MIDDOC\n" + "x = 1\n" * 500)  # 3 kB
    open_document(server, small_uri, "# SMALLDOC\nx = 1\n")
    server.wait_for(lambda: published(server, small_uri), what="the small file's diagnostics")
    server.wait_for(lambda: [m for m in server.shown(WARNING) if "mid.py" in m], what="a warning")
    assert not [r for r in endpoint.requests if "MIDDOC" in "".join(r.user_texts)]
    assert_exits_cleanly(server)
