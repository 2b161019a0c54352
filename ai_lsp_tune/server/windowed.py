"""Which prompts analyse a document: the plain one, or windows when the document is too long.

The prompt may use what is left of the model's context (or of ``maxInputTokens``) after the
answer's ``maxTokens``. Tokens are estimated (``tokens.estimate_counter``, pessimistic): the
server never loads a tokenizer of its own.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ai_lsp_tune.prompts import PromptParts, user_prompt
from ai_lsp_tune.server.settings import Settings
from ai_lsp_tune.serving.backend import Backend, LocalBackend
from ai_lsp_tune.tokens import estimate_counter
from ai_lsp_tune.windows import Lines, Window, cover, window_prompt

log = logging.getLogger(__name__)

MIN_CODE_TOKENS = 128  # below this a window shows too little code to be worth asking about
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx")


@dataclass(frozen=True)
class Prompt:
    """One request of an analysis: its user message, and the document lines it shows."""

    user: str
    window: Window | None = None  # None: the whole document, in the plain prompt


def prompts_for(
    settings: Settings, backend: Backend, language: str, name: str, text: str
) -> list[Prompt]:
    """The plain prompt when it fits the budget (or there is none), else one per window."""
    plain = user_prompt(language, text, name)
    budget = prompt_budget(settings, backend)
    count = estimate_counter().count

    def tokens(user: str) -> int:
        return count(
            [
                {"role": "system", "content": backend.system_prompt},
                {"role": "user", "content": user},
            ]
        )

    if budget is None or tokens(plain) <= budget:
        return [Prompt(plain)]
    lines = Lines(text)
    parts = PromptParts(language, text, name)

    def cost(first: int, end: int) -> int:
        return tokens(window_prompt(parts, lines, lines.window(first, end)))

    if budget - cost(0, 0) < MIN_CODE_TOKENS:
        log.warning(
            "%s: %d prompt tokens leave no room for windows of code; sending it whole "
            "(raise aiLsp.maxInputTokens or lower aiLsp.maxTokens)",
            name,
            budget,
        )
        return [Prompt(plain)]
    windows = cover(lines, cost, budget)
    log.info("%s: %d lines in %d windows of %d tokens", name, lines.count, len(windows), budget)
    return [Prompt(window_prompt(parts, lines, w), w) for w in windows]


def prompt_budget(settings: Settings, backend: Backend) -> int | None:
    """Prompt tokens available: the model's context or ``maxInputTokens``, minus ``maxTokens``."""
    limits = [settings.max_input_tokens, _local_context(backend)]
    known = [limit for limit in limits if limit]
    return min(known) - settings.max_tokens if known else None


def _local_context(backend: Backend) -> int | None:
    if not isinstance(backend, LocalBackend):
        return None
    return model_context(backend.model_name)


@functools.lru_cache(maxsize=16)
def model_context(model: str) -> int | None:
    """The context length in a local model's config.json (a folder, or the hub cache)."""
    config = Path(model).expanduser() / "config.json"
    if not config.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, "config.json")
        except Exception:  # not a repo id, no cache: no known context
            return None
        if not isinstance(cached, str):
            return None
        config = Path(cached)
    try:
        values = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for section in (values, values.get("text_config") or {}):
        for key in _CONTEXT_KEYS:
            if isinstance(section.get(key), int) and section[key] > 0:
                return int(section[key])
    return None
