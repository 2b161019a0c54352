"""What our processes send each other: versioned pydantic messages, one JSON object per line.

The model host (``serving/protocol.py``), the training worker (``training/protocol.py``) and
dataset preparation (``dataset/protocol.py``) each define their messages on this base, with their
own protocol version in ``v``. Every channel end writes with one ``LineWriter`` and reads with
one ``LineReader``, which checks ``v`` before anything else, so a peer from another version of
the package is named as such (``ProtocolMismatch``) instead of failing on a field. The requests
the workers get on their command line are versioned too, and parsed by a ``LineReader``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger(__name__)
M = TypeVar("M")


class WireMessage(BaseModel):
    """Base of every message between processes; fields a newer peer adds are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: int


class ProtocolMismatch(ValueError):
    """A peer (or a request) speaks another version of a channel's protocol."""

    def __init__(self, sender: str, theirs: object, ours: int) -> None:
        super().__init__(
            f"{sender} speaks protocol v{theirs}, this side v{ours}: they come from different "
            "versions of ai-lsp-tune (restart it after an upgrade, so both run the same one)"
        )
        self.theirs = theirs
        self.ours = ours


def encode_line(message: BaseModel) -> bytes:
    """The wire form of one message: compact JSON and a newline."""
    return message.model_dump_json().encode() + b"\n"


class LineWriter:
    """The one writer of a channel end: whole lines, one message at a time (threads may share it).

    ``write`` takes the bytes of one line: ``LineWriter.to_fd(fd)`` for a pipe of our own, or an
    asyncio ``StreamWriter.write`` (which buffers and never blocks the event loop).
    """

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write
        self._lock = threading.Lock()

    @classmethod
    def to_fd(cls, fd: int) -> LineWriter:
        def write_all(data: bytes) -> None:
            view = memoryview(data)
            while view:  # a pipe may take a long line in parts
                view = view[os.write(fd, view) :]

        return cls(write_all)

    def send(self, message: BaseModel) -> None:
        """Write ``message`` as one line; OSError (BrokenPipeError: the reader is gone) passes."""
        line = encode_line(message)
        with self._lock:
            self._write(line)


class LineReader(Generic[M]):
    """The one reader of a channel end: one message per line, its version checked first.

    ``parse`` raises ProtocolMismatch when ``v`` is not ``version`` and ValueError for anything
    else it cannot read; ``read``/``aread`` log and skip the latter, and stop at the former.
    """

    def __init__(self, sender: str, version: int, messages: TypeAdapter[M] | type[M]) -> None:
        self.sender = sender  # who writes these lines, as an error names it
        self.version = version
        self._adapter: TypeAdapter[M] = (
            messages if isinstance(messages, TypeAdapter) else TypeAdapter(messages)
        )

    def parse(self, line: str | bytes) -> M:
        """One message from one line (or from one command-line argument)."""
        data: Any = json.loads(line)
        if not isinstance(data, dict) or "v" not in data:
            raise ValueError("not a message: a JSON object with a protocol version 'v'")
        if data["v"] != self.version:
            raise ProtocolMismatch(self.sender, data["v"], self.version)
        return self._adapter.validate_python(data)

    def read(
        self, lines: Iterable[bytes], *, other: Callable[[bytes], None] | None = None
    ) -> Iterator[M]:
        """The messages of a blocking stream, until it ends.

        ``other`` takes the lines that are not JSON objects (a launcher's own notes) instead
        of treating them as malformed.
        """
        for line in lines:
            message = self._message(line, other)
            if message is not None:
                yield message

    async def aread(
        self, stream: asyncio.StreamReader, *, other: Callable[[bytes], None] | None = None
    ) -> AsyncIterator[M]:
        """``read`` for an asyncio stream."""
        while line := await stream.readline():
            message = self._message(line, other)
            if message is not None:
                yield message

    def _message(self, line: bytes, other: Callable[[bytes], None] | None) -> M | None:
        if other is not None and not line.lstrip().startswith(b"{"):
            other(line)
            return None
        try:
            return self.parse(line)
        except ProtocolMismatch:
            raise
        except ValidationError as exc:
            error = exc.errors()[0]
            reason = f"{'.'.join(map(str, error['loc']))}: {error['msg']}"
        except ValueError as exc:
            reason = str(exc)
        log.warning("ignoring a malformed line from %s (%.200s): %.200r", self.sender, reason, line)
        return None
