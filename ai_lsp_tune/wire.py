"""What our processes send each other: versioned pydantic messages, one JSON object per line.

The model host (``serving/protocol.py``), the training worker (``training/events.py``) and
dataset preparation (``server/finetune_prepare.py``) each define their messages on this base,
with their own protocol version in ``v``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class WireMessage(BaseModel):
    """Base of every message between processes; fields a newer peer adds are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: int


def encode_line(message: BaseModel) -> bytes:
    """The wire form of one message: compact JSON and a newline."""
    return message.model_dump_json().encode() + b"\n"
