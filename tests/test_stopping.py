"""Stopping a worker: SIGTERM lets it end by itself; one that ignores SIGTERM is killed after
its grace period (a worker that hangs never keeps a cancelled run alive)."""

from __future__ import annotations

import asyncio
import signal
import sys

from ai_lsp_tune.stopping import terminate_then_kill

# A worker that says "ready" once its SIGTERM handler is in place, then waits.
WORKER = """
import signal, sys, time
signal.signal(signal.SIGTERM, {handler})
print("ready", flush=True)
time.sleep(60)
"""
SAVES_AND_EXITS = "lambda *_: sys.exit(3)"  # as the training worker ends after its checkpoint


async def _started(handler: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER.format(handler=handler),
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert await process.stdout.readline() == b"ready\n"
    return process


async def test_a_worker_that_stops_on_sigterm_ends_by_itself() -> None:
    process = await _started(SAVES_AND_EXITS)
    terminate_then_kill(process, grace_s=30.0)
    assert await asyncio.wait_for(process.wait(), 20) == 3  # its own exit, not SIGKILL


async def test_a_worker_that_ignores_sigterm_is_killed_after_its_grace() -> None:
    process = await _started("signal.SIG_IGN")
    terminate_then_kill(process, grace_s=0.5)
    assert await asyncio.wait_for(process.wait(), 20) == -signal.SIGKILL
