"""How a parent stops a worker process: SIGTERM first, SIGKILL when it outlives a grace period.

The training worker saves a checkpoint on SIGTERM and dataset preparation removes its temp
files; either is killed only if it takes longer than its parent's grace. The model host is
asked to stop with a message instead, and killed the same way when it does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal


def terminate_then_kill(
    process: asyncio.subprocess.Process, grace_s: float, *, group: bool = False
) -> None:
    """SIGTERM ``process`` (its whole process group when ``group``) and SIGKILL it if it is
    still running ``grace_s`` later; call from the event loop."""
    _send(process, signal.SIGTERM, group=group)
    asyncio.get_running_loop().call_later(grace_s, lambda: kill(process, group=group))


def kill(process: asyncio.subprocess.Process, *, group: bool = False) -> None:
    """SIGKILL ``process`` (or its process group) unless it has already ended."""
    if process.returncode is None:
        _send(process, signal.SIGKILL, group=group)


def _send(process: asyncio.subprocess.Process, signum: int, *, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
