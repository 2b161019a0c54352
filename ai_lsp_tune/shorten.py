"""Text a person reads in a popup stays short: long names and messages are cut in the middle."""

from __future__ import annotations

EDITOR_MESSAGE_CHARS = 300  # a toast or a status line; the whole text goes to the log
NAME_CHARS = 120  # a path or model name inside a message


def shorten(text: str, limit: int = EDITOR_MESSAGE_CHARS) -> str:
    """``text`` if it fits in ``limit`` characters, else its start and end around an ellipsis."""
    if len(text) <= limit:
        return text
    tail = min(limit // 3, 80)
    return f"{text[: limit - tail - 1]}…{text[len(text) - tail :]}"
