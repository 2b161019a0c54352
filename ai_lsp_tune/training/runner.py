"""The parent side: spawn the training worker, read its events, cancel it, never hang.

Used by the CLI (``run_training``, synchronous) and by the language server (``TrainingRunner``,
asyncio), through the workers' one supervisor (``supervisor.Child``). Imports no MLX: the parent
stays light and its event loop never waits on training.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from ai_lsp_tune import blas, watchdog
from ai_lsp_tune.supervisor import Child, python_module
from ai_lsp_tune.training.distributed import (
    Launch,
    launch_command,
    launch_refusal,
    rank_failure,
    unreachable_host,
)
from ai_lsp_tune.training.protocol import (
    WORKER_EVENTS,
    CancelledEvent,
    ErrorEvent,
    FinalEvent,
    PausedEvent,
    TrainingEvent,
    TrainRequest,
    WorkerEvent,
)
from ai_lsp_tune.wire import ProtocolMismatch

log = logging.getLogger(__name__)

# After SIGTERM the worker stops at its next step and saves a checkpoint; it is killed (and the
# checkpoint lost) only if it takes longer than this, or than three of its slowest steps so far:
# a big model's step, or a worker at low priority on a busy machine, may take many seconds.
CANCEL_GRACE_S = 5.0
MAX_CANCEL_GRACE_S = 120.0
LOG_TAIL_LINES = 40


@dataclass
class RunOutcome:
    """How a run ended: its final event, the worker's exit code and the end of its log."""

    status: Literal["done", "error", "cancelled"]
    event: FinalEvent
    returncode: int | None
    log_tail: list[str] = field(default_factory=list)


