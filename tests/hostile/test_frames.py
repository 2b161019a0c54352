"""The server's frame reader on hostile bytes, without a server: every good frame between
broken ones is found, fed one byte at a time (the server-level checks are in
``test_server_hostile``)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import threading
import warnings

from tests.helpers.raw_lsp import BROKEN_FRAMES, frame


def test_the_frame_reader_finds_every_good_frame_between_broken_ones_byte_by_byte() -> None:
    from ai_lsp_tune.server.stdio import FrameReader

    good = [json.dumps({"jsonrpc": "2.0", "id": n, "method": "m"}).encode() for n in range(3)]
    bad = b'{"jsonrpc": "2.0", "id": 99, "method": "bad"}'
    stream = b"garbage\r\n" + frame(good[0])
    for broken in ("no Content-Length", "Content-Length: -5", "20 bytes short", "a terabyte"):
        stream += BROKEN_FRAMES[broken](bad)
    stream += frame(good[1]) + b"CONTENT-LENGTH: x\r\n\r\n" + frame(good[2]) + b"Content-Len"
    chunks = iter([stream[i : i + 1] for i in range(len(stream))])

    async def read_chunk() -> bytes:
        return next(chunks, b"")

    async def bodies() -> list[bytes]:
        reader, found = FrameReader(read_chunk, max_message_bytes=1000), []
        while (body := await reader.next_body()) is not None:
            try:
                json.loads(body)
                found.append(body)
            except ValueError:
                reader.reject(body)
        return found

    assert asyncio.run(bodies()) == good


def test_chunks_a_closing_loop_never_took_leave_no_warning_in_the_servers_log() -> None:
    """An editor that closes the pipe as the server exits: the stdin thread hands over its last
    chunks while the loop closes. Before, each was a coroutine the closed loop dropped unrun,
    and the server's log got "coroutine 'Queue.put' was never awaited" (1 exit in 6 here)."""
    from ai_lsp_tune.server.stdio import stdin_chunks

    loop = asyncio.new_event_loop()
    read_end, write_end = os.pipe()
    os.write(write_end, frame({"jsonrpc": "2.0", "method": "exit"}))
    os.close(write_end)

    def pumps() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "lsp-stdin" and t not in before]

    before = set(threading.enumerate())
    with os.fdopen(read_end, "rb") as stdin, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stdin_chunks(stdin, loop)  # the loop never runs: the server has stopped reading
        for pump in pumps():
            pump.join(timeout=10)  # it read the frame and the end of input
        loop.close()
        gc.collect()
    assert not pumps(), "the stdin thread waits on a closed loop"
    assert [str(w.message) for w in caught] == []
