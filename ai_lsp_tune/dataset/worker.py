"""Dataset preparation for the language server, in its own process.

Reading and cleaning traces is pure-Python work that can take seconds to minutes on a large
export; in a thread of the server it would hold the GIL and make every request wait. So the
server runs ``python -m ai_lsp_tune.dataset.worker`` and reads typed messages from its
stdout (one JSON object per line, versioned); the child sends its own prints to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ai_lsp_tune.wire import LineReader, LineWriter, ProtocolMismatch, WireMessage

PROTOCOL_VERSION = 1
CANCEL_GRACE_S = 3.0  # to remove its temp files and end: less than the server's STOP_TIMEOUT_S
logger = logging.getLogger(__name__)


class PrepareRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    v: int = PROTOCOL_VERSION
    traces: list[Path]
    output_dir: Path
    max_seq_length: int
    tokenizer: str | None = None
    include_local_answers: bool = False


class _Message(WireMessage):
    v: int = PROTOCOL_VERSION


class PrepareProgress(_Message):
    type: Literal["progress"] = "progress"
    done: int
    total: int


class PrepareDone(_Message):
    type: Literal["done"] = "done"
    examples: int
    splits: dict[str, int]
    cropped: int = 0  # over-long examples cropped to windows of their code
    local_note: str = ""  # the local model's own answers left out, and the setting to keep them


class PrepareFailed(_Message):
    type: Literal["failed"] = "failed"
    message: str


PrepareMessage = Annotated[
    PrepareProgress | PrepareDone | PrepareFailed, Field(discriminator="type")
]
# The server reads the child's messages with one, the child its command line with the other.
PREPARE_MESSAGES: LineReader[PrepareMessage] = LineReader(
    "dataset preparation", PROTOCOL_VERSION, TypeAdapter(PrepareMessage)
)
PREPARE_REQUESTS: LineReader[PrepareRequest] = LineReader(
    "the dataset preparation request", PROTOCOL_VERSION, PrepareRequest
)


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
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self) -> PrepareDone:
        """Prepare the dataset; raise PreparationFailed with the child's reason."""
        self._loop = asyncio.get_running_loop()
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
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            if self._loop is not None:  # set before the process is
                self._loop.call_later(CANCEL_GRACE_S, self._kill, process)

    @staticmethod
    def _kill(process: asyncio.subprocess.Process) -> None:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()


def _child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Prepare a dataset for the language server.")
    parser.add_argument("request", help="PrepareRequest as JSON")
    args = parser.parse_args(argv)
    channel = LineWriter.to_fd(os.dup(1))
    os.dup2(2, 1)  # anything printed goes to the log, never into the message channel
    # Analyses come first: preparation runs below the model host (nice 10), which it would
    # otherwise share a core with for its few seconds of pure-Python work.
    os.nice(int(os.environ.get("AI_LSP_PREPARE_NICE", "19")))
    send = channel.send

    from ai_lsp_tune.dataset.prepare import NoUsableTraces, prepare_dataset
    from ai_lsp_tune.dataset.report import (
        KEEP_LOCAL_ANSWERS_EDITOR,
        local_answers_note,
        nothing_usable,
    )
    from ai_lsp_tune.files import sigterm_cleans_up

    try:
        request = PREPARE_REQUESTS.parse(args.request)
    except ProtocolMismatch as exc:  # a server from another version of the package
        send(PrepareFailed(message=str(exc)))
        return 1
    sent = [-1]

    def on_progress(done: int, total: int) -> None:
        percent = done * 100 // total if total else 100
        if percent > sent[0]:  # at most a hundred messages, however long the traces
            sent[0] = percent
            send(PrepareProgress(done=done, total=total))

    try:
        with sigterm_cleans_up():  # cancel() sends SIGTERM: temp files go with the process
            report = prepare_dataset(
                request.traces,
                output_file=None,
                output_dir=request.output_dir,
                max_seq_length=request.max_seq_length,
                tokenizer=request.tokenizer,
                on_progress=on_progress,
                include_local_answers=request.include_local_answers,
            )
    except NoUsableTraces as exc:  # said with the editor's setting, not the CLI's flag
        send(PrepareFailed(message=nothing_usable(exc.report, KEEP_LOCAL_ANSWERS_EDITOR)))
        return 1
    except Exception as exc:  # each of prepare_dataset's errors is one clear sentence
        send(PrepareFailed(message=str(exc) or type(exc).__name__))
        return 1
    send(
        PrepareDone(
            examples=report.examples,
            splits=dict(report.splits),
            cropped=report.cropped,
            local_note=local_answers_note(report, KEEP_LOCAL_ANSWERS_EDITOR),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
