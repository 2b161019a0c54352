"""The answer the analysis model gives: a DiagnosticResult (the original ai-lsp's schema)."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

Severity = Literal["error", "warning", "info", "hint"]


class SuggestedFix(BaseModel):
    model_config = ConfigDict(extra="ignore")

    title: str
    target_snippet: str
    replacement_snippet: str


class Issue(BaseModel):
    model_config = ConfigDict(extra="ignore")

    issue_snippet: str
    severity: Severity
    message: str
    suggested_fixes: list[SuggestedFix] | None = None


class DiagnosticResult(BaseModel):
    model_config = ConfigDict(extra="ignore")

    issues: list[Issue]

    def to_json(self) -> str:
        """The canonical answer text: compact JSON, the form the model is trained to write."""
        return self.model_dump_json()


def answer_json_schema() -> dict[str, Any]:
    """The JSON schema decoding is constrained to: DiagnosticResult's, with no extra keys."""
    schema = DiagnosticResult.model_json_schema()
    _close_objects(schema)
    return schema


def _close_objects(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") == "object":
            node["additionalProperties"] = False
        for value in node.values():
            _close_objects(value)
    elif isinstance(node, list):
        for value in node:
            _close_objects(value)


class InvalidModelOutput(ValueError):
    """The model's text is not a valid DiagnosticResult; ``reason`` says why in one line."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.text = text


_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n?```\s*$", re.DOTALL)


def parse_json_text(text: str) -> Any:
    """Parse model output as JSON, tolerating a surrounding ```json fence."""
    match = _FENCE.match(text)
    body = match.group(1) if match else text
    return json.loads(body)


def parse_diagnostic_result(text: str) -> DiagnosticResult:
    """Parse and validate model output; raise InvalidModelOutput with a short reason."""
    try:
        value = parse_json_text(text)
    except json.JSONDecodeError as exc:
        raise InvalidModelOutput(f"not valid JSON: {exc.msg} at char {exc.pos}", text) from exc
    try:
        return DiagnosticResult.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "top level"
        raise InvalidModelOutput(f"not a DiagnosticResult: {where}: {first['msg']}", text) from exc


def snippet_grounded(snippet: object, code: str) -> bool:
    """True when an issue_snippet is a non-empty text found in the code (so the LSP can place
    it): the one grounding check of the dataset's filter and the evaluation's score."""
    return isinstance(snippet, str) and bool(snippet) and snippet in code


def snippets_grounded(result: DiagnosticResult, code: str) -> bool:
    """True when every issue_snippet occurs in the code."""
    return all(snippet_grounded(issue.issue_snippet, code) for issue in result.issues)
