"""The workers' supervisor: SIGTERM lets a worker end by itself; one that ignores SIGTERM is
killed after its grace period (a worker that hangs never keeps a cancelled run alive); a worker
that speaks another protocol version is stopped and named as such."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

from ai_lsp_tune.dataset.protocol import PREPARE_MESSAGES
from ai_lsp_tune.supervisor import Child
from ai_lsp_tune.wire import ProtocolMismatch

# A worker that says "ready" once its SIGTERM handler is in place, then waits.
WORKER = """
import signal, sys, time
signal.signal(signal.SIGTERM, {handler})
print("ready", flush=True)
time.sleep(60)
"""
# A worker of a later version of the package: its first message says v99.
TALKS_V99 = 'import time; print(\'{"v": 99, "type": "done"}\', flush=True); time.sleep(60)'
SAVES_AND_EXITS = "lambda *_: sys.exit(3)"  # as the training worker ends after its checkpoint


async def _started(handler: str, grace_s: float) -> asyncio.subprocess.Process:
    child = await Child.start(
        [sys.executable, "-c", WORKER.format(handler=handler)],
        PREPARE_MESSAGES,
        grace_s=grace_s,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.process.stdout is not None
    assert await child.process.stdout.readline() == b"ready\n"
    child.stop()
    return child.process


async def test_a_worker_that_stops_on_sigterm_ends_by_itself() -> None:
    process = await _started(SAVES_AND_EXITS, grace_s=30.0)
    assert await asyncio.wait_for(process.wait(), 20) == 3  # its own exit, not SIGKILL


async def test_a_worker_that_ignores_sigterm_is_killed_after_its_grace() -> None:
    process = await _started("signal.SIG_IGN", grace_s=0.5)
    assert await asyncio.wait_for(process.wait(), 20) == -signal.SIGKILL


async def test_a_worker_of_another_protocol_version_is_named_and_stopped() -> None:
    child = await Child.start(
        [sys.executable, "-c", TALKS_V99],
        PREPARE_MESSAGES,
        grace_s=0.5,
        stdout=asyncio.subprocess.PIPE,
    )
    with pytest.raises(ProtocolMismatch, match="dataset preparation speaks protocol v99"):
        async for _ in child.messages():
            pass
    assert await asyncio.wait_for(child.process.wait(), 20) == -signal.SIGTERM
