"""Hostile command arguments and messages to the real server (remote backend, scripted).

Strict types (``"false"`` is not true), lone surrogates, trace folders holding links out of the
workspace, requests nested thousands deep, errors a megabyte long, documents with lone surrogates:
each gets a clear answer, capped for a popup, and the server keeps serving.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ai_lsp_tune import paths
from ai_lsp_tune.server.commands import (
    DISMISS,
    FINETUNE,
    FINETUNE_CANCEL,
    FINETUNE_STATUS,
    MODEL_ROLLBACK,
    MODEL_USE,
)
from tests.helpers.raw_lsp import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    RawServer,
    error_code,
    error_message,
    frame,
    open_document,
    published,
)

# Every test here talks to the language server over stdio (~10 s a start on the 2-core machine);
# requests it must refuse share one server per module (refusing_server); others start their own.
pytestmark = pytest.mark.slow

LOG_MESSAGE = "window/logMessage"
POPUP_CHARS = 350  # ~300 and a pointer to the log


def test_arguments_of_the_wrong_type_are_invalid_params_not_truthy(
    refusing_server: RawServer,
) -> None:
    server = refusing_server
    wrong: list[tuple[str, list[Any]]] = [
        (FINETUNE, [{"continueFromServed": "false"}]),  # once bool("false"): trained on top
        (FINETUNE, [{"force": "false"}]),
        (FINETUNE, [{"resume": "no"}]),
        (FINETUNE, [{"resume": 0}]),
        (FINETUNE, [{"traces": [1]}]),
        (FINETUNE, [{"traces": ["a.jsonl"]}, {}]),
        (MODEL_ROLLBACK, ["back"]),  # once ignored silently
        (FINETUNE_CANCEL, [{"now": True}]),
        (MODEL_USE, ["models/a\ud800b"]),  # once -32603 with a traceback
        (FINETUNE, [{"traces": ["traces/\udc00.jsonl"]}]),
        (DISMISS, ["file:///x\udfff.py", "d1"]),
    ]
    for command, arguments in wrong:
        answer = server.command(command, *arguments)
        assert error_code(answer) == INVALID_PARAMS, (command, arguments, answer)
    assert server.command(FINETUNE_STATUS)["result"]["state"] == "idle"
    assert "Traceback" not in server.log_text()


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)


def test_a_trace_folder_is_confined_file_by_file_after_links_are_resolved(
    server: RawServer, workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    (outside / "folder").mkdir(parents=True)
    (outside / "secret.jsonl").write_text("{}\n")
    (outside / "folder" / "more.jsonl").write_text("{}\n")
    (workspace / "own").mkdir()
    (workspace / "own" / "t.jsonl").write_text("{}\n")
    in_data_dir = paths.data_dir() / "exports" / "otel.jsonl"
    in_data_dir.parent.mkdir(parents=True)
    in_data_dir.write_text("{}\n")
    _link(workspace / "tr" / "x.jsonl", outside / "secret.jsonl")
    _link(workspace / "deep" / "sub", outside / "folder")
    _link(workspace / "fine" / "t.jsonl", workspace / "own" / "t.jsonl")
    _link(workspace / "fine" / "data.jsonl", in_data_dir)

    assert "outside" in error_message(server.command(FINETUNE, {"traces": ["tr/x.jsonl"]}))
    refused = server.command(FINETUNE, {"traces": ["tr"]})  # once accepted, and trained on
    assert error_code(refused) == INVALID_PARAMS, refused
    assert "outside the workspace" in error_message(refused)
    assert "error" in server.command(FINETUNE, {"traces": ["deep"]})  # a linked folder: not read
    accepted = server.command(FINETUNE, {"traces": ["fine"]})  # links in the workspace, data dir
    assert error_code(accepted) != INVALID_PARAMS, accepted  # refused later: no local model


def test_a_request_nested_thousands_deep_is_answered(refusing_server: RawServer) -> None:
    server = refusing_server
    nested = "[" * 5000 + "]" * 5000
    body = (
        '{"jsonrpc": "2.0", "id": 77, "method": "workspace/executeCommand", "params": '
        f'{{"command": "{FINETUNE_STATUS}", "arguments": {nested}}}}}'
    )
    json.loads(body.replace(nested, "[]"))  # the rest is well-formed
    server.send_bytes(frame(body.encode()))
    answer = server.wait_for(
        lambda: server.responses.get(77) or server.responses.get(None), what="an answer"
    )
    assert error_code(answer) in (PARSE_ERROR, INVALID_REQUEST), answer
    assert server.command(FINETUNE_STATUS)["result"]["state"] == "idle"


def test_long_errors_and_popups_are_cut_for_the_editor_and_whole_in_the_log(
    server: RawServer, workspace: Path
) -> None:
    missing = [f"traces/missing-{i:05d}.jsonl" for i in range(20_000)]
    answer = server.command(FINETUNE, {"traces": missing})
    assert len(error_message(answer)) <= POPUP_CHARS, len(error_message(answer))
    assert "missing-00000.jsonl" in error_message(answer)

    long_name = "no-such-provider:" + "m" * 5000
    server.notify(
        "workspace/didChangeConfiguration",
        {"settings": {"aiLsp": {"backend": "remote", "remoteModel": long_name}}},
    )
    shown = server.wait_for(lambda: [m for m in server.shown() if "mmmm" in m], what="a popup")
    assert all(len(m) <= POPUP_CHARS for m in shown), [len(m) for m in shown]
    logged = [n["params"]["message"] for n in server.notifications if n["method"] == LOG_MESSAGE]
    assert any(long_name in m for m in logged)  # the server's log goes to the editor's log


def test_a_document_with_lone_surrogates_is_analysed(server: RawServer, workspace: Path) -> None:
    uri = (workspace / "odd.py").as_uri()
    open_document(server, uri, "def f():\n    return '\ud800 \udfff'\n")
    server.wait_for(lambda: published(server, uri), timeout_s=60, what="diagnostics")
    assert "Traceback" not in server.log_text()
