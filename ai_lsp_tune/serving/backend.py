"""The one small interface the server analyses through, and its local and remote backends.

``complete(messages, max_tokens) -> Completion`` is all a backend does: it generates, with the
local model host or a remote provider. What to ask and how to recover from an unusable answer
is the server's (``server/retry.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ai_lsp_tune.prompts import LOCAL_SYSTEM_PROMPT, SYSTEM_PROMPT
from ai_lsp_tune.serving.protocol import ChatMessage
from ai_lsp_tune.serving.served_model import ServedModel
from ai_lsp_tune.traces.genai import LOCAL_PROVIDER


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
    system_prompt: str  # what it is asked with: the original prompt, or the local model's

    @property
    def model_name(self) -> str: ...

    async def complete(self, messages: Sequence[ChatMessage], max_tokens: int) -> Completion: ...

    async def close(self) -> None: ...


class LocalBackend:
    """The MLX model served by our own model host (hot-swappable)."""

    provider = LOCAL_PROVIDER  # recorded on its analyses: prepare-dataset tells them apart by it
    system_prompt = LOCAL_SYSTEM_PROMPT  # the prompt a local model is trained on (dataset)

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
        self.system_prompt = SYSTEM_PROMPT  # the original tool's, word for word
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
