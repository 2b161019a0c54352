"""The parent side: the server's end of one model-host process (``python -m
ai_lsp_tune.serving.worker``): start it, send requests (``protocol``), match the answers.

The host is started, followed and stopped through the workers' one supervisor
(``supervisor.Child``); it is asked to stop with a message, and killed when it does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from ai_lsp_tune import watchdog
from ai_lsp_tune.serving.protocol import (
    HOST_EVENTS,
    Cancelled,
    CancelRequest,
    ChatMessage,
    GenerateFailed,
    GenerateRequest,
    Generation,
    HostEvent,
    LoadFailed,
    Ready,
    ShutdownRequest,
    Switched,
    SwitchRefused,
    SwitchRequest,
)
from ai_lsp_tune.supervisor import Child, python_module
from ai_lsp_tune.wire import LineWriter, ProtocolMismatch

log = logging.getLogger(__name__)

STREAM_LIMIT = 64 * 2**20  # a generation line can be long
MISMATCH_GRACE_S = 5.0  # a host of another protocol version: SIGTERM, then SIGKILL


class ModelLoadError(RuntimeError):
    """The host could not load its model; ``message`` says which and why."""

    def __init__(self, model: str, kind: str, message: str) -> None:
        super().__init__(message)
        self.model = model
        self.kind = kind
        self.message = message


class HostGone(RuntimeError):
    """The host process exited while requests were waiting."""


class HostClient:
    """One running model host; requests are multiplexed over its pipes by id."""

    def __init__(self, model: str, child: Child[HostEvent]) -> None:
        self.model = model
        self.child = child
        self.process = process = child.process
        self.ready: Ready | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Generation | Cancelled]] = {}
        self._switches: dict[int, asyncio.Future[Switched | SwitchRefused]] = {}
        self._ready_future: asyncio.Future[Ready] = asyncio.get_running_loop().create_future()
        self._ready_future.add_done_callback(_consume)
        self._reader = asyncio.create_task(self._read_events(), name=f"host-reader-{process.pid}")
        self._log_reader = asyncio.create_task(relay_log(process), name=f"host-log-{process.pid}")
        self._idle = asyncio.Event()
        self._idle.set()
        assert process.stdin is not None
        self._requests = LineWriter(process.stdin.write)  # buffered: never blocks the loop
        self._mismatch: ProtocolMismatch | None = None
        self._stopped_s: float | None = None  # how long it was stopped before it was killed
        self._watchdog = asyncio.create_task(self._kill_when_stopped(), name="host-watchdog")

    @classmethod
    async def start(
        cls,
        model: str,
        *,
        adapter: str | None = None,
        load_timeout_s: float = 600.0,
        python: str = sys.executable,
    ) -> HostClient:
        """Spawn a host for ``model`` (with ``adapter`` on top) and wait until it is warm.

        Raises ModelLoadError when the model cannot be loaded.
        """
        child = await Child.start(
            python_module(
                "ai_lsp_tune.serving.worker",
                *("--model", model, *(["--adapter", adapter] if adapter else [])),
                python=python,
            ),
            HOST_EVENTS,
            grace_s=MISMATCH_GRACE_S,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,  # its log lines, relayed at their level (relay_log)
            limit=STREAM_LIMIT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        client = cls(adapter or model, child)  # the path reported: the adapter's
        try:
            client.ready = await asyncio.wait_for(
                asyncio.shield(client._ready_future), load_timeout_s
            )
        except BaseException:
            await client.close()
            raise
        log.info(
            "model host %d ready: %s (%.1f s, %d cached prompt tokens)",
            child.pid,
            model,
            client.ready.load_s,
            client.ready.prompt_cache_tokens,
        )
        return client

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def generate(
        self, messages: Sequence[ChatMessage], max_tokens: int, *, constrained: bool = True
    ) -> Generation:
        """Generate an answer; cancelling the caller cancels the generation in the host."""
        if self.process.returncode is not None or self._reader.done():
            raise HostGone(f"the model host for {self.model} is not running")
        request_id = next(self._ids)
        future: asyncio.Future[Generation | Cancelled] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)  # a cancelled caller never reads the outcome
        self._pending[request_id] = future
        self._idle.clear()
        try:
            self._send(
                GenerateRequest(
                    id=request_id,
                    messages=list(messages),
                    max_tokens=max_tokens,
                    constrained=constrained,
                )
            )
            result = await asyncio.shield(future)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                self._send(CancelRequest(id=request_id))
            # The host answers `cancelled` (or the finished generation); the entry stays
            # pending until then, so a drain before stopping this host waits for it.
            raise
        if isinstance(result, Cancelled):
            raise asyncio.CancelledError
        return result

    async def switch(
        self, model: str, *, adapter: str | None = None, timeout_s: float = 600.0
    ) -> Switched:
        """Have this host serve ``model`` (with ``adapter`` on top) in place from the next
        request on.

        Raises ModelLoadError (kind "architecture": start another host for it; any other kind:
        it cannot be loaded) with the old model still served, or HostGone.
        """
        if self.process.returncode is not None or self._reader.done():
            raise HostGone(f"the model host for {self.model} is not running")
        request_id = next(self._ids)
        future: asyncio.Future[Switched | SwitchRefused] = (
            asyncio.get_running_loop().create_future()
        )
        future.add_done_callback(_consume)
        self._switches[request_id] = future
        self._send(SwitchRequest(id=request_id, model=model, adapter=adapter))
        outcome = await asyncio.wait_for(asyncio.shield(future), timeout_s)
        if isinstance(outcome, SwitchRefused):
            raise ModelLoadError(outcome.model, outcome.kind, outcome.message)
        log.info(
            "model host %d now serves %s in place (%.2f s, was %s)",
            self.process.pid,
            outcome.model,
            outcome.load_s,
            self.model,
        )
        self.model = outcome.model
        return outcome

    async def drain(self) -> None:
        """Wait until every request sent to this host has been answered."""
        await self._idle.wait()

    async def close(self, *, timeout_s: float = 5.0) -> None:
        """Ask the host to stop; kill it if it does not within ``timeout_s``."""
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                self._send(ShutdownRequest())
                assert self.process.stdin is not None
                self.process.stdin.close()
            await self.child.ended(timeout_s)
        self._watchdog.cancel()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
            await asyncio.wait_for(self._log_reader, 1.0)  # the host's last words, then done

    async def _kill_when_stopped(self) -> None:
        """A host stopped (SIGSTOP) answers nothing: after a while it is killed, so that its
        requests fail now (and the served model starts it again) instead of never."""
        self._stopped_s = await watchdog.stopped_too_long(self.process.pid)
        log.warning(
            "model host %d for %s has been stopped (SIGSTOP) for %.0f s; killing it",
            self.process.pid,
            self.model,
            self._stopped_s,
        )
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    def _send(
        self, message: GenerateRequest | CancelRequest | ShutdownRequest | SwitchRequest
    ) -> None:
        self._requests.send(message)

    async def _read_events(self) -> None:
        try:
            async for event in self.child.messages():
                self._dispatch(event)
        except ProtocolMismatch as exc:  # the child is stopped: nothing it says can be trusted
            self._mismatch = exc
        finally:
            await self.process.wait()
            self._fail_all()

    def _dispatch(self, event: HostEvent) -> None:
        if isinstance(event, Ready):
            if not self._ready_future.done():
                self._ready_future.set_result(event)
        elif isinstance(event, LoadFailed):
            if not self._ready_future.done():
                self._ready_future.set_exception(
                    ModelLoadError(event.model, event.kind, event.message)
                )
        elif isinstance(event, Switched | SwitchRefused):
            switch = self._switches.pop(event.id, None)
            if switch is not None and not switch.done():
                switch.set_result(event)
        elif isinstance(event, GenerateFailed):
            self._resolve(event.id, RuntimeError(f"the model host failed: {event.message}"))
        else:
            self._resolve(event.id, event)

    def _resolve(self, request_id: int, outcome: Generation | Cancelled | Exception) -> None:
        future = self._pending.pop(request_id, None)
        if future is not None and not future.done():
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        if not self._pending:
            self._idle.set()

    def _fail_all(self) -> None:
        code = self.process.returncode
        mismatch = str(self._mismatch) if self._mismatch is not None else None
        if not self._ready_future.done():
            self._ready_future.set_exception(
                ModelLoadError(
                    self.model,
                    "error",
                    mismatch or f"the model host exited (code {code}) before it was ready",
                )
            )
        gone = mismatch or f"the model host for {self.model} exited (code {code})"
        if self._stopped_s is not None:
            gone = f"the model host for {self.model} was stopped for {self._stopped_s:.0f} s"
        self._watchdog.cancel()
        for request_id in list(self._pending):
            self._resolve(request_id, HostGone(gone))
        for switch in self._switches.values():
            if not switch.done():
                switch.set_exception(HostGone(gone))
        self._switches.clear()
        self._idle.set()


# The host's log format (serving/worker.py): "<date> <time> host[<pid>] <LEVEL> <message>".
_HOST_LOG_LINE = re.compile(r"^\S+ \S+ host\[\d+\] (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
_HOST_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
host_log = logging.getLogger("ai_lsp_tune.serving.worker")


async def relay_log(process: asyncio.subprocess.Process) -> None:
    """The host's stderr, line by line, into our log at each line's own level: an editor shows
    a server's raw stderr as errors. Lines without a level (a traceback, a library's warning)
    keep the level of the record they follow, at least WARNING."""
    assert process.stderr is not None
    level = logging.WARNING  # the level of the last record with one
    while True:
        try:
            raw = await process.stderr.readline()
        except ValueError:  # a line over the stream limit: read what is there
            raw = await process.stderr.read(STREAM_LIMIT)
        if not raw:
            return
        line = raw.decode("utf-8", "replace").rstrip()
        if not line:
            continue
        found = _HOST_LOG_LINE.match(line)
        if found:
            level = _HOST_LEVELS[found.group(1)]
            host_log.log(level, "host[%d] %s", process.pid, line[found.end() :])
        else:
            host_log.log(max(level, logging.WARNING), "host[%d] %s", process.pid, line)


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
