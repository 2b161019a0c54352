"""An example longer than ``--max-seq-length``, cropped to windows of its code for training.

Each window holds whole lines around some of the issues' snippets and is shown in the window
prompt the server uses for long files; its answer holds the issues whose snippets are in that
window. The answer is never cut: a window's token count includes it. Examples are cropped once:
``prepare-dataset`` writes the windows into the splits (``clean``) and training uses them as
written; it gives ``fit_examples`` only an example its model's tokenizer counts over the limit
(a dataset.json's whole ones, a window sized with the token estimate or for a larger limit).
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ai_lsp_tune.dataset.example import Example
from ai_lsp_tune.prompts import chat_messages, parse_user_prompt
from ai_lsp_tune.schema import parse_json_text
from ai_lsp_tune.windows import Lines, Window, crop, window_prompt

CountChat = Callable[[list[dict[str, str]]], int]


def answer_json(result: dict[str, Any]) -> str:
    """A DiagnosticResult as the training target: compact JSON, Unicode kept."""
    return json.dumps(result, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Crop:
    """One window of an example: its prompt, its answer (parsed and as JSON), its tokens."""

    user: str
    result: dict[str, Any]
    assistant: str
    tokens: int


def crop_example(
    system: str,
    user: str,
    result: dict[str, Any],
    count: CountChat,
    max_tokens: int,
    *,
    count_chars: Callable[[int], int] | None = None,
) -> list[Crop] | None:
    """The windows of an over-long example, each fitting ``max_tokens`` with its answer.

    None when it cannot be cropped: one issue's snippet is larger than the budget, or the
    prompt is not an analysis prompt. ``count_chars``: the same count from a system, user and
    assistant message's total characters, where it depends on nothing else (the estimate).
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

    # Where each snippet starts in the whole code (found once): a window shows a snippet when
    # one occurrence lies inside it, the same as ``snippet in window.code``, without searching.
    # Occurrences of one snippet share its length, so the first one starting inside the window
    # is the one that ends soonest.
    starts = [_starts(parts.code, str(issue["issue_snippet"])) for issue in issues]
    lengths = [len(str(issue["issue_snippet"])) for issue in issues]
    answers: dict[tuple[int, ...], tuple[dict[str, Any], str]] = {}

    def held(low: int, high: int) -> tuple[dict[str, Any], str]:
        """The answer for the code in ``low:high`` (the issues whose snippets it shows), as JSON."""
        key = []
        for k, found in enumerate(starts):
            at = bisect_left(found, low)
            if at < len(found) and found[at] + lengths[k] <= high:
                key.append(k)
        shown = tuple(key)
        if shown not in answers:  # the crop search asks again and again for the same few sets
            answer = {**result, "issues": [issues[k] for k in shown]}
            answers[shown] = (answer, answer_json(answer))
        return answers[shown]

    def tokens(first: int, end: int) -> int:
        low, high = lines.offset(first), lines.offset(end)
        if count_chars is not None:  # the prompt is its header around the code, verbatim
            header = window_prompt(parts, lines, Window(first, end, low, high, ""))
            return count_chars(len(system) + len(header) + (high - low) + len(held(low, high)[1]))
        prompt = window_prompt(parts, lines, lines.window(first, end))
        return count(chat_messages(system, prompt, held(low, high)[1]))

    windows = crop(lines, spans, tokens, max_tokens)
    if windows is None:
        return None
    crops = []
    for window in windows:
        answer, assistant = held(window.start_offset, window.end_offset)
        prompt = window_prompt(parts, lines, window)
        crops.append(
            Crop(prompt, answer, assistant, count(chat_messages(system, prompt, assistant)))
        )
    return crops


def fit_examples(
    examples: Sequence[Example], count: CountChat, max_tokens: int
) -> tuple[list[Example], int]:
    """``examples`` with each one longer than ``max_tokens`` replaced by the windows
    ``crop_example`` makes of it, as ``prepare-dataset`` writes them into the splits; with how
    many were cropped. One that cannot be cropped is kept whole: training counts it as too
    long."""
    out: list[Example] = []
    cropped = 0
    for example in examples:
        if count(example.messages()) <= max_tokens:
            out.append(example)
            continue
        try:
            result = parse_json_text(example.assistant)
        except ValueError:
            result = None
        crops = None
        if isinstance(result, dict):
            crops = crop_example(example.system, example.user, result, count, max_tokens)
        if not crops:
            out.append(example)
            continue
        cropped += 1
        out.extend(
            example.model_copy(update={"user": c.user, "assistant": c.assistant}) for c in crops
        )
    return out, cropped


def _starts(code: str, snippet: str) -> list[int]:
    """Every offset where ``snippet`` starts in ``code``, overlapping ones included (sorted)."""
    found = []
    at = code.find(snippet) if snippet else -1
    while at >= 0:
        found.append(at)
        at = code.find(snippet, at + 1)
    return found
