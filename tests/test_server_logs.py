"""Server logs reach the editor as window/logMessage at their own level, from any thread."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from ai_lsp_tune.server.logs import ClientLogHandler


@pytest.mark.parametrize(
    ("level", "kind"),
    [(logging.ERROR, 1), (logging.WARNING, 2), (logging.INFO, 3), (logging.DEBUG, 4)],
)
async def test_each_record_keeps_its_level(level: int, kind: int) -> None:
    sent: list[tuple[int, str]] = []
    logger = logging.getLogger(f"test.client.{level}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(
        ClientLogHandler(lambda k, t: sent.append((k, t)), asyncio.get_running_loop())
    )
    logger.log(level, "hello %s", "there")
    assert sent == [(kind, "hello there")]


async def test_a_record_from_another_thread_is_sent_on_the_loop() -> None:
    loop = asyncio.get_running_loop()
    sent: list[tuple[int, str, bool]] = []
    main = threading.get_ident()

    def send(kind: int, text: str) -> None:
        sent.append((kind, text, threading.get_ident() == main))

    logger = logging.getLogger("test.client.thread")
    logger.propagate = False
    logger.addHandler(ClientLogHandler(send, loop))
    await asyncio.to_thread(logger.warning, "from a thread")
    await asyncio.sleep(0)
    assert sent == [(2, "from a thread", True)]
