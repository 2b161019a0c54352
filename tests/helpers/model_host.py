"""The model host as the tests drive it: a chat for a snippet, what a host of its own answers."""

from __future__ import annotations

from pathlib import Path

from ai_lsp_tune.prompts import LOCAL_SYSTEM_PROMPT, user_prompt
from ai_lsp_tune.serving.protocol import ChatMessage
from ai_lsp_tune.serving.runner import HostClient


def chat(code: str) -> list[ChatMessage]:
    """An analysis as the server asks a local model (the system prompt the host warms)."""
    return [
        ChatMessage(role="system", content=LOCAL_SYSTEM_PROMPT),
        ChatMessage(role="user", content=user_prompt("python", code, "a.py")),
    ]


async def host_answers(model: Path, codes: list[str]) -> list[str]:
    """What a host of its own answers for ``model`` (unconstrained, greedy)."""
    host = await HostClient.start(str(model))
    try:
        return [
            (await host.generate(chat(code), max_tokens=12, constrained=False)).text
            for code in codes
        ]
    finally:
        await host.close()
