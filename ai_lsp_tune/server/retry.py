"""How an analysis asks the model: parse the answer, retry once with the validation error,
give up at once on an answer cut at ``maxTokens`` (the same budget would cut the retry too).

The backends only generate (``serving/backend.py``); this policy is the server's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from ai_lsp_tune.schema import DiagnosticResult, InvalidModelOutput, parse_diagnostic_result
from ai_lsp_tune.serving.backend import Backend, Completion
from ai_lsp_tune.serving.protocol import ChatMessage

log = logging.getLogger(__name__)

RETRY_PROMPT = (
    "Your answer was not a valid DiagnosticResult ({reason}). Answer again with only a JSON "
    'object of the form {{"issues": [{{"issue_snippet": "...", "severity": '
    '"error|warning|info|hint", "message": "...", "suggested_fixes": [{{"title": "...", '
    '"target_snippet": "...", "replacement_snippet": "..."}}]}}]}}, and nothing else.'
)


@dataclass
class Attempt:
    """One call to the model within an analysis."""

    completion: Completion
    error: str | None
    cut_at: int | None = None  # the max_tokens an unusable answer was cut at


@dataclass
class AnalysisOutcome:
    """What an analysis produced: a result (or none, and why) and every attempt."""

    result: DiagnosticResult | None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        return self.attempts[-1].error if self.attempts else "no answer"

    @property
    def cut_at(self) -> int | None:
        return self.attempts[-1].cut_at if self.attempts else None

    @property
    def grammar_problem(self) -> str | None:
        return next((a.completion.grammar_problem for a in self.attempts), None)

    @property
    def template_problem(self) -> str | None:
        return next((a.completion.template_problem for a in self.attempts), None)

    @property
    def final_text(self) -> str | None:
        return self.attempts[-1].completion.text if self.attempts else None


async def analyze(
    backend: Backend,
    messages: Sequence[ChatMessage],
    max_tokens: int,
    *,
    retries: int = 1,
    on_attempt: Callable[[], AbstractContextManager[Any]] | None = None,
) -> AnalysisOutcome:
    """Ask for a DiagnosticResult; on invalid output retry with the validation error, then give up.

    ``on_attempt`` (a context-manager factory, e.g. a span per call) wraps each model call.
    """
    chat = list(messages)
    outcome = AnalysisOutcome(result=None)
    for attempt in range(retries + 1):
        if on_attempt is not None:
            with on_attempt() as span:
                completion = await backend.complete(chat, max_tokens)
                _annotate(span, completion)
        else:
            completion = await backend.complete(chat, max_tokens)
        try:
            outcome.result = parse_diagnostic_result(completion.text)
        except InvalidModelOutput as exc:
            if completion.cut and completion.text.lstrip().startswith(("{", "```")):
                # The same budget would cut the retry too: say so instead of asking again.
                reason = f"the answer was cut at maxTokens={max_tokens} ({exc.reason})"
                outcome.attempts.append(Attempt(completion, reason, cut_at=max_tokens))
                log.info("attempt %d: %s", attempt + 1, reason)
                return outcome
            outcome.attempts.append(Attempt(completion, exc.reason))
            log.info("attempt %d: invalid model output: %s", attempt + 1, exc.reason)
            chat += [
                ChatMessage(role="assistant", content=completion.text),
                ChatMessage(role="user", content=RETRY_PROMPT.format(reason=exc.reason)),
            ]
            continue
        outcome.attempts.append(Attempt(completion, None))
        return outcome
    return outcome


def _annotate(span: Any, completion: Completion) -> None:
    from ai_lsp_tune.traces import genai

    if span is None or not hasattr(span, "set_attribute"):
        return
    span.set_attribute(genai.RESPONSE_MODEL, completion.model)
    if completion.input_tokens is not None:
        span.set_attribute(genai.INPUT_TOKENS, completion.input_tokens)
    if completion.output_tokens is not None:
        span.set_attribute(genai.OUTPUT_TOKENS, completion.output_tokens)
