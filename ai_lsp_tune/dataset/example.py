"""What the dataset hands to training: one example, the prompt pair and the answer to learn."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel

from ai_lsp_tune.prompts import parse_user_prompt


class ExampleMetadata(BaseModel):
    trace_id: str = ""
    span_id: str = ""
    time: str = ""  # ISO 8601, UTC
    model: str = ""
    language: str = ""
    file: str = ""  # the document URI, or its name when no URI was recorded
    format: str = ""


class Example(BaseModel):
    """One training example: the prompt pair and the DiagnosticResult JSON to learn."""

    system: str
    user: str
    assistant: str
    metadata: ExampleMetadata | None = None

    def messages(self) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.user},
            {"role": "assistant", "content": self.assistant},
        ]

    def source_file(self) -> str:
        """What the split is keyed on: the document, so no file's code is in two splits."""
        if self.metadata and self.metadata.file:
            return self.metadata.file
        parts = parse_user_prompt(self.user)
        return parts.name if parts else hashlib.sha256(self.user.encode()).hexdigest()
