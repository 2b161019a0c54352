"""The parent side: the language server's dataset preparation, in its own process.

Reading and cleaning traces is pure-Python work that can take seconds to minutes on a large
export; in a thread of the server it would hold the GIL and make every request wait. So the
server runs ``python -m ai_lsp_tune.dataset.worker`` and reads typed messages (``protocol``)
from its stdout, through the workers' one supervisor (``supervisor.Child``).
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
    PrepareMessage,
    PrepareProgress,
    PrepareRequest,
)
from ai_lsp_tune.supervisor import Child, python_module
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
        self._child: Child[PrepareMessage] | None = None
        self._cancelled = False

    async def run(self) -> PrepareDone:
        """Prepare the dataset; raise PreparationFailed with the child's reason."""
        child = self._child = await Child.start(
            python_module(
                "ai_lsp_tune.dataset.worker", self.request.model_dump_json(), python=self.python
            ),
            PREPARE_MESSAGES,
            grace_s=CANCEL_GRACE_S,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        if self._cancelled:
            child.stop()
        assert child.process.stderr is not None
        stderr = asyncio.create_task(child.process.stderr.read())
        final: PrepareDone | PrepareFailed | None = None
        try:
            async for message in child.messages():
                if isinstance(message, PrepareProgress):
                    self._on_progress(message.done / message.total if message.total else 1.0)
                else:
                    final = message
        except ProtocolMismatch as exc:  # the child is stopped: what it says cannot be trusted
            final = PrepareFailed(message=str(exc))
        code = await child.process.wait()
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
        if self._child is not None:
            self._child.stop()
