"""The second pass of `prepare-dataset` over a chunk: its candidate runs cleaned into examples.

Once every chunk was read (``chunks.collect_chunk``; a dismissal may come later in the input
than the run it dismisses), each chunk's candidates are cleaned the same way: dismissed issues
out, secrets redacted, ungrounded issues out, the token count, windows for over-long examples.
Each chunk's examples go to two private files that ``prepare`` merges in input order.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic_core import to_json

from ai_lsp_tune.dataset.crop import answer_json, crop_example
from ai_lsp_tune.dataset.redact import Redactor
from ai_lsp_tune.dataset.report import DatasetReport
from ai_lsp_tune.files import private_binary_writer
from ai_lsp_tune.prompts import LOCAL_SYSTEM_PROMPT, code_of, parse_user_prompt
from ai_lsp_tune.schema import DiagnosticResult, snippet_grounded
from ai_lsp_tune.tokens import TokenCounter, estimate_counter

CLEAN_COUNTS = (
    *("local_answers_left_out", "local_answers_confirmed"),
    *("issues_dismissed", "dropped_all_dismissed", "issues_ungrounded", "dropped_ungrounded"),
    *("secrets_redacted", "examples_redacted"),
)
Dismissed = dict[tuple[str, str], list[tuple[str, str]]]  # (trace, span) -> [(snippet, message)]
# The local model's analyses (trace, span) the user confirmed by applying a fix from them;
# None: every answer of the local model is kept (--include-local-answers).
Confirmed = set[tuple[str, str]] | None


@dataclass
class Cleaned:
    """A chunk's cleaned examples: two files, and per example what the merge needs."""

    counts: dict[str, int]
    examples: Path  # dataset.json lines, in candidate order
    chats: Path  # mlx-lm chat lines, the same examples
    # per example: content digest (hex), tokens, source file, bytes of its dataset.json line
    # and of its chat lines, how many chat lines (1; 0: too long to crop; more: windows)
    rows: list[tuple[str, int, str, int, int, int]] = field(default_factory=list)


def clean_chunk(
    candidates: Path,
    keys: list[str],
    dismissed: Dismissed,
    redaction: bool,
    cleaned: Path,
    counter: TokenCounter | None = None,
    max_seq_length: int | None = None,
    confirmed: Confirmed = None,
) -> Cleaned:
    """Clean a chunk's candidates (``keys``: their source files) into two files beside
    ``cleaned``: the dataset.json lines and the chat lines of the splits.

    ``counter`` None: the estimate (picklable by name). An example longer than
    ``max_seq_length`` keeps its dataset.json line; its chat lines are its windows.
    """
    report = DatasetReport(redaction=redaction)
    counter = counter or estimate_counter()
    count = counter.count
    out = Cleaned({}, cleaned.with_suffix(".examples"), cleaned.with_suffix(".chats"))
    system_json = _LastJson()  # the system prompt repeats across examples
    with (
        candidates.open("rb") as pickled,
        private_binary_writer(out.examples) as examples,
        private_binary_writer(out.chats) as chats,
    ):
        for key in keys:
            candidate = pickle.load(pickled)
            if not _kept_as_answered(candidate, confirmed, report):
                continue
            example = _clean(candidate, key, dismissed, report)
            if example is None:
                continue
            system, user, result, assistant, metadata = example
            messages = [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
                {"role": "assistant", "content": assistant},
            ]
            # Each text is JSON-encoded once, for both lines and the digest: the dataset.json
            # line is what Example.model_dump_json writes (pydantic's encoder), the chat line
            # what json.dumps(ensure_ascii=False) writes (the same escapes; both tested).
            s, u, a = system_json(system), to_json(user), to_json(assistant)
            line = b"".join(
                [
                    *(b'{"system":', s, b',"user":', u, b',"assistant":', a),
                    *(b',"metadata":', to_json(metadata), b"}\n"),
                ]
            )
            chat = b"".join(
                [
                    *(b'{"messages": [{"role": "system", "content": ', s),
                    *(b'}, {"role": "user", "content": ', u),
                    *(b'}, {"role": "assistant", "content": ', a, b"}]}\n"),
                ]
            )
            examples.write(line)
            tokens, lines = count(messages), 1
            if max_seq_length is not None and tokens > max_seq_length:
                crops = crop_example(
                    system, user, result, count, max_seq_length, count_chars=counter.count_chars
                )
                crops = crops or []
                chat = b"".join(_chat_line(system_json(system), c.user, c.assistant) for c in crops)
                lines = len(crops)
            chats.write(chat)
            digest = _content_digest(s, u, result)
            out.rows.append((digest.hex(), tokens, key, len(line), len(chat), lines))
    out.counts = {name: getattr(report, name) for name in CLEAN_COUNTS}
    return out


