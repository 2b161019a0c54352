"""The parent side: the language server's dataset preparation, in its own process.

Reading and cleaning traces is pure-Python work that can take seconds to minutes on a large
export; in a thread of the server it would hold the GIL and make every request wait. So the
server runs ``python -m ai_lsp_tune.dataset.worker`` and reads typed messages (``protocol``)
from its stdout.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable

from ai_lsp_tune.dataset.protocol import (
    PREPARE_MESSAGES,
    PrepareDone,
    PrepareFailed,
    PrepareProgress,
    PrepareRequest,
)
from ai_lsp_tune.stopping import terminate_then_kill
from ai_lsp_tune.wire import ProtocolMismatch

CANCEL_GRACE_S = 3.0  # to remove its temp files and end: less than the server's STOP_TIMEOUT_S
logger = logging.getLogger(__name__)


class PreparationFailed(RuntimeError):
    """The traces gave no dataset; the message says why, in one sentence."""


class DatasetPreparation:
    """One preparation run in a child process; ``cancel()`` stops it."""

    def __init__(
        self,
        request: PrepareRequest,
        on_progress: Callable[[float], None],
        *,
        python: str = sys.executable,
    ) -> None:
        self.request = request
        self.python = python
        self._on_progress = on_progress
        self._process: asyncio.subprocess.Process | None = None
        self._cancelled = False
        self._terminated = False

    async def run(self) -> PrepareDone:
        """Prepare the dataset; raise PreparationFailed with the child's reason."""
        self._process = await asyncio.create_subprocess_exec(
            self.python,
            "-m",
            "ai_lsp_tune.dataset.worker",
            self.request.model_dump_json(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self._process.stdout is not None and self._process.stderr is not None
        stderr = asyncio.create_task(self._process.stderr.read())
        final: PrepareDone | PrepareFailed | None = None
        try:
            async for message in PREPARE_MESSAGES.aread(self._process.stdout):
                if isinstance(message, PrepareProgress):
                    self._on_progress(message.done / message.total if message.total else 1.0)
                else:
                    final = message
        except ProtocolMismatch as exc:  # what it says cannot be trusted: stop it
            final = PrepareFailed(message=str(exc))
            self.cancel()
        code = await self._process.wait()
        log = (await stderr).decode(errors="replace").strip()
        if log:
            logger.debug("dataset preparation log:\n%s", log)
        if isinstance(final, PrepareDone):
            return final
        if isinstance(final, PrepareFailed):
            raise PreparationFailed(final.message)
        if self._cancelled:
            raise PreparationFailed("dataset preparation was cancelled")
        last = log.splitlines()[-1] if log else "no output"
        raise PreparationFailed(f"dataset preparation exited with code {code} ({last[:200]})")

    def cancel(self) -> None:
        """Stop the child; it writes nothing the next run depends on.

        SIGTERM first, so it removes its temp files; SIGKILL if it is still there after
        CANCEL_GRACE_S (the next run then removes what it left).
        """
        self._cancelled = True
        process = self._process
        if process is not None and process.returncode is None and not self._terminated:
            self._terminated = True  # once: a second SIGTERM would cut its cleanup short
            terminate_then_kill(process, CANCEL_GRACE_S)
