"""Messages between the language server and the dataset worker: one JSON object per line, versioned.

The server passes one ``PrepareRequest`` on the worker's command line; the worker answers on its
stdout with progress, then ``done`` or ``failed`` (its own prints go to stderr).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ai_lsp_tune.wire import LineReader, WireMessage

PROTOCOL_VERSION = 1


class PrepareRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    v: int = PROTOCOL_VERSION
    traces: list[Path]
    output_dir: Path
    max_seq_length: int
    tokenizer: str | None = None
    include_local_answers: bool = False


class _Message(WireMessage):
    v: int = PROTOCOL_VERSION


class PrepareProgress(_Message):
    type: Literal["progress"] = "progress"
    done: int
    total: int


class PrepareDone(_Message):
    type: Literal["done"] = "done"
    examples: int
    splits: dict[str, int]
    cropped: int = 0  # over-long examples cropped to windows of their code
    local_note: str = ""  # the local model's own answers left out, and the setting to keep them


class PrepareFailed(_Message):
    type: Literal["failed"] = "failed"
    message: str


PrepareMessage = Annotated[
    PrepareProgress | PrepareDone | PrepareFailed, Field(discriminator="type")
]
# The server reads the child's messages with one, the child its command line with the other.
PREPARE_MESSAGES: LineReader[PrepareMessage] = LineReader(
    "dataset preparation", PROTOCOL_VERSION, TypeAdapter(PrepareMessage)
)
PREPARE_REQUESTS: LineReader[PrepareRequest] = LineReader(
    "the dataset preparation request", PROTOCOL_VERSION, PrepareRequest
)
