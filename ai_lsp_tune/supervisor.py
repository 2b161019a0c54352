"""How a parent runs a worker process: the model host, the training worker, dataset preparation.

One routine for the three: start the child (``python -m`` its package's ``child`` module), follow
its messages (versioned JSON lines, ``wire``), and stop it: SIGTERM first (the training worker
saves a checkpoint, dataset preparation removes its temp files), SIGKILL when it outlives a grace
period. A child that speaks another protocol version is stopped the same way and its
``ProtocolMismatch`` raised to the parent, which says so in its own words. The model host is asked
to stop with a message instead (``ended`` waits for it, and kills it when it does not).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Generic, TypeVar

from ai_lsp_tune.wire import LineReader, ProtocolMismatch

log = logging.getLogger(__name__)
M = TypeVar("M")


def python_module(module: str, *args: str, python: str = sys.executable) -> list[str]:
    """The command line that runs ``module`` as a child: ``python -m module args...``."""
    return [python, "-m", module, *args]


class Child(Generic[M]):
    """A worker process this parent started, the reader of its messages, and its stop."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        messages: LineReader[M],
        *,
        grace_s: float,
        group: bool = False,
    ) -> None:
        self.process = process
        self.reader = messages
        self.grace_s = grace_s  # how long SIGTERM may take before SIGKILL
        self.group = group  # signals go to its whole process group (mlx.launch and its ranks)
        self._terminated = False

    @classmethod
    async def start(
        cls,
        command: Sequence[str],
        messages: LineReader[M],
        *,
        grace_s: float,
        group: bool = False,
        **options: Any,
    ) -> Child[M]:
        """Start ``command`` (``python_module(...)``); ``options`` as asyncio's
        ``create_subprocess_exec`` takes them (pipes, ``env``, ``pass_fds``, ``limit``)."""
        if group:
            options["start_new_session"] = True
        process = await asyncio.create_subprocess_exec(*command, **options)
        return cls(process, messages, grace_s=grace_s, group=group)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def messages(
        self,
        stream: asyncio.StreamReader | None = None,
        *,
        other: Callable[[bytes], None] | None = None,
    ) -> AsyncIterator[M]:
        """The child's messages until its channel (``stream``, else its stdout) ends.

        A line in another protocol version stops the child (``stop``): nothing it says can be
        trusted; the ProtocolMismatch is raised for the parent to report.
        """
        channel = stream if stream is not None else self.process.stdout
        assert channel is not None
        try:
            async for message in self.reader.aread(channel, other=other):
                yield message
        except ProtocolMismatch as exc:
            log.error("process %d: %s", self.pid, exc)
            self.stop()
            raise

    def stop(self, grace_s: float | None = None) -> None:
        """SIGTERM the child, SIGKILL it if it still runs ``grace_s`` later; call from the
        event loop. Once: a second SIGTERM would cut its clean-up short."""
        if self._terminated or self.process.returncode is not None:
            return
        self._terminated = True
        self._send(signal.SIGTERM)
        grace = self.grace_s if grace_s is None else grace_s
        asyncio.get_running_loop().call_later(grace, self.kill)

    def kill(self) -> None:
        """SIGKILL the child (or its process group) unless it has already ended."""
        if self.process.returncode is None:
            self._send(signal.SIGKILL)

    async def ended(self, within_s: float) -> int:
        """Its exit code, once it has ended by itself within ``within_s`` or been killed."""
        try:
            return await asyncio.wait_for(self.process.wait(), within_s)
        except TimeoutError:
            log.warning("process %d did not stop in %.0f s; killing it", self.pid, within_s)
            self.kill()
            return await self.process.wait()

    def _send(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.group:
                os.killpg(self.process.pid, signum)
            else:
                self.process.send_signal(signum)
