"""LSP framing over stdin: ``Content-Length`` frames; a broken frame costs that message only.

pygls's reader (``pygls.io_.run_async``) trusts every header: a frame without a valid
``Content-Length`` glues the next header to its body and nothing is answered again, and a huge
length is allocated at once. Here a bad header, a body that is not the JSON its length promised,
or a length over ``MAX_MESSAGE_BYTES`` makes the reader skip to the next ``Content-Length:``
header; end of input ends the loop, so the server can close its model host and exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from collections.abc import Awaitable, Callable
from typing import BinaryIO

log = logging.getLogger(__name__)

# A didOpen carries the whole document, JSON-escaped; documents over ``maxDocumentBytes`` must
# still arrive (to be refused with a message), so this is far above that setting's default.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_HEADER_BYTES = 8 * 1024
CHUNK_BYTES = 64 * 1024
READ_AHEAD = 16  # chunks read from stdin before the server has taken them

_MARKER = b"content-length:"
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_LENGTH = re.compile(rb"[0-9]{1,20}")


class FrameReader:
    """Split a byte stream into message bodies; resynchronise on the next header after a bad one."""

    def __init__(
        self, read_chunk: Callable[[], Awaitable[bytes]], max_message_bytes: int = MAX_MESSAGE_BYTES
    ) -> None:
        self._read_chunk = read_chunk
        self._max = max_message_bytes
        self._buffer = bytearray()

    async def next_body(self) -> bytes | None:
        """The next message body, or None once the input has ended."""
        while True:
            if not await self._skip_to_header():
                return None
            end = await self._header_end()
            if end is None:
                return None
            header_end, body_start = end
            length = self._content_length(bytes(self._buffer[:header_end]))
            if length is None:
                del self._buffer[: len(_MARKER)]  # look for the next header after this one
                continue
            del self._buffer[:body_start]
            while len(self._buffer) < length:
                if not await self._fill():
                    log.warning(
                        "input ended inside a message (%d of %d bytes)", len(self._buffer), length
                    )
                    return None
            body = bytes(self._buffer[:length])
            del self._buffer[:length]
            return body

    def reject(self, body: bytes) -> None:
        """``body`` was not a message: its length lied, so look for the next header inside it."""
        self._buffer[:0] = body

    async def _fill(self) -> bool:
        chunk = await self._read_chunk()
        if not chunk:
            return False
        self._buffer += chunk
        return True

    async def _skip_to_header(self) -> bool:
        """Drop bytes up to the next ``Content-Length:`` (any case); False at end of input."""
        skipped, keep = 0, len(_MARKER) - 1  # the marker may be split across two chunks
        while (at := self._buffer.lower().find(_MARKER)) < 0:
            if len(self._buffer) > keep:
                skipped += len(self._buffer) - keep
                del self._buffer[:-keep]
            if not await self._fill():
                skipped += len(self._buffer)
                self._buffer.clear()
                break
        else:
            skipped += at
            del self._buffer[:at]
        if skipped:
            log.warning("skipped %d bytes of input that were not an LSP message", skipped)
        return at >= 0

    async def _header_end(self) -> tuple[int, int] | None:
        """Where the header block ends and the body begins; None at end of input."""
        searched = 0
        while True:
            match = _HEADER_END.search(self._buffer, max(0, searched - 3))
            if match is not None and match.start() <= MAX_HEADER_BYTES:
                return match.start(), match.end()
            if match is not None or len(self._buffer) > MAX_HEADER_BYTES:
                return 0, 0  # no blank line where headers must end: not a header after all
            searched = len(self._buffer)
            if not await self._fill():
                return None

    def _content_length(self, headers: bytes) -> int | None:
        """The announced body length, or None (with a log line) when the headers are unusable."""
        if not headers:
            log.warning("a Content-Length header without the blank line that ends the headers")
            return None
        lengths: set[bytes] = set()
        for line in re.split(rb"\r?\n", headers):
            name, colon, value = line.partition(b":")
            if not colon:
                log.warning("an LSP header line without a colon: %r; skipped", line[:80])
                return None
            if name.strip().lower() == b"content-length":
                lengths.add(value.strip())
        if len(lengths) != 1:
            log.warning("a frame with %d different Content-Length headers; skipped", len(lengths))
            return None
        value = lengths.pop()
        if not _LENGTH.fullmatch(value):
            log.warning("a frame with Content-Length %r, not a byte count; skipped", value[:40])
            return None
        length = int(value)
        if length > self._max:
            log.warning(
                "a frame of %d bytes, over the %d-byte limit of one message; skipped",
                length,
                self._max,
            )
            return None
        return length


def stdin_chunks(
    stdin: BinaryIO, loop: asyncio.AbstractEventLoop
) -> Callable[[], Awaitable[bytes]]:
    """Chunks of ``stdin`` read on a daemon thread (it never keeps the process alive); b"" at EOF.

    At most ``READ_AHEAD`` chunks wait unread, so a client that writes faster than the server
    reads is held back.
    """
    chunks: asyncio.Queue[bytes] = asyncio.Queue()
    slots = threading.Semaphore(READ_AHEAD)
    fd = stdin.fileno()

    def pump() -> None:
        while True:
            slots.acquire()
            try:
                chunk = os.read(fd, CHUNK_BYTES)
            except OSError:
                chunk = b""
            try:
                # A plain callback, not a coroutine: one that a closing loop drops unrun is no
                # "coroutine was never awaited" warning in the server's log at exit.
                loop.call_soon_threadsafe(chunks.put_nowait, chunk)
            except RuntimeError:
                return  # the loop is gone: the server is exiting
            if not chunk:
                return

    threading.Thread(target=pump, name="lsp-stdin", daemon=True).start()

    async def read_chunk() -> bytes:
        chunk = await chunks.get()
        slots.release()
        return chunk

    return read_chunk
