"""An expected refusal (a command answered with an error on purpose) is one line in the log,
not an ERROR with a traceback (issue 24 item 15)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from pygls.exceptions import JsonRpcInternalError

from ai_lsp_tune.server.finetune.handlers import CommandRefused
from ai_lsp_tune.server.logs import setup_logging

RPC = logging.getLogger("pygls.protocol.json_rpc")  # where pygls logs a failed request


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    setup_logging(tmp_path / "server.log")
    try:
        yield tmp_path / "server.log"
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_a_refused_switch_is_one_info_line(log_file: Path) -> None:
    try:
        raise CommandRefused("/m has no weights (*.safetensors); the old model keeps serving")
    except CommandRefused:
        RPC.exception("Failed to handle request %s %s %s", 7, "workspace/executeCommand", {})
    text = log_file.read_text()
    assert "Traceback" not in text and "ERROR" not in text
    assert "INFO" in text and "has no weights" in text and len(text.splitlines()) == 1


def test_an_unexpected_failure_keeps_its_traceback(log_file: Path) -> None:
    try:
        raise JsonRpcInternalError("KeyError: 'x'")
    except JsonRpcInternalError:
        RPC.exception("Failed to handle request %s", 8)
    text = log_file.read_text()
    assert "Traceback" in text and "ERROR" in text


def test_a_cancel_that_arrives_after_the_answer_is_not_a_warning(log_file: Path) -> None:
    from pygls.lsp.server import LanguageServer

    # pygls's own handling of a $/cancelRequest for a request it has already answered
    LanguageServer("test", "v0").protocol._handle_cancel_notification(42)
    assert "unknown message id" not in log_file.read_text()
    RPC.warning("Received response to unknown message id %s", 43)  # other warnings stay
    assert "WARNING" in log_file.read_text()