class TrainingRunner:
    """Runs one TrainRequest in a worker process; ``on_event`` gets every event in order."""

    def __init__(
        self,
        request: TrainRequest,
        on_event: Callable[[WorkerEvent], None] | None = None,
        *,
        on_log: Callable[[str], None] | None = None,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
        launch: Launch | None = None,
    ) -> None:
        self.request = request.resolved()
        self.launch = launch
        self.on_event = on_event
        self.on_log = on_log
        self.python = python
        self.env = env
        self._child: Child[WorkerEvent] | None = None
        self._cancel_requested = False
        self._log_tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self._launch_notes: list[str] = []
        self._last_step_at: float | None = None
        self._slowest_step_s = 0.0

    @property
    def _process(self) -> asyncio.subprocess.Process | None:
        """The worker's process (the launcher's, across machines), once started."""
        return self._child.process if self._child is not None else None

    def cancel(self) -> None:
        """Ask the worker to stop (it saves a checkpoint); kill it if it does not in time."""
        self._cancel_requested = True
        if self._child is not None:  # launched: every local rank (mlx.launch ignores SIGTERM)
            self._child.stop(self.cancel_grace_s())

    def cancel_grace_s(self) -> float:
        """How long a cancelled worker may take to stop before it is killed."""
        return min(max(CANCEL_GRACE_S, 3 * self._slowest_step_s), MAX_CANCEL_GRACE_S)

    async def run(self) -> RunOutcome:
        """Run the worker to the end and return how it ended (never raises for worker errors)."""
        if self.launch is not None:
            return await self._run_launched(self.launch)
        read_fd, write_fd = os.pipe()
        try:
            child = self._child = await Child.start(
                python_module(
                    "ai_lsp_tune.training.worker",
                    *("--events-fd", str(write_fd), "--request", self.request.model_dump_json()),
                    python=self.python,
                ),
                WORKER_EVENTS,
                grace_s=CANCEL_GRACE_S,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(write_fd,),
                start_new_session=True,  # a terminal's Ctrl-C reaches us, and we decide
                env=self.env,
            )
        finally:
            os.close(write_fd)
        if self._cancel_requested:
            self.cancel()
        loop = asyncio.get_running_loop()
        events = asyncio.StreamReader(limit=1 << 24)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(events), os.fdopen(read_fd, "rb", 0)
        )
        watch = asyncio.create_task(self._report_stopped(child.pid))
        try:
            final = await self._pump(events)
        finally:
            watch.cancel()
            transport.close()
        return await self._finish(final)

    async def _report_stopped(self, pid: int) -> None:
        """A worker stopped (SIGSTOP) sends nothing: say so, instead of its last ETA for ever."""
        while True:
            stopped_s = await watchdog.stopped_too_long(pid)
            message = (
                f"The training worker (pid {pid}) has been stopped for {stopped_s:.0f} s; "
                f"training is paused until `kill -CONT {pid}`, or cancel the fine-tune"
            )
            log.warning("%s", message)
            self._deliver(PausedEvent(message=message, pid=pid))
            while watchdog.is_stopped(pid):
                await asyncio.sleep(watchdog.POLL_S)

    async def _run_launched(self, launch: Launch) -> RunOutcome:
        """The worker on every host through ``mlx.launch``; rank 0's events on its stdout."""
        unreachable = await asyncio.to_thread(unreachable_host, launch)
        if unreachable is not None:
            event = ErrorEvent(kind="distributed", message=unreachable)
            self._deliver(event)
            return RunOutcome(status="error", event=event, returncode=None)
        worker = ["-m", "ai_lsp_tune.training.worker", "--events-fd", "1"]
        command = launch_command(
            self.python,
            [*worker, "--request", self.request.model_dump_json()],
            hosts=launch.hosts,
            hostfile=launch.hostfile,
            backend=launch.backend,
        )
        child = self._child = await Child.start(
            command,
            WORKER_EVENTS,
            grace_s=CANCEL_GRACE_S,
            group=True,  # its own process group: cancel reaches every local rank
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
            limit=1 << 24,
        )
        if self._cancel_requested:
            self.cancel()
        assert child.process.stdout is not None
        return await self._finish(await self._pump(child.process.stdout))

    async def _finish(self, final: FinalEvent | None) -> RunOutcome:
        assert self._process is not None
        returncode = await self._process.wait()
        if self.launch is not None:  # held back until every rank has ended: one final event
            if not self._cancel_requested:
                final = self._launch_failure(final, self.launch)
            if final is not None:
                self._deliver(final)
        if final is None:
            final = self._synthesised_final(returncode)
            self._deliver(final)
        status: Literal["done", "error", "cancelled"] = final.phase  # type: ignore[assignment]
        return RunOutcome(status, final, returncode, list(self._log_tail))

    async def _pump(self, events: asyncio.StreamReader) -> FinalEvent | None:
        assert self._child is not None and self._child.process.stderr is not None
        logs = asyncio.create_task(self._read_log(self._child.process.stderr))
        final: FinalEvent | None = None
        try:
            async for event in self._child.messages(events, other=self._launcher_note):
                if isinstance(event, FinalEvent):
                    final = event
                    if self.launch is not None:
                        continue
                self._deliver(event)
        except ProtocolMismatch as exc:  # its events cannot be followed: the run ends here
            final = ErrorEvent(kind="crashed", message=str(exc))
            if self.launch is None:
                self._deliver(final)
            self.cancel()
        finally:
            await logs
        return final

    def _launcher_note(self, line: bytes) -> None:
        """A line of mlx.launch's own between rank 0's events."""
        self._log_line(line.decode(errors="replace").rstrip())

    async def _read_log(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self._log_line(line.decode(errors="replace").rstrip())

    def _log_line(self, text: str) -> None:
        if "Node with rank" in text:  # mlx.launch's note on how each rank ended
            self._launch_notes.append(text)
        self._log_tail.append(text)
        log.debug("worker: %s", text)
        if self.on_log is not None:
            self.on_log(text)

    def _deliver(self, event: WorkerEvent) -> None:
        if isinstance(event, TrainingEvent):
            now = time.monotonic()
            if self._last_step_at is not None:
                self._slowest_step_s = max(self._slowest_step_s, now - self._last_step_at)
            self._last_step_at = now
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # a broken listener must not stop the run
                log.exception("training event listener failed")

    def _launch_failure(self, final: FinalEvent | None, launch: Launch) -> FinalEvent | None:
        """A rank that died (or a host that went away) is the error, not rank 0's stop."""
        if isinstance(final, ErrorEvent) and final.kind != "distributed":
            return final
        if final is not None and final.phase == "done":
            return final
        message = rank_failure(self._launch_notes, launch)
        if message is None and final is None:
            message = launch_refusal(list(self._log_tail), launch)
        if message is None:
            return final
        return ErrorEvent(kind="distributed", message=message)

    def _synthesised_final(self, returncode: int) -> FinalEvent:
        if self._cancel_requested:
            return CancelledEvent(message="The training worker was stopped.")
        if returncode == -signal.SIGKILL:
            message = (
                "The training worker was killed (SIGKILL), most likely by the system for running "
                "out of memory; reduce --batch-size (try 1) or --max-seq-length, or use a "
                "smaller model."
            )
            return ErrorEvent(kind="oom", message=message)
        last = next((line for line in reversed(self._log_tail) if line.strip()), "no output")
        return ErrorEvent(
            kind="crashed",
            message=f"The training worker exited with code {returncode} without a result "
            f"(last log line: {last[:200]}).",
        )


def run_training(
    request: TrainRequest,
    on_event: Callable[[WorkerEvent], None] | None = None,
    *,
    on_log: Callable[[str], None] | None = None,
    launch: Launch | None = None,
) -> RunOutcome:
    """The CLI's way in: run to the end; Ctrl-C (SIGINT) or SIGTERM cancels with a checkpoint.
    The user waits on it: a single worker's BLAS takes every core no other process is busy on
    (``blas.foreground_threads``), unless ``OPENBLAS_NUM_THREADS`` says otherwise."""
    env = None
    if launch is None and not os.environ.get("OPENBLAS_NUM_THREADS"):
        env = {**os.environ, blas.THREADS_SETTING: str(blas.foreground_threads())}

    async def main() -> RunOutcome:
        runner = TrainingRunner(request, on_event, on_log=on_log, launch=launch, env=env)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, runner.cancel)
        try:
            return await runner.run()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    return asyncio.run(main())
