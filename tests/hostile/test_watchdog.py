"""A model host or a training worker stopped with SIGSTOP (issue 24 item 14): the host's requests
fail within the watchdog's limit instead of hanging for ever and the served model answers again
from a new host; the worker is reported paused, with no ETA, and finishes once continued."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from ai_lsp_tune import watchdog
from ai_lsp_tune.server.finetune.progress import format_progress
from ai_lsp_tune.server.finetune.train_step import progress_step
from ai_lsp_tune.serving.runner import HostClient, HostGone
from ai_lsp_tune.serving.served_model import ServedModel
from ai_lsp_tune.training.protocol import PausedEvent, TrainingEvent, WorkerEvent
from ai_lsp_tune.training.runner import TrainingRunner
from tests.helpers.model_host import chat
from tests.helpers.training import fast_request, write_splits


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


@pytest.mark.training
@pytest.mark.slow
async def test_a_stopped_training_worker_is_reported_paused_and_then_finishes(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watchdog, "STOPPED_LIMIT_S", 2.0)
    dataset = write_splits(tmp_path / "splits", 16, 2, 2)
    request = fast_request(
        tiny_model, tmp_path, dataset, num_epochs=1, eval_max_examples=2, eval_max_tokens=16
    )
    seen: list[WorkerEvent] = []
    runner: TrainingRunner

    def on_event(event: WorkerEvent) -> None:
        seen.append(event)
        process = runner._process
        first_step = isinstance(event, TrainingEvent) and not any(
            isinstance(e, TrainingEvent) for e in seen[:-1]
        )
        if first_step and process is not None:
            os.kill(process.pid, signal.SIGSTOP)
        if isinstance(event, PausedEvent) and process is not None:
            os.kill(process.pid, signal.SIGCONT)

    runner = TrainingRunner(request, on_event)
    outcome = await asyncio.wait_for(runner.run(), 300)
    assert outcome.status == "done", outcome.event
    paused = [e for e in seen if isinstance(e, PausedEvent)]
    assert len(paused) == 1 and "stopped" in paused[0].message
    step = progress_step(paused[0])
    assert step is not None and "ETA" not in format_progress(40, step)