def _chat_line(system_json: bytes, user: str, assistant: str) -> bytes:
    return b"".join(
        [
            *(b'{"messages": [{"role": "system", "content": ', system_json),
            *(b'}, {"role": "user", "content": ', to_json(user)),
            *(b'}, {"role": "assistant", "content": ', to_json(assistant), b"}]}\n"),
        ]
    )


class _LastJson:
    """``to_json(text)``, remembering the last text."""

    def __init__(self) -> None:
        self.text: str | None = None
        self.encoded = b""

    def __call__(self, text: str) -> bytes:
        if text != self.text:
            self.text, self.encoded = text, to_json(text)
        return self.encoded


def _kept_as_answered(
    candidate: dict[str, Any], confirmed: Confirmed, report: DatasetReport
) -> bool:
    """A teacher's answer is kept; the local model's own only when the user confirmed it (or
    asked for all of them): trained on, it would teach the model to repeat itself."""
    if confirmed is None or not candidate.get("answered_locally"):
        return True
    meta = candidate["metadata"]
    if (meta["trace_id"], meta["span_id"]) in confirmed:
        report.local_answers_confirmed += 1
        return True
    report.local_answers_left_out += 1
    return False


def _content_digest(system: bytes, user: bytes, result: dict[str, Any]) -> bytes:
    """Equal for examples with equal parsed content (0.x writes spaced JSON, 2.x compact).

    ``system`` and ``user``: the texts as JSON strings (one text, one encoding).
    """
    answer = json.dumps(result, sort_keys=True).encode()
    digest = hashlib.blake2b(digest_size=16)
    for part in (system, user, answer):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


CleanExample = tuple[str, str, dict[str, Any], str, dict[str, str]]


def _clean(
    candidate: dict[str, Any], key: str, dismissed_by_run: Dismissed, report: DatasetReport
) -> CleanExample | None:
    """Dismissed issues out, secrets redacted, ungrounded issues out; None when nothing is left.

    The example as (system, user, result, result as JSON, metadata as ExampleMetadata dumps it).
    """
    result, user = candidate["result"], candidate["user"]
    issues: list[Any] = list(result.get("issues", []))
    had_issues = bool(issues)
    meta = dict(candidate["metadata"])  # ExampleMetadata.model_dump(): field order kept
    dismissed = dismissed_by_run.get((meta["trace_id"], meta["span_id"]), [])
    if dismissed:
        kept = [i for i in issues if not _is_dismissed(i, dismissed)]
        report.issues_dismissed += len(issues) - len(kept)
        if had_issues and not kept:
            report.dropped_all_dismissed += 1
            return None
        issues = kept
    result = {**result, "issues": issues}
    if report.redaction:
        redactor = Redactor()
        redactor.learn(user)
        redactor.learn("\n".join(_strings(result)))
        if redactor.count:
            user = redactor.apply(user)
            result = _redact_value(result, redactor)
            report.secrets_redacted += redactor.count
            report.examples_redacted += 1
    code = code_of(user)
    grounded = [i for i in result["issues"] if snippet_grounded(i.get("issue_snippet"), code)]
    report.issues_ungrounded += len(result["issues"]) - len(grounded)
    if had_issues and not grounded:
        report.dropped_ungrounded += 1
        return None
    result["issues"] = grounded
    DiagnosticResult.model_validate(result)  # still valid: only whole issues were removed
    meta["file"] = key
    assistant = answer_json(result)
    # A local model is trained on the prompt it is served with (LOCAL_SYSTEM_PROMPT), whatever
    # the teacher was asked with: the recorded code window and answer are what it learns from.
    system = LOCAL_SYSTEM_PROMPT if parse_user_prompt(user) else candidate["system"]
    return system, user, result, assistant, meta


def _is_dismissed(issue: dict[str, Any], dismissed: list[tuple[str, str]]) -> bool:
    return any(
        issue.get("issue_snippet") == snippet and (not message or issue.get("message") == message)
        for snippet, message in dismissed
    )


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def _redact_value(value: Any, redactor: Redactor) -> Any:
    if isinstance(value, str):
        return redactor.apply(value)
    if isinstance(value, list):
        return [_redact_value(v, redactor) for v in value]
    if isinstance(value, dict):
        return {k: _redact_value(v, redactor) for k, v in value.items()}
    return value
