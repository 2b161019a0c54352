"""Counting an example's tokens: a quick estimate, or exactly with the model's own tokenizer."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ai_lsp_tune.prompts import render_chat

CHARS_PER_TOKEN = 3.0  # code tokenizes denser than prose; err towards reporting "too long"
_PER_MESSAGE_OVERHEAD = 4  # role markers of a chat template


class TokenizerUnavailable(RuntimeError):
    """The tokenizer named by the user could not be loaded (offline, typo, not a model)."""


@dataclass(frozen=True)
class TokenCounter:
    """Counts the tokens of a chat (system, user, assistant) as training will see it."""

    name: str
    count_chat: Callable[[list[dict[str, str]]], int]
    # For a count that depends only on a chat's total characters (the estimate), that count:
    # lets a search over many candidate chats (cropping) skip building them.
    count_chars: Callable[[int], int] | None = None

    def count(self, messages: list[dict[str, str]]) -> int:
        return self.count_chat(messages)

    @classmethod
    def load(cls, tokenizer: str) -> TokenCounter:
        """The tokenizer of a local model folder or a Hugging Face model id (via mlx-lm)."""
        try:
            from mlx_lm.utils import load_tokenizer

            wrapper = load_tokenizer(tokenizer)
        except Exception as exc:  # hub errors, missing files, bad configs: one clear message
            raise TokenizerUnavailable(
                f"could not load tokenizer {tokenizer!r} ({type(exc).__name__}: {exc}); "
                "pass the path of a local model folder, or connect to the network once so it "
                "is cached"
            ) from exc

        def count_chat(messages: list[dict[str, str]]) -> int:  # as training renders them
            return len(render_chat(wrapper, messages, add_generation_prompt=False))

        return cls(name=tokenizer, count_chat=count_chat)


def estimate_counter() -> TokenCounter:
    """About one token per three characters: no tokenizer needed, slightly pessimistic."""

    def count_chars(chars: int, messages: int = 3) -> int:
        return math.ceil(chars / CHARS_PER_TOKEN) + _PER_MESSAGE_OVERHEAD * messages

    def count_chat(messages: list[dict[str, str]]) -> int:
        return count_chars(sum(len(m["content"]) for m in messages), len(messages))

    return TokenCounter(name="estimate", count_chat=count_chat, count_chars=count_chars)
