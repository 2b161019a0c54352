"""A model host stopped with SIGSTOP (issue 24 item 14): its requests fail within the watchdog's
limit instead of hanging for ever, and the served model answers again from a new host."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from ai_lsp_tune import watchdog
from ai_lsp_tune.serving.client import HostClient, HostGone
from ai_lsp_tune.serving.served_model import ServedModel
from tests.helpers.model_host import chat


@pytest.mark.model
async def test_a_stopped_host_is_noticed_and_its_request_fails(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watchdog, "STOPPED_LIMIT_S", 2.0)
    host = await HostClient.start(str(tiny_model))
    try:
        os.kill(host.process.pid, signal.SIGSTOP)
        with pytest.raises(HostGone, match="was stopped for"):
            await asyncio.wait_for(host.generate(chat("x = 1\n"), max_tokens=5), 60)
    finally:
        await host.close()


@pytest.mark.model
async def test_the_served_model_answers_again_after_its_host_was_stopped(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watchdog, "STOPPED_LIMIT_S", 2.0)
    served = await ServedModel.start(str(tiny_model))
    try:
        os.kill(served._host.process.pid, signal.SIGSTOP)
        answer = await asyncio.wait_for(served.generate(chat("x = 1\n"), max_tokens=5), 120)
        assert answer.output_tokens >= 1
    finally:
        await served.close()


def test_a_running_process_is_not_stopped() -> None:
    assert not watchdog.is_stopped(os.getpid())
