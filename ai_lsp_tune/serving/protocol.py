"""Messages between the language server and the model host: one JSON object per line, versioned.

The server writes requests to the host's stdin; the host answers on its original stdout, which
it keeps for this channel alone (anything else the host prints goes to stderr).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ai_lsp_tune.wire import LineReader, WireMessage

PROTOCOL_VERSION = 3  # 2: ``switch`` (another model of the same architecture, in place); 3: adapter


class _Message(WireMessage):
    v: int = PROTOCOL_VERSION


class ChatMessage(BaseModel):
    """One chat turn, as chat templates take it."""

    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


# --- server -> host ---------------------------------------------------------------------------
class GenerateRequest(_Message):
    type: Literal["generate"] = "generate"
    id: int
    messages: list[ChatMessage]
    max_tokens: int = Field(ge=1)
    constrained: bool = True  # decode under the DiagnosticResult grammar when it compiled


class CancelRequest(_Message):
    """Stop generating for ``id`` (a newer edit made it stale); the host answers ``cancelled``."""

    type: Literal["cancel"] = "cancel"
    id: int


class ShutdownRequest(_Message):
    type: Literal["shutdown"] = "shutdown"


class SwitchRequest(_Message):
    """Serve ``model`` from the next request on, in this host, if it has the loaded model's
    architecture (a fine-tune of it, or its base); requests sent before finish on the old one."""

    type: Literal["switch"] = "switch"
    id: int
    model: str
    adapter: str | None = None  # a LoRA adapter folder served on top of ``model`` (its base)


HostRequest = Annotated[
    GenerateRequest | CancelRequest | ShutdownRequest | SwitchRequest,
    Field(discriminator="type"),
]


# --- host -> server ---------------------------------------------------------------------------
class Ready(_Message):
    """The model is loaded and the system-prompt cache is warm."""

    type: Literal["ready"] = "ready"
    model: str
    load_s: float
    prompt_cache_tokens: int


class LoadFailed(_Message):
    type: Literal["load_failed"] = "load_failed"
    model: str
    kind: Literal["model_not_found", "invalid_model", "error"]
    message: str


class Generation(_Message):
    type: Literal["generation"] = "generation"
    id: int
    text: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    finish_reason: str = "stop"  # "length": cut at max_tokens
    seconds: float = 0.0
    constrained: bool = False  # decoded under the DiagnosticResult grammar
    grammar_problem: str | None = None  # why constrained decoding was asked for but not done
    template_problem: str | None = None  # why the prompt was not rendered by a chat template
    model: str = ""  # the model that answered (a switch may have come between send and answer)


class Switched(_Message):
    """The host now serves ``model``: its weights were loaded in place and the cache re-warmed."""

    type: Literal["switched"] = "switched"
    id: int
    model: str
    load_s: float
    prompt_cache_tokens: int
    tokenizer_reloaded: bool = False


class SwitchRefused(_Message):
    """The host still serves its old model; ``kind`` "architecture" means another host must
    load ``model`` (it is not a model of the loaded one's architecture)."""

    type: Literal["switch_refused"] = "switch_refused"
    id: int
    model: str
    kind: Literal["architecture", "model_not_found", "invalid_model", "error"]
    message: str


class Cancelled(_Message):
    type: Literal["cancelled"] = "cancelled"
    id: int


class GenerateFailed(_Message):
    type: Literal["generate_failed"] = "generate_failed"
    id: int
    message: str


HostEvent = Annotated[
    Ready | LoadFailed | Generation | Cancelled | GenerateFailed | Switched | SwitchRefused,
    Field(discriminator="type"),
]

# The host reads requests with one, the server reads events with the other.
HOST_REQUESTS: LineReader[HostRequest] = LineReader(
    "the language server", PROTOCOL_VERSION, TypeAdapter(HostRequest)
)
HOST_EVENTS: LineReader[HostEvent] = LineReader(
    "the model host", PROTOCOL_VERSION, TypeAdapter(HostEvent)
)
