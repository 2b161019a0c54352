"""Noticing a child process that is stopped (SIGSTOP, Ctrl-Z in its terminal): it answers
nothing and never exits, so a request waiting on it would wait for ever."""

from __future__ import annotations

import asyncio
from pathlib import Path

STOPPED_LIMIT_S = 15.0  # how long a process may stay stopped before it counts as hung
POLL_S = 1.0


def is_stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped by a signal (state T in /proc; a debugger's stop, t, is not).

    False where there is no /proc (macOS): there a stopped process is not noticed.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()  # procfs: no disk, never blocks
    except OSError:
        return False
    after_name = stat.rfind(b")")  # the command name may hold spaces and parentheses
    return stat[after_name + 2 : after_name + 3] == b"T"


async def stopped_too_long(pid: int, limit_s: float | None = None) -> float:
    """Return once ``pid`` has been stopped for ``limit_s`` in a row; how long that was."""
    limit = STOPPED_LIMIT_S if limit_s is None else limit_s
    loop = asyncio.get_running_loop()
    since: float | None = None
    while True:
        await asyncio.sleep(min(POLL_S, limit / 4))
        if not is_stopped(pid):
            since = None
            continue
        now = loop.time()
        since = now if since is None else since
        if now - since >= limit:
            return now - since
