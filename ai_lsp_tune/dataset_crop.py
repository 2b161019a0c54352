"""An example longer than ``--max-seq-length``, cropped to windows of its code for training.

Each window holds whole lines around some of the issues' snippets and is shown in the window
prompt the server uses for long files; its answer holds the issues whose snippets are in that
window. The answer is never cut: a window's token count includes it. Used by
``prepare-dataset`` (``dataset_chunks``) and by ``train`` for a dataset it is given.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ai_lsp_tune.prompts import parse_user_prompt
from ai_lsp_tune.windows import Lines, crop, window_prompt

CountChat = Callable[[list[dict[str, str]]], int]


def answer_json(result: dict[str, Any]) -> str:
    """A DiagnosticResult as the training target: compact JSON, Unicode kept."""
    return json.dumps(result, ensure_ascii=False, separators=(",", ":"))


def chat(system: str, user: str, assistant: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": user},
        {"role": "assistant", "content": assistant},
    ]


@dataclass(frozen=True)
class Crop:
    """One window of an example: its prompt, its answer (parsed and as JSON), its tokens."""

    user: str
    result: dict[str, Any]
    assistant: str
    tokens: int


def crop_example(
    system: str, user: str, result: dict[str, Any], count: CountChat, max_tokens: int
) -> list[Crop] | None:
    """The windows of an over-long example, each fitting ``max_tokens`` with its answer.

    None when it cannot be cropped: one issue's snippet is larger than the budget, or the
    prompt is not an analysis prompt.
    """
    parts = parse_user_prompt(user)
    if parts is None:
        return None
    lines = Lines(parts.code)
    issues: list[Any] = list(result.get("issues") or [])
    spans = []
    for issue in issues:
        span = lines.snippet_span(str(issue.get("issue_snippet") or ""))
        if span is None:
            return None  # ungrounded issues were removed before; a prompt we cannot read
        spans.append(span)

    def held(code: str) -> dict[str, Any]:
        return {**result, "issues": [i for i in issues if i["issue_snippet"] in code]}

    def tokens(first: int, end: int) -> int:
        window = lines.window(first, end)
        prompt = window_prompt(parts, lines, window)
        return count(chat(system, prompt, answer_json(held(window.code))))

    windows = crop(lines, spans, tokens, max_tokens)
    if windows is None:
        return None
    crops = []
    for window in windows:
        answer = held(window.code)
        prompt = window_prompt(parts, lines, window)
        assistant = answer_json(answer)
        crops.append(Crop(prompt, answer, assistant, count(chat(system, prompt, assistant))))
    return crops
