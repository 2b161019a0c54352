"""The one small interface the server analyses through, and its local and remote backends.

``complete(messages, max_tokens) -> Completion`` is all a backend does; ``analyze`` turns a
document into a DiagnosticResult on top of it (parse, one retry carrying the validation error).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ai_lsp_tune.schema import DiagnosticResult, InvalidModelOutput, parse_diagnostic_result
from ai_lsp_tune.serving.protocol import ChatMessage
from ai_lsp_tune.serving.served_model import ServedModel
from ai_lsp_tune.traces.genai import LOCAL_PROVIDER

log = logging.getLogger(__name__)

RETRY_PROMPT = (
    "Your answer was not a valid DiagnosticResult ({reason}). Answer again with only a JSON "
    'object of the form {{"issues": [{{"issue_snippet": "...", "severity": '
    '"error|warning|info|hint", "message": "...", "suggested_fixes": [{{"title": "...", '
    '"target_snippet": "...", "replacement_snippet": "..."}}]}}]}}, and nothing else.'
)


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    cut: bool = False  # stopped at max_tokens rather than ending the answer
    grammar_problem: str | None = None  # why a local answer was not decoded under the grammar
    template_problem: str | None = None  # why a local prompt was not rendered by a template


class Backend(Protocol):
    """Anything that can answer a chat: the served local model, a remote provider."""

    provider: str

    @property
    def model_name(self) -> str: ...

    async def complete(self, messages: Sequence[ChatMessage], max_tokens: int) -> Completion: ...

    async def close(self) -> None: ...


class LocalBackend:
    """The MLX model served by our own model host (hot-swappable)."""

    provider = LOCAL_PROVIDER  # recorded on its analyses: prepare-dataset tells them apart by it

    def __init__(self, served: ServedModel, *, constrained: Callable[[], bool] = lambda: True):
        self.served = served
        self.constrained = constrained  # read per request: the setting may change meanwhile

    @property
    def model_name(self) -> str:
        return self.served.current_path

    async def complete(self, messages: Sequence[ChatMessage], max_tokens: int) -> Completion:
        model = self.served.current_path  # routing is decided now; a swap may follow
        generation = await self.served.generate(
            messages, max_tokens, constrained=self.constrained()
        )
        return Completion(
            text=generation.text,
            model=generation.model or model,  # the one that answered, if a swap came between
            input_tokens=generation.input_tokens,
            output_tokens=generation.output_tokens,
            cut=generation.finish_reason == "length",
            grammar_problem=generation.grammar_problem,
            template_problem=generation.template_problem,
        )

    async def close(self) -> None:
        await self.served.close()


LEGACY_GOOGLE_PREFIX = "google-gla:"


class RemoteBackend:
    """Any model pydantic-ai knows (``openai-chat:...``, ``google:...``, ``ollama:...``)."""

    def __init__(self, model: str) -> None:
        """Slow (pydantic-ai and its provider SDKs are imported here): build it off the loop."""
        from pydantic_ai.direct import model_request
        from pydantic_ai.models import infer_model

        self._request = model_request

        # The original ai-lsp's setting said google-gla:; pydantic-ai 2 calls that provider google:.
        if model.startswith(LEGACY_GOOGLE_PREFIX):
            model = "google:" + model.removeprefix(LEGACY_GOOGLE_PREFIX)
        self._model = infer_model(model)  # raises with a clear message for unknown providers
        self._name = model
        self.provider = model.split(":", 1)[0] if ":" in model else self._model.system

    @property
    def model_name(self) -> str:
        return self._name

    async def complete(self, messages: Sequence[ChatMessage], max_tokens: int) -> Completion:
        response = await self._request(
            self._model,
            _to_pydantic_ai(messages),
            model_settings={"max_tokens": max_tokens, "temperature": 0.0},
            instrument=False,
        )
        return Completion(
            text=response.text or "",
            model=response.model_name or self._name,
            input_tokens=response.usage.input_tokens,
            output_tokens=response.usage.output_tokens,
            cut=getattr(response, "finish_reason", None) == "length",
        )

    async def close(self) -> None:
        return None


def _to_pydantic_ai(messages: Sequence[ChatMessage]) -> list[Any]:
    from pydantic_ai.messages import (
        ModelRequest,
        ModelResponse,
        SystemPromptPart,
        TextPart,
        UserPromptPart,
    )

    out: list[Any] = []
    pending: list[Any] = []
    for message in messages:
        if message.role == "assistant":
            if pending:
                out.append(ModelRequest(parts=pending))
                pending = []
            out.append(ModelResponse(parts=[TextPart(message.content)]))
        elif message.role == "system":
            pending.append(SystemPromptPart(message.content))
        else:
            pending.append(UserPromptPart(message.content))
    if pending:
        out.append(ModelRequest(parts=pending))
    return out


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
    on_attempt: Any = None,
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
